//! Checking model files against pinned sha256 digests, without hashing them on every start.
//!
//! A file that has been hashed and found to match gets a *stamp* beside it,
//! `.<name>.verified`: a small JSON record of the digest and of the file's metadata at that
//! moment (size, modification and change times in nanoseconds, inode and device). While the
//! file's metadata still matches its stamp, [`check_file`] accepts it without reading it; any
//! write to the file changes its change time (which no user call can set back), so a modified
//! file is hashed again and refused if it no longer matches.
//!
//! File times tick coarsely (a few milliseconds), so a write in the same tick as the stamp would
//! leave the metadata unchanged. As git does for its index, a stamp is trusted only for a file
//! whose change time is strictly earlier than the stamp's own modification time; a file changed
//! in the tick of its stamp is simply hashed again (once: the new stamp is later).
//!
//! Files are written with [`write_verified`]: the digest is computed while the bytes are written,
//! and a file that does not match is refused before it is renamed into place.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ModelError;

/// Suffix of a stamp's file name (`.<name>.verified`).
pub const STAMP_SUFFIX: &str = ".verified";

/// The stamp of `file`: `.<name>.verified` in the same directory.
pub fn stamp_path(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!(".{name}{STAMP_SUFFIX}"))
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Fingerprint {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
    device: u64,
}

impl Fingerprint {
    #[cfg(unix)]
    fn of(meta: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Self {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
        }
    }

    #[cfg(not(unix))]
    fn of(meta: &Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(0);
        Self {
            size: meta.len(),
            mtime_ns,
            ctime_ns: 0,
            inode: 0,
            device: 0,
        }
    }
}

/// A stamp: the file's digest and the metadata it had when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    sha256: String,
    #[serde(flatten)]
    file: Fingerprint,
}

/// How [`check_file`] accepted a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Its stamp matches the pinned digest and its metadata: it was not read.
    Stamped,
    /// It was hashed (no stamp, or a stale one) and matches; it is stamped now.
    Hashed,
}

#[cfg(test)]
thread_local! {
    /// How many files this thread has hashed (a test hook: tests run on their own threads).
    pub(crate) static HASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn hash_file(path: &Path) -> Result<String, ModelError> {
    #[cfg(test)]
    HASHES.with(|h| h.set(h.get() + 1));
    Ok(nina_fs::sha256_file(path)?)
}

fn metadata(path: &Path) -> Result<Metadata, ModelError> {
    fs::metadata(path).map_err(|e| ModelError::io(path, e))
}

/// The stamp of `path` if it vouches for the file as it is now (`meta`): same metadata, and the
/// file last changed strictly before the stamp was written.
fn fresh_stamp(path: &Path, meta: &Metadata) -> Option<Stamp> {
    let stamp_file = stamp_path(path);
    let stamped_at = Fingerprint::of(&fs::metadata(&stamp_file).ok()?).mtime_ns;
    let stamp: Stamp = serde_json::from_slice(&fs::read(&stamp_file).ok()?).ok()?;
    let now = Fingerprint::of(meta);
    (stamp.file == now && now.ctime_ns < stamped_at).then_some(stamp)
}

/// Records that `path`, with metadata `meta`, has digest `sha256`. A stamp that cannot be written
/// (a read-only models directory) only costs a hash on the next start, so it is logged, not fatal.
fn write_stamp(path: &Path, meta: &Metadata, sha256: &str) {
    let stamp = Stamp {
        sha256: sha256.to_ascii_lowercase(),
        file: Fingerprint::of(meta),
    };
    let written = serde_json::to_vec_pretty(&stamp)
        .map_err(|e| ModelError::invalid(path, e.to_string()))
        .and_then(|json| Ok(nina_fs::write(&stamp_path(path), &json)?));
    if let Err(e) = written {
        tracing::warn!(
            "could not record that {} is verified ({e}); it will be hashed again next time",
            path.display()
        );
    }
}

/// Refuses `path` when `bytes` is given and the file has another size (cheap, no reading).
pub fn check_size(path: &Path, bytes: Option<u64>) -> Result<Metadata, ModelError> {
    let meta = metadata(path)?;
    match bytes {
        Some(b) if b != 0 && meta.len() != b => Err(ModelError::invalid(
            path,
            format!("size is {} bytes, expected {b}", meta.len()),
        )),
        _ => Ok(meta),
    }
}

/// Checks `path` against the pinned `sha256` (and size, when `bytes` is given).
///
/// A file whose stamp records `sha256` and whose metadata is unchanged since is accepted without
/// being read. Otherwise the file is hashed: a mismatch is [`ModelError::Checksum`], a match is
/// stamped so that the next check is cheap.
pub fn check_file(path: &Path, sha256: &str, bytes: Option<u64>) -> Result<Checked, ModelError> {
    let meta = check_size(path, bytes)?;
    if fresh_stamp(path, &meta).is_some_and(|s| s.sha256.eq_ignore_ascii_case(sha256)) {
        return Ok(Checked::Stamped);
    }
    tracing::info!("verifying {} (sha256)", path.display());
    verify_sha256(path, sha256)?;
    Ok(Checked::Hashed)
}

/// Hashes the whole of `path` and checks it against `expected`, ignoring any stamp; a match is
/// stamped, a mismatch is [`ModelError::Checksum`].
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelError> {
    let before = metadata(path)?;
    let actual = hash_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ModelError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    // Stamp only what was hashed: a file changed while it was read is checked again next time.
    if Fingerprint::of(&metadata(path)?) == Fingerprint::of(&before) {
        write_stamp(path, &before, &actual);
    }
    Ok(())
}

/// The sha256 of `path`: from its stamp when the file is unchanged since it was verified,
/// otherwise hashed (and not stamped: nothing was verified).
pub fn sha256_cached(path: &Path) -> Result<String, ModelError> {
    let meta = metadata(path)?;
    match fresh_stamp(path, &meta) {
        Some(stamp) => Ok(stamp.sha256),
        None => hash_file(path),
    }
}

/// The file [`write_verified`]'s `fill` writes into: everything written is also hashed.
#[derive(Debug)]
pub struct HashingWriter<'f> {
    file: &'f mut File,
    hasher: Sha256,
    bytes: u64,
}

