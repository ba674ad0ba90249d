//! `reprocess index | search | export | forget | prune` on a data directory of sessions made by
//! the real pipeline (tiny.en) from test speech: a live-style session of two users (11 and 22,
//! guild 1), a file's session (guild 0), and one written through the store types whose
//! transcript holds Portuguese ("São Paulo", guild 3) for the accent test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nina_tests::{data, tree};
use serde_json::{Value, json};

/// `reprocess` with the test models (tiny.en, English, Silero).
fn pipeline_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprocess"));
    c.env(
        "NINA_MODELS",
        nina_tests::config("whisper-tiny-en").models.root(),
    )
    .args([
        "--whisper",
        "whisper-tiny-en",
        "--language",
        "en",
        "--vad",
        "silero",
    ])
    .args(["--jobs", "1"])
    .stdin(Stdio::null());
    c
}

/// Runs `reprocess ARGS`; returns (exit code, stdout, stderr). `session` and `file` run with
/// the test models.
fn run(args: &[&dyn AsRefOs]) -> (i32, String, String) {
    let first = args.first().map(|a| a.os().to_string_lossy().into_owned());
    let mut c = if matches!(first.as_deref(), Some("session" | "file")) {
        pipeline_bin()
    } else {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reprocess"));
        c.stdin(Stdio::null());
        c
    };
    for a in args {
        c.arg(a.os());
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs and requires success; returns stdout.
fn ok(args: &[&dyn AsRefOs]) -> String {
    let (c, out, err) = run(args);
    assert_eq!(c, 0, "{err}");
    out
}

trait AsRefOs {
    fn os(&self) -> &std::ffi::OsStr;
}
impl AsRefOs for &str {
    fn os(&self) -> &std::ffi::OsStr {
        self.as_ref()
    }
}
impl AsRefOs for PathBuf {
    fn os(&self) -> &std::ffi::OsStr {
        self.as_os_str()
    }
}
impl AsRefOs for &Path {
    fn os(&self) -> &std::ffi::OsStr {
        self.as_os_str()
    }
}

const RAW: &str = "1/2/2023-11-14/raw-1";
const PT: &str = "3/4/2024-05-01/pt-1";

/// A session recorded in raw mode: user 11 reads "he was not an ill disposed young man" from
/// 0.5 s, user 22 "he might even have been made amiable himself" from 3.5 s, 48 kHz stereo
/// Opus tracks.
fn raw_session(root: &Path) {
    let mut s = json!({
        "schema": "nina.session", "schema_version": 1, "id": "raw-1",
        "guild": {"id": 1}, "channel": {"id": 2}, "started_at_ms": 1_700_000_000_000i64,
        "ended_at_ms": 1_700_000_007_500i64,
        "participants": [], "tracks": [],
        "recorder": {"name": "test", "version": "0", "decode": false, "config": null}
    });
    for (user, clip, at) in [(11u64, "0880", 0.5), (22, "0930", 3.5)] {
        let mut r = hound::WavReader::open(data(&format!(
            "librivox/sense_and_sensibility_01_austen_64kb-{clip}.wav"
        )))
        .unwrap();
        let speech: Vec<f32> = r
            .samples::<i16>()
            .map(|v| f32::from(v.unwrap()) / 32768.0)
            .collect();
        let file = nina_store::track_file(user);
        let mut w =
            nina_store::OpusTrackWriter::create(&root.join(&file), user as u32, 2, &[]).unwrap();
        let mut enc =
            opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
        let mut pos = (at * 48_000.0) as u64;
        for f in 0..speech.len() / 320 {
            let pcm: Vec<f32> = (0..1920).map(|i| speech[f * 320 + i / 6]).collect();
            w.push(pos, &enc.encode_vec_float(&pcm, 4000).unwrap())
                .unwrap();
            pos += 960;
        }
        w.finish(360_000).unwrap();
        s["participants"]
            .as_array_mut()
            .unwrap()
            .push(json!({"user_id": user}));
        s["tracks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"user_id": user, "file": file, "channels": 2, "duration": 7.5}));
    }
    nina_fs::write(&root.join("session.json"), s.to_string().as_bytes()).unwrap();
}

/// A session of user 33 whose transcript (written through the store and transcript types)
/// says "Encontro em São Paulo amanhã" in Portuguese; its utterance is 1 s of a tone.
fn portuguese_session(root: &Path) {
    let file = nina_store::utterance_file(33, 0, 2.0, None);
    let mut s = nina_store::Session::new(
        "pt-1",
        nina_store::Place {
            id: 3,
            name: Some("Guilda".into()),
        },
        nina_store::Place { id: 4, name: None },
        1_714_564_800_000,
    );
    s.ended_at_ms = Some(1_714_564_810_000);
    s.participants.push(nina_store::Participant {
        user_id: 33,
        display_name: Some("Joana".into()),
        presence: vec![],
    });
    s.utterances.push(nina_store::UtteranceRecord {
        user_id: 33,
        seq: 0,
        start: 2.0,
        end: 3.0,
        speech_start: 2.1,
        speech_end: 2.9,
        cut: false,
        file: file.clone(),
        sample_rate: 48_000,
        channels: 1,
    });
    let tone: Vec<f32> = (0..48_000)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin())
        .collect();
    nina_store::write_wav(
        &root.join(&file),
        &tone,
        48_000,
        1,
        nina_store::WavEncoding::I16,
    )
    .unwrap();
    let dir = nina_store::SessionDir::new(root);
    dir.save(&s).unwrap();
    let words = ["Encontro", "em", "São", "Paulo", "amanhã."];
    let segment = nina_transcribe::Segment {
        start: 2.1,
        end: 2.9,
        text: format!(" {}", words.join(" ")),
        avg_logprob: -0.1,
        no_speech_prob: 0.01,
        words: words
            .iter()
            .enumerate()
            .map(|(i, w)| nina_transcribe::Word {
                start: 2.1 + 0.16 * i as f64,
                end: 2.1 + 0.16 * (i + 1) as f64,
                text: format!(" {w}"),
                probability: 0.9,
            })
            .collect(),
        repair: None,
    };
    let doc = nina_transcribe::TranscriptDocument::new(
        nina_transcribe::ModelInfo {
            name: "hand-written".into(),
            sha256: "00".repeat(32),
        },
        &nina_transcribe::TranscribeOptions::default(),
        vec![nina_transcribe::SpeakerSegment {
            speaker: "Joana".into(),
            language: Some("pt".into()),
            segment,
        }],
        vec![],
    );
    dir.write("transcript.json", doc.to_json().as_bytes())
        .unwrap();
}

/// The data directory every test starts from (copied): the index made first, then each
/// session added as it was written (the incremental path).
fn fixture() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    DATA.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir_all(&d).unwrap();
        ok(&[&"index", &d]);
        let raw = d.join(RAW);
        raw_session(&raw);
        ok(&[&"session", &raw]);
        ok(&[
            &"file",
            &data("librivox/sense_and_sensibility_01_austen_64kb-0890.wav"),
            &"--data",
            &d,
        ]);
        portuguese_session(&d.join(PT));
        ok(&[&"index", &d]);
        t
    })
    .path()
}

