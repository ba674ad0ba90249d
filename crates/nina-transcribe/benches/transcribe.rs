//! `cargo bench -p nina-transcribe`: real-time factor, peak memory and word error rate of the
//! Whisper base model on this machine, printed as tables. Needs `scripts/setup.sh`.
//!
//! Environment: `NINA_BENCH_MODEL` (a pinned id or ggml path, default `whisper-base`),
//! `NINA_BENCH_THREADS` (default 2).

use std::time::Instant;

use nina_eval::testdata::{self, Clip};
use nina_models::{ModelDir, resolve_whisper};
use nina_transcribe::{Decoding, TranscribeOptions, Transcriber, WhisperModel, WhisperTranscriber};

use nina_eval::memory::{peak_rss_mib, reset_peak};

fn load(clip: &Clip) -> Vec<f32> {
    testdata::read_wav_16k_mono(&clip.path).unwrap_or_else(|e| panic!("{e}"))
}

/// Speech of exactly `seconds`, cut from the LibriVox clips laid end to end.
fn speech_of(clips: &[Clip], seconds: f64) -> Vec<f32> {
    let n = (seconds * 16_000.0) as usize;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        for c in clips {
            out.extend(load(c));
        }
    }
    out.truncate(n);
    out
}

fn wer_of(t: &mut WhisperTranscriber, clips: &[Clip], o: &TranscribeOptions) -> (f64, f64) {
    let (mut audio_s, mut cpu_s) = (0.0, 0.0);
    let errors: nina_eval::WordErrors = clips
        .iter()
        .map(|c| {
            let audio = load(c);
            audio_s += audio.len() as f64 / 16_000.0;
            let start = Instant::now();
            let out = t.transcribe(&audio, o).unwrap_or_else(|e| panic!("{e}"));
            cpu_s += start.elapsed().as_secs_f64();
            nina_eval::word_errors(&c.text, &out.text())
        })
        .sum();
    (errors.rate(), cpu_s / audio_s)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes harness-less benches.
    }
    let threads: u16 = std::env::var("NINA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let choice = std::env::var("NINA_BENCH_MODEL").unwrap_or_else(|_| "whisper-base".into());
    let models = ModelDir::new(testdata::models_dir());
    let path = resolve_whisper(&models, &choice).unwrap_or_else(|e| panic!("{e}"));
    let model = WhisperModel::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut t = model.transcriber().unwrap_or_else(|e| panic!("{e}"));
    let libri = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let cards = testdata::cards().unwrap_or_else(|e| panic!("{e}"));
    let base = TranscribeOptions {
        language: Some("en".into()),
        threads,
        ..TranscribeOptions::default()
    };

    println!(
        "\nmodel {} ({}), {threads} threads, language en, greedy\n",
        model.name(),
        path.display()
    );
    println!("| utterance | short audio ctx | real-time factor | peak RSS (MiB) |");
    println!("|---:|:---:|---:|---:|");
    for seconds in [3.0, 10.0, 30.0] {
        let audio = speech_of(&libri, seconds);
        for short in [true, false] {
            let o = TranscribeOptions {
                short_audio_context: short,
                ..base.clone()
            };
            t.transcribe(&audio[..16_000], &o)
                .unwrap_or_else(|e| panic!("{e}")); // warm-up
            reset_peak();
            let runs = if seconds < 20.0 { 3 } else { 1 };
            let start = Instant::now();
            for _ in 0..runs {
                t.transcribe(&audio, &o).unwrap_or_else(|e| panic!("{e}"));
            }
            let rtf = start.elapsed().as_secs_f64() / runs as f64 / seconds;
            println!(
                "| {seconds:.0} s | {} | {rtf:.3} | {:.0} |",
                if short { "on" } else { "off" },
                peak_rss_mib()
            );
        }
    }

    let mut sets: Vec<(&str, Vec<Clip>)> = vec![("LibriVox", libri.clone()), ("cards", cards)];
    if let (Ok(wav), Ok(text)) = (testdata::pyannote_wav(), testdata::pyannote_text()) {
        // The phone call as one input against the whole STM transcript.
        sets.push((
            "pyannote sample (stm)",
            vec![Clip {
                id: "sample".into(),
                path: wav,
                text,
            }],
        ));
    }
    println!("\n| reference set | decoding | short audio ctx | WER | real-time factor |");
    println!("|---|---|:---:|---:|---:|");
    for (name, clips) in &sets {
        for (decoding, label) in [
            (Decoding::Greedy { best_of: 5 }, "greedy"),
            (Decoding::Beam { beam_size: 5 }, "beam 5"),
        ] {
            for short in [true, false] {
                let o = TranscribeOptions {
                    decoding,
                    short_audio_context: short,
                    ..base.clone()
                };
                let (wer, rtf) = wer_of(&mut t, clips, &o);
                println!(
                    "| {name} | {label} | {} | {:.1}% | {rtf:.3} |",
                    if short { "on" } else { "off" },
                    wer * 100.0
                );
            }
        }
    }
    let prompt = TranscribeOptions {
        initial_prompt: Some("Ten of clubs, queen of hearts.".into()),
        ..base.clone()
    };
    let (wer, rtf) = wer_of(&mut t, &sets[1].1, &prompt);
    println!(
        "| cards, prompt \"Ten of clubs, queen of hearts.\" | beam 5 | on | {:.1}% | {rtf:.3} |",
        wer * 100.0
    );
}
