//! Speech to text for Nina.
//!
//! [`Transcriber`] is the seam for engines: 16 kHz mono `f32` audio in, a [`Transcript`] out, with
//! times relative to the audio given. [`WhisperModel`] loads a ggml Whisper model once; each
//! worker calls [`WhisperModel::transcriber`] to get a [`WhisperTranscriber`] with its own state.
//! Segments that fail the guards against Whisper's known failure modes (text on silence,
//! repetition loops, boilerplate on very short input) are kept in [`Transcript::dropped`] with
//! their reason instead of being lost. [`TranscriptionPool`] runs several workers behind a
//! bounded queue; [`TranscriptDocument`] writes JSON, SRT, WebVTT and plain text.

mod guard;
pub mod output;
pub mod pool;
mod whisper;

pub use guard::{DropReason, GuardConfig};

pub use output::{ModelInfo, SpeakerDropped, SpeakerSegment, TranscriptDocument, TranscriptError};
pub use pool::{JobResult, PoolError, TranscriptionPool};
pub use whisper::{WhisperModel, WhisperTranscriber, check_options, engine_features};

use serde::{Deserialize, Serialize};

/// Sample rate every [`Transcriber`] takes.
pub const SAMPLE_RATE: u32 = 16_000;

/// Errors of transcription.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    /// The model file is missing, damaged or not a Whisper model.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// The audio cannot be transcribed as given.
    #[error("invalid audio: {0}")]
    Audio(String),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Options(String),
    /// The engine failed.
    #[error("whisper failed: {0}")]
    Engine(String),
    /// The engine panicked on this job (a bug, reported instead of lost).
    #[error("the transcriber panicked: {0}")]
    Panicked(String),
}

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decoding {
    /// Greedy decoding, keeping the best of `best_of` samples when temperature > 0.
    Greedy {
        /// Samples drawn at temperature > 0.
        best_of: u8,
    },
    /// Beam search.
    Beam {
        /// Beams kept.
        beam_size: u8,
    },
}

/// Options of one transcription. Serialised into results so re-runs are comparable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscribeOptions {
    /// Language code (`en`, `de`, ...) to force one; several comma-separated (`pt,en`) to
    /// detect among them only (a guild that speaks Portuguese and English); `None` to detect
    /// among all Whisper knows.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    /// Text that conditions the decoder: names and jargon of a guild, for example.
    pub initial_prompt: Option<String>,
    /// Greedy (the default: deterministic, and as accurate as whisper.cpp's sampled beam search
    /// on our sets at half its cost, docs/measurements.md) or beam search.
    pub decoding: Decoding,
    /// Starting temperature; on failure whisper.cpp retries at higher ones.
    pub temperature: f32,
    /// Temperature step of the fallback (0 disables the fallback).
    pub temperature_increment: f32,
    /// Word-level timestamps.
    pub word_timestamps: bool,
    /// Shrink the encoder window for short audio instead of always paying for 30 s (for
    /// decoding and for language detection, which is right more often on the full window).
    pub short_audio_context: bool,
    /// Seconds of silence added before and after inputs shorter than 29 s.
    pub edge_padding: f32,
    /// Seconds of audio kept before the first and after the last voiced syllable: longer
    /// unvoiced edges are cut off before decoding (after a long lead-in of noise or silence
    /// Whisper's timestamps run ahead of the audio and it loops back over what it said,
    /// docs/transcribe.md#edges). At least 0.1 s; `None` decodes the input whole.
    #[serde(default)]
    pub voiced_margin: Option<f32>,
    /// CPU threads used by this transcription.
    pub threads: u16,
    /// Guards against hallucinations.
    pub guards: GuardConfig,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            translate: false,
            initial_prompt: None,
            decoding: Decoding::Greedy { best_of: 5 },
            temperature: 0.0,
            temperature_increment: 0.2,
            word_timestamps: true,
            short_audio_context: true,
            edge_padding: 0.5,
            voiced_margin: Some(1.0),
            threads: 2,
            guards: GuardConfig::default(),
        }
    }
}

impl TranscribeOptions {
    /// The options that decide the result, as JSON: everything but execution settings
    /// (`threads`). Keys and records of work done are built from this, so a rerun with other
    /// execution settings, or on another machine, reuses the work.
    pub fn result_options(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("threads");
        }
        v
    }
}

/// One word with its timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// Start, seconds from the start of the audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The word, with its leading space if any.
    pub text: String,
    /// Mean probability of its tokens.
    pub probability: f32,
}

/// One decoded segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, seconds from the start of the audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Text.
    pub text: String,
    /// Mean log-probability of its text tokens.
    pub avg_logprob: f32,
    /// Probability that the window holds no speech.
    pub no_speech_prob: f32,
    /// Words, when word timestamps were asked for.
    pub words: Vec<Word>,
    /// What the guards did to keep it, when they fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// How a segment that tripped a guard was kept instead of dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repair {
    /// The guard that fired first ([`DropReason::name`]).
    pub guard: String,
    /// Decodes after the first one: the full audio window, then another temperature and
    /// search (0 when the first decode was repaired in place).
    pub retried: u8,
    /// Repeats of a loop, or words timed past the end of the audio, were cut.
    pub trimmed: bool,
}

