//! Synthetic data directories for the web tests and the benchmark: sessions made with
//! nina-store's own types (tones for speech, a hand-written transcript), indexed with
//! nina-index. No model runs.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nina_store::{Participant, Place, Session, SessionDir, Store, UtteranceRecord, WavEncoding};
use serde_json::json;

pub const GUILD: u64 = 111;
pub const CHANNEL: u64 = 222;
pub const ANN: u64 = 7;
pub const BOB: u64 = 8;
pub const RATE: u32 = 16_000;
pub const START_MS: i64 = 1_764_057_600_000; // 2025-11-25T08:00:00Z

/// Lines of the demo session: (user, start, end, text).
pub const LINES: &[(u64, f64, f64, &str)] = &[
    (ANN, 1.0, 3.0, "good morning everyone"),
    (BOB, 4.0, 6.5, "the quick brown fox jumps"),
    (ANN, 8.0, 10.0, "shall we start the meeting"),
    (BOB, 12.5, 15.0, "yes the budget is ready"),
    (ANN, 16.0, 18.5, "thank you and goodbye"),
];
pub const DEMO_SECONDS: f64 = 20.0;

/// The test sound of one utterance: a sine at `hz` under a half-sine envelope.
pub fn tone(seconds: f64, hz: f64) -> Vec<f32> {
    let n = (seconds * f64::from(RATE)) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let env = (std::f64::consts::PI * t / seconds).sin();
            (0.5 * env * (2.0 * std::f64::consts::PI * hz * t).sin()) as f32
        })
        .collect()
}

/// A session with `lines` (one utterance and one transcript segment each); audio when `audio`.
pub fn session(
    data: &Path,
    id: &str,
    started_at_ms: i64,
    seconds: f64,
    lines: &[(u64, f64, f64, &str)],
    audio: bool,
) -> SessionDir {
    let mut s = Session::new(
        id,
        Place {
            id: GUILD,
            name: Some("Test guild".into()),
        },
        Place {
            id: CHANNEL,
            name: Some("General".into()),
        },
        started_at_ms,
    );
    s.ended_at_ms = Some(started_at_ms + (seconds * 1000.0) as i64);
    s.participants = vec![
        Participant {
            user_id: ANN,
            display_name: Some("Ann".into()),
            presence: vec![],
        },
        Participant {
            user_id: BOB,
            display_name: Some("Bob".into()),
            presence: vec![],
        },
    ];
    let mut segments = Vec::new();
    let mut mix = vec![0f32; (seconds * f64::from(RATE)) as usize];
    for (i, (user, start, end, text)) in lines.iter().enumerate() {
        let file = nina_store::utterance_file(*user, i as u64, *start, None);
        s.utterances.push(UtteranceRecord {
            user_id: *user,
            seq: i as u64,
            start: *start,
            end: *end,
            speech_start: *start,
            speech_end: *end,
            cut: false,
            file: file.clone(),
            sample_rate: RATE,
            channels: 1,
        });
        segments.push(json!({
            "speaker": if *user == ANN { "Ann" } else { "Bob" },
            "start": start, "end": end, "text": format!(" {text}"),
            "avg_logprob": -0.2, "no_speech_prob": 0.01, "words": [], "language": "en",
        }));
        if audio {
            let hz = if *user == ANN { 440.0 } else { 660.0 };
            let samples = tone(end - start, hz);
            let at = (start * f64::from(RATE)) as usize;
            for (k, v) in samples.iter().enumerate() {
                if let Some(m) = mix.get_mut(at + k) {
                    *m += v;
                }
            }
            let dir = Store::new(data).session_dir(&s).unwrap();
            let path = dir.file(&file).unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            nina_store::write_wav(&path, &samples, RATE, 1, WavEncoding::I16).unwrap();
        }
    }
    let dir = Store::new(data).session_dir(&s).unwrap();
    std::fs::create_dir_all(dir.root()).unwrap();
    dir.save(&s).unwrap();
    let doc = json!({
        "schema": "nina.transcript/1", "model": {"name": "whisper-test", "sha256": "ab"},
        "options": {"language": null}, "segments": segments, "dropped": [],
    });
    dir.write("transcript.json", doc.to_string().as_bytes())
        .unwrap();
    dir.write("transcript.txt", b"Ann: good morning everyone\n")
        .unwrap();
    if audio {
        let path = dir.root().join("mix.wav");
        nina_store::write_wav(&path, &mix, RATE, 1, WavEncoding::I16).unwrap();
    }
    dir
}

/// The index of `data`, brought up to date.
pub fn index(data: &Path) {
    let mut index = nina_index::Index::open(data).unwrap();
    index.sync(&mut |_, _| {}).unwrap();
}

/// A data directory with the demo session (audio, transcript) and `extra` sessions without
/// audio (one a minute before it, older and older), indexed.
pub fn data_dir(extra: usize) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    session(&data, "demo", START_MS, DEMO_SECONDS, LINES, true);
    for i in 0..extra {
        let at = START_MS - (i as i64 + 1) * 3_600_000;
        session(
            &data,
            &format!("old-{i:05}"),
            at,
            60.0,
            &[
                (ANN, 1.0, 3.0, "an older line"),
                (BOB, 5.0, 8.0, "another one"),
            ],
            false,
        );
    }
    index(&data);
    (t, data)
}

/// A [`nina_web::Forget`] that records its calls.
#[derive(Default)]
pub struct FakeForget(pub Mutex<Vec<(u64, Option<u64>)>>);

impl nina_web::Forget for FakeForget {
    fn forget(&self, _data: &Path, user: u64, guild: Option<u64>) -> Result<String, String> {
        self.0.lock().unwrap().push((user, guild));
        Ok(format!("user {user} forgotten"))
    }
}

/// A running server on a free loopback port; stops when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub hub: nina_web::LiveHub,
    pub forget: Arc<FakeForget>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(data: &Path) -> Self {
        let hub = nina_web::LiveHub::new();
        let forget = Arc::new(FakeForget::default());
        let web = nina_web::Web::new(nina_web::WebConfig::loopback(data, 0))
            .unwrap()
            .with_hub(hub.clone())
            .with_forget(forget.clone());
        let bound = web.bind().await.unwrap();
        let addr = bound.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            hub,
            forget,
            stop: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