impl HashingWriter<'_> {
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `path` atomically ([`nina_fs::write_with`]) with `fill`, hashing the bytes as they are
/// written. With `expected`, a file whose digest differs is refused *before* it is renamed into
/// place ([`ModelError::Checksum`]; nothing is left behind, an older `path` is untouched), and a
/// file that matches is stamped as verified. Returns the hex sha256 of what was written.
pub fn write_verified(
    path: &Path,
    expected: Option<&str>,
    fill: impl FnOnce(&mut HashingWriter<'_>) -> Result<(), ModelError>,
) -> Result<String, ModelError> {
    let mut digest = String::new();
    nina_fs::write_with(path, |file| {
        let mut w = HashingWriter {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        fill(&mut w)?;
        digest = nina_fs::hex(&w.hasher.finalize());
        match expected {
            Some(e) if !e.eq_ignore_ascii_case(&digest) => Err(ModelError::Checksum {
                path: path.to_path_buf(),
                expected: e.to_string(),
                actual: digest.clone(),
            }),
            _ => Ok(()),
        }
    })?;
    if expected.is_some() {
        write_stamp(path, &metadata(path)?, &digest);
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelDir, ModelSpec, catalog};

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn hashes() -> usize {
        HASHES.with(|h| h.get())
    }

    /// A pinned model whose content is `abc` repeated (the catalog's real files are too big).
    fn spec(bytes: &[u8]) -> ModelSpec {
        let sha = nina_fs::sha256_bytes(bytes);
        ModelSpec {
            id: "test-model",
            file: "test.onnx",
            sha256: Box::leak(sha.into_boxed_str()),
            bytes: bytes.len() as u64,
            ..catalog::SILERO_VAD
        }
    }

    #[test]
    fn right_size_wrong_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        let good = b"the real model".repeat(100);
        let spec = spec(&good);
        let mut bad = good.clone();
        bad[700] ^= 1;
        fs::write(models.path_of(&spec), &bad).unwrap();
        let err = models.require(&spec).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert!(!stamp_path(&models.path_of(&spec)).exists());
        // Wrong size: refused without reading.
        let before = hashes();
        fs::write(models.path_of(&spec), b"short").unwrap();
        assert!(matches!(
            models.require(&spec),
            Err(ModelError::Invalid { .. })
        ));
        assert_eq!(hashes(), before);
    }

    /// Lets the file system's coarse clock move on (it ticks every few milliseconds).
    fn tick() {
        std::thread::sleep(std::time::Duration::from_millis(30));
    }

    #[test]
    fn a_verified_file_is_not_hashed_again_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelDir::new(dir.path());
        let good = b"the real model".repeat(100);
        let spec = spec(&good);
        let path = models.path_of(&spec);
        fs::write(&path, &good).unwrap();
        tick();

        let start = hashes();
        assert_eq!(models.require(&spec).unwrap(), path);
        assert_eq!(hashes(), start + 1, "first check hashes");
        assert!(stamp_path(&path).is_file());
        for _ in 0..3 {
            assert_eq!(
                check_file(&path, spec.sha256, Some(spec.bytes)).unwrap(),
                Checked::Stamped
            );
        }
        models.require(&spec).unwrap();
        assert_eq!(hashes(), start + 1, "a stamped, unchanged file is not read");
        assert_eq!(sha256_cached(&path).unwrap(), spec.sha256);
        assert_eq!(hashes(), start + 1);

        // Same size, new content: hashed again and refused, whether or not the clock has ticked
        // since the stamp.
        let mut bad = good.clone();
        bad[3] ^= 0x20;
        fs::write(&path, &bad).unwrap();
        let err = models.require(&spec).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert_eq!(hashes(), start + 2);
        tick();
        assert!(models.require(&spec).is_err());
        // Even with the old modification time put back.
        fs::write(&path, &good).unwrap();
        tick();
        models.require(&spec).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at_start(&bad);
        file.set_modified(mtime).unwrap();
        drop(file);
        assert!(matches!(
            models.require(&spec),
            Err(ModelError::Checksum { .. })
        ));

        // A stamp for another digest does not count.
        fs::write(&path, &good).unwrap();
        tick();
        verify_sha256(&path, spec.sha256).unwrap();
        assert!(matches!(
            check_file(&path, ABC, None),
            Err(ModelError::Checksum { .. })
        ));
    }

    /// Overwrites the start of a file in place (same inode, same size).
    trait WriteAtStart {
        fn write_all_at_start(&self, bytes: &[u8]);
    }

    impl WriteAtStart for File {
        fn write_all_at_start(&self, bytes: &[u8]) {
            let mut f = self;
            io::Seek::seek(&mut f, io::SeekFrom::Start(0)).unwrap();
            f.write_all(bytes).unwrap();
        }
    }

    #[test]
    fn a_change_in_the_tick_of_the_stamp_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        fs::write(&path, b"abc").unwrap();
        // Stamp and rewrite at once, many times: the rewrite must never pass as stamped.
        for _ in 0..50 {
            fs::write(&path, b"abc").unwrap();
            verify_sha256(&path, ABC).unwrap();
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at_start(b"abd");
            drop(f);
            assert!(check_file(&path, ABC, Some(3)).is_err());
        }
    }

    #[test]
    fn verify_always_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        fs::write(&f, b"abc").unwrap();
        let start = hashes();
        verify_sha256(&f, ABC).unwrap();
        verify_sha256(&f, ABC).unwrap();
        assert_eq!(hashes(), start + 2);
        let err = verify_sha256(&f, &"0".repeat(64)).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }));
        assert!(err.to_string().contains("refusing"));
    }

    #[test]
    fn a_mismatch_is_refused_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.bin");
        fs::write(&target, b"old").unwrap();
        let err = write_verified(&target, Some(ABC), |w| {
            w.write_all(b"abd").map_err(|e| ModelError::io(&target, e))
        })
        .unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
        assert_eq!(
            fs::read(&target).unwrap(),
            b"old",
            "the old file is untouched"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );

        let start = hashes();
        let sha = write_verified(&target, Some(ABC), |w| {
            w.write_all(b"a")
                .and_then(|()| w.write_all(b"bc"))
                .map_err(|e| ModelError::io(&target, e))
        })
        .unwrap();
        assert_eq!(sha, ABC);
        assert_eq!(fs::read(&target).unwrap(), b"abc");
        assert_eq!(hashes(), start, "verified while written, not read back");
        assert!(stamp_path(&target).is_file());
        check_file(&target, ABC, Some(3)).unwrap();

        // Without a pin: written, digest returned, no stamp.
        let other = dir.path().join("o.bin");
        let sha = write_verified(&other, None, |w| {
            w.write_all(b"abc").map_err(|e| ModelError::io(&other, e))
        })
        .unwrap();
        assert_eq!(sha, ABC);
        assert!(!stamp_path(&other).exists());
    }
}
