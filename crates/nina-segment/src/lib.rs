//! Cutting a stream of speech into utterances.
//!
//! - [`segmenter::Segmenter`]: one per stream, push-based: PCM frames (any rate, mono or
//!   stereo, `i16` or `f32`) with their session timestamps in, [`segmenter::Utterance`]s out.
//! - [`vad`]: speech probabilities; `vad::SileroVad` runs the Silero ONNX model (default; feature
//!   `silero`), [`vad::EnergyVad`] is a cheap detector used when no model is configured.
//! - [`resample`]: streaming conversion to 16 kHz mono with rubato.

pub mod resample;
pub mod segmenter;
pub mod vad;

pub use segmenter::{Samples, Segmenter, SegmenterConfig, StreamFormat, Utterance};

/// Sample type of a stream, kept in its stored audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// 16-bit integer PCM.
    I16,
    /// 32-bit float PCM.
    F32,
}

/// Errors of segmentation.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A model could not be found, loaded or run.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// The audio given does not fit what the segmenter takes.
    #[error("invalid audio: {0}")]
    Audio(String),
    /// A setting is out of range.
    #[error("invalid segmenter setting: {0}")]
    Config(String),
}
