//! `cargo bench -p nina-diarize`: speed of the speaker embedders on this machine, printed as a
//! table: seconds of compute per 10 s of speech (one segment, one run), and throughput on
//! 1.5 s windows every 0.75 s (the diarization workload), one window per run and batched.
//! Needs `scripts/setup.sh`. `NINA_BENCH_THREADS` (default `1,2`) lists the thread counts.

use std::time::Instant;

use nina_diarize::{EmbedderConfig, OnnxEmbedder, SpeakerEmbedder};
use nina_eval::testdata;
use nina_models::{ModelDir, ModelSpec, catalog};

const RATE: usize = 16_000;

/// An embedder to measure: its name, its pinned model and its configuration.
type Subject = (&'static str, &'static ModelSpec, fn() -> EmbedderConfig);

/// `seconds` of LibriVox speech, the clips laid end to end (repeated as needed).
fn speech(seconds: usize) -> Vec<f32> {
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::with_capacity(seconds * RATE);
    while out.len() < seconds * RATE {
        for c in &clips {
            out.extend(testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    out.truncate(seconds * RATE);
    out
}

/// CPU time this thread has run, in seconds (Linux `schedstat`; 0 where unavailable). With one
/// ONNX Runtime thread the model runs on the calling thread, so this is robust to other processes
/// sharing the cores, which wall time is not.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// The median of `runs` timings of `f`: (wall seconds, this thread's CPU seconds).
fn median(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<(f64, f64)> = (0..runs)
        .map(|_| {
            let (s, c) = (Instant::now(), thread_cpu());
            f();
            (s.elapsed().as_secs_f64(), thread_cpu() - c)
        })
        .collect();
    t.sort_by(|a, b| a.0.total_cmp(&b.0));
    t[t.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness-less benches.
    }
    let threads: Vec<usize> = std::env::var("NINA_BENCH_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let models = ModelDir::new(testdata::models_dir());
    let ten = speech(10);
    let long = speech(60);
    let windows: Vec<&[f32]> = (0..)
        .map(|k| k * RATE * 3 / 4)
        .take_while(|s| s + RATE * 3 / 2 <= long.len())
        .map(|s| &long[s..s + RATE * 3 / 2])
        .collect();
    let embedders: [Subject; 2] = [
        ("CAM++", &catalog::CAMPPLUS, EmbedderConfig::campplus),
        (
            "d-vector",
            &catalog::SPEAKER_EMBEDDER,
            EmbedderConfig::dvector,
        ),
    ];
    println!(
        "{} windows of 1.5 s every 0.75 s over 60 s of LibriVox speech\n",
        windows.len()
    );
    println!(
        "| embedder | threads | s per 10 s (one run) | caller-thread CPU s per 10 s | front end per 10 s | windows/s, 1 per run | windows/s, batch 16 | windows/s, batch 64 | x real time (batch 64, step 0.75 s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, spec, config) in embedders {
        for &t in &threads {
            let mut e = OnnxEmbedder::from_spec(&models, spec, config(), t)
                .unwrap_or_else(|err| panic!("{err}"));
            e.embed(&ten).unwrap(); // warm-up
            let (per10, cpu10) = median(5, || {
                e.embed(&ten).unwrap();
            });
            let (fe, _) = median(5, || {
                std::hint::black_box(e.features(&ten));
            });
            let (one, _) = median(3, || {
                for w in &windows {
                    e.embed(w).unwrap();
                }
            });
            let mut rates = Vec::new();
            for batch in [16, 64] {
                let mut c = config();
                c.max_batch = batch;
                let mut b = OnnxEmbedder::from_spec(&models, spec, c, t)
                    .unwrap_or_else(|err| panic!("{err}"));
                b.embed_batch(&windows[..batch.min(windows.len())]).unwrap();
                let (wall, _) = median(3, || {
                    b.embed_batch(&windows).unwrap();
                });
                rates.push(windows.len() as f64 / wall);
            }
            let n = windows.len() as f64;
            println!(
                "| {name} | {t} | {per10:.3} | {cpu10:.3} | {fe:.4} | {:.0} | {:.0} | {:.0} | {:.0} |",
                n / one,
                rates[0],
                rates[1],
                rates[1] * 0.75
            );
        }
    }
}
