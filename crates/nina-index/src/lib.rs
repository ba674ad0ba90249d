//! Nina's search index: a SQLite database (`<data>/index.sqlite`) of sessions, participants,
//! utterances, transcript segments and their words, diarized speakers and the voiceprints they
//! matched, languages and the models that made it all, with a full-text index (FTS5, tokenizer
//! `unicode61 remove_diacritics 2`: case and accents do not matter).
//!
//! The session directories stay the source of truth: [`Index::rebuild`] makes the index again
//! from them, [`Index::update_session`] replaces one session's rows after a writer changed it.
//! The database runs in WAL mode: readers ([`Index::open_read_only`]) never block the one
//! writer, and a writer that finds another writing gives up after its busy timeout
//! ([`Index::set_busy_timeout`]) instead of waiting. See `docs/index.md`.

pub mod query;
mod read;
mod search;

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nina_store::{SESSION_JSON, SessionDir, Store, StoreError, TRANSCRIPT_JSON, WORK_DIR};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use query::{Query, QueryError, Term, format_time, parse_time};
pub use read::{
    DIARIZATION_JSON, LIVE_WORK, ModelRow, SegmentRow, SessionData, SpeakerRow, WordRow,
    stream_labels, utterance_of,
};
pub use search::{AudioRef, CANDIDATES, Filter, Hit, HitSession, UtteranceItem};

/// The index file, in the data directory.
pub const INDEX_FILE: &str = "index.sqlite";
/// Version of the database layout; an index of another version is rebuilt.
pub const SCHEMA_VERSION: i64 = 1;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed.
    #[error("index database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A session could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A transcript or diarization document cannot be read.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The session is not inside the index's data directory.
    #[error(
        "{0} is not a session directory of the data directory (<data>/<guild>/<channel>/<date>/<id>)"
    )]
    Outside(PathBuf),
    /// No index yet.
    #[error("{0} holds no index yet: run `reprocess index` on the data directory")]
    Missing(PathBuf),
    /// Another process is writing the index.
    #[error("the index is being written by another process; try again")]
    Busy,
    /// A query that cannot be used.
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl IndexError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether another process holds the index for writing.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Busy => true,
            Self::Sql(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL UNIQUE,
  session_id TEXT NOT NULL,
  guild INTEGER NOT NULL,
  guild_name TEXT,
  channel INTEGER NOT NULL,
  channel_name TEXT,
  started_at_ms INTEGER NOT NULL,
  ended_at_ms INTEGER,
  source TEXT,
  fingerprint TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_place ON sessions(guild, channel, started_at_ms);
CREATE TABLE IF NOT EXISTS participants(
  session INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  display_name TEXT,
  PRIMARY KEY(session, user_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS participants_user ON participants(user_id);
CREATE TABLE IF NOT EXISTS utterances(
  id INTEGER PRIMARY KEY,
  session INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  start REAL NOT NULL,
  end REAL NOT NULL,
  file TEXT NOT NULL,
  sample_rate INTEGER NOT NULL,
  channels INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS utterances_session ON utterances(session);
CREATE INDEX IF NOT EXISTS utterances_user ON utterances(user_id);
CREATE TABLE IF NOT EXISTS segments(
  id INTEGER PRIMARY KEY,
  session INTEGER NOT NULL,
  utterance INTEGER,
  position INTEGER NOT NULL,
  user_id INTEGER,
  stream TEXT NOT NULL,
  speaker TEXT NOT NULL,
  start REAL NOT NULL,
  end REAL NOT NULL,
  text TEXT NOT NULL,
  language TEXT,
  confidence REAL);
CREATE INDEX IF NOT EXISTS segments_session ON segments(session);
CREATE INDEX IF NOT EXISTS segments_utterance ON segments(utterance);
CREATE INDEX IF NOT EXISTS segments_user ON segments(user_id);
CREATE TABLE IF NOT EXISTS words(
  segment INTEGER NOT NULL,
  n INTEGER NOT NULL,
  start REAL NOT NULL,
  end REAL NOT NULL,
  text TEXT NOT NULL,
  probability REAL,
  speaker TEXT,
  PRIMARY KEY(segment, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS speakers(
  session INTEGER NOT NULL,
  name TEXT NOT NULL,
  stream_user INTEGER NOT NULL,
  identity_user INTEGER,
  similarity REAL,
  seconds REAL NOT NULL);
CREATE INDEX IF NOT EXISTS speakers_session ON speakers(session);
CREATE TABLE IF NOT EXISTS models(
  session INTEGER NOT NULL,
  step TEXT NOT NULL,
  name TEXT NOT NULL,
  sha256 TEXT);
CREATE INDEX IF NOT EXISTS models_session ON models(session);
CREATE VIRTUAL TABLE IF NOT EXISTS segments_fts USING fts5(
  text, content='segments', content_rowid='id',
  tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS segments_ai AFTER INSERT ON segments BEGIN
  INSERT INTO segments_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS segments_ad AFTER DELETE ON segments BEGIN
  INSERT INTO segments_fts(segments_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
";

/// What [`Index::update_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The session's rows were replaced (or added).
    Indexed {
        /// Segments now indexed for it.
        segments: usize,
    },
    /// Nothing changed since it was indexed.
    Unchanged,
}

/// What [`Index::rebuild`] or [`Index::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Sessions (re)indexed.
    pub indexed: usize,
    /// Sessions unchanged since they were indexed.
    pub unchanged: usize,
    /// Sessions gone from disk, removed from the index.
    pub removed: usize,
    /// Segments indexed.
    pub segments: usize,
    /// Sessions that could not be read, with why (they are left out).
    pub failed: Vec<(PathBuf, String)>,
}

/// The index of one data directory.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    data: PathBuf,
}

/// A fingerprint of what a session's rows are made from: sizes and modification times of
/// `session.json`, `transcript.json`, `diarization.json` and the live transcripts.
fn fingerprint(dir: &Path) -> String {
    let stamp = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .unwrap_or(Duration::ZERO);
            format!("{}:{}", m.len(), t.as_nanos())
        }
        Err(_) => "-".into(),
    };
    let mut f = String::new();
    for name in [SESSION_JSON, TRANSCRIPT_JSON, DIARIZATION_JSON] {
        f.push_str(&stamp(&dir.join(name)));
        f.push('|');
    }
    let live = dir.join(WORK_DIR).join(LIVE_WORK);
    if let Ok(entries) = std::fs::read_dir(&live) {
        let mut names: Vec<(String, String)> = entries
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    stamp(&e.path()),
                )
            })
            .collect();
        names.sort();
        for (n, s) in names {
            f.push_str(&format!("{n}={s};"));
        }
    }
    f
}

