//! Atomic file writes: a temporary file beside the target, fsync, rename, fsync of the directory.
//! A crash leaves the old file or the new one, plus at worst a hidden `.<name>.<pid>.<n>.tmp`
//! that [`clean_temp_files`] removes.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

/// Suffix of temporary files.
pub const TEMP_SUFFIX: &str = ".tmp";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether `name` is a temporary file left by an interrupted atomic write (ours or a WAV's).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Removes leftover temporary files under `dir` (recursively, never following symbolic links).
/// Returns how many were removed.
pub fn clean_temp_files(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let ty = entry
            .file_type()
            .map_err(|e| StoreError::io(&entry.path(), e))?;
        let path = entry.path();
        if ty.is_dir() {
            removed += clean_temp_files(&path)?;
        } else if ty.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            tracing::info!(path = %path.display(), "removed a leftover temporary file");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leftovers_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/y.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        fs::write(dir.path().join("x/.y.json.99.0.tmp"), b"partial").unwrap();
        fs::write(dir.path().join(".a.wav.1.tmp"), b"partial").unwrap();
        assert_eq!(clean_temp_files(dir.path()).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path().join("x")).unwrap().count(), 1);
        assert!(write(&dir.path().join("x/y.json/z"), b"no").is_err());
    }
}
