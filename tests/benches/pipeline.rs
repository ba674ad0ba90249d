//! `cargo bench -p nina-tests`: voice activity and whole-pipeline speed on this machine, printed
//! as tables. Needs `scripts/setup.sh`.
//!
//! Environment: `NINA_BENCH_MODEL` (Whisper for the pipeline, default `whisper-base`),
//! `NINA_BENCH_THREADS` (default 2).

use std::path::Path;
use std::time::Instant;

use nina_eval::testdata;
use nina_models::ModelDir;
use nina_pipeline::{NoProgress, Outcome, Pipeline, VadChoice};
use nina_segment::vad::{EnergyVad, SileroVad, VoiceDetector, probabilities};
use nina_store::SessionDir;
use nina_tests::{config, data, librivox_text, transcript_text};

use nina_eval::memory::{peak_rss_mib, reset_peak};

fn seconds_of(path: &Path) -> f64 {
    let mut total = 0.0;
    nina_pipeline::decode::decode_file(path, |_, _, _| Ok(()))
        .map(|(_, d)| total += d)
        .unwrap_or_else(|e| panic!("{e}"));
    total
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let threads: u16 = std::env::var("NINA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let model = std::env::var("NINA_BENCH_MODEL").unwrap_or_else(|_| "whisper-base".into());

    // Voice activity alone, on 16 kHz audio already in memory.
    let mut audio = testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap()).unwrap();
    for c in testdata::librivox().unwrap() {
        audio.extend(testdata::read_wav_16k_mono(&c.path).unwrap());
    }
    let secs = audio.len() as f64 / 16_000.0;
    let models = ModelDir::new(testdata::models_dir());
    let detectors: Vec<Box<dyn VoiceDetector>> = vec![
        Box::new(SileroVad::from_models(&models).unwrap_or_else(|e| panic!("{e}"))),
        Box::new(EnergyVad::default()),
    ];
    println!(
        "\nvoice activity on {secs:.1} s of speech (pyannote sample + LibriVox), one thread\n"
    );
    println!("| detector | real-time factor | frames per second |");
    println!("|---|---:|---:|");
    for mut d in detectors {
        let start = Instant::now();
        let p = probabilities(d.as_mut(), &audio).unwrap();
        let took = start.elapsed().as_secs_f64();
        println!(
            "| {} | {:.5} | {:.0} |",
            d.name(),
            took / secs,
            p.len() as f64 / took
        );
    }

    // The whole of `reprocess file`: decode, resample, segment, write, transcribe, store.
    println!("\n`reprocess file` with {model}, Silero, {threads} threads, one worker\n");
    println!(
        "| input | audio (s) | utterances | segment RTF | transcribe RTF | whole RTF | WER | peak RSS (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let inputs = [
        (
            "pyannote sample (WAV 16 kHz mono)",
            testdata::pyannote_wav().unwrap(),
            testdata::pyannote_text().unwrap(),
        ),
        (
            "LibriVox (FLAC 44.1 kHz stereo)",
            data("formats/librivox.flac"),
            librivox_text(),
        ),
        (
            "LibriVox (MP3 44.1 kHz stereo)",
            data("formats/librivox.mp3"),
            librivox_text(),
        ),
    ];
    for (name, path, reference) in inputs {
        let mut cfg = config(&model);
        cfg.vad = VadChoice::Silero;
        cfg.transcribe.threads = threads;
        let p = Pipeline::new(cfg).unwrap();
        p.whisper().unwrap(); // load outside the timing
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path().join("s"));
        let audio_s = seconds_of(&path);
        reset_peak();
        let t0 = Instant::now();
        let session = p.segment_file(&path, &sd, true, &NoProgress).unwrap();
        let seg = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let outcome = p.transcribe_session(&sd, true, &NoProgress).unwrap();
        let tr = t1.elapsed().as_secs_f64();
        assert!(matches!(outcome, Outcome::Done { .. }));
        let wer = nina_eval::wer(&reference, &transcript_text(sd.root()));
        println!(
            "| {name} | {audio_s:.1} | {} | {:.3} | {:.3} | {:.3} | {:.1}% | {:.0} |",
            session.utterances.len(),
            seg / audio_s,
            tr / audio_s,
            (seg + tr) / audio_s,
            wer * 100.0,
            peak_rss_mib()
        );
    }
}
