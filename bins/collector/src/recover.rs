//! The recovery step at start-up: sessions a crash (or `kill -9`) left unfinished are finished.

use anyhow::Result;
use nina_pipeline::live::recover_session;
use nina_pipeline::{NoProgress, Pipeline};
use nina_store::{Store, StoreError};

/// Finishes every unfinished session of the store (a session locked by a running process is
/// left alone) and, when `transcribe`, writes its transcripts.
pub fn recover_all(store: &Store, pipeline: &Pipeline, transcribe: bool) -> Result<usize> {
    let mut n = 0;
    for dir in store.sessions()? {
        match recover_session(&dir) {
            Ok(Some(s)) => {
                n += 1;
                println!("NINA-RECOVERED {}", dir.root().display());
                if transcribe
                    && !s.utterances.is_empty()
                    && let Err(e) = pipeline.transcribe_session(&dir, false, &NoProgress)
                {
                    tracing::warn!(dir = %dir.root().display(), "transcription left for reprocess: {e}");
                }
            }
            Ok(None) => {}
            Err(nina_pipeline::PipelineError::Store(StoreError::Locked(_))) => {}
            Err(e) => tracing::warn!(dir = %dir.root().display(), "cannot recover: {e}"),
        }
    }
    Ok(n)
}
