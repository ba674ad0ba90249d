//! `reprocess forget`: one user's data out of every session, voiceprint file and the index;
//! and the file removal `prune` shares.
//!
//! A session that holds the user is rewritten under its lock, derived files first and
//! `session.json` (the commit point) next, and only then is their audio deleted: a run killed
//! on the way leaves a session that still names the user or still holds their audio, and the
//! next run finishes the work. Sessions that do not hold the user are not opened at all (their
//! bytes stay the same).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use nina_store::{Session, SessionDir, Store, StoreError, TRACKS_DIR, WORK_DIR};
use serde_json::Value;

/// What a removal freed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Freed {
    /// Files removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl Freed {
    fn remove(&mut self, path: &Path) -> anyhow::Result<bool> {
        let len = std::fs::symlink_metadata(path).map(|m| m.len()).ok();
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.files += 1;
                self.bytes += len.unwrap_or(0);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// The mix of every track (it holds every voice).
const MIX_WAV: &str = "mix.wav";

/// Removes audio of the session in `dir` (held locked by the caller): of every user, or of
/// `user` only: utterance WAVs (`audio/<user>/*.wav`), archival tracks (`tracks/<user>.opus`),
/// and `mix.wav` (it holds every voice). Only those names are touched.
pub fn remove_audio(dir: &SessionDir, s: &Session, user: Option<u64>) -> anyhow::Result<Freed> {
    let mut freed = Freed::default();
    let root = dir.root();
    let mut users: BTreeSet<u64> = s
        .utterances
        .iter()
        .map(|u| u.user_id)
        .chain(s.tracks.iter().map(|t| t.user_id))
        .chain(s.participants.iter().map(|p| p.user_id))
        .collect();
    if let Ok(entries) = std::fs::read_dir(root.join("audio")) {
        users.extend(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok()),
        );
    }
    if let Some(u) = user {
        users.retain(|x| *x == u);
    }
    for u in &s.utterances {
        if users.contains(&u.user_id) {
            freed.remove(&dir.file(&u.file)?)?;
        }
    }
    for u in &users {
        let folder = root.join("audio").join(u.to_string());
        if let Ok(entries) = std::fs::read_dir(&folder) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = name.ends_with(".wav") || nina_fs::is_temp_name(&name);
                if ours && e.file_type().is_ok_and(|t| t.is_file()) {
                    freed.remove(&e.path())?;
                }
            }
        }
        let _ = std::fs::remove_dir(&folder); // only when empty
        freed.remove(&root.join(nina_store::track_file(*u)))?;
        // Waveform peaks are drawn from the user's voice: they go with it.
        freed.remove(&root.join(nina_store::peaks::peaks_file(*u)))?;
    }
    let _ = std::fs::remove_dir(root.join("audio"));
    let _ = std::fs::remove_dir(root.join(TRACKS_DIR));
    let _ = std::fs::remove_dir(root.join(nina_store::peaks::PEAKS_DIR));
    freed.remove(&root.join(MIX_WAV))?;
    Ok(freed)
}

/// Removes a whole session (held locked by the caller): Nina's files only; the directory goes
/// when nothing else is left in it. Returns the bytes freed beside the audio.
pub fn remove_session(dir: &SessionDir) -> anyhow::Result<u64> {
    let mut freed = Freed::default();
    let root = dir.root();
    for name in [
        nina_store::TRANSCRIPT_JSON,
        nina_store::TRANSCRIPT_SRT,
        nina_store::TRANSCRIPT_VTT,
        nina_store::TRANSCRIPT_TXT,
        nina_store::DIARIZATION_RTTM,
        nina_index::DIARIZATION_JSON,
        MIX_WAV,
    ] {
        freed.remove(&root.join(name))?;
    }
    let work = root.join(WORK_DIR);
    if work.is_dir() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    freed.remove(&root.join(nina_store::SESSION_JSON))?;
    freed.remove(&root.join(nina_store::LOCK_FILE))?;
    let _ = std::fs::remove_dir(root);
    Ok(freed.bytes)
}

