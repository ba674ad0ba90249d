//! The search index at scale, on synthetic data (a Zipf vocabulary of 20,000 made-up words,
//! 6-16 words a segment, 100 segments a session):
//!
//! - query latency at 1 k, 100 k and 1 M segments (median and p95 of 40 queries of each kind);
//! - rebuild throughput: `Index::rebuild` over 10,000 session directories on disk;
//! - `--export-data DIR`: writes a data directory of sessions with real WAV audio, to time
//!   `reprocess export` on (see docs/measurements.md).
//!
//! `cargo bench -p nina-index --bench index -- [--sizes 1000,100000,1000000] [--sessions 10000]`
//! prints a Markdown table. Runs in a temporary directory under `$TMPDIR`.

use std::path::Path;
use std::time::Instant;

use nina_index::{Filter, Index, Query, SegmentRow, SessionData};
use nina_store::{Participant, Place, Session, UtteranceRecord};
use serde_json::json;

/// A small deterministic generator (xorshift*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const VOCAB: usize = 20_000;
const SEGMENTS_PER_SESSION: usize = 100;

/// The made-up word of rank `i` (0 is the most frequent), with an accent now and then.
fn word(i: usize) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "sa", "tu", "ri", "po", "ve", "da", "zu", "fe", "gão", "bi", "çu",
        "hé",
    ];
    let mut n = i + 1;
    let mut w = String::new();
    while n > 0 {
        w.push_str(SYL[n % 16]);
        n /= 16;
    }
    w
}

/// Zipf-like rank: heavy head, long tail.
fn zipf(rng: &mut Rng) -> usize {
    let u = rng.unit();
    ((VOCAB as f64).powf(u) - 1.0) as usize % VOCAB
}

