//! `reprocess index | search | export | prune`: the data directory as a whole, through the
//! search index (`nina-index`). `forget` lives in [`crate::erase`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nina_index::{Filter, Index, IndexError, Query, UtteranceItem};
use nina_store::{SessionDir, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::UsageError;

/// Filters shared by `search` and `export`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only this guild (server) id.
    #[arg(long)]
    pub guild: Option<u64>,
    /// Only this voice channel id.
    #[arg(long)]
    pub channel: Option<u64>,
    /// Only the stream of this user id.
    #[arg(long)]
    pub user: Option<u64>,
    /// Only this speaker: a diarized speaker's name, a display name or a user id (any case).
    #[arg(long)]
    pub speaker: Option<String>,
    /// From this time on (UTC): `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]`.
    #[arg(long)]
    pub since: Option<String>,
    /// Before this time (UTC); a date alone includes that whole day.
    #[arg(long)]
    pub until: Option<String>,
}

impl FilterArgs {
    /// The filter, times parsed (a bad one is a usage error), with the language asked for
    /// (the global `--language`).
    pub fn filter(&self, language: Option<&str>) -> anyhow::Result<Filter> {
        let time = |s: &Option<String>, end: bool| -> anyhow::Result<Option<i64>> {
            s.as_deref()
                .map(|t| {
                    let (ms, date_only) =
                        nina_index::parse_time(t).map_err(|e| UsageError(e.to_string()))?;
                    Ok(if end && date_only {
                        ms + 86_400_000
                    } else {
                        ms
                    })
                })
                .transpose()
        };
        Ok(Filter {
            guild: self.guild,
            channel: self.channel,
            user: self.user,
            speaker: self.speaker.clone(),
            since_ms: time(&self.since, false)?,
            until_ms: time(&self.until, true)?,
            language: language.map(str::to_string),
        })
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// The data directory holding a session directory (`<data>/<guild>/<channel>/<date>/<id>`),
/// when the session sits in that layout.
pub fn data_of(dir: &Path) -> Option<PathBuf> {
    let session = SessionDir::new(dir).load().ok()?;
    let up: Vec<&Path> = dir.ancestors().take(5).collect();
    let named = |i: usize, n: String| {
        up.get(i)
            .and_then(|p| p.file_name())
            .is_some_and(|f| f.to_string_lossy() == n)
    };
    (up.len() == 5
        && named(3, session.guild.id.to_string())
        && named(2, session.channel.id.to_string()))
    .then(|| up[4].to_path_buf())
}

/// After `reprocess` changed a session: its rows in the data directory's index are replaced,
/// when the data directory has an index (`reprocess index` makes it). Never fails the run.
pub fn update_index(data: Option<&Path>, dir: &SessionDir) {
    let Some(data) = data.map(Path::to_path_buf).or_else(|| data_of(dir.root())) else {
        return;
    };
    if !data.join(nina_index::INDEX_FILE).is_file() {
        return;
    }
    let r = Index::open(&data).and_then(|mut i| i.update_session(dir));
    match r {
        Ok(u) => tracing::debug!(dir = %dir.root().display(), ?u, "index updated"),
        Err(e) => eprintln!(
            "warning: search index not updated for {} ({e}); `reprocess index {}` catches up",
            dir.root().display(),
            data.display()
        ),
    }
}

/// `reprocess index DATA [--rebuild]`.
pub fn index(data: &Path, rebuild: bool) -> anyhow::Result<()> {
    if !data.is_dir() {
        return Err(UsageError(format!("{} is not a directory", data.display())).into());
    }
    let mut index =
        Index::open(data).with_context(|| format!("opening the index of {}", data.display()))?;
    let b = bar(0, "sessions {bar:30} {pos}/{len} ({eta} left)");
    let started = std::time::Instant::now();
    let mut progress = |done: usize, total: usize| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    };
    let report = if rebuild {
        index.rebuild(&mut progress)
    } else {
        index.sync(&mut progress)
    }
    .context("indexing")?;
    b.finish_and_clear();
    let [sessions, utterances, segments, words] = index.counts()?;
    eprintln!(
        "{} session(s) indexed, {} unchanged, {} removed in {:.1} s; the index holds {sessions} \
         sessions, {utterances} utterances, {segments} segments, {words} words",
        report.indexed,
        report.unchanged,
        report.removed,
        started.elapsed().as_secs_f64()
    );
    for (dir, why) in &report.failed {
        eprintln!("  not indexed: {}: {why}", dir.display());
    }
    println!("{}", data.join(nina_index::INDEX_FILE).display());
    Ok(())
}

fn open_for_reading(data: &Path) -> anyhow::Result<Index> {
    Index::open_read_only(data).map_err(|e| match e {
        IndexError::Missing(_) => UsageError(e.to_string()).into(),
        e => anyhow::Error::new(e).context("opening the index"),
    })
}

/// `reprocess search DATA QUERY`.
pub fn search(
    data: &Path,
    query: &str,
    filters: &FilterArgs,
    language: Option<&str>,
    limit: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    let q = Query::parse(query).map_err(|e| UsageError(format!("query {query:?}: {e}")))?;
    let filter = filters.filter(language)?;
    let index = open_for_reading(data)?;
    let hits = index.search(&q, &filter, limit).context("searching")?;
    if json_out {
        let out = json!({
            "schema": "nina.search/1",
            "query": query,
            "hits": hits,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if hits.is_empty() {
        eprintln!("no match");
    }
    for h in &hits {
        println!(
            "{:>3}. {}  {}  {} {}{}",
            h.rank,
            h.at,
            h.session.path,
            h.speaker,
            h.user_id
                .map_or_else(String::new, |u| format!("(user {u})")),
            h.language
                .as_deref()
                .map_or_else(String::new, |l| format!(" [{l}]"))
        );
        println!("     {}", h.marked);
        if let Some(a) = &h.audio {
            println!("     {} @ {:.2} s (+{:.2} s)", a.path, a.offset, a.duration);
        }
    }
    Ok(())
}

/// `reprocess export` options beside the filters.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The export directory (new, empty, or an unfinished export to resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Only utterances with one of their segments matching these words (search syntax).
    #[arg(long)]
    pub query: Option<String>,
    /// Only utterances whose confidence (mean word probability) is at least this (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub min_confidence: f64,
    /// Only utterances at least this many seconds long.
    #[arg(long, default_value_t = 0.0)]
    pub min_duration: f64,
    /// Replace user ids by pseudonyms of this export only (`speaker_` and 8 hex digits); the
    /// key that makes them is deleted when the export finishes.
    #[arg(long)]
    pub anonymize: bool,
}

/// What an unfinished export keeps to resume.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ExportState {
    schema: String,
    salt: String,
    request: serde_json::Value,
}

const EXPORT_STATE: &str = ".nina-export.json";
const EXPORT_JSON: &str = "export.json";

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `reprocess export DATA --out DIR`.
pub fn export(
    data: &Path,
    filters: &FilterArgs,
    language: Option<&str>,
    args: &ExportArgs,
) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.min_confidence) {
        return Err(UsageError("--min-confidence: give a number from 0 to 1".into()).into());
    }
    if !(args.min_duration.is_finite() && args.min_duration >= 0.0) {
        return Err(UsageError("--min-duration: give seconds >= 0".into()).into());
    }
    let query = args
        .query
        .as_deref()
        .map(Query::parse)
        .transpose()
        .map_err(|e| UsageError(format!("--query: {e}")))?;
    let filter = filters.filter(language)?;
    let request = json!({
        "guild": filters.guild, "channel": filters.channel, "user": filters.user,
        "speaker": filters.speaker, "since": filters.since, "until": filters.until,
        "language": language, "query": args.query,
        "min_confidence": args.min_confidence, "min_duration": args.min_duration,
        "anonymize": args.anonymize,
    });
    // The directory: new, empty, or an unfinished export of the same request.
    let out = &args.out;
    let state_path = out.join(EXPORT_STATE);
    let state = match std::fs::read(&state_path) {
        Ok(b) => {
            let s: ExportState = serde_json::from_slice(&b)
                .with_context(|| format!("{} is damaged", state_path.display()))?;
            if s.request != request {
                return Err(UsageError(format!(
                    "{} holds an unfinished export of other filters ({}); give the same ones to resume it, or another directory",
                    out.display(),
                    s.request
                ))
                .into());
            }
            eprintln!("resuming the export in {}", out.display());
            s
        }
        Err(_) => {
            let empty = match std::fs::read_dir(out) {
                Ok(mut e) => e.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
            };
            if !empty {
                return Err(UsageError(format!(
                    "{} is not empty and holds no unfinished export; choose a new or empty directory",
                    out.display()
                ))
                .into());
            }
            let s = ExportState {
                schema: "nina.export-state/1".into(),
                salt: random_hex(16)?,
                request: request.clone(),
            };
            nina_fs::write(&state_path, &serde_json::to_vec_pretty(&s)?)?;
            s
        }
    };
    // Bring the index up to date, then take the utterances.
    let mut index =
        Index::open(data).with_context(|| format!("opening the index of {}", data.display()))?;
    index
        .sync(&mut |_, _| {})
        .context("bringing the index up to date")?;
    let items: Vec<UtteranceItem> = index
        .utterances(query.as_ref(), &filter)?
        .into_iter()
        .filter(|u| u.duration() >= args.min_duration)
        .filter(|u| {
            args.min_confidence <= 0.0 || u.confidence.unwrap_or(0.0) >= args.min_confidence
        })
        .collect();
    let hash = |s: &str, n: usize| {
        nina_fs::sha256_bytes(format!("{}|{s}", state.salt).as_bytes())[..n].to_string()
    };
    let speaker_of = |u: &UtteranceItem| {
        if args.anonymize {
            format!("speaker_{}", hash(&format!("user:{}", u.user_id), 8))
        } else {
            u.user_id.to_string()
        }
    };
    let session_of = |u: &UtteranceItem| {
        if args.anonymize {
            format!("s{}", hash(&format!("session:{}", u.session_path), 12))
        } else {
            u.session_path.replace('/', "_")
        }
    };
    let name_of = |u: &UtteranceItem| {
        format!(
            "audio/{}/{}-{:06}-{:010}.wav",
            session_of(u),
            speaker_of(u),
            u.seq,
            (u.start * 1000.0).round() as u64
        )
    };
    let b = bar(
        items.len() as u64,
        "export   {bar:30} {pos}/{len} utterances ({eta} left)",
    );
    let mut rows = Vec::new();
    let mut written = 0usize;
    let mut seconds = 0.0;
    let mut failed = 0usize;
    let mut sessions = BTreeSet::new();
    let mut wanted = BTreeSet::new();
    for u in &items {
        let name = name_of(u);
        let path = out.join(&name);
        wanted.insert(path.clone());
        let dir = SessionDir::new(data.join(&u.session_path));
        let ok = if path.is_file() {
            true
        } else {
            match cut(&dir, u, &path) {
                Ok(()) => {
                    written += 1;
                    true
                }
                Err(e) => {
                    b.suspend(|| eprintln!("skipped {}/{}: {e:#}", u.session_path, u.file));
                    failed += 1;
                    false
                }
            }
        };
        b.inc(1);
        if !ok {
            continue;
        }
        sessions.insert(u.session_path.clone());
        seconds += u.duration();
        rows.push((name, u, speaker_of(u), session_of(u)));
    }
    b.finish_and_clear();
    // Audio of an earlier run that this one does not take (the data changed) goes.
    remove_unwanted(&out.join("audio"), &wanted)?;
    let mut manifest = String::new();
    let mut jsonl = String::new();
    let mut csv = String::from("file_name,transcription,speaker,language,duration,session,start\n");
    for (name, u, speaker, session) in &rows {
        let duration = (u.duration() * 1000.0).round() / 1000.0;
        let language = u.language.clone().unwrap_or_default();
        manifest.push_str(&serde_json::to_string(&json!({
            "audio_filepath": name, "duration": duration, "text": u.text,
            "speaker": speaker, "language": language,
        }))?);
        manifest.push('\n');
        jsonl.push_str(&serde_json::to_string(&json!({
            "file_name": name, "transcription": u.text, "speaker": speaker,
            "language": language, "duration": duration, "session": session,
            "start": (u.start * 1000.0).round() / 1000.0,
        }))?);
        jsonl.push('\n');
        csv.push_str(&format!(
            "{},{},{},{},{duration},{},{}\n",
            csv_field(name),
            csv_field(&u.text),
            csv_field(speaker),
            csv_field(&language),
            csv_field(session),
            (u.start * 1000.0).round() / 1000.0
        ));
    }
    let models = index.models_of(&sessions)?;
    let header = json!({
        "schema": "nina.export/1",
        "created_at": nina_index::format_time(now_ms()),
        "request": request,
        "utterances": rows.len(),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "sessions": sessions.len(),
        "audio": {"format": "WAV", "sample_rate": 16_000, "channels": 1, "bits_per_sample": 16},
        "models": models.iter().map(|m| json!({"step": m.step, "name": m.name, "sha256": m.sha256})).collect::<Vec<_>>(),
        "files": {
            "manifest.jsonl": "NeMo / Lhotse manifest: audio_filepath (relative to this directory), duration, text, speaker, language",
            "metadata.csv": "Hugging Face audiofolder: file_name, transcription, speaker, language, duration, session, start",
            "metadata.jsonl": "the same as JSON lines",
        },
    });
    let mut readme = format!(
        "# Nina dataset export\n\n{} utterances, {:.1} minutes of speech from {} session(s), \
         exported {}.\nAudio: `audio/`, 16 kHz mono 16-bit WAV, one file per utterance.\n\n\
         - `manifest.jsonl`: NeMo/Lhotse manifest (`audio_filepath`, `duration`, `text`, `speaker`, `language`)\n\
         - `metadata.csv`, `metadata.jsonl`: Hugging Face audiofolder (`file_name`, `transcription`, ...):\n  \
         `datasets.load_dataset(\"audiofolder\", data_dir=\"<this directory>\")`\n\
         - `export.json`: the request, counts and models, for scripts\n\n\
         Speakers: {}.\n\n## Models that produced the text\n\n",
        rows.len(),
        seconds / 60.0,
        sessions.len(),
        header["created_at"].as_str().unwrap_or_default(),
        if args.anonymize {
            "pseudonyms of this export only (`speaker_` + 8 hex digits); they cannot be linked back to user ids"
        } else {
            "Discord user ids of the streams"
        }
    );
    for m in &models {
        readme.push_str(&format!(
            "- {}: {}{}\n",
            m.step,
            m.name,
            m.sha256
                .as_deref()
                .map_or_else(String::new, |s| format!(" (sha256 {s})"))
        ));
    }
    nina_fs::write(&out.join("manifest.jsonl"), manifest.as_bytes())?;
    nina_fs::write(&out.join("metadata.jsonl"), jsonl.as_bytes())?;
    nina_fs::write(&out.join("metadata.csv"), csv.as_bytes())?;
    nina_fs::write(&out.join("README.md"), readme.as_bytes())?;
    nina_fs::write(&out.join(EXPORT_JSON), &serde_json::to_vec_pretty(&header)?)?;
    // Finished: the key of the pseudonyms goes, so they cannot be linked back.
    std::fs::remove_file(&state_path)
        .with_context(|| format!("removing {}", state_path.display()))?;
    eprintln!(
        "{} utterances ({:.1} min) exported to {} ({written} cut now, {} from an earlier run){}",
        rows.len(),
        seconds / 60.0,
        out.display(),
        rows.len() - written,
        if failed > 0 {
            format!(", {failed} skipped (unreadable audio)")
        } else {
            String::new()
        }
    );
    println!("{}", out.display());
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Cuts an utterance's audio to 16 kHz mono 16-bit WAV at `path` (atomically).
fn cut(dir: &SessionDir, u: &UtteranceItem, path: &Path) -> anyhow::Result<()> {
    let src = dir.file(&u.file)?;
    let max = ((u.duration() + 1.0) * 768_000.0 * 32.0) as usize;
    let a = nina_store::read_wav(&src, max)?;
    let mono = nina_segment::resample::to_16k_mono(&a.samples, a.sample_rate, a.channels)?;
    nina_store::write_wav(path, &mono, 16_000, 1, nina_store::WavEncoding::I16)?;
    Ok(())
}

/// Removes WAV files under `audio` not in `wanted` (and folders left empty).
fn remove_unwanted(audio: &Path, wanted: &BTreeSet<PathBuf>) -> anyhow::Result<()> {
    let Ok(dirs) = std::fs::read_dir(audio) else {
        return Ok(());
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "wav") && !wanted.contains(&p) {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        let _ = std::fs::remove_dir(d.path());
    }
    Ok(())
}

/// Retention per guild, from `<data>/retention.json`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RetentionRule {
    /// Days audio is kept (from the end of its session).
    pub audio_days: u32,
    /// Keep the transcripts (and session.json) when the audio goes; else the whole session.
    #[serde(default = "yes")]
    pub keep_transcripts: bool,
}

