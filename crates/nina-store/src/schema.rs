//! The `session.json` schema, its validation and its versions.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::names::{is_safe_id, is_safe_relative};

/// Identifier of the document type, written into every `session.json`.
pub const SCHEMA: &str = "nina.session";
/// The schema version this code writes. Older versions are upgraded on load ([`Session::from_json`]).
pub const CURRENT_VERSION: u64 = 1;

/// A guild or a channel: its Discord id and, for people, its name at recording time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// Discord snowflake (0 for recordings that did not come from Discord).
    pub id: u64,
    /// Name, if known.
    #[serde(default)]
    pub name: Option<String>,
}

/// Someone heard in the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Discord user id: names their stream and their audio folder.
    pub user_id: u64,
    /// Display name at recording time (never used in file names).
    #[serde(default)]
    pub display_name: Option<String>,
    /// When they were in the channel, on the session clock (empty when not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<Presence>,
}

/// One stay of a participant in the voice channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Joined, seconds on the session clock.
    pub joined: f64,
    /// Left, seconds; `None` while still there (or when the recording ended first).
    #[serde(default)]
    pub left: Option<f64>,
}

/// One user's archival track: their Opus packets as received, on the session clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackRecord {
    /// The user.
    pub user_id: u64,
    /// The Ogg Opus file, relative to the session directory ([`track_file`]).
    pub file: String,
    /// Channels declared in the file.
    pub channels: u16,
    /// Seconds on the session clock the track covers (from the session start).
    pub duration: f64,
}

/// The file of a user's archival track: `tracks/<user_id>.opus`.
pub fn track_file(user_id: u64) -> String {
    format!("tracks/{user_id}.opus")
}

/// A stretch of the session where audio was lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The user whose audio was lost; `None`: the whole connection.
    #[serde(default)]
    pub user_id: Option<u64>,
    /// Why (`voice reconnect`, `packet loss`, ...).
    pub reason: String,
}

/// DAVE (Discord's end-to-end encryption of voice) in a live recording, as the recorder saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaveRecord {
    /// Protocol version at the end (0: transport encryption only, 1: DAVE).
    pub protocol_version: u16,
    /// The last MLS epoch the recorder moved to.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Epochs the recorder went through (each join, leave or start-over in the call).
    pub epoch_changes: u32,
    /// Commits or welcomes the recorder could not process (each followed by a start-over).
    pub invalid_commits: u32,
    /// Proposals the recorder refused.
    #[serde(default)]
    pub proposal_errors: u32,
    /// Packets that failed DAVE decryption as the recorder logged them (their audio is lost).
    pub decrypt_failures: u64,
    /// Packets senders numbered that never reached the recorder, not even as a reported loss
    /// (under DAVE mostly packets that could not be decrypted, which are dropped unlogged).
    #[serde(default)]
    pub unseen_packets: u64,
    /// Times the recorder left and joined the channel again to get new DAVE state.
    pub rejoins: u32,
    /// Packets estimated lost at the start of streams because the recorder had no key for
    /// them yet (audio sent before its keys were ready).
    #[serde(default)]
    pub missed_at_start: u64,
    /// Voiced frames received end-to-end encrypted, and under transport encryption only (a
    /// downgrade shows here).
    #[serde(default)]
    pub e2ee_frames: u64,
    /// See [`Self::e2ee_frames`].
    #[serde(default)]
    pub plain_frames: u64,
    /// Audio lost per user (users who lost none are absent), by user id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<DaveUserLoss>,
}

/// Audio of one user that never reached the recorder under DAVE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaveUserLoss {
    /// Discord user id.
    pub user_id: u64,
    /// Packets that never arrived (holes in the sender's sequence numbers): mostly packets
    /// that could not be decrypted.
    pub unseen_packets: u64,
    /// Packets estimated lost at the start of the user's stream (no key for them yet).
    pub missed_at_start: u64,
}

