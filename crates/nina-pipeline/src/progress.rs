//! Progress reports, so binaries can draw bars without the library knowing about terminals.

use std::path::Path;

/// Receives progress from a [`crate::Pipeline`]. Every method has an empty default.
pub trait Progress: Sync {
    /// Decoding a file reached `seconds` of audio.
    fn decoded(&self, _seconds: f64) {}
    /// A session's transcription starts: `utterances` to do (`done` of them already saved by an
    /// interrupted run), `audio_seconds` in total.
    fn transcription_started(
        &self,
        _session: &Path,
        _utterances: usize,
        _done: usize,
        _audio_seconds: f64,
    ) {
    }
    /// One utterance of `seconds` was transcribed (or found done).
    fn utterance_done(&self, _seconds: f64) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