fn yes() -> bool {
    true
}

/// `<data>/retention.json`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The rule of guilds not listed (none: kept for ever).
    #[serde(default)]
    pub default: Option<RetentionRule>,
    /// Rules by guild id.
    #[serde(default)]
    pub guilds: BTreeMap<u64, RetentionRule>,
}

/// File name of the retention rules, in the data directory.
pub const RETENTION_JSON: &str = "retention.json";
/// The processing step `prune` records in a session whose audio it removed.
pub const STEP_RETENTION: &str = "retention";

/// `reprocess prune DATA [--dry-run]`.
pub fn prune(data: &Path, dry_run: bool) -> anyhow::Result<()> {
    let path = data.join(RETENTION_JSON);
    let rules: Retention = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| UsageError(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UsageError(format!(
                "{} does not exist: write the retention rules there first (see docs/index.md)",
                path.display()
            ))
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let now = now_ms();
    let store = Store::new(data);
    let mut index = if data.join(nina_index::INDEX_FILE).is_file() && !dry_run {
        Some(Index::open(data)?)
    } else {
        None
    };
    let (mut pruned, mut deleted, mut bytes) = (0usize, 0usize, 0u64);
    let mut busy = 0;
    for dir in store.sessions()? {
        let s = match dir.load() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped {}: {e}", dir.root().display());
                continue;
            }
        };
        let Some(rule) = rules.guilds.get(&s.guild.id).or(rules.default.as_ref()) else {
            continue;
        };
        let end = s.ended_at_ms.unwrap_or(s.started_at_ms);
        if end > now - i64::from(rule.audio_days) * 86_400_000 {
            continue;
        }
        let done = s.processing_of(STEP_RETENTION).is_some();
        if rule.keep_transcripts && done {
            continue;
        }
        let what = if rule.keep_transcripts {
            "audio of"
        } else {
            "session"
        };
        if dry_run {
            println!("would remove {what} {}", dir.root().display());
            continue;
        }
        let lock = match dir.open() {
            Ok(l) => l,
            Err(nina_store::StoreError::Locked(_)) => {
                eprintln!("in use, skipped: {}", dir.root().display());
                busy += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (_lock, mut s) = lock;
        let freed = crate::erase::remove_audio(&dir, &s, None)?;
        bytes += freed.bytes;
        if rule.keep_transcripts {
            s.set_processing(nina_store::Processing {
                step: STEP_RETENTION.into(),
                name: "reprocess prune".into(),
                sha256: None,
                options: json!({"audio_days": rule.audio_days, "audio_removed_at_ms": now}),
                key: format!("retention-{now}"),
                failed: Vec::new(),
            });
            dir.save(&s)?;
            pruned += 1;
            println!(
                "removed audio of {} ({} files)",
                dir.root().display(),
                freed.files
            );
        } else {
            bytes += crate::erase::remove_session(&dir)?;
            deleted += 1;
            println!("removed session {}", dir.root().display());
        }
        if let Some(i) = index.as_mut() {
            i.update_session(&dir)?;
        }
    }
    if let Some(i) = index.as_mut() {
        i.purge()?;
    }
    eprintln!(
        "{pruned} session(s) lost their audio, {deleted} removed whole, {:.1} MB freed",
        bytes as f64 / 1e6
    );
    if busy > 0 {
        return Err(crate::Busy(busy).into());
    }
    Ok(())
}