/// Whether the session in `dir` holds anything of `user`.
fn holds(dir: &SessionDir, s: &Session, user: u64) -> bool {
    let root = dir.root();
    s.participants.iter().any(|p| p.user_id == user)
        || s.utterances.iter().any(|u| u.user_id == user)
        || s.tracks.iter().any(|t| t.user_id == user)
        || s.gaps.iter().any(|g| g.user_id == Some(user))
        || s.dave
            .as_ref()
            .is_some_and(|d| d.users.iter().any(|u| u.user_id == user))
        || root.join("audio").join(user.to_string()).exists()
        || root.join(nina_store::track_file(user)).exists()
        || root.join(nina_store::peaks::peaks_file(user)).exists()
        || read_json(&root.join(nina_index::DIARIZATION_JSON))
            .ok()
            .flatten()
            .is_some_and(|d| {
                d["speakers"].as_array().is_some_and(|sp| {
                    sp.iter().any(|x| {
                        x["user_id"].as_u64() == Some(user)
                            || x["identity"]["user_id"].as_u64() == Some(user)
                    })
                })
            })
}

fn read_json(path: &Path) -> anyhow::Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => {
            Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{} is damaged", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_json(dir: &SessionDir, name: &str, v: &Value) -> anyhow::Result<()> {
    dir.write(name, serde_json::to_string_pretty(v)?.as_bytes())?;
    Ok(())
}

/// What was removed from one session.
#[derive(Debug, Default)]
struct SessionReport {
    utterances: usize,
    segments: usize,
    speakers: usize,
    renamed: usize,
    freed: Freed,
}