/// The program that recorded the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorder {
    /// Its name (`nina-collector`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether it decoded and segmented live (false: raw mode, archival tracks only).
    pub decode: bool,
    /// Its configuration, as it serialises it.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// One utterance of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceRecord {
    /// The stream (user) it came from.
    pub user_id: u64,
    /// Position within the stream.
    pub seq: u64,
    /// Start of the audio, seconds on the session clock.
    pub start: f64,
    /// End of the audio, seconds.
    pub end: f64,
    /// Where the detector heard speech start.
    pub speech_start: f64,
    /// Where the detector heard speech end.
    pub speech_end: f64,
    /// Cut at the maximum length rather than ended by silence.
    #[serde(default)]
    pub cut: bool,
    /// The WAV file, relative to the session directory (`audio/<user_id>/...`).
    pub file: String,
    /// Frames per second of the file.
    pub sample_rate: u32,
    /// Channels of the file.
    pub channels: u16,
}

/// A processing step applied to the session: what ran, with which options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processing {
    /// `segment`, `transcribe`, `diarize`.
    pub step: String,
    /// The model or algorithm (`whisper-base (ggml-base)`, `silero-vad-6.2.3`).
    pub name: String,
    /// sha256 of the model file, if any.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The options used, as the step serialises them.
    #[serde(default)]
    pub options: serde_json::Value,
    /// A digest of name, sha256 and options: equal keys mean the same work.
    pub key: String,
    /// Items the step could not process, with the reason; a rerun retries only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<Failure>,
}

/// One item (an utterance file) a step could not process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The utterance file, relative to the session directory.
    pub file: String,
    /// Why it failed.
    pub reason: String,
}

/// Everything `session.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The version of the schema the file was written with.
    pub schema_version: u64,
    /// Session id: names the session folder.
    pub id: String,
    /// The guild.
    pub guild: Place,
    /// The voice channel.
    pub channel: Place,
    /// Start, Unix milliseconds (UTC).
    pub started_at_ms: i64,
    /// End, Unix milliseconds, once known.
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    /// People heard.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Utterances of every stream, sorted by start.
    #[serde(default)]
    pub utterances: Vec<UtteranceRecord>,
    /// Steps applied, latest per step.
    #[serde(default)]
    pub processing: Vec<Processing>,
    /// Where the audio came from when it was not recorded live (a file name, no path).
    #[serde(default)]
    pub source: Option<String>,
    /// Archival tracks, one per user (live recordings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackRecord>,
    /// Stretches where audio was lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
    /// The program that recorded the session, if recorded live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorder: Option<Recorder>,
    /// End-to-end encryption of the call, if recorded live from Discord.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dave: Option<DaveRecord>,
}

/// What is wrong in a session document, before knowing its path.
#[derive(Debug)]
pub struct SchemaError {
    field: String,
    reason: String,
    newer: Option<u64>,
}

impl SchemaError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            newer: None,
        }
    }

    /// The error, placed in the file at `path`.
    pub fn at(self, path: &Path) -> StoreError {
        match self.newer {
            Some(found) => StoreError::NewerVersion {
                path: path.to_path_buf(),
                found,
            },
            None => StoreError::Invalid {
                path: path.to_path_buf(),
                field: self.field,
                reason: self.reason,
            },
        }
    }
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for SchemaError {}

