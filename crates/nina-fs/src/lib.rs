//! Files Nina writes whole.
//!
//! Every file of the workspace is written through [`write()`] or [`write_with`]: the bytes go to a
//! temporary file beside the target, which is synced, renamed over the target, and the directory
//! synced. A crash (of the process or of the machine) at any point leaves the old file or the new
//! one, plus at worst a temporary file with a name that only Nina produces ([`is_temp_name`]) and
//! [`remove_temp_files`] removes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Suffix of Nina's temporary files.
pub const TEMP_SUFFIX: &str = ".nina-tmp";

/// An I/O error and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on {path}: {source}")]
pub struct FsError {
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// An error on `path`.
    pub fn new(path: &Path, source: io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether the disk (or a quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name beside `target`: `.<name>.<pid>-<n>.nina-tmp`, unique in this process.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{}-{n}{TEMP_SUFFIX}", std::process::id()))
}

/// Whether `name` is one of [`temp_path`]'s names (and so Nina's to remove).
pub fn is_temp_name(name: &str) -> bool {
    let Some(inner) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
    else {
        return false;
    };
    let Some((target, tag)) = inner.rsplit_once('.') else {
        return false;
    };
    let Some((pid, n)) = tag.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !target.is_empty() && digits(pid) && digits(n)
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Syncs a directory, so that a rename or creation in it survives a machine crash.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new(dir, e))
}

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_with(path, |f| {
        io::Write::write_all(f, bytes).map_err(|e| FsError::new(path, e))
    })
}

/// Writes `path` atomically with `fill`, which writes the whole content into the temporary file
/// it is given (it may seek). The file replaces `path` only if `fill` succeeds; otherwise the
/// temporary file is removed and `path` is untouched.
pub fn write_with<E: From<FsError>>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let dir = parent_of(path);
    fs::create_dir_all(dir).map_err(|e| FsError::new(dir, e))?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| FsError::new(&tmp, e))?;
        fill(&mut file)?;
        file.sync_all().map_err(|e| FsError::new(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| FsError::new(path, e))?;
        sync_dir(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes Nina's temporary files ([`is_temp_name`]) directly inside `dir` (not recursively, and
/// nothing else). A missing `dir` is not an error. Returns how many were removed.
pub fn remove_temp_files(dir: &Path) -> Result<usize, FsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(FsError::new(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new(dir, e))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(|e| FsError::new(&path, e))?;
        if ty.is_file() && is_temp_name(&entry.file_name().to_string_lossy()) {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::new(&path, e)),
            }
        }
    }
    Ok(removed)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Hex sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, FsError> {
    let file = File::open(path).map_err(|e| FsError::new(path, e))?;
    sha256_reader(file).map_err(|e| FsError::new(path, e))
}

/// Hex sha256 of `bytes`.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/y.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("x")).unwrap().count(), 1);
        // A directory in the way: an error, and nothing left behind.
        assert!(write(&dir.path().join("x/y.json/z"), b"no").is_err());
        assert_eq!(fs::read_dir(dir.path().join("x")).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        write(&p, b"old").unwrap();
        let r: Result<(), FsError> = write_with(&p, |f| {
            io::Write::write_all(f, b"partial").unwrap();
            Err(FsError::new(&p, io::Error::other("stop")))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_our_temporary_names_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = temp_path(&dir.path().join("a.wav"));
        assert!(is_temp_name(&ours.file_name().unwrap().to_string_lossy()));
        fs::write(&ours, b"partial").unwrap();
        let theirs = [
            ".notes.tmp",
            ".x.tmp",
            ".a.wav.12.tmp",
            ".nina-tmp",
            "..1-2.nina-tmp",
            ".a.1-.nina-tmp",
            ".a.x-1.nina-tmp",
            "a.wav.1-2.nina-tmp",
        ];
        for t in theirs {
            fs::write(dir.path().join(t), b"keep").unwrap();
        }
        fs::create_dir(dir.path().join("sub")).unwrap();
        let nested = temp_path(&dir.path().join("sub/b.wav"));
        fs::write(&nested, b"partial").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 1);
        assert!(!ours.exists());
        assert!(nested.exists(), "not recursive");
        for t in theirs {
            assert!(dir.path().join(t).exists(), "{t} was removed");
        }
        assert_eq!(remove_temp_files(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_bytes(b"abc"));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    proptest::proptest! {
        #[test]
        fn temp_names_round_trip(name in "[a-zA-Z0-9._-]{1,40}") {
            // `.` and `..` are not file names: a path ending in them names a directory.
            proptest::prop_assume!(name != "." && name != "..");
            let p = temp_path(Path::new("/d").join(&name).as_path());
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            proptest::prop_assert!(is_temp_name(&file));
            proptest::prop_assert!(!is_temp_name(&name) || name.ends_with(TEMP_SUFFIX));
        }
    }
}