/// Rewrites the session in `dir` without `user`; the caller holds its lock and passes the
/// session as loaded under it.
fn erase_session(dir: &SessionDir, mut s: Session, user: u64) -> anyhow::Result<SessionReport> {
    let mut r = SessionReport::default();
    let root = dir.root().to_path_buf();
    let label = s.speaker_label(user);
    let labels = nina_index::stream_labels(&s);
    let theirs_label = labels.get(&label).is_some_and(|u| u.contains(&user));
    let shared = labels.get(&label).is_some_and(|u| u.len() > 1);
    let belongs = |speaker: Option<&str>, start: f64, end: f64| -> bool {
        if !theirs_label || speaker != Some(label.as_str()) {
            return false;
        }
        !shared
            || nina_index::utterance_of(&s, &labels, &label, start, end)
                .is_some_and(|i| s.utterances[i].user_id == user)
    };
    let files: BTreeSet<String> = s
        .utterances
        .iter()
        .filter(|u| u.user_id == user)
        .map(|u| u.file.clone())
        .collect();
    // transcript.json: their segments and dropped segments go.
    let mut kept_index: BTreeMap<usize, usize> = BTreeMap::new();
    let transcript = read_json(&root.join(nina_store::TRANSCRIPT_JSON))?;
    let transcript = transcript.map(|mut t| {
        if let Some(segs) = t["segments"].as_array_mut() {
            let old = std::mem::take(segs);
            for (i, seg) in old.into_iter().enumerate() {
                let (a, b) = (
                    seg["start"].as_f64().unwrap_or(0.0),
                    seg["end"].as_f64().unwrap_or(0.0),
                );
                if belongs(seg["speaker"].as_str(), a, b) {
                    r.segments += 1;
                } else {
                    kept_index.insert(i, segs.len());
                    segs.push(seg);
                }
            }
        }
        if let Some(d) = t["dropped"].as_array_mut() {
            d.retain(|x| {
                !belongs(
                    x["speaker"].as_str(),
                    x["segment"]["start"].as_f64().unwrap_or(0.0),
                    x["segment"]["end"].as_f64().unwrap_or(0.0),
                )
            });
        }
        t
    });
    // diarization.json / .rttm: their stream's speakers go; speakers of other streams named
    // after their voiceprint lose that name.
    let mut names: BTreeMap<String, Option<String>> = BTreeMap::new();
    let diarization = read_json(&root.join(nina_index::DIARIZATION_JSON))?;
    let diarization = diarization.map(|mut d| {
        let mut anon = 0;
        if let Some(sp) = d["speakers"].as_array_mut() {
            let old = std::mem::take(sp);
            for mut x in old {
                let name = x["name"].as_str().unwrap_or_default().to_string();
                if x["user_id"].as_u64() == Some(user) {
                    names.insert(name, None);
                    r.speakers += 1;
                    continue;
                }
                if x["identity"]["user_id"].as_u64() == Some(user) {
                    anon += 1;
                    let new = format!("anonymous_{anon}");
                    names.insert(name, Some(new.clone()));
                    x["name"] = Value::String(new);
                    x["identity"] = Value::Null;
                    r.renamed += 1;
                }
                sp.push(x);
            }
        }
        let rename = |v: &mut Value| -> bool {
            // false: the speaker is removed.
            if let Some(n) = v.as_str().map(str::to_string)
                && let Some(to) = names.get(&n)
            {
                match to {
                    Some(t) => *v = Value::String(t.clone()),
                    None => return false,
                }
            }
            true
        };
        if let Some(turns) = d["turns"].as_array_mut() {
            turns.retain_mut(|t| rename(&mut t["speaker"]));
        }
        if let Some(ov) = d["overlaps"].as_array_mut() {
            ov.retain_mut(|o| {
                o["speakers"]
                    .as_array_mut()
                    .is_none_or(|sp| sp.iter_mut().all(&rename))
            });
        }
        if let Some(segs) = d["segments"].as_array_mut() {
            segs.retain_mut(|e| {
                let Some(new) = e["index"]
                    .as_u64()
                    .and_then(|i| kept_index.get(&(i as usize)))
                else {
                    return false;
                };
                e["index"] = Value::from(*new as u64);
                if !rename(&mut e["speaker"]) {
                    e["speaker"] = Value::Null;
                }
                if let Some(words) = e["words"].as_array_mut() {
                    for w in words {
                        if !rename(&mut w["speaker"]) {
                            w["speaker"] = Value::Null;
                        }
                    }
                }
                true
            });
        }
        d
    });
    // Derived files first, then session.json, then the audio.
    if let Some(t) = &transcript {
        write_json(dir, nina_store::TRANSCRIPT_JSON, t)?;
        render_transcripts(dir, t, diarization.as_ref())?;
    }
    if let Some(d) = &diarization {
        write_json(dir, nina_index::DIARIZATION_JSON, d)?;
    }
    let rttm = root.join(nina_store::DIARIZATION_RTTM);
    if let Ok(text) = std::fs::read_to_string(&rttm) {
        let mut out = String::new();
        for line in text.lines() {
            let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
            if let Some(sp) = f.get_mut(7)
                && let Some(to) = names.get(sp.as_str())
            {
                match to {
                    Some(t) => *sp = t.clone(),
                    None => continue,
                }
            }
            out.push_str(&f.join(" "));
            out.push('\n');
        }
        dir.write(nina_store::DIARIZATION_RTTM, out.as_bytes())?;
    }
    let before = s.clone();
    r.utterances = files.len();
    s.participants.retain(|p| p.user_id != user);
    s.utterances.retain(|u| u.user_id != user);
    s.tracks.retain(|t| t.user_id != user);
    s.gaps.retain(|g| g.user_id != Some(user));
    if let Some(d) = s.dave.as_mut() {
        d.users.retain(|u| u.user_id != user);
    }
    let prefix = format!("audio/{user}/");
    for p in &mut s.processing {
        p.failed
            .retain(|f| !files.contains(&f.file) && !f.file.starts_with(&prefix));
    }
    if s != before {
        dir.save(&s)?;
    }
    r.freed = remove_audio(dir, &before, Some(user))?;
    // Intermediate results named after their utterances (`<user>_<file>.json`).
    let work = root.join(WORK_DIR);
    if let Ok(steps) = std::fs::read_dir(&work) {
        let start = format!("{user}_");
        for step in steps.flatten() {
            for f in std::fs::read_dir(step.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.file_name().to_string_lossy().starts_with(&start) {
                    r.freed.remove(&f.path())?;
                }
            }
        }
    }
    Ok(r)
}