impl Index {
    /// Opens (creating if needed) the index of data directory `data` for writing.
    pub fn open(data: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(data).map_err(|e| IndexError::io(data, e))?;
        let conn = Connection::open(data.join(INDEX_FILE))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Deleted rows (a forgotten user's) are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .unwrap_or(None)
            .and_then(|v| v.parse().ok());
        if version.is_some_and(|v| v != SCHEMA_VERSION) {
            tracing::info!(?version, "index of another layout: dropping it");
            conn.execute_batch(
                "DROP TABLE IF EXISTS segments_fts; DROP TABLE IF EXISTS segments;
                 DROP TABLE IF EXISTS words; DROP TABLE IF EXISTS utterances;
                 DROP TABLE IF EXISTS participants; DROP TABLE IF EXISTS speakers;
                 DROP TABLE IF EXISTS models; DROP TABLE IF EXISTS sessions;
                 DROP TABLE IF EXISTS meta;",
            )?;
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION.to_string()],
        )?;
        // FTS5 removes a deleted row's terms from its index at once (no tombstones).
        let _ = conn.execute(
            "INSERT INTO segments_fts(segments_fts, rank) VALUES ('secure-delete', 1)",
            [],
        );
        Ok(Self {
            conn,
            data: data.to_path_buf(),
        })
    }

    /// Opens the index of `data` for searching only.
    pub fn open_read_only(data: &Path) -> Result<Self, IndexError> {
        let path = data.join(INDEX_FILE);
        if !path.is_file() {
            return Err(IndexError::Missing(data.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self {
            conn,
            data: data.to_path_buf(),
        })
    }

    /// How long a write waits for another writer before failing with a busy error (5 s by
    /// default). The collector sets it short: it never waits on the index.
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), IndexError> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The database connection (read it; write only through this type).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The path of `dir` relative to the data directory, checked to have the layout's depth.
    fn relative(&self, dir: &Path) -> Result<String, IndexError> {
        let rel = dir
            .strip_prefix(&self.data)
            .map_err(|_| IndexError::Outside(dir.to_path_buf()))?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty() || p == "..") {
            return Err(IndexError::Outside(dir.to_path_buf()));
        }
        Ok(parts.join("/"))
    }

