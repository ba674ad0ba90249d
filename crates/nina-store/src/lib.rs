//! Nina's sessions on disk.
//!
//! One directory per recording, `<data>/<guild_id>/<channel_id>/<YYYY-MM-DD>/<session_id>/`,
//! holding `session.json` ([`Session`], a versioned schema), utterance audio under
//! `audio/<user_id>/`, the transcript files and, when diarized, `diarization.rttm`.
//! File and folder names are built from ids and times only; display names live inside JSON.
//! Every write goes through [`nina_fs::write`] (whole files only); [`SessionDir::load`] validates
//! the schema and names the field that is wrong. A process works on a session only while it holds
//! the session's [`SessionLock`], and removes or replaces only files the session owns. Per
//! guild, `<data>/<guild_id>/voiceprints.json` holds the users' [`voiceprints`]. See
//! `docs/store.md`.

pub mod audio;
mod lock;
mod names;
pub mod peaks;
mod schema;
pub mod track;
pub mod voiceprints;

use std::fs;
use std::path::{Path, PathBuf};

pub use audio::{WavAudio, WavEncoding, read_wav, write_wav};
pub use lock::{LOCK_FILE, SessionLock};
pub use names::{
    date_of_unix_ms, is_date, is_numeric_id, is_safe_id, is_safe_relative, utterance_file,
};
pub use schema::{
    CURRENT_VERSION, DaveRecord, DaveUserLoss, Failure, Gap, Participant, Place, Presence,
    Processing, Recorder, SCHEMA, SchemaError, Session, TrackRecord, UtteranceRecord, track_file,
};
pub use track::{
    OPUS_SILENCE, OpusTrack, OpusTrackWriter, TRACK_RATE, TrackPacket, TrackSummary,
    opus_packet_samples, read_opus_track, repair_opus_track,
};
pub use voiceprints::{OPTOUT_JSON, VoicePrint, VoicePrints, opted_out};

/// `session.json`.
pub const SESSION_JSON: &str = "session.json";
/// The transcript in Nina's JSON schema.
pub const TRANSCRIPT_JSON: &str = "transcript.json";
/// SubRip subtitles.
pub const TRANSCRIPT_SRT: &str = "transcript.srt";
/// WebVTT subtitles.
pub const TRANSCRIPT_VTT: &str = "transcript.vtt";
/// Plain text.
pub const TRANSCRIPT_TXT: &str = "transcript.txt";
/// Speaker turns, when diarized.
pub const DIARIZATION_RTTM: &str = "diarization.rttm";
/// Directory of resumable intermediate results (removed once a step completes).
pub const WORK_DIR: &str = ".work";
/// Directory of the archival tracks (`tracks/<user_id>.opus`).
pub const TRACKS_DIR: &str = "tracks";
/// Largest `session.json` accepted.
pub const MAX_SESSION_BYTES: u64 = 64 << 20;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its contents are wrong.
    #[error("{path} is damaged: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file (`utterances[3].file`, or `line 4 column 2`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer Nina.
    #[error(
        "{path}: field `schema_version` is {found}; this Nina reads versions up to {CURRENT_VERSION}: upgrade Nina"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// A name that would not be safe on disk.
    #[error("unsafe name {0:?}: only ids and times may name files")]
    UnsafeName(String),
    /// No session at this path.
    #[error("{0} holds no session.json")]
    NotASession(PathBuf),
    /// The directory exists, is not empty and is not a Nina session: nothing is written there.
    #[error(
        "{0} is not empty and holds no Nina session; refusing to write there (choose a new or empty directory)"
    )]
    NotOurs(PathBuf),
    /// Another process holds the session's lock.
    #[error(
        "{0} is in use by another Nina process (its lock is held); try again when it has finished"
    )]
    Locked(PathBuf),
}

impl From<nina_fs::FsError> for StoreError {
    fn from(e: nina_fs::FsError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this is the disk (or quota) filling up.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. } if matches!(source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
    }
}

/// One session's directory.
#[derive(Debug, Clone)]
pub struct SessionDir {
    root: PathBuf,
}

impl SessionDir {
    /// The session directory at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a `session.json` is present.
    pub fn exists(&self) -> bool {
        self.root.join(SESSION_JSON).is_file()
    }

    /// The path of a file of this session, given relative to it. The name must be relative and
    /// made of safe components only (see [`is_safe_relative`]), so it cannot leave the directory.
    pub fn file(&self, relative: &str) -> Result<PathBuf, StoreError> {
        if !names::is_safe_relative(relative) {
            return Err(StoreError::UnsafeName(relative.to_string()));
        }
        Ok(self.root.join(relative))
    }

