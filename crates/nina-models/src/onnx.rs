//! ONNX Runtime, loaded at run time from the shared library in the models directory (cargo
//! feature `onnx`).
//!
//! `ort` allows one environment per process, so the first call decides which library is loaded;
//! later calls return the same environment (and fail if they ask for a different library).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::{ModelDir, ModelError, catalog};

static ENV: OnceLock<Mutex<Option<(PathBuf, Environment)>>> = OnceLock::new();

/// Environment variable naming the ONNX Runtime library, overriding the models directory.
pub const LIB_ENV: &str = "NINA_ORT_LIB";

/// The ONNX Runtime library to load: `$NINA_ORT_LIB`, else the pinned one in `models` (checked by
/// [`ModelDir::require`]).
pub fn library_path(models: &ModelDir) -> Result<PathBuf, ModelError> {
    match std::env::var_os(LIB_ENV) {
        Some(p) => Ok(PathBuf::from(p)),
        None => models.require(&catalog::ONNX_RUNTIME),
    }
}

/// Loads ONNX Runtime from `lib` (once per process) and returns the shared environment.
pub fn environment(lib: &Path) -> Result<Environment, ModelError> {
    let cell = ENV.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = guard.as_ref() {
        if loaded != lib {
            return Err(ModelError::Onnx {
                context: format!("loading {}", lib.display()),
                reason: format!(
                    "ONNX Runtime is already loaded from {} in this process",
                    loaded.display()
                ),
            });
        }
        return Ok(env.clone());
    }
    if !lib.is_file() {
        return Err(ModelError::Missing {
            path: lib.to_path_buf(),
            looked_in: Vec::new(),
            fix: format!(
                "set {LIB_ENV} to an ONNX Runtime 1.31 library, or unset it to use the one {} fetches",
                crate::SETUP_COMMAND
            ),
        });
    }
    let onnx_err = |e: &dyn std::fmt::Display| ModelError::Onnx {
        context: format!("loading {}", lib.display()),
        reason: e.to_string(),
    };
    let env = ort::init_from(lib)
        .map_err(|e| onnx_err(&e))?
        .with_name("nina")
        .build()
        .map_err(|e| onnx_err(&e))?;
    *guard = Some((lib.to_path_buf(), env.clone()));
    Ok(env)
}

/// Opens an ONNX model with `threads` intra-op threads on the CPU.
pub fn session(env: &Environment, model: &Path, threads: usize) -> Result<Session, ModelError> {
    let err = |e: &dyn std::fmt::Display| ModelError::Onnx {
        context: format!("opening {}", model.display()),
        reason: e.to_string(),
    };
    if !model.is_file() {
        return Err(ModelError::Missing {
            path: model.to_path_buf(),
            looked_in: Vec::new(),
            fix: format!("run {}", crate::SETUP_COMMAND),
        });
    }
    Session::builder(env)
        .map_err(|e| err(&e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| err(&e))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| err(&e))?
        .with_inter_threads(1)
        .map_err(|e| err(&e))?
        .commit_from_file(model)
        .map_err(|e| ModelError::invalid(model, e.to_string()))
}
