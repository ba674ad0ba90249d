//! `cargo bench -p nina-diarize --bench diarize`: diarization error rate (collars 0 and 0.25 s)
//! on the pyannote sample and on conversations synthesized from the test voices, and speed
//! (embedding + clustering, x real time by the wall clock and per CPU second of the process,
//! which a shared machine does not skew) and peak memory on a 30-minute one. Speech regions
//! come from Silero VAD. Needs `scripts/setup.sh`.
//!
//! Environment: `NINA_DIARIZE_THRESHOLD`, `NINA_DIARIZE_WINDOW`, `NINA_DIARIZE_STEP`,
//! `NINA_DIARIZE_OVERLAP_MARGIN` (`none` to switch overlap detection off) override the
//! defaults, for calibration; `NINA_BENCH_LONG` (minutes, default 30; 0 skips the long set);
//! `NINA_BENCH_THREADS` (default 2); `NINA_EMBED_REGION_FRAMES` (longest stretch of a region
//! embedded in one pass, feature frames; 1 embeds every window on its own, as before),
//! `NINA_EMBED_PARALLEL` (`0`: one session with the threads intra-op instead of one
//! single-threaded session per thread).

use std::time::Instant;

use nina_diarize::{
    Diarization, DiarizeConfig, EmbedderConfig, OnnxEmbedder, output, regions_from_probabilities,
};
use nina_eval::conversation::{Spec, synthesize, test_voices};
use nina_eval::testdata::{self, Turn};
use nina_eval::{der::der, memory};
use nina_models::{ModelDir, catalog};
use nina_segment::vad::{FRAME, SileroVad, probabilities};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn config() -> DiarizeConfig {
    let mut c = DiarizeConfig::default();
    if let Some(t) = env("NINA_DIARIZE_THRESHOLD") {
        c.cluster.threshold = t;
    }
    if let Some(w) = env("NINA_DIARIZE_WINDOW") {
        c.window = w;
    }
    if let Some(s) = env("NINA_DIARIZE_STEP") {
        c.step = s;
    }
    match std::env::var("NINA_DIARIZE_OVERLAP_MARGIN").as_deref() {
        Ok("none") => c.overlap_margin = None,
        Ok(m) => c.overlap_margin = m.parse().ok().or(c.overlap_margin),
        Err(_) => {}
    }
    c
}

