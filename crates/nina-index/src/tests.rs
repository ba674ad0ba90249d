//! The index on hand-made sessions: reading, incremental updates against a rebuild, live
//! transcripts, diarized speakers, filters, erasure of rows; and the query parser against
//! SQLite itself.

use std::path::Path;

use nina_store::{Participant, Place, Session, SessionDir, Store, UtteranceRecord};
use serde_json::json;

use super::*;

/// A session of users 7 ("Ann") and 8 (no name) in guild `guild`, with a transcript of `texts`
/// (one segment per utterance, in order: user 7, 8, 7, ...).
fn session(data: &Path, guild: u64, id: &str, texts: &[&str]) -> SessionDir {
    let mut s = Session::new(
        id,
        Place {
            id: guild,
            name: None,
        },
        Place { id: 5, name: None },
        1_714_564_800_000,
    );
    s.participants = vec![
        Participant {
            user_id: 7,
            display_name: Some("Ann".into()),
            presence: vec![],
        },
        Participant {
            user_id: 8,
            display_name: None,
            presence: vec![],
        },
    ];
    let mut segments = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let user = if i % 2 == 0 { 7 } else { 8 };
        let start = i as f64 * 10.0;
        let file = nina_store::utterance_file(user, i as u64, start, None);
        s.utterances.push(UtteranceRecord {
            user_id: user,
            seq: i as u64,
            start,
            end: start + 5.0,
            speech_start: start,
            speech_end: start + 5.0,
            cut: false,
            file: file.clone(),
            sample_rate: 16_000,
            channels: 1,
        });
        let words: Vec<_> = t
            .split(' ')
            .enumerate()
            .map(|(k, w)| json!({"start": start + 1.0 + k as f64 * 0.3, "end": start + 1.2 + k as f64 * 0.3, "text": format!(" {w}"), "probability": 0.8}))
            .collect();
        segments.push(json!({
            "speaker": if user == 7 { "Ann" } else { "8" }, "start": start + 1.0, "end": start + 4.0,
            "text": format!(" {t}"), "avg_logprob": -0.2, "no_speech_prob": 0.01, "words": words,
            "language": if i % 2 == 0 { "en" } else { "pt" },
        }));
    }
    let dir = Store::new(data).session_dir(&s).unwrap();
    dir.save(&s).unwrap();
    let doc = json!({
        "schema": "nina.transcript/1", "model": {"name": "whisper-test", "sha256": "ab"},
        "options": {"language": null}, "segments": segments, "dropped": [],
    });
    dir.write("transcript.json", doc.to_string().as_bytes())
        .unwrap();
    dir
}

fn texts(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.text.clone()).collect()
}