    /// Writes a file of this session atomically.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(nina_fs::write(&self.file(relative)?, bytes)?)
    }

    /// Loads and validates `session.json`, upgrading older schema versions.
    pub fn load(&self) -> Result<Session, StoreError> {
        let path = self.root.join(SESSION_JSON);
        let meta = fs::metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotASession(self.root.clone())
            } else {
                StoreError::io(&path, e)
            }
        })?;
        if meta.len() > MAX_SESSION_BYTES {
            return Err(StoreError::Invalid {
                path,
                field: "(file)".into(),
                reason: format!(
                    "{} bytes is more than the {MAX_SESSION_BYTES} accepted",
                    meta.len()
                ),
            });
        }
        let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        Session::from_json(&bytes).map_err(|e| e.at(&path))
    }

    /// Validates and writes `session.json` atomically.
    pub fn save(&self, session: &Session) -> Result<(), StoreError> {
        let path = self.root.join(SESSION_JSON);
        session.validate().map_err(|e| e.at(&path))?;
        let json = serde_json::to_vec_pretty(session).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            field: "(all)".into(),
            reason: e.to_string(),
        })?;
        Ok(nina_fs::write(&path, &json)?)
    }

    /// Whether the directory is missing, empty, or already Nina's (it holds `session.json` or the
    /// lock file a first, interrupted run left).
    fn is_ours_or_empty(&self) -> Result<bool, StoreError> {
        match fs::read_dir(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::io(&self.root, e)),
            Ok(mut entries) => Ok(entries.next().is_none()
                || self.exists()
                || self.root.join(LOCK_FILE).is_file()),
        }
    }

    /// Takes this session for writing a new recording (or resuming one): the directory is created
    /// if missing, refused with [`StoreError::NotOurs`] if it is neither empty nor Nina's, an
    /// existing `session.json` must validate, and then the lock is taken and Nina's leftover
    /// temporary files are removed from the session's own folders. Returns the lock and the
    /// session found, if any.
    pub fn claim(&self) -> Result<(SessionLock, Option<Session>), StoreError> {
        if !self.is_ours_or_empty()? {
            return Err(StoreError::NotOurs(self.root.clone()));
        }
        if self.exists() {
            self.load()?; // validate before touching anything
        }
        fs::create_dir_all(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        let lock = SessionLock::acquire(&self.root)?;
        let session = if self.exists() {
            Some(self.load()?)
        } else {
            None
        };
        self.remove_temp_files()?;
        Ok((lock, session))
    }

    /// Opens an existing session for processing: `session.json` must be present and valid;
    /// then the lock is taken and leftover temporary files are removed from the session's own
    /// folders. Nothing is touched in a directory that is not a session.
    pub fn open(&self) -> Result<(SessionLock, Session), StoreError> {
        self.load()?;
        let lock = SessionLock::acquire(&self.root)?;
        let session = self.load()?; // as it is now that nobody else writes
        self.remove_temp_files()?;
        Ok((lock, session))
    }

    /// Removes Nina's temporary files (never anything else) from the folders a session owns:
    /// its root, `tracks/`, `audio/<user_id>/` and `.work/<step>/`. Returns how many. Call it only while
    /// holding the session's lock.
    pub fn remove_temp_files(&self) -> Result<usize, StoreError> {
        let mut dirs = vec![self.root.clone(), self.root.join(TRACKS_DIR)];
        for (parent, ok) in [
            (
                self.root.join("audio"),
                names::is_numeric_id as fn(&str) -> bool,
            ),
            (self.root.join(WORK_DIR), is_safe_id),
        ] {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            dirs.push(parent.clone());
            for e in entries.flatten() {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && ok(&e.file_name().to_string_lossy()) {
                    dirs.push(e.path());
                }
            }
        }
        let mut removed = 0;
        for d in dirs {
            let n = nina_fs::remove_temp_files(&d)?;
            if n > 0 {
                tracing::info!(dir = %d.display(), n, "removed leftover temporary files");
            }
            removed += n;
        }
        Ok(removed)
    }

    fn work_path(&self, key: &str, name: &str) -> Result<PathBuf, StoreError> {
        if !is_safe_id(key) || !is_safe_id(name) {
            return Err(StoreError::UnsafeName(format!("{key}/{name}")));
        }
        Ok(self
            .root
            .join(WORK_DIR)
            .join(key)
            .join(format!("{name}.json")))
    }

    /// Saves an intermediate result of step `key` (atomically), so an interrupted run resumes.
    pub fn put_work<T: serde::Serialize>(
        &self,
        key: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let path = self.work_path(key, name)?;
        let json = serde_json::to_vec(value).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            field: "(all)".into(),
            reason: e.to_string(),
        })?;
        Ok(nina_fs::write(&path, &json)?)
    }

    /// An intermediate result saved by [`SessionDir::put_work`]; `None` if absent or unreadable
    /// (the work is then done again).
    pub fn get_work<T: serde::de::DeserializeOwned>(&self, key: &str, name: &str) -> Option<T> {
        let path = self.work_path(key, name).ok()?;
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unreadable work file: {e}");
                None
            }
        }
    }

    /// Removes the intermediate results of step `key` (and the work directory once empty).
    pub fn clear_work(&self, key: &str) -> Result<(), StoreError> {
        if !is_safe_id(key) {
            return Err(StoreError::UnsafeName(key.to_string()));
        }
        let dir = self.root.join(WORK_DIR);
        let step = dir.join(key);
        match fs::remove_dir_all(&step) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&step, e)),
        }
        let _ = fs::remove_dir(&dir); // only succeeds when empty
        Ok(())
    }
}

