//! Diarization of stored sessions end to end with the real models (CAM++, Silero).
//!
//! Voiceprints: a session where each user speaks on their own stream enrols them; in a later
//! session of the same guild, the enrolled users, a stranger and a user who opted out all speak
//! into one shared stream, which is diarized and its speakers named. Enrolment and test speech
//! are different clips. Resume: a run stopped part way keeps the embeddings it made.

use std::collections::BTreeMap;

use nina_eval::conversation::{Spec, Voice, synthesize, test_voices};
use nina_pipeline::{
    DiarizeOutcome, NoProgress, Pipeline, Progress, SessionWriter, Voices, print_model,
};
use nina_segment::{SampleFormat, StreamFormat, Utterance};
use nina_store::{Place, Session, Store, VoicePrints};
use nina_tests::config;

const GUILD: u64 = 42;
const CHANNEL: u64 = 7;
/// Users 1-4 enrol; user 5 opted out (speaks on their own stream, never enrolled); the
/// stranger (`kal16`) is nobody's stream; user 9's stream is the shared room.
const USERS: [(&str, u64); 5] = [
    ("reader", 1),
    ("cards", 2),
    ("slt", 3),
    ("rms", 4),
    ("awb", 5),
];
const STRANGER: &str = "kal16";
const OPTED_OUT: u64 = 5;
const ROOM: u64 = 9;

/// A user's stream: its utterances as `(start seconds, 16 kHz audio)`.
type Stream = (u64, Vec<(f64, Vec<f32>)>);

fn utterance(seq: u64, start: f64, audio: &[f32]) -> Utterance {
    let end = start + audio.len() as f64 / 16_000.0;
    Utterance {
        seq,
        start,
        end,
        speech_start: start,
        speech_end: end,
        cut: false,
        format: StreamFormat {
            sample_rate: 16_000,
            channels: 1,
            format: SampleFormat::F32,
        },
        samples: audio.to_vec(),
        audio_16k: audio.to_vec(),
    }
}

/// Writes a session of `streams` (user, utterances as `(start, audio)`) under `data`.
fn session(data: &std::path::Path, id: &str, streams: &[Stream]) -> Store {
    let store = Store::new(data);
    let s = Session::new(
        id,
        Place {
            id: GUILD,
            name: None,
        },
        Place {
            id: CHANNEL,
            name: None,
        },
        1_790_000_000_000,
    );
    let dir = store.session_dir(&s).unwrap();
    let (lock, _) = dir.claim().unwrap();
    let mut w = SessionWriter::new(dir, s, lock);
    for (user, utts) in streams {
        for (seq, (start, audio)) in utts.iter().enumerate() {
            w.utterance(*user, &utterance(seq as u64, *start, audio))
                .unwrap();
        }
    }
    w.finish(Some(1_790_000_100_000)).unwrap();
    store
}