/// A copy of the fixture's data directory.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let to = t.path().join("data");
    for (rel, bytes) in tree(&fixture().join("data")) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    (t, to)
}

fn search(d: &Path, q: &str, extra: &[&str]) -> Value {
    let mut args: Vec<&dyn AsRefOs> = vec![&"search", &d, &q, &"--json"];
    let extra: Vec<&str> = extra.to_vec();
    for e in &extra {
        args.push(e);
    }
    serde_json::from_str(&ok(&args)).unwrap()
}

fn paths(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["session"]["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn search_finds_known_phrases_accents_and_filters() {
    let (_t, d) = copy();
    let d = d.as_path();
    // A word both users of the live session say: a hit each.
    let r = search(d, "he", &[]);
    assert_eq!(paths(&r), [RAW, RAW], "{r:#}");
    let users: std::collections::BTreeSet<u64> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["user_id"].as_u64().unwrap())
        .collect();
    assert_eq!(users, [11, 22].into());
    // Phrases: user 11 says "young man", the file "ill-disposed" (a phrase of two words).
    let r = search(d, "\"young man\"", &[]);
    assert_eq!(paths(&r), [RAW], "{r:#}");
    let hit = &r["hits"][0];
    assert_eq!(hit["user_id"], 11);
    assert!(
        hit["marked"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("[young man]"),
        "{hit:#}"
    );
    let audio = hit["audio"]["path"].as_str().unwrap();
    assert!(
        audio.contains("/audio/11/") && Path::new(audio).is_file(),
        "{hit:#}"
    );
    assert!(hit["audio"]["offset"].as_f64().unwrap() < 3.0);
    assert!(paths(&search(d, "\"ill disposed\"", &[]))[0].starts_with("0/0/"));
    // Words in any order; a phrase in the wrong order finds nothing.
    assert_eq!(paths(&search(d, "man young", &[])), [RAW]);
    assert!(paths(&search(d, "\"man young\"", &[])).is_empty());
    // Accents and case typed or not.
    for q in ["sao paulo", "SÃO PAULO", "\"sao paulo\"", "amanha"] {
        assert_eq!(paths(&search(d, q, &[])), [PT], "{q}");
    }
    // Filters.
    assert_eq!(paths(&search(d, "amiable", &[])), [RAW]);
    assert!(paths(&search(d, "amiable", &["--user", "11"])).is_empty());
    assert_eq!(paths(&search(d, "amiable", &["--user", "22"])), [RAW]);
    assert_eq!(paths(&search(d, "amiable", &["--speaker", "22"])), [RAW]);
    let file_only = paths(&search(d, "selfish", &["--guild", "0"]));
    assert!(
        file_only.len() == 1 && file_only[0].starts_with("0/0/"),
        "{file_only:?}"
    );
    assert!(paths(&search(d, "selfish", &["--guild", "1"])).is_empty());
    assert!(paths(&search(d, "amiable", &["--channel", "3"])).is_empty());
    assert_eq!(paths(&search(d, "paulo", &["--language", "pt"])), [PT]);
    assert!(paths(&search(d, "paulo", &["--language", "en"])).is_empty());
    assert_eq!(paths(&search(d, "paulo", &["--speaker", "joana"])), [PT]);
    assert_eq!(
        paths(&search(
            d,
            "amiable",
            &["--since", "2023-11-14", "--until", "2023-11-14"]
        )),
        [RAW]
    );
    assert!(paths(&search(d, "amiable", &["--since", "2023-11-15"])).is_empty());
    assert!(paths(&search(d, "amiable", &["--until", "2023-11-14T22:13"])).is_empty());
    assert_eq!(
        paths(&search(d, "amiable", &["--until", "2023-11-14T22:14"])),
        [RAW]
    );
    // Exclusions and prefixes.
    assert_eq!(paths(&search(d, "he -young", &["--guild", "1"])), [RAW]);
    assert!(paths(&search(d, "man -young", &[])).is_empty());
    assert_eq!(paths(&search(d, "amia*", &[])), [RAW]);
    // Bad input: exit 2, never an SQL error.
    for bad in ["\"open", "-only", "", "((("] {
        let (c, _, e) = run(&[&"search", &d, &bad]);
        assert_eq!(c, 2, "{bad}: {e}");
    }
    let (c, _, e) = run(&[&"search", &d, &"x", &"--since", &"last week"]);
    assert_eq!(c, 2, "{e}");
    let (c, _, e) = run(&[&"search", &d.join("nothing"), &"x"]);
    assert_eq!(c, 2, "no index: {e}");
}

#[test]
fn search_json_is_stable() {
    let (_t, d) = copy();
    let mut r = search(&d, "sao paulo", &[]);
    // The data directory's absolute path aside, the output is fixed.
    let audio = r["hits"][0]["audio"]["path"].as_str().unwrap().to_string();
    assert_eq!(
        audio,
        d.join(PT)
            .join("audio/33/000000-0000002000.wav")
            .to_string_lossy()
    );
    r["hits"][0]["audio"]["path"] =
        json!("DATA/3/4/2024-05-01/pt-1/audio/33/000000-0000002000.wav");
    let score = r["hits"][0]["score"].as_f64().unwrap();
    assert!(score > 0.0, "{r:#}");
    r["hits"][0]["score"] = json!("SCORE");
    assert_eq!(
        r,
        json!({
            "schema": "nina.search/1",
            "query": "sao paulo",
            "hits": [{
                "rank": 1,
                "score": "SCORE",
                "session": {
                    "path": PT, "id": "pt-1", "guild": 3, "channel": 4,
                    "started_at": "2024-05-01T12:00:00.000Z"
                },
                "at": "2024-05-01T12:00:02.100Z",
                "start": 2.1,
                "end": 2.9,
                "speaker": "Joana",
                "user_id": 33,
                "language": "pt",
                "text": "Encontro em São Paulo amanhã.",
                "marked": "Encontro em [São] [Paulo] amanhã.",
                "marks": [[12, 15], [16, 21]],
                "audio": {
                    "path": "DATA/3/4/2024-05-01/pt-1/audio/33/000000-0000002000.wav",
                    "offset": 0.1,
                    "duration": 0.8
                }
            }]
        })
    );
}

/// Every answer of a set of queries, as JSON, paths and scores included.
fn answers(d: &Path) -> Vec<Value> {
    let queries: [(&str, &[&str]); 7] = [
        ("\"ill disposed\"", &[]),
        ("amiable", &["--user", "22"]),
        ("he", &[]),
        ("sao paulo", &[]),
        ("selfish OR young", &[]),
        ("paulo", &["--language", "pt"]),
        ("he -amiable", &["--since", "2023-01-01"]),
    ];
    queries.iter().map(|(q, f)| search(d, q, f)).collect()
}

#[test]
fn rebuilding_gives_the_same_answers_as_incremental_updates() {
    let (_t, d) = copy();
    let incremental = answers(&d);
    assert!(
        incremental
            .iter()
            .all(|a| !a["hits"].as_array().unwrap().is_empty()),
        "{incremental:#?}"
    );
    let out = ok(&[&"index", &d, &"--rebuild"]);
    assert!(out.contains("index.sqlite"));
    assert_eq!(answers(&d), incremental);
    // Dropped and made again from the session directories alone.
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(d.join(f));
    }
    ok(&[&"index", &d]);
    assert_eq!(answers(&d), incremental);
}