/// The data directory holding every session.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a session: `<guild>/<channel>/<YYYY-MM-DD of started_at>/<id>/`.
    pub fn session_dir(&self, session: &Session) -> Result<SessionDir, StoreError> {
        if !is_safe_id(&session.id) {
            return Err(StoreError::UnsafeName(session.id.clone()));
        }
        Ok(SessionDir::new(
            self.root
                .join(session.guild.id.to_string())
                .join(session.channel.id.to_string())
                .join(date_of_unix_ms(session.started_at_ms))
                .join(&session.id),
        ))
    }

    /// The directory of an existing session (or of one a killed run left without `session.json`)
    /// with this guild, channel and id, on whatever date it was filed under; the earliest date
    /// if several. `None` if there is none.
    pub fn find(
        &self,
        guild: u64,
        channel: u64,
        id: &str,
    ) -> Result<Option<SessionDir>, StoreError> {
        if !is_safe_id(id) {
            return Err(StoreError::UnsafeName(id.to_string()));
        }
        let days = self.root.join(guild.to_string()).join(channel.to_string());
        let entries = match fs::read_dir(&days) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&days, e)),
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| names::is_date(&e.file_name().to_string_lossy()))
            .map(|e| e.path().join(id))
            .filter(|p| p.join(SESSION_JSON).is_file() || p.join(LOCK_FILE).is_file())
            .collect();
        found.sort();
        Ok(found.into_iter().next().map(SessionDir::new))
    }

    /// Every session directory under the data directory, sorted. Only directories named like the
    /// layout (numeric ids, a date, a safe session id) are visited; symbolic links are not followed.
    pub fn sessions(&self) -> Result<Vec<SessionDir>, StoreError> {
        let mut out = Vec::new();
        let levels: [fn(&str) -> bool; 4] = [
            names::is_numeric_id,
            names::is_numeric_id,
            names::is_date,
            is_safe_id,
        ];
        let mut frontier = vec![self.root.clone()];
        for ok in levels {
            let mut next = Vec::new();
            for dir in frontier {
                let entries = fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
                for e in entries {
                    let e = e.map_err(|e| StoreError::io(&dir, e))?;
                    let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    if is_dir && ok(&e.file_name().to_string_lossy()) {
                        next.push(e.path());
                    }
                }
            }
            frontier = next;
        }
        frontier.sort();
        out.extend(
            frontier
                .into_iter()
                .map(SessionDir::new)
                .filter(SessionDir::exists),
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Session {
        Session {
            schema: SCHEMA.into(),
            schema_version: CURRENT_VERSION,
            id: "20240501T120000Z-a1b2".into(),
            guild: Place {
                id: 81384788765712384,
                name: Some("Discord API".into()),
            },
            channel: Place {
                id: 381887113391505410,
                name: Some("../../etc".into()),
            },
            started_at_ms: 1_714_564_800_000,
            ended_at_ms: Some(1_714_564_900_000),
            participants: vec![Participant {
                user_id: 42,
                display_name: Some("Robert'); DROP TABLE--/..".into()),
                presence: vec![],
            }],
            utterances: vec![UtteranceRecord {
                user_id: 42,
                seq: 0,
                start: 1.0,
                end: 2.5,
                speech_start: 1.2,
                speech_end: 2.3,
                cut: false,
                file: utterance_file(42, 0, 1.0, None),
                sample_rate: 48_000,
                channels: 2,
            }],
            processing: vec![],
            source: None,
            tracks: vec![],
            gaps: vec![],
            recorder: None,
            dave: None,
        }
    }

    #[test]
    fn layout_uses_ids_and_dates_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let s = sample();
        let sd = store.session_dir(&s).unwrap();
        assert_eq!(
            sd.root(),
            dir.path()
                .join("81384788765712384/381887113391505410/2024-05-01/20240501T120000Z-a1b2")
        );
        sd.save(&s).unwrap();
        assert_eq!(sd.load().unwrap(), s);
        let found = store.sessions().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].root(), sd.root());
        let mut bad = s.clone();
        bad.id = "../x".into();
        assert!(store.session_dir(&bad).is_err());
    }

    #[test]
    fn files_cannot_escape() {
        let sd = SessionDir::new("/data/s");
        for bad in [
            "../x",
            "/etc/passwd",
            "audio/../../x",
            "a//b",
            "",
            ".hidden",
            "a/./b",
            "a\\b",
        ] {
            assert!(sd.file(bad).is_err(), "{bad}");
        }
        assert!(sd.file("audio/42/000001-0000001000.wav").is_ok());
    }

    #[test]
    fn only_one_process_holds_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path().join("s"));
        let (lock, found) = sd.claim().unwrap();
        assert!(found.is_none());
        sd.save(&sample()).unwrap();
        assert!(matches!(sd.open(), Err(StoreError::Locked(_))));
        assert!(matches!(sd.claim(), Err(StoreError::Locked(_))));
        drop(lock);
        let (_lock, s) = sd.open().unwrap();
        assert_eq!(s, sample());
    }

    #[test]
    fn files_that_are_not_the_sessions_are_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        // A directory of someone's files, with names that look temporary.
        let home = dir.path().join("home");
        fs::create_dir_all(home.join("deep/er")).unwrap();
        fs::write(home.join("deep/er/.notes.tmp"), b"mine").unwrap();
        fs::write(home.join(".x.tmp"), b"mine").unwrap();
        let theirs = nina_fs::temp_path(&home.join("y.json"));
        fs::write(&theirs, b"mine too").unwrap();
        let sd = SessionDir::new(&home);
        assert!(matches!(sd.open(), Err(StoreError::NotASession(_))));
        assert!(matches!(sd.claim(), Err(StoreError::NotOurs(_))));
        assert!(home.join("deep/er/.notes.tmp").exists());
        assert!(home.join(".x.tmp").exists());
        assert!(theirs.exists());
        assert!(!home.join(LOCK_FILE).exists(), "nothing written");

        // In a session, only Nina's temporary names in the session's own folders go.
        let sd = SessionDir::new(dir.path().join("s"));
        let (lock, _) = sd.claim().unwrap();
        sd.save(&sample()).unwrap();
        let leftovers = [
            nina_fs::temp_path(&sd.root().join("session.json")),
            nina_fs::temp_path(&sd.root().join("audio/42/000000-0000001000.wav")),
            nina_fs::temp_path(&sd.root().join(".work/k1/u.json")),
        ];
        let kept = [
            sd.root().join(".notes.tmp"),
            sd.root().join("audio/42/.x.tmp"),
            nina_fs::temp_path(&sd.root().join("other/deeper/a.json")),
        ];
        for p in leftovers.iter().chain(&kept) {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        drop(lock);
        let _lock = sd.open().unwrap();
        for p in &leftovers {
            assert!(!p.exists(), "{} left", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} removed", p.display());
        }
    }

    #[test]
    fn a_directory_left_by_a_killed_first_run_is_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path().join("s"));
        let (lock, _) = sd.claim().unwrap();
        fs::create_dir_all(sd.root().join("audio/0")).unwrap();
        fs::write(sd.root().join("audio/0/000000-0000000000.wav"), b"x").unwrap();
        drop(lock); // killed before session.json
        let (_lock, found) = sd.claim().unwrap();
        assert!(found.is_none());
        let store = Store::new(dir.path().join("data"));
        let mut s = sample();
        let placed = store.session_dir(&s).unwrap();
        assert!(
            store
                .find(s.guild.id, s.channel.id, &s.id)
                .unwrap()
                .is_none()
        );
        placed.claim().unwrap();
        // Found by id whatever the date it was filed under.
        s.started_at_ms += 86_400_000 * 3;
        let found = store
            .find(s.guild.id, s.channel.id, &s.id)
            .unwrap()
            .unwrap();
        assert_eq!(found.root(), placed.root());
    }

    #[test]
    fn work_files_resume_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path());
        sd.put_work("k1", "u0", &vec![1, 2]).unwrap();
        assert_eq!(sd.get_work::<Vec<i32>>("k1", "u0"), Some(vec![1, 2]));
        assert_eq!(sd.get_work::<Vec<i32>>("k1", "u1"), None);
        assert!(sd.put_work("../k", "u0", &1).is_err());
        sd.clear_work("k1").unwrap();
        assert!(!dir.path().join(WORK_DIR).exists());
    }
}