/// A segment the guards removed, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedSegment {
    /// The segment as decoded.
    pub segment: Segment,
    /// Why it was dropped.
    pub reason: DropReason,
}

/// The result of transcribing one piece of audio.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// Language (detected or given).
    pub language: Option<String>,
    /// Probability of the detected language (1.0 when it was given).
    pub language_probability: Option<f32>,
    /// Kept segments, in time order.
    pub segments: Vec<Segment>,
    /// Segments removed by the guards.
    pub dropped: Vec<DroppedSegment>,
}

impl Transcript {
    /// The kept text, segments joined by single spaces.
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Segment {
    /// The segment with every time moved by `seconds` (onto the session clock).
    pub fn shifted(mut self, seconds: f64) -> Self {
        self.start += seconds;
        self.end += seconds;
        for w in &mut self.words {
            w.start += seconds;
            w.end += seconds;
        }
        self
    }
}

impl Transcript {
    /// The transcript with every time moved by `seconds` (onto the session clock).
    pub fn shifted(mut self, seconds: f64) -> Self {
        self.segments = self
            .segments
            .into_iter()
            .map(|s| s.shifted(seconds))
            .collect();
        for d in &mut self.dropped {
            d.segment = std::mem::take(&mut d.segment).shifted(seconds);
        }
        self
    }
}

/// What the guards did over one or more transcripts, for run summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardTally {
    /// Segments kept after a guard fired ([`Segment::repair`]).
    pub repaired: usize,
    /// Of them, kept from a later decode of the ladder.
    pub retried: usize,
    /// Of them, with a loop's repeats or words past the end cut.
    pub trimmed: usize,
    /// Segments dropped (no speech, or a guard the ladder could not repair).
    pub dropped: usize,
}

impl GuardTally {
    /// The tally of one transcript.
    pub fn of(t: &Transcript) -> Self {
        let repairs = t.segments.iter().filter_map(|s| s.repair.as_ref());
        let mut tally = Self {
            dropped: t.dropped.len(),
            ..Self::default()
        };
        for r in repairs {
            tally.repaired += 1;
            tally.retried += usize::from(r.retried > 0);
            tally.trimmed += usize::from(r.trimmed);
        }
        tally
    }

    /// True when no guard fired.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::ops::AddAssign for GuardTally {
    fn add_assign(&mut self, o: Self) {
        self.repaired += o.repaired;
        self.retried += o.retried;
        self.trimmed += o.trimmed;
        self.dropped += o.dropped;
    }
}

impl std::fmt::Display for GuardTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} segment(s) repaired ({} retried, {} trimmed), {} dropped",
            self.repaired, self.retried, self.trimmed, self.dropped
        )
    }
}

/// A speech-to-text engine. Implementations hold per-worker state, hence `&mut self`.
pub trait Transcriber: Send {
    /// Transcribes 16 kHz mono audio in `[-1, 1]`.
    fn transcribe(
        &mut self,
        audio: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, TranscribeError>;

    /// A name identifying the model, recorded with results.
    fn model_name(&self) -> &str;
}

/// Checks audio before it reaches an engine: non-empty and finite.
pub fn validate_audio(audio: &[f32]) -> Result<(), TranscribeError> {
    if audio.is_empty() {
        return Err(TranscribeError::Audio("no samples".into()));
    }
    if let Some(i) = audio.iter().position(|s| !s.is_finite()) {
        return Err(TranscribeError::Audio(format!(
            "sample {i} is not a finite number"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_tally_counts_repairs_and_drops() {
        let seg = |repair: Option<Repair>| Segment {
            text: "x".into(),
            repair,
            ..Segment::default()
        };
        let t = Transcript {
            segments: vec![
                seg(None),
                seg(Some(Repair {
                    guard: "repetition".into(),
                    retried: 2,
                    trimmed: false,
                })),
                seg(Some(Repair {
                    guard: "repetition".into(),
                    retried: 0,
                    trimmed: true,
                })),
            ],
            dropped: vec![DroppedSegment {
                segment: seg(None),
                reason: DropReason::NonSpeechMarker,
            }],
            ..Transcript::default()
        };
        let mut total = GuardTally::of(&t);
        assert_eq!(
            total,
            GuardTally {
                repaired: 2,
                retried: 1,
                trimmed: 1,
                dropped: 1
            }
        );
        total += GuardTally::of(&t);
        assert_eq!(total.repaired, 4);
        assert_eq!(
            total.to_string(),
            "4 segment(s) repaired (2 retried, 2 trimmed), 2 dropped"
        );
        assert!(GuardTally::of(&Transcript::default()).is_empty());
    }
}