impl SchemaError {
    /// The field that is wrong (`utterances[3].file`, `line 4 column 2`).
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl Session {
    /// Parses, upgrades and validates a `session.json` document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SchemaError> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            SchemaError::new(
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| SchemaError::new("(root)", "expected a JSON object"))?;
        if obj.get("schema").and_then(|v| v.as_str()) != Some(SCHEMA) {
            return Err(SchemaError::new("schema", format!("expected \"{SCHEMA}\"")));
        }
        let version = obj
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| SchemaError::new("schema_version", "missing or not a whole number"))?;
        if version > CURRENT_VERSION {
            return Err(SchemaError {
                newer: Some(version),
                ..SchemaError::new("schema_version", "newer than this Nina")
            });
        }
        migrate(&mut value, version)?;
        let session: Session = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            SchemaError::new(field, e.into_inner().to_string())
        })?;
        session.validate()?;
        Ok(session)
    }

    /// Checks everything serde cannot: safe names, consistent times, known speakers.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if !is_safe_id(&self.id) {
            return Err(SchemaError::new(
                "id",
                format!(
                    "{:?} is not a safe session id (1-64 of A-Z a-z 0-9 _ -)",
                    self.id
                ),
            ));
        }
        if let Some(end) = self.ended_at_ms
            && end < self.started_at_ms
        {
            return Err(SchemaError::new("ended_at_ms", "before started_at_ms"));
        }
        let mut users = HashSet::new();
        for (i, p) in self.participants.iter().enumerate() {
            if !users.insert(p.user_id) {
                return Err(SchemaError::new(
                    format!("participants[{i}].user_id"),
                    format!("{} appears twice", p.user_id),
                ));
            }
            if p.display_name.as_ref().is_some_and(|n| n.len() > 4096) {
                return Err(SchemaError::new(
                    format!("participants[{i}].display_name"),
                    "longer than 4096 bytes",
                ));
            }
        }
        let mut files = HashSet::new();
        for (i, u) in self.utterances.iter().enumerate() {
            let f = |name: &str| format!("utterances[{i}].{name}");
            if !users.contains(&u.user_id) {
                return Err(SchemaError::new(
                    f("user_id"),
                    format!("{} is not among the participants", u.user_id),
                ));
            }
            for (name, v) in [
                ("start", u.start),
                ("end", u.end),
                ("speech_start", u.speech_start),
                ("speech_end", u.speech_end),
            ] {
                if !v.is_finite() || v < 0.0 {
                    return Err(SchemaError::new(f(name), format!("{v} is not a time")));
                }
            }
            if u.end < u.start {
                return Err(SchemaError::new(f("end"), "before start"));
            }
            let prefix = format!("audio/{}/", u.user_id);
            if !is_safe_relative(&u.file)
                || !u.file.starts_with(&prefix)
                || !u.file.ends_with(".wav")
            {
                return Err(SchemaError::new(
                    f("file"),
                    format!(
                        "{:?} is not a safe name of the form {prefix}<name>.wav",
                        u.file
                    ),
                ));
            }
            if !files.insert(u.file.as_str()) {
                return Err(SchemaError::new(f("file"), "used by two utterances"));
            }
            if u.sample_rate == 0 || u.sample_rate > 768_000 {
                return Err(SchemaError::new(
                    f("sample_rate"),
                    format!("{} Hz", u.sample_rate),
                ));
            }
            if u.channels == 0 || u.channels > 32 {
                return Err(SchemaError::new(f("channels"), u.channels.to_string()));
            }
        }
        self.validate_recording(&users)?;
        for (i, p) in self.processing.iter().enumerate() {
            if !is_safe_id(&p.key) {
                return Err(SchemaError::new(
                    format!("processing[{i}].key"),
                    "not a safe id",
                ));
            }
        }
        Ok(())
    }

    /// Checks presence, tracks, gaps and the recorder.
    fn validate_recording(&self, users: &HashSet<u64>) -> Result<(), SchemaError> {
        let time = |field: String, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(SchemaError::new(field, format!("{v} is not a time")))
            }
        };
        for (i, p) in self.participants.iter().enumerate() {
            for (j, s) in p.presence.iter().enumerate() {
                let f = |name: &str| format!("participants[{i}].presence[{j}].{name}");
                time(f("joined"), s.joined)?;
                if let Some(left) = s.left {
                    time(f("left"), left)?;
                    if left < s.joined {
                        return Err(SchemaError::new(f("left"), "before joined"));
                    }
                }
            }
        }
        let mut tracked = HashSet::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let f = |name: &str| format!("tracks[{i}].{name}");
            if !users.contains(&t.user_id) {
                return Err(SchemaError::new(
                    f("user_id"),
                    format!("{} is not among the participants", t.user_id),
                ));
            }
            if !tracked.insert(t.user_id) {
                return Err(SchemaError::new(f("user_id"), "has two tracks"));
            }
            if t.file != track_file(t.user_id) || !is_safe_relative(&t.file) {
                return Err(SchemaError::new(
                    f("file"),
                    format!("{:?} is not {:?}", t.file, track_file(t.user_id)),
                ));
            }
            if !(1..=2).contains(&t.channels) {
                return Err(SchemaError::new(f("channels"), t.channels.to_string()));
            }
            time(f("duration"), t.duration)?;
        }
        for (i, g) in self.gaps.iter().enumerate() {
            let f = |name: &str| format!("gaps[{i}].{name}");
            time(f("start"), g.start)?;
            time(f("end"), g.end)?;
            if g.end < g.start {
                return Err(SchemaError::new(f("end"), "before start"));
            }
            if let Some(u) = g.user_id
                && !users.contains(&u)
            {
                return Err(SchemaError::new(
                    f("user_id"),
                    format!("{u} is not among the participants"),
                ));
            }
            if g.reason.len() > 4096 {
                return Err(SchemaError::new(f("reason"), "longer than 4096 bytes"));
            }
        }
        if let Some(r) = &self.recorder
            && (r.name.len() > 256 || r.version.len() > 256)
        {
            return Err(SchemaError::new(
                "recorder",
                "name or version longer than 256 bytes",
            ));
        }
        Ok(())
    }

    /// Whether the session holds archival tracks but no segmentation yet: recorded in raw mode.
    pub fn is_raw(&self) -> bool {
        // "segment" is the pipeline's name of the segmentation step.
        !self.tracks.is_empty()
            && self.utterances.is_empty()
            && self.processing_of("segment").is_none()
    }

    /// An empty session (no participants, utterances or steps yet) of the current schema.
    pub fn new(id: impl Into<String>, guild: Place, channel: Place, started_at_ms: i64) -> Self {
        Self {
            schema: SCHEMA.into(),
            schema_version: CURRENT_VERSION,
            id: id.into(),
            guild,
            channel,
            started_at_ms,
            ended_at_ms: None,
            participants: vec![],
            utterances: vec![],
            processing: vec![],
            source: None,
            tracks: vec![],
            gaps: vec![],
            recorder: None,
            dave: None,
        }
    }

    /// The archival track of `user_id`, if any.
    pub fn track_of(&self, user_id: u64) -> Option<&TrackRecord> {
        self.tracks.iter().find(|t| t.user_id == user_id)
    }

    /// The latest record of `step`, if it was applied.
    pub fn processing_of(&self, step: &str) -> Option<&Processing> {
        self.processing.iter().rev().find(|p| p.step == step)
    }

    /// Records `p`, replacing any earlier record of the same step.
    pub fn set_processing(&mut self, p: Processing) {
        self.processing.retain(|q| q.step != p.step);
        self.processing.push(p);
    }

    /// Seconds of utterance audio.
    pub fn audio_seconds(&self) -> f64 {
        self.utterances.iter().map(|u| u.end - u.start).sum()
    }

    /// The display name of a user, else their id.
    pub fn speaker_label(&self, user_id: u64) -> String {
        self.participants
            .iter()
            .find(|p| p.user_id == user_id)
            .and_then(|p| p.display_name.clone())
            .unwrap_or_else(|| user_id.to_string())
    }
}

