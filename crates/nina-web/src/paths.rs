//! What the server may read: session directories of the layout under the data directory, and
//! a fixed set of file names inside them. Nothing given by a client is ever joined to a path:
//! a session is found by its id in the index, its stored relative path is checked component by
//! component, no symbolic link is followed, and files inside are picked from a closed list.

use std::path::{Path, PathBuf};

use nina_store::SessionDir;

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Not a session id (`A-Z a-z 0-9 _ -`, 1-64).
    #[error("not a session id")]
    BadId,
    /// Not of the layout `<guild>/<channel>/<YYYY-MM-DD>/<session>`.
    #[error("not a session path")]
    BadLayout,
    /// A component is a symbolic link, or not a directory / regular file.
    #[error("not a plain file or directory")]
    NotPlain,
    /// Does not exist.
    #[error("not found")]
    Missing,
}

/// Checks a session id as a client gives it.
pub fn check_id(id: &str) -> Result<(), PathError> {
    if nina_store::is_safe_id(id) {
        Ok(())
    } else {
        Err(PathError::BadId)
    }
}

/// The session directory at `rel` (as the index stores it) under `data`: exactly the layout's
/// four components, each a real directory (no symbolic link).
pub fn session_dir(data: &Path, rel: &str) -> Result<SessionDir, PathError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [g, c, d, s] = parts.as_slice() else {
        return Err(PathError::BadLayout);
    };
    if !(nina_store::is_numeric_id(g)
        && nina_store::is_numeric_id(c)
        && nina_store::is_date(d)
        && nina_store::is_safe_id(s))
    {
        return Err(PathError::BadLayout);
    }
    let mut p = data.to_path_buf();
    for part in parts {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(PathError::NotPlain),
            Err(_) => return Err(PathError::Missing),
        }
    }
    Ok(SessionDir::new(p))
}

/// Files of a session the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFile {
    /// `mix.wav`.
    Mix,
    /// `tracks/<user>.opus`.
    Track(u64),
    /// `peaks/<user>.dat`.
    Peaks(u64),
    /// `transcript.<ext>` for `txt`, `srt`, `vtt`, `json`.
    Transcript(&'static str),
}

impl SessionFile {
    /// Its path relative to the session directory.
    pub fn relative(&self) -> String {
        match self {
            Self::Mix => "mix.wav".into(),
            Self::Track(u) => nina_store::track_file(*u),
            Self::Peaks(u) => nina_store::peaks::peaks_file(*u),
            Self::Transcript(ext) => format!("transcript.{ext}"),
        }
    }

    /// A transcript format by its extension, from the closed list.
    pub fn transcript(ext: &str) -> Option<Self> {
        ["txt", "srt", "vtt", "json"]
            .into_iter()
            .find(|e| *e == ext)
            .map(Self::Transcript)
    }

    /// Its media type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Mix => "audio/wav",
            Self::Track(_) => "audio/ogg",
            Self::Peaks(_) => "application/octet-stream",
            Self::Transcript("json") => "application/json",
            Self::Transcript("vtt") => "text/vtt; charset=utf-8",
            Self::Transcript(_) => "text/plain; charset=utf-8",
        }
    }
}

/// The path of `f` in `dir` if it is a regular file reached without a symbolic link.
pub fn existing(dir: &SessionDir, f: SessionFile) -> Result<PathBuf, PathError> {
    let rel = f.relative();
    let mut p = dir.root().to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let m = std::fs::symlink_metadata(&p).map_err(|_| PathError::Missing)?;
        let last = i + 1 == parts.len();
        let ok = if last {
            m.file_type().is_file()
        } else {
            m.file_type().is_dir()
        };
        if !ok {
            return Err(PathError::NotPlain);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("1/2/2026-01-02/abc/tracks")).unwrap();
        std::fs::write(t.path().join("1/2/2026-01-02/abc/mix.wav"), b"RIFF").unwrap();
        t
    }

    #[test]
    fn good_path_and_file() {
        let t = tree();
        let d = session_dir(t.path(), "1/2/2026-01-02/abc").unwrap();
        assert!(existing(&d, SessionFile::Mix).is_ok());
        assert_eq!(existing(&d, SessionFile::Track(3)), Err(PathError::Missing));
    }

    #[test]
    fn hostile_paths_are_refused() {
        let t = tree();
        for bad in [
            "..",
            "../1/2/2026-01-02/abc",
            "1/2/2026-01-02/..",
            "1/2/2026-01-02/abc/..",
            "/etc/passwd",
            "1/2/2026-01-02/abc/../../../../etc",
            "1%2F2/2026-01-02/abc",
            "1/2/2026-01-02/a%2e%2e",
            "1/2/2026-01-02/.hidden",
            "1\\2/3/2026-01-02/abc",
            "",
            "1/2/2026-01-02",
            "1/2/2026-01-02/abc/x",
        ] {
            assert!(session_dir(t.path(), bad).is_err(), "{bad}");
        }
        for bad in [
            "..",
            "a/b",
            "%2e%2e",
            "a%2Fb",
            "/abs",
            "",
            "x.y",
            &"a".repeat(65),
        ] {
            assert_eq!(check_id(bad), Err(PathError::BadId), "{bad}");
        }
        assert!(check_id("file-0123abcd").is_ok());
        assert_eq!(SessionFile::transcript("../x"), None);
        assert_eq!(
            SessionFile::transcript("json"),
            Some(SessionFile::Transcript("json"))
        );
    }

    #[test]
    fn symlinks_are_not_followed() {
        let t = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("s")).unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        // A session directory that is a link.
        std::os::unix::fs::symlink(
            outside.path().join("s"),
            t.path().join("1/2/2026-01-02/lnk"),
        )
        .unwrap();
        assert_eq!(
            session_dir(t.path(), "1/2/2026-01-02/lnk").err(),
            Some(PathError::NotPlain)
        );
        // A guild folder that is a link.
        std::os::unix::fs::symlink(outside.path(), t.path().join("9")).unwrap();
        assert_eq!(
            session_dir(t.path(), "9/s/2026-01-02/x").err(),
            Some(PathError::BadLayout)
        );
        std::fs::create_dir_all(outside.path().join("2/2026-01-02/abc")).unwrap();
        assert_eq!(
            session_dir(t.path(), "9/2/2026-01-02/abc").err(),
            Some(PathError::NotPlain)
        );
        // A file inside that is a link.
        let d = session_dir(t.path(), "1/2/2026-01-02/abc").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            d.root().join("tracks/7.opus"),
        )
        .unwrap();
        assert_eq!(
            existing(&d, SessionFile::Track(7)),
            Err(PathError::NotPlain)
        );
        std::fs::remove_file(d.root().join("mix.wav")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.root().join("mix.wav")).unwrap();
        assert_eq!(existing(&d, SessionFile::Mix), Err(PathError::NotPlain));
    }

    proptest! {
        #[test]
        fn any_accepted_path_stays_inside(rel in "[0-9a-z./%\\\\-]{0,40}") {
            let t = tree();
            if let Ok(d) = session_dir(t.path(), &rel) {
                let root = std::fs::canonicalize(d.root()).unwrap();
                prop_assert!(root.starts_with(std::fs::canonicalize(t.path()).unwrap()));
                prop_assert!(!rel.contains(".."));
            }
        }

        #[test]
        fn ids_are_plain(id in "\\PC{0,70}") {
            if check_id(&id).is_ok() {
                prop_assert!(!id.contains('/') && !id.contains('.') && !id.contains('%'));
            }
        }
    }
}