#[test]
fn sessions_are_indexed_searched_and_filtered() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let a = session(
        d,
        1,
        "a",
        &[
            "Bom dia São Paulo",
            "the quick brown fox",
            "jumps over the lazy dog",
        ],
    );
    session(d, 2, "b", &["Quick thinking", "nothing here"]);
    let mut index = Index::open(d).unwrap();
    let r = index.sync(&mut |_, _| {}).unwrap();
    assert_eq!((r.indexed, r.segments), (2, 5));
    let q = |s: &str| Query::parse(s).unwrap();
    let all = Filter::default();
    assert_eq!(
        texts(&index.search(&q("sao paulo"), &all, 10).unwrap()),
        ["Bom dia São Paulo"]
    );
    let hits = index.search(&q("quick"), &all, 10).unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].rank, 1);
    assert!(hits[0].score >= hits[1].score);
    let h = &index.search(&q("\"brown fox\""), &all, 10).unwrap()[0];
    assert_eq!(
        (h.speaker.as_str(), h.user_id, h.language.as_deref()),
        ("8", Some(8), Some("pt"))
    );
    let audio = h.audio.as_ref().unwrap();
    assert_eq!(audio.offset, 1.0);
    assert!(audio.path.ends_with("audio/8/000001-0000010000.wav"));
    assert_eq!(
        h.session.path,
        a.root().strip_prefix(d).unwrap().to_string_lossy()
    );
    let f = |g: Filter| texts(&index.search(&q("quick"), &g, 10).unwrap());
    assert_eq!(
        f(Filter {
            guild: Some(2),
            ..Default::default()
        }),
        ["Quick thinking"]
    );
    assert_eq!(
        f(Filter {
            user: Some(8),
            ..Default::default()
        }),
        ["the quick brown fox"]
    );
    assert_eq!(
        f(Filter {
            speaker: Some("ann".into()),
            ..Default::default()
        }),
        ["Quick thinking"]
    );
    assert_eq!(
        f(Filter {
            language: Some("PT".into()),
            ..Default::default()
        }),
        ["the quick brown fox"]
    );
    assert!(
        f(Filter {
            since_ms: Some(1_714_564_800_000 + 12_000),
            ..Default::default()
        })
        .is_empty()
    );
    assert_eq!(
        f(Filter {
            until_ms: Some(1_714_564_800_000 + 12_000),
            ..Default::default()
        })
        .len(),
        2
    );
    assert!(
        f(Filter {
            channel: Some(6),
            ..Default::default()
        })
        .is_empty()
    );
    // Utterances for a dataset: text, confidence, language.
    let u = index
        .utterances(
            None,
            &Filter {
                guild: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(u.len(), 3);
    assert_eq!(u[1].text, "the quick brown fox");
    assert!((u[1].confidence.unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(u[2].language.as_deref(), Some("en"));
    let u = index
        .utterances(Some(&q("lazy")), &Filter::default())
        .unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        index
            .models_of(&[u[0].session_path.clone()].into())
            .unwrap()[0]
            .name,
        "whisper-test"
    );
    // A read-only reader sees the same.
    let ro = Index::open_read_only(d).unwrap();
    assert_eq!(
        texts(&ro.search(&q("dog"), &all, 10).unwrap()),
        ["jumps over the lazy dog"]
    );
    assert!(matches!(
        Index::open_read_only(&d.join("none")),
        Err(IndexError::Missing(_))
    ));
}

#[test]
fn incremental_updates_give_what_a_rebuild_gives() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let a = session(d, 1, "a", &["first words"]);
    let mut index = Index::open(d).unwrap();
    index.sync(&mut |_, _| {}).unwrap();
    assert_eq!(index.update_session(&a).unwrap(), Update::Unchanged);
    // The session grows; another appears; a third goes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let a = session(d, 1, "a", &["first words", "second words"]);
    assert_eq!(
        index.update_session(&a).unwrap(),
        Update::Indexed { segments: 2 }
    );
    let b = session(d, 1, "b", &["other words"]);
    index.update_session(&b).unwrap();
    let c = session(d, 3, "c", &["gone words"]);
    index.update_session(&c).unwrap();
    std::fs::remove_dir_all(c.root()).unwrap();
    index.update_session(&c).unwrap();
    let answers = |i: &Index| {
        ["words", "second", "gone", "other OR first"].map(|q| {
            serde_json::to_value(
                i.search(&Query::parse(q).unwrap(), &Filter::default(), 10)
                    .unwrap(),
            )
            .unwrap()
        })
    };
    let incremental = answers(&index);
    assert_eq!(incremental[0].as_array().unwrap().len(), 3);
    index.rebuild(&mut |_, _| {}).unwrap();
    assert_eq!(answers(&index), incremental);
    let counts = index.counts().unwrap();
    drop(index);
    std::fs::remove_file(d.join(INDEX_FILE)).unwrap();
    let mut fresh = Index::open(d).unwrap();
    fresh.sync(&mut |_, _| {}).unwrap();
    assert_eq!(answers(&fresh), incremental);
    assert_eq!(fresh.counts().unwrap(), counts);
    // Outside the data directory: refused.
    let elsewhere = SessionDir::new(t.path().join("x"));
    assert!(matches!(
        fresh.update_session(&elsewhere),
        Err(IndexError::Outside(_))
    ));
}

#[test]
fn live_transcripts_diarized_speakers_and_erasure() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let a = session(d, 1, "a", &["hello there", "general words"]);
    // While recording there is no transcript.json, only each utterance's live transcript.
    std::fs::remove_file(a.root().join("transcript.json")).unwrap();

    let entry = |text: &str| {
        json!({"model_sha256": "cd", "options": {}, "transcript": {
        "language": "en", "language_probability": 1.0, "dropped": [],
        "segments": [{"start": 0.5, "end": 2.0, "text": text, "avg_logprob": -0.1, "no_speech_prob": 0.0, "words": []}]}})
    };
    std::fs::create_dir_all(a.root().join(".work/transcribe-live")).unwrap();
    std::fs::write(
        a.root()
            .join(".work/transcribe-live/7_000000-0000000000.json"),
        entry(" live hello").to_string(),
    )
    .unwrap();
    let mut index = Index::open(d).unwrap();
    index.update_session(&a).unwrap();
    let h = index
        .search(&Query::parse("live").unwrap(), &Filter::default(), 5)
        .unwrap();
    assert_eq!(
        (h.len(), h[0].start, h[0].speaker.as_str()),
        (1, 0.5, "Ann")
    );
    // A second utterance comes back: found at the next update.
    std::fs::write(
        a.root()
            .join(".work/transcribe-live/8_000001-0000010000.json"),
        entry(" live again").to_string(),
    )
    .unwrap();
    index.update_session(&a).unwrap();
    assert_eq!(
        index
            .search(&Query::parse("live").unwrap(), &Filter::default(), 5)
            .unwrap()
            .len(),
        2
    );
    // Finished and diarized: user 8's stream holds a speaker named after user 9's print.
    let a = session(d, 1, "a", &["hello there", "general words"]);
    std::fs::remove_dir_all(a.root().join(".work")).unwrap();
    let diar = json!({"schema": "nina.diarization/1",
        "speakers": [{"name": "Bea", "user_id": 8, "seconds": 3.0, "identity": {"user_id": 9, "similarity": 0.8}}],
        "turns": [], "overlaps": [],
        "segments": [{"index": 1, "start": 11.0, "end": 14.0, "stream": "8", "speaker": "Bea", "text": " general words"}]});
    a.write("diarization.json", diar.to_string().as_bytes())
        .unwrap();
    index.update_session(&a).unwrap();
    let h = index
        .search(
            &Query::parse("general").unwrap(),
            &Filter {
                speaker: Some("bea".into()),
                ..Default::default()
            },
            5,
        )
        .unwrap();
    assert_eq!((h.len(), h[0].user_id), (1, Some(8)));
    assert!(
        index
            .search(&Query::parse("live").unwrap(), &Filter::default(), 5)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        index.rows_of_user(9).unwrap(),
        1,
        "the speaker matched 9's print"
    );
    assert!(index.rows_of_user(8).unwrap() >= 3);
    // Rows go with the session's files.
    let mut s = a.load().unwrap();
    s.participants.retain(|p| p.user_id != 8);
    s.utterances.retain(|u| u.user_id != 8);
    a.save(&s).unwrap();
    let keep = s.speaker_label(7);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.root().join("transcript.json")).unwrap()).unwrap();
    let mut doc = doc;
    doc["segments"]
        .as_array_mut()
        .unwrap()
        .retain(|g| g["speaker"] == keep.as_str());
    a.write("transcript.json", doc.to_string().as_bytes())
        .unwrap();
    std::fs::remove_file(a.root().join("diarization.json")).unwrap();
    index.update_session(&a).unwrap();
    index.purge().unwrap();
    assert_eq!(
        (
            index.rows_of_user(8).unwrap(),
            index.rows_of_user(9).unwrap()
        ),
        (0, 0)
    );
    let bytes = std::fs::read(d.join(INDEX_FILE)).unwrap();
    assert!(
        !bytes.windows(7).any(|w| w == b"general"),
        "no trace in the file"
    );
}

