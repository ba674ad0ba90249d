//! Nina's wiring, shared by `reprocess` and (next) the live `collector`: audio in, utterances
//! segmented, transcribed and stored.
//!
//! - [`decode`]: any file symphonia reads, packet by packet.
//! - [`SessionWriter`]: utterances of any number of streams (one per user) into a session
//!   directory as they complete: WAVs written atomically, `session.json` on checkpoints.
//! - [`Pipeline::segment_file`]: one stream through a [`nina_segment::Segmenter`] into a
//!   [`SessionWriter`].
//! - [`Pipeline::transcribe_session`]: every utterance of a stored session through a
//!   [`nina_transcribe::TranscriptionPool`], into the transcript files. Each finished utterance is
//!   saved at once, so an interrupted run resumes where it stopped; work already done with the same
//!   model and options is skipped.
//!
//! The live collector will do per user stream exactly what [`Pipeline::segment_file`] does for a
//! file: push PCM into that user's segmenter, hand each utterance to the session's
//! [`SessionWriter`], submit its 16 kHz audio to the pool.

pub mod decode;
mod pipeline;
mod progress;
mod writer;

pub use pipeline::{FILE_USER, Outcome, Pipeline, PipelineConfig, VadChoice, file_session_dir};
pub use progress::{NoProgress, Progress};
pub use writer::SessionWriter;

use std::path::PathBuf;

/// Errors of the pipeline. [`PipelineError::kind`] sorts them into what a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An audio file cannot be read, is not audio, or is damaged.
    #[error("cannot read audio {path}: {reason}")]
    Audio {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model is missing, damaged or cannot run.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// Segmentation failed.
    #[error(transparent)]
    Segment(#[from] nina_segment::SegmentError),
    /// Transcription failed.
    #[error(transparent)]
    Transcribe(#[from] nina_transcribe::TranscribeError),
    /// The transcription pool stopped.
    #[error(transparent)]
    Pool(#[from] nina_transcribe::PoolError),
    /// Reading or writing the session failed.
    #[error(transparent)]
    Store(#[from] nina_store::StoreError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What kind of failure a [`PipelineError`] is, for exit codes and hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Unreadable, unsupported or damaged audio.
    Audio,
    /// A model is missing or unusable: run the set-up.
    Models,
    /// A stored session is damaged.
    Session,
    /// The disk (or quota) is full.
    DiskFull,
    /// Anything else.
    Other,
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => ErrorKind::DiskFull,
        _ => ErrorKind::Other,
    }
}

impl PipelineError {
    /// Sorts the error.
    pub fn kind(&self) -> ErrorKind {
        use nina_segment::SegmentError as S;
        use nina_store::StoreError as St;
        use nina_transcribe::TranscribeError as T;
        match self {
            Self::Audio { .. } => ErrorKind::Audio,
            Self::Model(_)
            | Self::Segment(S::Model(_))
            | Self::Transcribe(T::Model(_))
            | Self::Pool(nina_transcribe::PoolError::Worker(T::Model(_))) => ErrorKind::Models,
            Self::Segment(S::Io { source, .. }) => io_kind(source),
            Self::Store(St::Io { source, .. }) => io_kind(source),
            Self::Store(St::Invalid { .. } | St::NewerVersion { .. } | St::NotASession(_)) => {
                ErrorKind::Session
            }
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn errors_are_sorted_for_the_user() {
        let io_err = |kind| nina_store::StoreError::Io {
            path: "/data/s/session.json".into(),
            source: io::Error::from(kind),
        };
        let full = PipelineError::Store(io_err(io::ErrorKind::StorageFull));
        assert_eq!(full.kind(), ErrorKind::DiskFull);
        let seg_full = PipelineError::Segment(nina_segment::SegmentError::Io {
            path: "/data/s/audio/0/x.wav".into(),
            source: io::Error::from(io::ErrorKind::QuotaExceeded),
        });
        assert_eq!(seg_full.kind(), ErrorKind::DiskFull);
        let denied = PipelineError::Store(io_err(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.kind(), ErrorKind::Other);
        let missing = PipelineError::Model(nina_models::ModelError::Missing {
            path: "models/ggml-base.bin".into(),
            fix: "run scripts/setup.sh".into(),
        });
        assert_eq!(missing.kind(), ErrorKind::Models);
        let damaged = PipelineError::Store(nina_store::StoreError::Invalid {
            path: "s/session.json".into(),
            field: "utterances[0].file".into(),
            reason: "unsafe".into(),
        });
        assert_eq!(damaged.kind(), ErrorKind::Session);
        assert!(damaged.to_string().contains("utterances[0].file"));
        let audio = PipelineError::Audio {
            path: "x.mp3".into(),
            reason: "no audio track".into(),
        };
        assert_eq!(audio.kind(), ErrorKind::Audio);
    }
}
