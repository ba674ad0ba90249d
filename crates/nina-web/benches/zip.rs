//! The tracks download (`/s/{id}/tracks.zip`): time and peak memory of writing the zip of
//! every user's FLAC track for a long session, printed as a table.
//!
//! `cargo bench -p nina-web --bench zip` (`NINA_BENCH_ZIP_MINUTES`, default 60: one user
//! speaking 10 s in every 12 s for that long, 16 kHz).

use std::time::Instant;

use nina_store::{Participant, Place, Session, Store, UtteranceRecord, WavEncoding};

/// Counts the bytes written.
struct Count(u64);

impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    const RATE: u32 = 16_000;
    let minutes: f64 = std::env::var("NINA_BENCH_ZIP_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let seconds = minutes * 60.0;
    let t = tempfile::tempdir().unwrap();
    let place = |id| Place { id, name: None };
    let mut s = Session::new("long", place(1), place(2), 1_764_057_600_000);
    s.ended_at_ms = Some(s.started_at_ms + (seconds * 1000.0) as i64);
    s.participants = vec![Participant {
        user_id: 7,
        display_name: Some("Ann".into()),
        presence: vec![],
    }];
    let dir = Store::new(t.path()).session_dir(&s).unwrap();
    // 10 s of a gliding tone with a little noise (FLAC cannot shrink it to nothing) every 12 s.
    let mut x: u32 = 1;
    let utterance: Vec<f32> = (0..10 * RATE as usize)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let t = i as f64 / f64::from(RATE);
            (0.3 * (2.0 * std::f64::consts::PI * (200.0 + 20.0 * t) * t).sin()) as f32
                + (x as f32 / u32::MAX as f32 - 0.5) * 0.02
        })
        .collect();
    let mut start = 0.0;
    let mut seq = 0;
    while start + 10.0 <= seconds {
        let file = nina_store::utterance_file(7, seq, start, None);
        let path = dir.file(&file).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nina_store::write_wav(&path, &utterance, RATE, 1, WavEncoding::I16).unwrap();
        s.utterances.push(UtteranceRecord {
            user_id: 7,
            seq,
            start,
            end: start + 10.0,
            speech_start: start,
            speech_end: start + 10.0,
            cut: false,
            file,
            sample_rate: RATE,
            channels: 1,
        });
        start += 12.0;
        seq += 1;
    }
    dir.save(&s).unwrap();
    let before = nina_eval::memory::peak_rss_mib();
    let t0 = Instant::now();
    let out = nina_web::download::write_users_zip(&dir, &s, Count(0)).unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let after = nina_eval::memory::peak_rss_mib();
    let pcm_mb = seconds * f64::from(RATE) * 2.0 / 1e6;
    println!("\n## tracks.zip (cargo bench -p nina-web --bench zip)\n");
    println!("| session | 16-bit PCM (MB) | zip (MB) | time (s) | peak RSS before / after (MiB) |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| one user, {minutes:.0} min, {} utterances | {pcm_mb:.0} | {:.1} | {wall:.1} | {:.1} / {:.1} |",
        s.utterances.len(),
        out.0 as f64 / 1e6,
        before,
        after
    );
}