#[test]
fn clean_streams_enrol_and_a_shared_stream_is_named_after_them() {
    let voices = test_voices().unwrap_or_else(|e| panic!("{e}\nrun scripts/setup.sh"));
    let by_name: BTreeMap<&str, &Voice> = voices.iter().map(|v| (v.name.as_str(), v)).collect();
    // The first half of each voice's clips enrols, the rest speaks in the shared stream.
    let split = |v: &Voice| v.clips.len().div_ceil(2);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    std::fs::write(
        data.join(nina_store::OPTOUT_JSON),
        format!(r#"{{"{GUILD}": [{OPTED_OUT}]}}"#),
    )
    .unwrap();
    let p = Pipeline::new(config("whisper-tiny.en")).unwrap();
    let cfg = nina_diarize::DiarizeConfig::default();

    // Session A: every user alone on their own stream.
    let streams: Vec<Stream> = USERS
        .iter()
        .map(|(name, user)| {
            let v = by_name[name];
            let mut t = 0.0;
            let utts = v.clips[..split(v)]
                .iter()
                .map(|c| {
                    let u = (t, c.clone());
                    t += c.len() as f64 / 16_000.0 + 1.0;
                    u
                })
                .collect();
            (*user, utts)
        })
        .collect();
    let store = session(data, "enrol", &streams);
    let dirs = store.sessions().unwrap();
    let mut prints = VoicePrints::load(data, GUILD).unwrap();
    let mut v = Voices::new(&mut prints);
    v.opted_out = nina_store::opted_out(data, GUILD).unwrap();
    let out = p
        .diarize_session(&dirs[0], &cfg, 2, false, Some(&mut v), &NoProgress)
        .unwrap();
    assert!(
        matches!(out, DiarizeOutcome::Done { enrolled: 4, .. }),
        "{out:?}"
    );
    let prints = VoicePrints::load(data, GUILD).unwrap();
    let model = print_model();
    for (name, user) in USERS {
        let enrolled = prints.get(user, &model);
        if user == OPTED_OUT {
            assert!(enrolled.is_none(), "{name} opted out but was enrolled");
        } else {
            let e = enrolled.unwrap_or_else(|| panic!("{name} not enrolled"));
            assert!(e.seconds >= 3.0 && e.sources == ["enrol"], "{e:?}");
        }
    }
    // Running it again enrols nothing twice, and is skipped as done.
    let mut again = VoicePrints::load(data, GUILD).unwrap();
    let mut v = Voices::new(&mut again);
    v.opted_out = nina_store::opted_out(data, GUILD).unwrap();
    let out = p
        .diarize_session(&dirs[0], &cfg, 2, false, Some(&mut v), &NoProgress)
        .unwrap();
    assert_eq!(out, DiarizeOutcome::Skipped);
    let out = p
        .diarize_session(&dirs[0], &cfg, 2, true, Some(&mut v), &NoProgress)
        .unwrap();
    assert!(
        matches!(out, DiarizeOutcome::Done { enrolled: 0, .. }),
        "{out:?}"
    );
    assert_eq!(again.get(1, &model).unwrap().count, 1);

    // Session B: the enrolled users, the opted-out user and a stranger in one stream.
    let mut room: Vec<Voice> = USERS
        .iter()
        .map(|(name, _)| {
            let v = by_name[name];
            Voice {
                name: name.to_string(),
                clips: v.clips[split(v)..].to_vec(),
            }
        })
        .collect();
    room.push(Voice {
        name: STRANGER.into(),
        clips: by_name[STRANGER].clips.clone(),
    });
    let conv = synthesize(
        &room,
        &Spec {
            seconds: 60.0,
            turn: (1.0, 3.0),
            seed: 11,
            ..Spec::default()
        },
    );
    let half = conv.audio.len() / 2;
    let store = session(
        data,
        "room",
        &[(
            ROOM,
            vec![
                (0.0, conv.audio[..half].to_vec()),
                (half as f64 / 16_000.0, conv.audio[half..].to_vec()),
            ],
        )],
    );
    let dir = store
        .sessions()
        .unwrap()
        .into_iter()
        .find(|d| d.root().ends_with("room"))
        .unwrap();
    // A transcript of the room stream, one segment per turn, saying whose turn it is.
    let segments = conv
        .turns
        .iter()
        .map(|t| nina_transcribe::SpeakerSegment {
            speaker: ROOM.to_string(),
            language: None,
            segment: nina_transcribe::Segment {
                start: t.start,
                end: t.end,
                text: t.speaker.clone(),
                avg_logprob: -0.1,
                no_speech_prob: 0.0,
                ..Default::default()
            },
        })
        .collect();
    let doc = nina_transcribe::TranscriptDocument::new(
        nina_transcribe::ModelInfo {
            name: "test".into(),
            sha256: String::new(),
        },
        &nina_transcribe::TranscribeOptions::default(),
        segments,
        vec![],
    );
    dir.write("transcript.json", doc.to_json().as_bytes())
        .unwrap();
    let mut prints = VoicePrints::load(data, GUILD).unwrap();
    let mut v = Voices::new(&mut prints);
    v.opted_out = nina_store::opted_out(data, GUILD).unwrap();
    let out = p
        .diarize_session(&dir, &cfg, 2, false, Some(&mut v), &NoProgress)
        .unwrap();
    eprintln!("room: {out:?}");
    // transcript.txt names each turn's speaker: the user for an enrolled voice, unknown_N for
    // the others (`[00:00:01] 1: reader`).
    let txt = std::fs::read_to_string(dir.root().join("transcript.txt")).unwrap();
    let (mut lines, mut named_right) = (0, 0);
    for line in txt.lines() {
        let (who, voice) = line[11..].split_once(": ").unwrap();
        lines += 1;
        let ok = match USERS.iter().find(|(n, u)| *n == voice && *u != OPTED_OUT) {
            Some((_, u)) => who == u.to_string(),
            None => who.starts_with("unknown_"),
        };
        named_right += usize::from(ok);
    }
    eprintln!("transcript.txt: {named_right} of {lines} turns under the right name");
    assert!(named_right as f64 >= 0.95 * lines as f64, "{txt}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.root().join("diarization.json")).unwrap())
            .unwrap();
    let hyp: Vec<(f64, f64, String)> = doc["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["start"].as_f64().unwrap(),
                t["end"].as_f64().unwrap(),
                t["speaker"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    eprintln!("speakers: {}", doc["speakers"]);
    // The user a reference voice should be named after (none for the stranger and the
    // opted-out user).
    let expected = |voice: &str| -> Option<String> {
        USERS
            .iter()
            .find(|(n, u)| *n == voice && *u != OPTED_OUT)
            .map(|(_, u)| u.to_string())
    };
    let known: Vec<String> = USERS.iter().map(|(_, u)| u.to_string()).collect();
    let (mut total, mut right, mut unknown_total, mut unknown_named) = (0, 0, 0, 0);
    // Per diarized speaker, the reference voices it covers (frames).
    let mut covers: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let frames = (conv.audio.len() as f64 / 16_000.0 / 0.01) as usize;
    for f in 0..frames {
        let t = (f as f64 + 0.5) * 0.01;
        let on: Vec<&str> = conv
            .turns
            .iter()
            .filter(|x| x.start <= t && t < x.end)
            .map(|x| x.speaker.as_str())
            .collect();
        let [voice] = on[..] else { continue };
        let said = hyp
            .iter()
            .find(|h| h.0 <= t && t < h.1)
            .map(|h| h.2.clone());
        if let Some(s) = &said {
            *covers
                .entry(s.clone())
                .or_default()
                .entry(voice.to_string())
                .or_default() += 1;
        }
        match expected(voice) {
            Some(user) => {
                total += 1;
                right += usize::from(said.as_deref() == Some(user.as_str()));
            }
            None => {
                unknown_total += 1;
                unknown_named += usize::from(said.is_some_and(|s| known.contains(&s)));
            }
        }
    }
    let share = right as f64 / total as f64;
    eprintln!(
        "speech of enrolled users named right: {:.1} % of {total} frames; stranger and opted-out \
         speech given a known name: {unknown_named} of {unknown_total} frames; speakers {covers:?}",
        100.0 * share
    );
    assert!(share >= 0.95, "{share}");
    assert!(
        unknown_total > 1000,
        "the unknown voices spoke too little to test"
    );
    assert!(
        unknown_named as f64 <= 0.02 * unknown_total as f64,
        "{unknown_named} of {unknown_total}"
    );
    // No speaker made mostly of an unknown voice carries a known name.
    for (speaker, voices) in &covers {
        let (main, _) = voices.iter().max_by_key(|v| v.1).unwrap();
        if expected(main).is_none() {
            assert!(
                speaker.starts_with("unknown_"),
                "{speaker} is mostly {main}"
            );
        }
    }
    // The opted-out user is never named, even though they speak.
    assert!(!hyp.iter().any(|h| h.2 == OPTED_OUT.to_string()));
}

/// Stops the run (by panicking) once `after` utterances are done.
struct StopAfter {
    after: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress for StopAfter {
    fn utterance_done(&self, _seconds: f64) {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if done == self.after {
            panic!("stopped on purpose");
        }
    }
}

#[test]
fn a_diarization_stopped_part_way_resumes_with_the_embeddings_it_made() {
    let voices = test_voices().unwrap_or_else(|e| panic!("{e}\nrun scripts/setup.sh"));
    let conv = synthesize(
        &voices[..3],
        &Spec {
            seconds: 40.0,
            seed: 5,
            ..Spec::default()
        },
    );
    // Four utterances of 10 s in one stream.
    let n = conv.audio.len() / 4;
    let utts: Vec<(f64, Vec<f32>)> = (0..4)
        .map(|i| {
            let end = if i == 3 {
                conv.audio.len()
            } else {
                (i + 1) * n
            };
            ((i * n) as f64 / 16_000.0, conv.audio[i * n..end].to_vec())
        })
        .collect();
    let p = Pipeline::new(config("whisper-tiny.en")).unwrap();
    let cfg = nina_diarize::DiarizeConfig::default();
    let tmp = tempfile::tempdir().unwrap();
    let whole = session(&tmp.path().join("a"), "whole", &[(ROOM, utts.clone())]);
    let whole = &whole.sessions().unwrap()[0];
    let out = p
        .diarize_session(whole, &cfg, 2, false, None, &NoProgress)
        .unwrap();
    assert!(
        matches!(out, DiarizeOutcome::Done { resumed: 0, .. }),
        "{out:?}"
    );

    let stopped = session(&tmp.path().join("b"), "whole", &[(ROOM, utts)]);
    let stopped = &stopped.sessions().unwrap()[0];
    let stop = StopAfter {
        after: 2,
        done: 0.into(),
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.diarize_session(stopped, &cfg, 2, false, None, &stop)
    }));
    assert!(r.is_err(), "the run was meant to stop");
    assert!(!stopped.root().join("diarization.rttm").exists());
    let out = p
        .diarize_session(stopped, &cfg, 2, false, None, &NoProgress)
        .unwrap();
    assert!(
        matches!(out, DiarizeOutcome::Done { resumed: 2, .. }),
        "{out:?}"
    );
    // The same result as the run that was never stopped (saved embeddings and times go
    // through JSON, which may move a boundary by a millisecond).
    let rttm = |d: &nina_store::SessionDir| {
        let text = std::fs::read_to_string(d.root().join("diarization.rttm")).unwrap();
        nina_eval::rttm::parse(&text).unwrap()
    };
    let (a, b) = (rttm(whole), rttm(stopped));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.speaker, y.speaker);
        assert!(
            (x.start - y.start).abs() <= 0.002 && (x.end - y.end).abs() <= 0.002,
            "{x:?} {y:?}"
        );
    }
    // Nothing is left under .work/ once done.
    let work = stopped.root().join(".work");
    assert!(
        !work.exists() || std::fs::read_dir(&work).unwrap().next().is_none(),
        "work left behind"
    );
}