/// Upgrades a document of `version` to [`CURRENT_VERSION`], one version at a time.
///
/// Version 1 is the first; fields added since carry `#[serde(default)]` and do not need a new
/// version. A change that renames or reshapes a field bumps [`CURRENT_VERSION`] and adds a step
/// here (`1 => upgrade_1_to_2(value)`), so sessions written by older versions keep loading.
fn migrate(_value: &mut serde_json::Value, version: u64) -> Result<(), SchemaError> {
    match version {
        0 => Err(SchemaError::new("schema_version", "0 is not a version")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;

    fn json(s: &Session) -> serde_json::Value {
        serde_json::to_value(s).unwrap()
    }

    fn err_of(v: serde_json::Value) -> String {
        Session::from_json(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn damaged_documents_name_the_field() {
        let mut v = json(&sample());
        v["utterances"][0]["file"] = "../../../etc/passwd".into();
        assert!(err_of(v).contains("utterances[0].file"));
        let mut v = json(&sample());
        v["utterances"][0]["start"] = "soon".into();
        assert!(err_of(v).contains("utterances[0].start"));
        let mut v = json(&sample());
        v["id"] = "../../x".into();
        assert!(err_of(v).contains("`id`"));
        let mut v = json(&sample());
        v["utterances"][0]["user_id"] = 7.into();
        assert!(err_of(v).contains("utterances[0].user_id"));
        assert!(
            Session::from_json(b"{\"schema\": ")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let mut v = json(&sample());
        v["schema_version"] = 99.into();
        let e = Session::from_json(v.to_string().as_bytes())
            .unwrap_err()
            .at(Path::new("s.json"));
        assert!(
            matches!(e, StoreError::NewerVersion { found: 99, .. }),
            "{e}"
        );
    }

    #[test]
    fn documents_missing_later_fields_or_with_unknown_ones_load() {
        // A minimal version-1 document, as the first writer produced it, plus a field a later
        // Nina might add.
        let v = serde_json::json!({
            "schema": SCHEMA, "schema_version": 1, "id": "s1",
            "guild": {"id": 1}, "channel": {"id": 2}, "started_at_ms": 0,
            "future_field": {"x": 1}
        });
        let s = Session::from_json(v.to_string().as_bytes()).unwrap();
        assert!(s.utterances.is_empty() && s.processing.is_empty());
        assert!(s.tracks.is_empty() && s.gaps.is_empty() && s.recorder.is_none());
        // A document written before tracks, presence, gaps and the recorder existed.
        let old = serde_json::json!({
            "schema": SCHEMA, "schema_version": 1, "id": "file-2b1c0e8d7f3a9c41",
            "guild": {"id": 0, "name": null}, "channel": {"id": 0, "name": null},
            "started_at_ms": 1764057600000i64, "ended_at_ms": 1764057630000i64,
            "participants": [{"user_id": 0, "display_name": "sample"}],
            "utterances": [{"user_id": 0, "seq": 0, "start": 6.584, "end": 30.0,
                "speech_start": 6.784, "speech_end": 30.0, "cut": false,
                "file": "audio/0/000000-0000006584.wav", "sample_rate": 16000, "channels": 1}],
            "processing": [{"step": "segment", "name": "silero-vad-6.2.3", "sha256": "1a",
                "options": {"threshold": 0.5}, "key": "abc"}],
            "source": "sample.wav"
        });
        let s = Session::from_json(old.to_string().as_bytes()).unwrap();
        assert!(s.participants[0].presence.is_empty() && s.tracks.is_empty() && !s.is_raw());
    }

    /// A session recorded live in raw mode: tracks, presence, gaps, the recorder.
    fn recorded() -> Session {
        let mut s = sample();
        s.utterances.clear();
        s.participants[0].presence = vec![
            Presence {
                joined: 0.0,
                left: Some(12.5),
            },
            Presence {
                joined: 30.0,
                left: None,
            },
        ];
        s.tracks = vec![TrackRecord {
            user_id: 42,
            file: track_file(42),
            channels: 2,
            duration: 100.0,
        }];
        s.gaps = vec![
            Gap {
                start: 5.0,
                end: 6.5,
                user_id: None,
                reason: "voice reconnect".into(),
            },
            Gap {
                start: 8.0,
                end: 8.2,
                user_id: Some(42),
                reason: "packet loss".into(),
            },
        ];
        s.recorder = Some(Recorder {
            name: "nina-collector".into(),
            version: "0.1.0".into(),
            decode: false,
            config: serde_json::json!({"raw": true}),
        });
        s
    }

    #[test]
    fn recordings_round_trip_and_are_validated() {
        let s = recorded();
        assert!(s.is_raw());
        assert_eq!(s.track_of(42).unwrap().file, "tracks/42.opus");
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(Session::from_json(&bytes).unwrap(), s);
        // Fields never set are not written, so a plain session's document does not change.
        let plain = serde_json::to_value(sample()).unwrap();
        for k in ["tracks", "gaps", "recorder"] {
            assert!(plain.get(k).is_none(), "{k}");
        }
        assert!(plain["participants"][0].get("presence").is_none());
        let bad = |f: &dyn Fn(&mut serde_json::Value), field: &str| {
            let mut v = json(&recorded());
            f(&mut v);
            let e = err_of(v);
            assert!(e.contains(field), "{field}: {e}");
        };
        bad(
            &|v| v["tracks"][0]["file"] = "../42.opus".into(),
            "tracks[0].file",
        );
        bad(
            &|v| v["tracks"][0]["file"] = "tracks/43.opus".into(),
            "tracks[0].file",
        );
        bad(
            &|v| v["tracks"][0]["user_id"] = 7.into(),
            "tracks[0].user_id",
        );
        bad(
            &|v| v["tracks"][0]["channels"] = 0.into(),
            "tracks[0].channels",
        );
        bad(
            &|v| v["tracks"][0]["duration"] = (-1.0).into(),
            "tracks[0].duration",
        );
        bad(
            &|v| {
                let t = v["tracks"][0].clone();
                v["tracks"].as_array_mut().unwrap().push(t);
            },
            "tracks[1].user_id",
        );
        bad(&|v| v["gaps"][1]["user_id"] = 7.into(), "gaps[1].user_id");
        bad(&|v| v["gaps"][0]["end"] = 1.0.into(), "gaps[0].end");
        bad(
            &|v| v["participants"][0]["presence"][0]["left"] = (-3.0).into(),
            "participants[0].presence[0].left",
        );
        bad(
            &|v| v["participants"][0]["presence"][1]["joined"] = "later".into(),
            "participants[0].presence[1].joined",
        );
        bad(
            &|v| v["recorder"]["decode"] = "no".into(),
            "recorder.decode",
        );
    }

    #[test]
    fn processing_is_replaced_per_step() {
        let mut s = sample();
        let p = |key: &str| Processing {
            step: "transcribe".into(),
            name: "m".into(),
            sha256: None,
            options: serde_json::Value::Null,
            key: key.into(),
            failed: vec![],
        };
        s.set_processing(p("a"));
        s.set_processing(p("b"));
        assert_eq!(s.processing.len(), 1);
        assert_eq!(s.processing_of("transcribe").unwrap().key, "b");
        assert_eq!(s.speaker_label(42), "Robert'); DROP TABLE--/..");
        assert_eq!(s.speaker_label(7), "7");
    }

    #[test]
    fn schema_errors_are_errors() {
        let e: Box<dyn std::error::Error> = Box::new(Session::from_json(b"[]").unwrap_err());
        assert!(e.to_string().contains("(root)"));
    }

    proptest::proptest! {
        #[test]
        fn mutated_documents_never_panic(
            pos in 0usize..2000, byte in proptest::num::u8::ANY, cut in 0usize..2000,
        ) {
            let mut bytes = serde_json::to_vec_pretty(&sample()).unwrap();
            let n = bytes.len();
            bytes[pos % n] = byte;
            bytes.truncate(n - cut % n);
            let _ = Session::from_json(&bytes);
        }

        #[test]
        fn any_text_never_panics(s in ".{0,300}") {
            let _ = Session::from_json(s.as_bytes());
        }
    }
}
