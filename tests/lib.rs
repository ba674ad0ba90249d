//! Helpers shared by Nina's end-to-end tests (`tests/tests/*.rs`) and pipeline benchmark.
//! Everything here needs `scripts/setup.sh`; a missing file fails with that command.

use std::path::{Path, PathBuf};

use nina_eval::testdata;
use nina_pipeline::{PipelineConfig, VadChoice};
use nina_store::Session;

/// A pipeline configuration over the workspace's models: Silero (required, no fallback),
/// Whisper `whisper` in English.
pub fn config(whisper: &str) -> PipelineConfig {
    let mut cfg = PipelineConfig {
        models: nina_models::ModelDir::new(testdata::models_dir()),
        whisper: whisper.to_string(),
        vad: VadChoice::Silero,
        ..PipelineConfig::default()
    };
    cfg.transcribe.language = Some("en".into());
    // The test harness runs two tests at once on CI's two cores: one Whisper thread each, as
    // whisper.cpp's spinning threads slow down many times over when they outnumber the cores.
    cfg.transcribe.threads = 1;
    cfg
}

/// A file of `testdata/`, or a panic naming the set-up command.
pub fn data(relative: &str) -> PathBuf {
    testdata::require(relative).unwrap_or_else(|e| panic!("{e}"))
}

/// The reference text of `testdata/formats/*`: the LibriVox transcripts in file order.
pub fn librivox_text() -> String {
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    clips
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Speech regions of a stored session, `(speech_start, speech_end)` per utterance.
pub fn speech_regions(session: &Session) -> Vec<(f64, f64)> {
    session
        .utterances
        .iter()
        .map(|u| (u.speech_start, u.speech_end))
        .collect()
}

/// The kept text of a session's `transcript.json`.
pub fn transcript_text(session_dir: &Path) -> String {
    let json = std::fs::read_to_string(session_dir.join(nina_store::TRANSCRIPT_JSON))
        .unwrap_or_else(|e| panic!("{}: {e}", session_dir.display()));
    let doc =
        nina_transcribe::TranscriptDocument::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
    doc.segments
        .iter()
        .map(|s| s.segment.text.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every file under `dir` (relative paths, sorted), with contents.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|_| p.clone());
                out.push((rel, std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