/// Writes `transcript.{srt,vtt,txt}` from a transcript, with the diarized speaker names the
/// diarization step gives them (a speaker named after a voiceprint, or one of several in a
/// stream; else the stream's label).
fn render_transcripts(dir: &SessionDir, t: &Value, d: Option<&Value>) -> anyhow::Result<()> {
    let mut doc = nina_transcribe::TranscriptDocument::from_json(&t.to_string())
        .context("transcript.json")?;
    if let Some(d) = d {
        let speakers = d["speakers"].as_array().cloned().unwrap_or_default();
        let per_stream = |user: Option<u64>| {
            speakers
                .iter()
                .filter(|x| x["user_id"].as_u64() == user)
                .count()
        };
        for e in d["segments"].as_array().into_iter().flatten() {
            let (Some(i), Some(name)) = (e["index"].as_u64(), e["speaker"].as_str()) else {
                continue;
            };
            let Some(sp) = speakers.iter().find(|x| x["name"].as_str() == Some(name)) else {
                continue;
            };
            let named = !sp["identity"].is_null() || per_stream(sp["user_id"].as_u64()) > 1;
            if named && let Some(seg) = doc.segments.get_mut(i as usize) {
                seg.speaker = name.to_string();
            }
        }
    }
    dir.write(nina_store::TRANSCRIPT_SRT, doc.to_srt().as_bytes())?;
    dir.write(nina_store::TRANSCRIPT_VTT, doc.to_vtt().as_bytes())?;
    dir.write(nina_store::TRANSCRIPT_TXT, doc.to_text().as_bytes())?;
    Ok(())
}

/// `reprocess forget --user ID [--guild ID] DATA`.
pub fn forget(data: &Path, user: u64, guild: Option<u64>) -> anyhow::Result<()> {
    let store = Store::new(data);
    let mut busy = 0;
    let mut changed = Vec::new();
    let (mut utterances, mut segments, mut files, mut bytes) = (0, 0, 0, 0u64);
    for dir in store.sessions().context("listing sessions")? {
        let s = match dir.load() {
            Ok(s) => s,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{} cannot be read, so it cannot be checked for user {user}; repair it and run again",
                    dir.root().display()
                )));
            }
        };
        if guild.is_some_and(|g| g != s.guild.id) || !holds(&dir, &s, user) {
            continue;
        }
        let (_lock, s) = match dir.open() {
            Ok(x) => x,
            Err(StoreError::Locked(_)) => {
                eprintln!(
                    "in use, not changed (run forget again when it has finished): {}",
                    dir.root().display()
                );
                busy += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let r = erase_session(&dir, s, user)
            .with_context(|| format!("erasing user {user} from {}", dir.root().display()))?;
        println!(
            "{}: {} utterance(s), {} transcript segment(s), {} diarized speaker(s) removed, {} renamed; {} file(s), {:.1} MB deleted",
            dir.root().display(),
            r.utterances,
            r.segments,
            r.speakers,
            r.renamed,
            r.freed.files,
            r.freed.bytes as f64 / 1e6
        );
        utterances += r.utterances;
        segments += r.segments;
        files += r.freed.files;
        bytes += r.freed.bytes;
        changed.push(dir);
    }
    // Voiceprints, per guild.
    let guilds: Vec<u64> = match guild {
        Some(g) => vec![g],
        None => std::fs::read_dir(data)
            .with_context(|| format!("reading {}", data.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
            .collect(),
    };
    let mut prints = 0;
    for g in guilds {
        let mut v = nina_store::VoicePrints::load(data, g)
            .with_context(|| format!("voiceprints of guild {g}"))?;
        let n = v.forget(user);
        if n > 0 {
            v.save().context("saving the voiceprints")?;
            println!("guild {g}: {n} voiceprint(s) deleted");
            prints += n;
        }
    }
    // The index.
    if data.join(nina_index::INDEX_FILE).is_file() {
        let mut index = nina_index::Index::open(data).context("opening the index")?;
        index.sync(&mut |_, _| {}).context("updating the index")?;
        index.purge().context("compacting the index")?;
        let left = index.rows_of_user(user)?;
        println!("index: {left} row(s) left naming user {user}");
    }
    eprintln!(
        "user {user}: {} session(s) rewritten, {utterances} utterance(s), {segments} transcript segment(s), {prints} voiceprint(s), {files} file(s) ({:.1} MB) removed",
        changed.len(),
        bytes as f64 / 1e6
    );
    if busy > 0 {
        return Err(crate::Busy(busy).into());
    }
    Ok(())
}