#[test]
fn damaged_documents_are_reported_not_indexed() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let a = session(d, 1, "a", &["fine"]);
    let b = session(d, 1, "b", &["also fine"]);
    b.write("transcript.json", b"{ not json").unwrap();
    let mut index = Index::open(d).unwrap();
    let r = index.sync(&mut |_, _| {}).unwrap();
    assert_eq!(r.indexed, 1);
    assert_eq!(r.failed.len(), 1);
    assert!(matches!(
        index.update_session(&b),
        Err(IndexError::Damaged { .. })
    ));
    assert_eq!(index.update_session(&a).unwrap(), Update::Unchanged);
}

proptest::proptest! {
    /// Whatever a person types is refused with a reason or becomes an expression FTS5 accepts.
    #[test]
    fn any_query_is_refused_or_runs(input in "\\PC{0,40}|[\"*()^:+-. a-zA-Z]{0,30}|(OR|AND|NOT|NEAR) [a-z]{1,5}") {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE VIRTUAL TABLE f USING fts5(t, tokenize='unicode61 remove_diacritics 2');
                            INSERT INTO f(t) VALUES ('São Paulo and the quick fox');").unwrap();
        if let Ok(q) = Query::parse(&input) {
            let fts = q.to_fts();
            let r: rusqlite::Result<Vec<i64>> = conn
                .prepare("SELECT rowid FROM f WHERE f MATCH ?1")
                .and_then(|mut st| st.query_map([&fts], |r| r.get(0))?.collect());
            proptest::prop_assert!(r.is_ok(), "{input:?} -> {fts}: {r:?}");
        }
    }
}