/// CPU seconds (user + system, all threads) this process has used so far: `/proc/self/stat`,
/// in ticks of 1/100 s (NaN where it cannot be read).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the state.
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            Some((t(11)? + t(12)?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn turns_of(d: &Diarization, overlaps: bool) -> Vec<Turn> {
    let text = output::rttm("x", d, overlaps);
    nina_eval::rttm::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

struct Row {
    name: String,
    seconds: f64,
    reference_speakers: usize,
    found: usize,
    der0: f64,
    der25: f64,
    der25_ov: f64,
    rt: f64,
    rt_cpu: f64,
    mib: f64,
}

fn run(
    name: &str,
    audio: &[f32],
    reference: &[Turn],
    vad: &mut SileroVad,
    embedder: &mut OnnxEmbedder,
    cfg: &DiarizeConfig,
) -> Row {
    let p = probabilities(vad, audio).unwrap_or_else(|e| panic!("{e}"));
    let regions = regions_from_probabilities(&p, FRAME as f64 / 16_000.0, 0.5, 0.1, 0.1, 0.05);
    memory::reset_peak();
    let base = memory::peak_rss_mib();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let d = nina_diarize::diarize(embedder, audio, &regions, cfg).unwrap_or_else(|e| panic!("{e}"));
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let mib = memory::peak_rss_mib() - base;
    let hyp = turns_of(&d, false);
    let hyp_ov = turns_of(&d, true);
    if std::env::var_os("NINA_BENCH_DEBUG").is_some() {
        let mut dur = vec![0.0f64; d.speakers];
        d.turns
            .iter()
            .for_each(|t| dur[t.speaker] += t.end - t.start);
        let m = der(reference, &hyp, 0.25);
        eprintln!(
            "{name}: hyp seconds {dur:.1?}; mapping {:?}; overlaps {}",
            m.mapping,
            d.overlaps.len()
        );
    }
    let mut speakers: Vec<&str> = reference.iter().map(|t| t.speaker.as_str()).collect();
    speakers.sort_unstable();
    speakers.dedup();
    Row {
        name: name.into(),
        seconds: audio.len() as f64 / 16_000.0,
        reference_speakers: speakers.len(),
        found: d.speakers,
        der0: der(reference, &hyp, 0.0).der,
        der25: der(reference, &hyp, 0.25).der,
        der25_ov: der(reference, &hyp_ov, 0.25).der,
        rt: audio.len() as f64 / 16_000.0 / secs,
        rt_cpu: audio.len() as f64 / 16_000.0 / cpu,
        mib,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("NINA_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("NINA_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let threads = env("NINA_BENCH_THREADS").unwrap_or(2);
    let long_minutes: f64 = env("NINA_BENCH_LONG").unwrap_or(30.0);
    let models = ModelDir::new(testdata::models_dir());
    let mut ec = EmbedderConfig::campplus();
    if let Some(f) = env("NINA_EMBED_REGION_FRAMES") {
        ec.region_frames = f;
    }
    if let Some(p) = env::<u8>("NINA_EMBED_PARALLEL") {
        ec.parallel_sessions = p != 0;
    }
    eprintln!(
        "region stretches of at most {} frames, parallel sessions {}",
        ec.region_frames, ec.parallel_sessions
    );
    let mut embedder = OnnxEmbedder::from_spec(&models, &catalog::CAMPPLUS, ec, threads)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut vad = SileroVad::from_models(&models).unwrap_or_else(|e| panic!("{e}"));
    let cfg = config();
    eprintln!(
        "window {} s, step {} s, threshold {}, overlap margin {:?}, {threads} threads",
        cfg.window, cfg.step, cfg.cluster.threshold, cfg.overlap_margin
    );
    let mut rows = Vec::new();
    let py =
        testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let py_ref = testdata::pyannote_rttm().unwrap_or_else(|e| panic!("{e}"));
    rows.push(run(
        "pyannote sample",
        &py,
        &py_ref,
        &mut vad,
        &mut embedder,
        &cfg,
    ));
    let voices = test_voices().unwrap_or_else(|e| panic!("{e}"));
    let sets = [
        (
            "6 voices, turns 1-2 s",
            Spec {
                seconds: 180.0,
                seed: 1,
                ..Spec::default()
            },
        ),
        (
            "4 voices, turns 1-2 s",
            Spec {
                seconds: 180.0,
                seed: 2,
                ..Spec::default()
            },
        ),
        (
            "6 voices, turns 1-2 s, seed 3",
            Spec {
                seconds: 180.0,
                seed: 3,
                ..Spec::default()
            },
        ),
        (
            "6 voices, 30 % overlapping",
            Spec {
                seconds: 180.0,
                turn: (1.0, 4.0),
                overlap_chance: 0.3,
                seed: 4,
                ..Spec::default()
            },
        ),
    ];
    for (name, spec) in sets {
        let v = if name.starts_with("4 voices") {
            &voices[..4]
        } else {
            &voices[..]
        };
        let c = synthesize(v, &spec);
        rows.push(run(name, &c.audio, &c.turns, &mut vad, &mut embedder, &cfg));
    }
    if long_minutes > 0.0 {
        let spec = Spec {
            seconds: long_minutes * 60.0,
            turn: (1.0, 8.0),
            seed: 5,
            ..Spec::default()
        };
        let c = synthesize(&voices, &spec);
        rows.push(run(
            &format!("6 voices, {long_minutes:.0} min, turns 1-8 s"),
            &c.audio,
            &c.turns,
            &mut vad,
            &mut embedder,
            &cfg,
        ));
    }
    println!(
        "| set | seconds | speakers (ref / found) | DER collar 0 | DER collar 0.25 | DER 0.25 with overlaps marked | x real time (embed + cluster) | x real time per CPU second | peak extra MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} / {} | {:.1} % | {:.1} % | {:.1} % | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.seconds,
            r.reference_speakers,
            r.found,
            100.0 * r.der0,
            100.0 * r.der25,
            100.0 * r.der25_ov,
            r.rt,
            r.rt_cpu,
            r.mib
        );
    }
}