fn text(rng: &mut Rng) -> String {
    let n = 6 + rng.below(11) as usize;
    (0..n)
        .map(|_| word(zipf(rng)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn session(rng: &mut Rng, k: usize, segments: usize) -> (String, SessionData) {
    let guild = 1 + (k % 20) as u64;
    let id = format!("s{k:07}");
    let mut s = Session::new(
        &id,
        Place {
            id: guild,
            name: None,
        },
        Place {
            id: 100 + guild,
            name: None,
        },
        1_700_000_000_000 + k as i64 * 3_600_000,
    );
    let users = [1000 + (k % 50) as u64, 2000 + (k % 70) as u64];
    for u in users {
        s.participants.push(Participant {
            user_id: u,
            display_name: None,
            presence: vec![],
        });
    }
    let mut rows = Vec::with_capacity(segments);
    for i in 0..segments {
        let user = users[i % 2];
        let start = i as f64 * 4.0;
        s.utterances.push(UtteranceRecord {
            user_id: user,
            seq: i as u64,
            start,
            end: start + 3.5,
            speech_start: start,
            speech_end: start + 3.5,
            cut: false,
            file: nina_store::utterance_file(user, i as u64, start, None),
            sample_rate: 48_000,
            channels: 2,
        });
        rows.push(SegmentRow {
            position: i,
            utterance: Some(i),
            user_id: Some(user),
            stream: user.to_string(),
            speaker: user.to_string(),
            start: start + 0.2,
            end: start + 3.3,
            text: text(rng),
            language: Some(if rng.below(10) == 0 { "pt" } else { "en" }.into()),
            confidence: Some(0.5 + rng.unit() / 2.0),
            words: Vec::new(),
        });
    }
    let path = format!("{guild}/{}/2023-11-14/{id}", 100 + guild);
    (
        path,
        SessionData {
            session: s,
            segments: rows,
            speakers: Vec::new(),
            models: Vec::new(),
        },
    )
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.95))
}

/// Makes one query of a kind.
type MakeQuery = Box<dyn Fn(&mut Rng) -> (String, Filter)>;

fn query_bench(root: &Path, n: usize) {
    let dir = root.join(format!("q{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut index = Index::open(&dir).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let sessions = n.div_ceil(SEGMENTS_PER_SESSION);
    let t = Instant::now();
    let mut batch = Vec::new();
    for k in 0..sessions {
        let per = SEGMENTS_PER_SESSION.min(n - k * SEGMENTS_PER_SESSION);
        batch.push(session(&mut rng, k, per));
        if batch.len() == 500 || k + 1 == sessions {
            index.insert_data("", &batch).unwrap();
            batch.clear();
        }
    }
    let build = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(dir.join(nina_index::INDEX_FILE)).map_or(0, |m| m.len());
    // Query kinds: a rare word, a mid word, a frequent word, a two-word query, a phrase,
    // a word with filters, a prefix, an accent-less form of an accented word.
    let kinds: [(&str, MakeQuery); 7] = [
        (
            "rare word",
            Box::new(|r: &mut Rng| (word(5_000 + r.below(15_000) as usize), Filter::default())),
        ),
        (
            "mid word",
            Box::new(|r: &mut Rng| (word(100 + r.below(900) as usize), Filter::default())),
        ),
        (
            "frequent word",
            Box::new(|r: &mut Rng| (word(r.below(10) as usize), Filter::default())),
        ),
        (
            "two words",
            Box::new(|r: &mut Rng| {
                (
                    format!(
                        "{} {}",
                        word(20 + r.below(200) as usize),
                        word(20 + r.below(200) as usize)
                    ),
                    Filter::default(),
                )
            }),
        ),
        (
            "phrase",
            Box::new(|r: &mut Rng| {
                (
                    format!(
                        "\"{} {}\"",
                        word(r.below(50) as usize),
                        word(r.below(50) as usize)
                    ),
                    Filter::default(),
                )
            }),
        ),
        (
            "mid word + guild + user + since",
            Box::new(|r: &mut Rng| {
                let g = 1 + r.below(20);
                (
                    word(100 + r.below(900) as usize),
                    Filter {
                        guild: Some(g),
                        user: Some(1000 + g % 50),
                        since_ms: Some(1_700_000_000_000),
                        ..Default::default()
                    },
                )
            }),
        ),
        (
            "accent-less mid word",
            Box::new(|r: &mut Rng| {
                let w = word(100 + r.below(900) as usize)
                    .replace('ã', "a")
                    .replace('ç', "c")
                    .replace('é', "e");
                (w, Filter::default())
            }),
        ),
    ];
    for (name, make) in &kinds {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..40 {
            let (q, f) = make(&mut rng);
            let q = Query::parse(&q).unwrap();
            let t = Instant::now();
            let hits = index.search(&q, &f, 20).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            found += hits.len();
        }
        let (p50, p95) = stats(times);
        println!(
            "| {n} | {name} | {p50:.2} | {p95:.2} | {:.1} |",
            found as f64 / 40.0
        );
    }
    eprintln!(
        "{n} segments: built in {build:.1} s ({:.0} segments/s), {:.1} MB",
        n as f64 / build,
        size as f64 / 1e6
    );
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `count` session directories (session.json + transcript.json with words) under `data`.
fn write_sessions(data: &Path, count: usize, segments: usize, audio: bool) {
    let mut rng = Rng(42);
    for k in 0..count {
        let (path, d) = session(&mut rng, k, segments);
        let root = data.join(&path);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("session.json"),
            serde_json::to_vec(&d.session).unwrap(),
        )
        .unwrap();
        let segs: Vec<_> = d
            .segments
            .iter()
            .map(|g| {
                let words: Vec<_> = g
                    .text
                    .split(' ')
                    .enumerate()
                    .map(|(i, w)| json!({"start": g.start + i as f64 * 0.2, "end": g.start + i as f64 * 0.2 + 0.18, "text": format!(" {w}"), "probability": 0.9}))
                    .collect();
                json!({"speaker": g.speaker, "start": g.start, "end": g.end, "text": format!(" {}", g.text),
                       "avg_logprob": -0.2, "no_speech_prob": 0.01, "words": words})
            })
            .collect();
        let doc = json!({"schema": "nina.transcript/1", "model": {"name": "synthetic", "sha256": "00"},
                         "options": {"language": "en"}, "segments": segs, "dropped": []});
        std::fs::write(root.join("transcript.json"), doc.to_string()).unwrap();
        if audio {
            for u in &d.session.utterances {
                let frames = ((u.end - u.start) * 48_000.0) as usize;
                let samples: Vec<f32> = (0..frames * 2)
                    .map(|i| 0.2 * ((i / 2) as f32 * 0.05).sin() + 0.01 * (rng.unit() as f32 - 0.5))
                    .collect();
                nina_store::write_wav(
                    &root.join(&u.file),
                    &samples,
                    48_000,
                    2,
                    nina_store::WavEncoding::I16,
                )
                .unwrap();
            }
        }
    }
}

fn rebuild_bench(root: &Path, count: usize) {
    let data = root.join("rebuild");
    let t = Instant::now();
    write_sessions(&data, count, 10, false);
    eprintln!(
        "{count} sessions written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut index = Index::open(&data).unwrap();
    let t = Instant::now();
    let r = index.rebuild(&mut |_, _| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let [s, u, g, w] = index.counts().unwrap();
    println!(
        "| rebuild | {count} sessions ({u} utterances, {g} segments, {w} words) | {secs:.1} s | {:.0} sessions/s |",
        count as f64 / secs
    );
    assert_eq!((r.indexed, s as usize), (count, count));
    let t = Instant::now();
    let r = index.sync(&mut |_, _| {}).unwrap();
    println!(
        "| sync, nothing changed | {count} sessions | {:.2} s | {:.0} sessions/s |",
        t.elapsed().as_secs_f64(),
        count as f64 / t.elapsed().as_secs_f64()
    );
    assert_eq!(r.unchanged, count);
    drop(index);
    let _ = std::fs::remove_dir_all(&data);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(dir) = arg("--export-data") {
        let sessions: usize = arg("--sessions")
            .and_then(|s| s.parse().ok())
            .unwrap_or(100);
        let t = Instant::now();
        write_sessions(Path::new(&dir), sessions, 10, true);
        eprintln!(
            "{sessions} sessions of 10 utterances (3.5 s, 48 kHz stereo) written to {dir} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        return;
    }
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "1000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let sessions: usize = arg("--sessions")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    println!("| segments | query | median (ms) | p95 (ms) | hits (mean, limit 20) |");
    println!("|---:|---|---:|---:|---:|");
    for n in sizes {
        query_bench(tmp.path(), n);
    }
    if sessions > 0 {
        println!();
        println!("| what | of | time | throughput |");
        println!("|---|---|---:|---:|");
        rebuild_bench(tmp.path(), sessions);
    }
}
