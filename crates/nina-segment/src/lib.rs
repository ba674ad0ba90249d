//! Cutting a stream of speech into utterances.
//!
//! [`vad`] tells speech from silence: [`vad::SileroVad`] runs the Silero ONNX model (default),
//! [`vad::EnergyVad`] is a cheap detector used when no model is configured.

pub mod vad;

/// Errors of segmentation.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A model could not be found, loaded or run.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// The audio given does not fit what the detector takes.
    #[error("invalid audio: {0}")]
    Audio(String),
}