/// The transcript text of each utterance file of a session, from its transcript.json.
fn utterance_texts(session: &Path) -> std::collections::BTreeMap<String, String> {
    let s = nina_store::SessionDir::new(session).load().unwrap();
    let doc = nina_transcribe::TranscriptDocument::from_json(
        &std::fs::read_to_string(session.join("transcript.json")).unwrap(),
    )
    .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for u in &s.utterances {
        let label = s.speaker_label(u.user_id);
        let text: Vec<&str> = doc
            .segments
            .iter()
            .filter(|g| {
                g.speaker == label && g.segment.start >= u.start - 0.5 && g.segment.start <= u.end
            })
            .map(|g| g.segment.text.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if !text.is_empty() {
            out.insert(u.file.clone(), text.join(" "));
        }
    }
    out
}

#[test]
fn export_writes_an_audiofolder_row_per_kept_utterance_matching_the_session() {
    let (t, d) = copy();
    let out = t.path().join("export");
    ok(&[&"export", &d, &"--out", &out, &"--guild", &"1"]);
    let meta: Vec<Value> = std::fs::read_to_string(out.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = utterance_texts(&d.join(RAW));
    assert_eq!(meta.len(), expected.len(), "{meta:#?}");
    assert_eq!(
        meta.len(),
        2,
        "one utterance each of users 11 and 22: {meta:#?}"
    );
    let session = nina_store::SessionDir::new(d.join(RAW)).load().unwrap();
    for (row, (file, text)) in meta.iter().zip(&expected) {
        assert_eq!(row["transcription"].as_str().unwrap(), text);
        let u = session.utterances.iter().find(|u| &u.file == file).unwrap();
        assert_eq!(row["speaker"], u.user_id.to_string());
        let wav = hound::WavReader::open(out.join(row["file_name"].as_str().unwrap())).unwrap();
        assert_eq!((wav.spec().sample_rate, wav.spec().channels), (16_000, 1));
        let seconds = f64::from(wav.duration()) / 16_000.0;
        assert!(
            (seconds - (u.end - u.start)).abs() < 0.02,
            "{seconds} vs {u:?}"
        );
        assert!((row["duration"].as_f64().unwrap() - (u.end - u.start)).abs() < 0.002);
    }
    // The same rows in the CSV and the NeMo manifest; the models are stated.
    let csv = std::fs::read_to_string(out.join("metadata.csv")).unwrap();
    assert_eq!(csv.lines().count(), meta.len() + 1);
    assert!(csv.starts_with("file_name,transcription,"));
    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let first: Value = serde_json::from_str(manifest.lines().next().unwrap()).unwrap();
    assert_eq!(first["audio_filepath"], meta[0]["file_name"]);
    assert_eq!(first["text"], meta[0]["transcription"]);
    let header: Value =
        serde_json::from_slice(&std::fs::read(out.join("export.json")).unwrap()).unwrap();
    assert!(header["models"].to_string().contains("tiny"), "{header:#}");
    assert!(
        std::fs::read_to_string(out.join("README.md"))
            .unwrap()
            .contains("tiny")
    );
    assert!(!out.join(".nina-export.json").exists());
    // A finished export is not overwritten.
    let (c, _, e) = run(&[&"export", &d, &"--out", &out]);
    assert_eq!(c, 2, "{e}");

    // Anonymized, resumed after an interruption: pseudonyms, no user id anywhere.
    let anon = t.path().join("anon");
    let (c, _, _) = run(&[
        &"export",
        &d,
        &"--out",
        &anon,
        &"--anonymize",
        &"--min-duration",
        &"0.5",
        &"--min-confidence",
        &"0.1",
    ]);
    assert_eq!(c, 0);
    let rows = std::fs::read_to_string(anon.join("metadata.jsonl")).unwrap();
    let file_session = std::fs::read_dir(d.join("0/0"))
        .unwrap()
        .flatten()
        .flat_map(|day| std::fs::read_dir(day.path()).unwrap().flatten())
        .map(|s| s.path())
        .next()
        .unwrap();
    let all =
        expected.len() + utterance_texts(&file_session).len() + utterance_texts(&d.join(PT)).len();
    assert_eq!(
        rows.lines().count(),
        all,
        "every utterance with text: {rows}"
    );
    for id in ["\"11\"", "\"22\"", "\"33\"", "/11/", "/22/"] {
        for (rel, bytes) in tree(&anon) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(id) && !rel.to_string_lossy().contains(&id.replace('"', "-")),
                "{id} in {}",
                rel.display()
            );
        }
    }
    assert!(rows.contains("speaker_"));
    // Resuming: an unfinished export of other filters is refused; of the same ones, finished.
    let part = t.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(
        part.join(".nina-export.json"),
        serde_json::to_vec(
            &json!({"schema": "nina.export-state/1", "salt": "ab", "request": {"guild": 9}}),
        )
        .unwrap(),
    )
    .unwrap();
    let (c, _, e) = run(&[&"export", &d, &"--out", &part]);
    assert_eq!(c, 2, "{e}");
    // An export interrupted after its first file: resumed, that file is not cut again.
    let request = json!({
        "guild": 1, "channel": null, "user": null, "speaker": null, "since": null,
        "until": null, "language": null, "query": null, "min_confidence": 0.0,
        "min_duration": 0.0, "anonymize": false,
    });
    std::fs::write(
        part.join(".nina-export.json"),
        serde_json::to_vec(
            &json!({"schema": "nina.export-state/1", "salt": "ab", "request": request}),
        )
        .unwrap(),
    )
    .unwrap();
    let first = part.join(meta[0]["file_name"].as_str().unwrap());
    std::fs::create_dir_all(first.parent().unwrap()).unwrap();
    std::fs::write(&first, b"cut before the interruption").unwrap();
    let (c, _, e) = run(&[&"export", &d, &"--out", &part, &"--guild", &"1"]);
    assert_eq!(c, 0, "{e}");
    assert!(
        e.contains("resuming") && e.contains("1 from an earlier run"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        b"cut before the interruption"
    );
    assert_eq!(
        std::fs::read_to_string(part.join("metadata.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn forget_removes_a_user_everywhere_and_leaves_other_sessions_byte_identical() {
    let (_t, d) = copy();
    let raw = d.join(RAW);
    // User 22 has a voiceprint in guild 1; user 11 one too.
    let mut v = nina_store::VoicePrints::load(&d, 1).unwrap();
    v.enrol(22, "campplus", &[1.0, 0.0], 2.5, 0).unwrap();
    v.enrol(11, "campplus", &[0.0, 1.0], 2.5, 0).unwrap();
    v.save().unwrap();
    let others: Vec<_> = tree(&d)
        .into_iter()
        .filter(|(rel, _)| {
            !rel.starts_with("1/") && !rel.to_string_lossy().starts_with("index.sqlite")
        })
        .collect();
    let before_22 = tree(&raw);
    assert!(before_22.iter().any(|(r, _)| r.starts_with("audio/22")));
    assert!(
        before_22
            .iter()
            .any(|(r, _)| r.starts_with("tracks/22.opus"))
    );
    let (c, out, e) = run(&[&"forget", &d, &"--user", &"22"]);
    assert_eq!(c, 0, "{e}");
    assert!(out.contains(RAW) && out.contains("1 utterance(s)"), "{out}");
    assert!(out.contains("index: 0 row(s)"), "{out}");
    // Nothing of user 22 is left: no file under their id, no record naming them, no index row.
    for (rel, _) in tree(&d) {
        assert!(
            !rel.components()
                .any(|c| c.as_os_str() == "22" || c.as_os_str() == "22.opus"),
            "{} left",
            rel.display()
        );
    }
    let session = nina_store::SessionDir::new(&raw).load().unwrap();
    assert!(session.participants.iter().all(|p| p.user_id != 22));
    assert!(session.utterances.iter().all(|u| u.user_id != 22));
    assert!(session.tracks.iter().all(|t| t.user_id != 22));
    assert!(!session.utterances.is_empty(), "user 11's utterances stay");
    let transcript = nina_transcribe::TranscriptDocument::from_json(
        &std::fs::read_to_string(raw.join("transcript.json")).unwrap(),
    )
    .unwrap();
    assert!(transcript.segments.iter().all(|g| g.speaker != "22"));
    assert!(transcript.dropped.iter().all(|g| g.speaker != "22"));
    assert!(!transcript.segments.is_empty());
    for f in ["transcript.txt", "transcript.srt", "transcript.vtt"] {
        let text = std::fs::read_to_string(raw.join(f)).unwrap();
        assert!(
            !text.contains("22:") && !text.contains("<v 22>"),
            "{f}: {text}"
        );
        assert!(!text.to_lowercase().contains("amiable"), "{f}: {text}");
    }
    let prints = nina_store::VoicePrints::load(&d, 1).unwrap();
    assert!(prints.get(22, "campplus").is_none() && prints.get(11, "campplus").is_some());
    assert_eq!(index_rows_of(&d, 22), 0);
    assert!(paths(&search(&d, "amiable", &[])).is_empty());
    // User 11 is still there, and every other session is byte for byte what it was.
    assert_eq!(paths(&search(&d, "young", &["--guild", "1"])), [RAW]);
    let after: Vec<_> = tree(&d)
        .into_iter()
        .filter(|(rel, _)| {
            !rel.starts_with("1/") && !rel.to_string_lossy().starts_with("index.sqlite")
        })
        .collect();
    assert_eq!(after, others);
    // The index file holds no trace of the forgotten words.
    let index = std::fs::read(d.join("index.sqlite")).unwrap();
    assert!(!index.windows(7).any(|w| w.eq_ignore_ascii_case(b"amiable")));
    // Again: nothing left to do.
    let out = ok(&[&"forget", &d, &"--user", &"22"]);
    assert!(!out.contains(RAW), "{out}");
}

/// Rows naming `user` in the index, as `reprocess forget` reports them.
fn index_rows_of(d: &Path, user: u64) -> u64 {
    let out = ok(&[&"forget", &d, &"--user", &user.to_string().as_str()]);
    out.lines()
        .find_map(|l| l.strip_prefix("index: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn prune_removes_old_audio_keeping_transcripts_where_configured() {
    let (_t, d) = copy();
    let (c, _, e) = run(&[&"prune", &d]);
    assert_eq!(c, 2, "no rules: {e}");
    // Guild 1: audio older than 30 days goes, transcripts stay; guild 3: the whole session.
    std::fs::write(
        d.join("retention.json"),
        r#"{"guilds": {"1": {"audio_days": 30}, "3": {"audio_days": 30, "keep_transcripts": false}}}"#,
    )
    .unwrap();
    let file_session: Vec<_> = tree(&d)
        .into_iter()
        .filter(|(r, _)| r.starts_with("0/"))
        .collect();
    let dry = ok(&[&"prune", &d, &"--dry-run"]);
    assert!(dry.contains(RAW) && dry.contains(PT), "{dry}");
    assert!(
        tree(&d.join(RAW))
            .iter()
            .any(|(r, _)| r.starts_with("audio/"))
    );
    ok(&[&"prune", &d]);
    let raw = tree(&d.join(RAW));
    assert!(
        !raw.iter()
            .any(|(r, _)| r.starts_with("audio/") || r.starts_with("tracks/")),
        "{raw:?}"
    );
    assert!(raw.iter().any(|(r, _)| r == Path::new("transcript.json")));
    assert!(!d.join(PT).join("session.json").exists());
    assert_eq!(
        tree(&d)
            .into_iter()
            .filter(|(r, _)| r.starts_with("0/"))
            .collect::<Vec<_>>(),
        file_session
    );
    // Still searchable where kept; gone where not; reprocess leaves a pruned session alone.
    assert_eq!(paths(&search(&d, "amiable", &[])), [RAW]);
    assert!(search(&d, "amiable", &[])["hits"][0]["audio"]["path"].is_string());
    assert!(paths(&search(&d, "paulo", &[])).is_empty());
    let (c, _, e) = run(&[&"session", &d.join(RAW), &"--force"]);
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("audio removed"), "{e}");
    assert!(
        std::fs::read_to_string(d.join(RAW).join("transcript.txt"))
            .unwrap()
            .contains("amiable")
    );
}