    /// Replaces the rows of the session in `dir` (under the data directory) with what its
    /// files hold now; `Unchanged` when they did not change since. A session without a
    /// `session.json` is removed from the index.
    pub fn update_session(&mut self, dir: &SessionDir) -> Result<Update, IndexError> {
        let rel = self.relative(dir.root())?;
        if !dir.exists() {
            self.remove_session(&rel)?;
            return Ok(Update::Indexed { segments: 0 });
        }
        let fp = fingerprint(dir.root());
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT fingerprint FROM sessions WHERE path = ?1",
                [&rel],
                |r| r.get(0),
            )
            .optional()?;
        if known.as_deref() == Some(fp.as_str()) {
            return Ok(Update::Unchanged);
        }
        let data = SessionData::read(dir)?;
        let tx = self.conn.transaction()?;
        delete_session(&tx, &rel)?;
        let n = insert(&tx, &rel, &fp, &data)?;
        tx.commit()?;
        Ok(Update::Indexed { segments: n })
    }

    /// Inserts a session's rows as given, replacing any under the same path (benchmarks and
    /// tests build synthetic indexes with it).
    pub fn insert_data(
        &mut self,
        rel: &str,
        data: &[(String, SessionData)],
    ) -> Result<usize, IndexError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for (path, d) in data {
            let p = if rel.is_empty() {
                path.clone()
            } else {
                format!("{rel}/{path}")
            };
            delete_session(&tx, &p)?;
            n += insert(&tx, &p, "synthetic", d)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Removes a session (by its path relative to the data directory) from the index.
    pub fn remove_session(&mut self, rel: &str) -> Result<(), IndexError> {
        let tx = self.conn.transaction()?;
        delete_session(&tx, rel)?;
        tx.commit()?;
        Ok(())
    }

    /// Brings the index in line with the data directory: sessions changed since they were
    /// indexed are indexed again, new ones added, gone ones removed. `progress` is called with
    /// (done, total) after each session.
    pub fn sync(
        &mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SyncReport, IndexError> {
        self.sync_inner(false, progress)
    }

    /// Drops every row and indexes every session of the data directory again.
    pub fn rebuild(
        &mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SyncReport, IndexError> {
        self.sync_inner(true, progress)
    }

    fn sync_inner(
        &mut self,
        all: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SyncReport, IndexError> {
        let dirs = Store::new(&self.data).sessions()?;
        let mut report = SyncReport::default();
        let known: std::collections::BTreeMap<String, String> = {
            let mut st = self
                .conn
                .prepare("SELECT path, fingerprint FROM sessions")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let tx = self.conn.transaction()?;
        if all {
            for t in [
                "segments",
                "words",
                "utterances",
                "participants",
                "speakers",
                "models",
                "sessions",
            ] {
                tx.execute(&format!("DELETE FROM {t}"), [])?;
            }
            tx.execute(
                "INSERT INTO segments_fts(segments_fts) VALUES ('delete-all')",
                [],
            )?;
        }
        let mut seen = std::collections::BTreeSet::new();
        let total = dirs.len();
        for (i, dir) in dirs.iter().enumerate() {
            let rel = match dir.root().strip_prefix(&self.data) {
                Ok(r) => r
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                Err(_) => continue,
            };
            seen.insert(rel.clone());
            let fp = fingerprint(dir.root());
            if !all && known.get(&rel) == Some(&fp) {
                report.unchanged += 1;
                progress(i + 1, total);
                continue;
            }
            match SessionData::read(dir) {
                Ok(d) => {
                    delete_session(&tx, &rel)?;
                    report.segments += insert(&tx, &rel, &fp, &d)?;
                    report.indexed += 1;
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.root().display(), "not indexed: {e}");
                    delete_session(&tx, &rel)?;
                    report
                        .failed
                        .push((dir.root().to_path_buf(), e.to_string()));
                }
            }
            progress(i + 1, total);
        }
        if !all {
            for rel in known.keys().filter(|k| !seen.contains(*k)) {
                delete_session(&tx, rel)?;
                report.removed += 1;
            }
        }
        tx.commit()?;
        if all {
            self.conn.execute(
                "INSERT INTO segments_fts(segments_fts) VALUES ('optimize')",
                [],
            )?;
        }
        Ok(report)
    }

    /// Compacts the database so that deleted rows leave nothing behind: FTS5 merged into one
    /// segment, free pages dropped (`VACUUM`), the write-ahead log emptied. Run after erasing.
    pub fn purge(&mut self) -> Result<(), IndexError> {
        self.conn.execute(
            "INSERT INTO segments_fts(segments_fts) VALUES ('optimize')",
            [],
        )?;
        self.conn.execute_batch("VACUUM")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Rows of any table that name `user` (as participant, utterance, segment, speaker or
    /// voiceprint identity): 0 once the user is forgotten.
    pub fn rows_of_user(&self, user: u64) -> Result<u64, IndexError> {
        let u = user as i64;
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM participants WHERE user_id = ?1)
                  + (SELECT count(*) FROM utterances WHERE user_id = ?1)
                  + (SELECT count(*) FROM segments WHERE user_id = ?1)
                  + (SELECT count(*) FROM speakers WHERE stream_user = ?1 OR identity_user = ?1)",
            [u],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Counts of the main tables: sessions, utterances, segments, words.
    pub fn counts(&self) -> Result<[u64; 4], IndexError> {
        let mut out = [0u64; 4];
        for (i, t) in ["sessions", "utterances", "segments", "words"]
            .iter()
            .enumerate()
        {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
            out[i] = n as u64;
        }
        Ok(out)
    }
}

fn delete_session(tx: &Connection, rel: &str) -> Result<(), IndexError> {
    let id: Option<i64> = tx
        .query_row("SELECT id FROM sessions WHERE path = ?1", [rel], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(id) = id else { return Ok(()) };
    tx.execute(
        "DELETE FROM words WHERE segment IN (SELECT id FROM segments WHERE session = ?1)",
        [id],
    )?;
    for t in [
        "segments",
        "utterances",
        "participants",
        "speakers",
        "models",
    ] {
        tx.execute(&format!("DELETE FROM {t} WHERE session = ?1"), [id])?;
    }
    tx.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
    Ok(())
}

/// Inserts one session's rows; returns its segments.
fn insert(tx: &Connection, rel: &str, fp: &str, d: &SessionData) -> Result<usize, IndexError> {
    let s = &d.session;
    tx.execute(
        "INSERT INTO sessions(path, session_id, guild, guild_name, channel, channel_name,
           started_at_ms, ended_at_ms, source, fingerprint) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
        params![
            rel,
            s.id,
            s.guild.id as i64,
            s.guild.name,
            s.channel.id as i64,
            s.channel.name,
            s.started_at_ms,
            s.ended_at_ms,
            s.source,
            fp
        ],
    )?;
    let sid = tx.last_insert_rowid();
    let mut st = tx.prepare(
        "INSERT OR REPLACE INTO participants(session, user_id, display_name) VALUES (?1,?2,?3)",
    )?;
    for p in &s.participants {
        st.execute(params![sid, p.user_id as i64, p.display_name])?;
    }
    let mut st = tx.prepare(
        "INSERT INTO utterances(session, user_id, seq, start, end, file, sample_rate, channels)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
    )?;
    let mut utterance_ids = Vec::with_capacity(s.utterances.len());
    for u in &s.utterances {
        st.execute(params![
            sid,
            u.user_id as i64,
            u.seq as i64,
            u.start,
            u.end,
            u.file,
            u.sample_rate,
            u.channels
        ])?;
        utterance_ids.push(tx.last_insert_rowid());
    }
    let mut seg = tx.prepare(
        "INSERT INTO segments(session, utterance, position, user_id, stream, speaker, start, end,
           text, language, confidence) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    )?;
    let mut word = tx.prepare(
        "INSERT INTO words(segment, n, start, end, text, probability, speaker)
         VALUES (?1,?2,?3,?4,?5,?6,?7)",
    )?;
    for g in &d.segments {
        seg.execute(params![
            sid,
            g.utterance.and_then(|i| utterance_ids.get(i)),
            g.position as i64,
            g.user_id.map(|u| u as i64),
            g.stream,
            g.speaker,
            g.start,
            g.end,
            g.text,
            g.language,
            g.confidence
        ])?;
        let gid = tx.last_insert_rowid();
        for (n, w) in g.words.iter().enumerate() {
            word.execute(params![
                gid,
                n as i64,
                w.start,
                w.end,
                w.text,
                w.probability,
                w.speaker
            ])?;
        }
    }
    let mut st = tx.prepare(
        "INSERT INTO speakers(session, name, stream_user, identity_user, similarity, seconds)
         VALUES (?1,?2,?3,?4,?5,?6)",
    )?;
    for sp in &d.speakers {
        st.execute(params![
            sid,
            sp.name,
            sp.stream_user as i64,
            sp.identity.map(|u| u as i64),
            sp.similarity,
            sp.seconds
        ])?;
    }
    let mut st =
        tx.prepare("INSERT INTO models(session, step, name, sha256) VALUES (?1,?2,?3,?4)")?;
    for m in &d.models {
        st.execute(params![sid, m.step, m.name, m.sha256])?;
    }
    Ok(d.segments.len())
}

#[cfg(test)]
mod tests;
