//! Locating and verifying the model files Nina runs.
//!
//! This is the small core every model-using crate depends on:
//!
//! - [`catalog`]: every model pinned with the registry package it comes from and its sha256;
//! - [`ModelDir`]: where models are looked for (`--models`, `$NINA_MODELS`, the per-user
//!   directory, `./models`), and [`ModelDir::require`], the load-time check that names the missing
//!   or damaged file, every place looked in, and the command that fixes it;
//! - [`verify`]: sha256 checks, remembered in a stamp beside each verified file so that a start
//!   does not re-hash 150 MB, and [`verify::write_verified`], which refuses a file before it is
//!   renamed into place;
//! - [`ggml`]: [`inspect_ggml`] checks a ggml Whisper file completely before whisper.cpp sees it;
//! - `onnx` (cargo feature `onnx`): loads ONNX Runtime once per process.
//!
//! Putting models in place (registry packages, the CTranslate2 importer, downloads by URL, the
//! `nina-models` command) is the job of the `nina-model-setup` crate.

pub mod catalog;
mod dir;
pub mod ggml;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod verify;

use std::io;
use std::path::{Path, PathBuf};

pub use catalog::ModelSpec;
pub use dir::{ModelDir, Origin, Place};
pub use ggml::{WhisperHparams, inspect_ggml, mel_filters};
pub use nina_fs::sha256_file;
pub use verify::{sha256_cached, verify_sha256};

/// The command that puts every pinned model in place (run from the repository's root).
pub const SETUP_COMMAND: &str = "scripts/setup.sh";

/// The package holding the `nina-models` command (`cargo run -p nina-model-setup -- ...`).
pub const SETUP_PACKAGE: &str = "nina-model-setup";

/// The command that fetches one pinned model into `dir`, as a user can paste it (from the
/// repository's root).
pub fn fetch_command(dir: &Path, id: &str) -> String {
    format!(
        "cargo run -p {SETUP_PACKAGE} -- --models {} fetch {id}",
        shell_quote(&dir.to_string_lossy())
    )
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,@%=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn list_places(places: &[PathBuf]) -> String {
    places
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Errors of this crate. Each names the file concerned and, where one exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is not where it should be.
    #[error("model file {path} is missing (looked in: {}); fix: {fix}", list_places(.looked_in))]
    Missing {
        /// Where it should be (the first place looked in).
        path: PathBuf,
        /// Every directory looked in, in order (may be empty when only `path` was looked at).
        looked_in: Vec<PathBuf>,
        /// What to run or do.
        fix: String,
    },
    /// A file's sha256 is not the pinned one.
    #[error(
        "checksum mismatch for {path}: expected sha256 {expected}, found {actual}; refusing it (fix: delete it and run {SETUP_COMMAND})"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Pinned digest.
        expected: String,
        /// Digest of the file found.
        actual: String,
    },
    /// A model was given by URL without the sha256 that identifies it.
    #[error(
        "the model at {url} has no checksum: a model given by URL is only used with its sha256 (pass --whisper-sha256 HEX)"
    )]
    ChecksumRequired {
        /// The URL.
        url: String,
    },
    /// A file exists but its contents are not a usable model.
    #[error(
        "model file {path} is corrupt or not a model: {reason}; fix: delete it and run {SETUP_COMMAND}"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An external step (pip, a download) failed.
    #[error("{what} failed: {reason}")]
    Fetch {
        /// The step.
        what: String,
        /// Why.
        reason: String,
    },
    /// ONNX Runtime could not be loaded or a session could not be created.
    #[error("ONNX Runtime error ({context}): {reason}")]
    Onnx {
        /// What was being done.
        context: String,
        /// The runtime's message.
        reason: String,
    },
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `path` is not a usable model, for `reason`.
    pub fn invalid(path: &Path, reason: String) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            reason,
        }
    }
}

impl From<nina_fs::FsError> for ModelError {
    fn from(e: nina_fs::FsError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Resolves a user's choice of Whisper model: a pinned id (`whisper-base`, looked up and checked
/// by [`ModelDir::require`]) or the path of any ggml file. URLs are `nina-model-setup`'s
/// `resolve_or_download_whisper`.
pub fn resolve_whisper(models: &ModelDir, choice: &str) -> Result<PathBuf, ModelError> {
    if let Some(spec) = catalog::by_id(choice) {
        return models.require(spec);
    }
    let path = PathBuf::from(choice);
    if path.is_file() {
        return Ok(path);
    }
    Err(ModelError::Missing {
        path,
        looked_in: Vec::new(),
        fix: format!(
            "give a pinned model id ({}), the path of a ggml Whisper file, or an https URL with --whisper-sha256",
            catalog::ALL
                .iter()
                .filter(|m| m.id.starts_with("whisper"))
                .map(|m| m.id)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn catalog_is_consistent() {
        for m in catalog::ALL {
            assert_eq!(m.sha256.len(), 64, "{} has no pinned sha256", m.id);
            assert!(m.sha256.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(m.bytes > 0, "{} has no pinned size", m.id);
            assert!(!m.file.contains('/'));
            assert_eq!(catalog::by_id(m.id).map(|s| s.file), Some(m.file));
        }
    }

    #[test]
    fn resolve_whisper_accepts_ids_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        assert!(matches!(
            resolve_whisper(&models, "whisper-base"),
            Err(ModelError::Missing { .. })
        ));
        let custom = dir.path().join("ggml-custom.bin");
        fs::write(&custom, b"x").unwrap();
        assert_eq!(
            resolve_whisper(&models, custom.to_str().unwrap()).unwrap(),
            custom
        );
        let err = resolve_whisper(&models, "nonsense")
            .unwrap_err()
            .to_string();
        assert!(err.contains("whisper-base"), "{err}");
        assert!(err.contains("--whisper-sha256"), "{err}");
    }

    #[test]
    fn fetch_commands_quote_what_a_shell_would_split() {
        assert_eq!(
            fetch_command(Path::new("/m/x"), "silero-vad"),
            "cargo run -p nina-model-setup -- --models /m/x fetch silero-vad"
        );
        assert_eq!(
            fetch_command(Path::new("/my models/it's"), "x"),
            r"cargo run -p nina-model-setup -- --models '/my models/it'\''s' fetch x"
        );
    }
}
