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
//! - [`Pipeline::segment_tracks`]: a session recorded in raw mode (archival Opus tracks, see
//!   [`nina_store::track`]) decoded and segmented per user after the fact.
//! - [`mix::mix_session`]: every user's track into one time-aligned WAV at a common level.
//!
//! The live collector will do per user stream exactly what [`Pipeline::segment_file`] does for a
//! file: push PCM into that user's segmenter, hand each utterance to the session's
//! [`SessionWriter`], submit its 16 kHz audio to the pool.

pub mod decode;
mod diarize;
pub mod live;
pub mod mix;
mod pipeline;
mod progress;
pub mod tracks;
mod writer;

pub use diarize::{
    DIARIZATION_JSON, DIARIZATION_RTTM, DiarizeOutcome, ENROL_MIN_SECONDS, ENROL_SHARE,
    STEP_DIARIZE, Voices, print_model,
};
pub use pipeline::{
    FILE_USER, Outcome, Pipeline, PipelineConfig, STEP_SEGMENT, STEP_TRANSCRIBE, VadChoice,
    file_session_dir,
};
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
    /// Diarization failed.
    #[error(transparent)]
    Diarize(#[from] nina_diarize::DiarizeError),
    /// Reading or writing the session failed.
    #[error(transparent)]
    Store(#[from] nina_store::StoreError),
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<nina_fs::FsError> for PipelineError {
    fn from(e: nina_fs::FsError) -> Self {
        Self::Store(e.into())
    }
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
    /// Another process is working on the session.
    Busy,
    /// The request itself is wrong: a setting out of range, or a destination that is not Nina's.
    Usage,
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
            | Self::Pool(nina_transcribe::PoolError::Worker(T::Model(_)))
            | Self::Diarize(nina_diarize::DiarizeError::Model(_)) => ErrorKind::Models,
            Self::Diarize(nina_diarize::DiarizeError::Config(_)) => ErrorKind::Usage,
            Self::Config(_) | Self::Segment(S::Config(_)) | Self::Transcribe(T::Options(_)) => {
                ErrorKind::Usage
            }
            Self::Store(St::Io { source, .. }) => io_kind(source),
            Self::Store(St::Invalid { .. } | St::NewerVersion { .. } | St::NotASession(_)) => {
                ErrorKind::Session
            }
            Self::Store(St::Locked(_)) => ErrorKind::Busy,
            Self::Store(St::NotOurs(_)) => ErrorKind::Usage,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nina_store::SessionDir;

    /// Each kind from a failure really produced, not from a value built to match.
    #[test]
    fn real_failures_are_sorted_for_the_user() {
        let dir = tempfile::tempdir().unwrap();
        // A full disk, as the operating system reports it.
        let full = std::fs::write("/dev/full", b"x").unwrap_err();
        let e = PipelineError::Store(nina_store::StoreError::Io {
            path: "/dev/full".into(),
            source: full,
        });
        assert_eq!(e.kind(), ErrorKind::DiskFull, "{e}");
        // A session held by another process (here: another lock in this one).
        let sd = SessionDir::new(dir.path().join("s"));
        let _held = sd.claim().unwrap();
        let e = PipelineError::from(sd.claim().unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        // A directory that is not Nina's.
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("notes.txt"), b"x").unwrap();
        let e = PipelineError::from(SessionDir::new(&theirs).claim().unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
        // A damaged session.json.
        let bad = SessionDir::new(dir.path().join("bad"));
        std::fs::create_dir(bad.root()).unwrap();
        std::fs::write(bad.root().join("session.json"), b"{").unwrap();
        let e = PipelineError::from(bad.open().unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Session, "{e}");
        // Out-of-range settings.
        let e = Pipeline::new(PipelineConfig {
            workers: 0,
            ..PipelineConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
        let mut cfg = PipelineConfig::default();
        cfg.transcribe.language = Some("xx".into());
        assert_eq!(Pipeline::new(cfg).unwrap_err().kind(), ErrorKind::Usage);
        let mut cfg = PipelineConfig::default();
        cfg.segmenter.max_utterance = 1.0;
        assert_eq!(Pipeline::new(cfg).unwrap_err().kind(), ErrorKind::Usage);
    }
}

/// The code blocks of the workspace README, compiled as doctests so that what it shows works.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
