//! One process per session at a time.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The lock file inside a session directory. Its presence also marks the directory as Nina's
/// (a first run killed before writing `session.json` leaves it, so the next run may resume there).
pub const LOCK_FILE: &str = ".nina.lock";

/// An exclusive advisory lock on a session directory, held until dropped. The operating system
/// releases it when the process ends in any way (`kill -9` included), so it never goes stale.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
    path: PathBuf,
}

impl SessionLock {
    /// Takes the lock of the session directory `dir` (which must exist), without waiting.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
