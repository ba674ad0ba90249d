//! `cargo bench -p nina-tests --bench models`: the Whisper models side by side on every
//! reference set (WER, real-time factor, guard repairs), and the whole of `reprocess file`
//! beside faster-whisper (CTranslate2, int8) on the same recordings and the same base weights,
//! measured in this one process (wall time, and CPU time of this process or of the child).
//! Needs `scripts/setup.sh`; the faster-whisper column needs `scripts/faster-whisper.sh`.
//!
//! Environment: `NINA_BENCH_MODELS` (comma-separated Whisper ids or ggml paths, default
//! `whisper-base,whisper-base-q8_0,whisper-base-q5_1,whisper-tiny-en`), `NINA_BENCH_THREADS`
//! (default 2), `NINA_BENCH_BEAM` (beam search with this many beams instead of the default
//! greedy decoding), `NINA_BENCH_VOICED_MARGIN` (seconds kept around the voiced part, or `none`
//! to decode inputs whole), `NINA_FASTER_WHISPER` (the faster-whisper directory made by
//! `scripts/faster-whisper.sh`, default `.cache/faster-whisper`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nina_eval::testdata::{self, Clip};
use nina_models::{ModelDir, resolve_whisper};
use nina_pipeline::{NoProgress, Pipeline, VadChoice};
use nina_store::SessionDir;
use nina_tests::{config, transcript_text};
use nina_transcribe::{Decoding, TranscribeOptions, Transcriber, WhisperModel};

/// CPU seconds (user + system) of this process, and of its waited-for children.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 of stat(5); `rest` starts at field 3.
    let tick = 100.0; // USER_HZ on Linux
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / tick;
    (at(14) + at(15), at(16) + at(17))
}

fn read(path: &Path) -> Vec<f32> {
    testdata::read_wav_16k_mono(path).unwrap_or_else(|e| panic!("{e}"))
}

fn write_wav(path: &Path, audio: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in audio {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// Clips laid end to end with `gap` seconds of silence between them, and their joined text.
fn joined(clips: &[Clip], gap: f64) -> (Vec<f32>, String) {
    let mut audio = Vec::new();
    for c in clips {
        audio.extend(read(&c.path));
        audio.extend(std::iter::repeat_n(0.0, (gap * 16_000.0) as usize));
    }
    let text = clips
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    (audio, text)
}

/// The four flite voices taking turns, sentence by sentence (about a minute).
fn four_voices() -> Vec<Clip> {
    let voices: Vec<Vec<Clip>> = ["slt", "rms", "awb", "kal16"]
        .iter()
        .map(|v| testdata::flite(v).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let n = voices.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .flat_map(|i| voices.iter().filter_map(move |v| v.get(i).cloned()))
        .collect()
}

/// Every voice's short replies, each its own utterance.
fn replies() -> Vec<Clip> {
    ["slt", "rms", "awb", "kal16"]
        .iter()
        .flat_map(|v| testdata::replies(v).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The shortest of three timed runs of `f`, in seconds.
fn best_of_3(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

#[derive(Default)]
struct Tally {
    errors: nina_eval::WordErrors,
    audio: f64,
    wall: f64,
    retried: usize,
    trimmed: usize,
    dropped: usize,
}

fn transcribe_set(model: &WhisperModel, clips: &[Clip], o: &TranscribeOptions) -> Tally {
    let mut t = model.transcriber().unwrap_or_else(|e| panic!("{e}"));
    let mut tally = Tally::default();
    for c in clips {
        let audio = read(&c.path);
        tally.audio += audio.len() as f64 / 16_000.0;
        let start = Instant::now();
        let out = t.transcribe(&audio, o).unwrap_or_else(|e| panic!("{e}"));
        tally.wall += start.elapsed().as_secs_f64();
        tally.errors = tally.errors + nina_eval::word_errors(&c.text, &out.text());
        for s in &out.segments {
            if let Some(r) = &s.repair {
                tally.retried += usize::from(r.retried > 0);
                tally.trimmed += usize::from(r.trimmed);
            }
        }
        tally.dropped += out.dropped.len();
    }
    tally
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let threads: u16 = std::env::var("NINA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let choices: Vec<String> = std::env::var("NINA_BENCH_MODELS")
        .unwrap_or_else(|_| {
            "whisper-base,whisper-base-q8_0,whisper-base-q5_1,whisper-tiny-en".into()
        })
        .split(',')
        .map(str::to_string)
        .collect();
    let models = ModelDir::new(testdata::models_dir());
    let decoding = match std::env::var("NINA_BENCH_BEAM")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(beam_size) => Decoding::Beam { beam_size },
        None => TranscribeOptions::default().decoding,
    };
    let search = match decoding {
        Decoding::Greedy { .. } => "greedy".to_string(),
        Decoding::Beam { beam_size } => format!("beam {beam_size}"),
    };
    // `NINA_BENCH_VOICED_MARGIN=none` decodes every input whole (a number sets the margin).
    let voiced_margin = match std::env::var("NINA_BENCH_VOICED_MARGIN").ok().as_deref() {
        Some("none") => None,
        Some(m) => Some(
            m.parse()
                .expect("NINA_BENCH_VOICED_MARGIN: seconds or `none`"),
        ),
        None => TranscribeOptions::default().voiced_margin,
    };
    let o = TranscribeOptions {
        language: Some("en".into()),
        threads,
        decoding,
        voiced_margin,
        ..TranscribeOptions::default()
    };

    let work = tempfile::tempdir().unwrap();
    let conversation = work.path().join("four-voices.wav");
    let (audio, conversation_text) = joined(&four_voices(), 0.5);
    write_wav(&conversation, &audio);
    let librivox = work.path().join("librivox.wav");
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let (audio, librivox_text) = joined(&clips, 0.5);
    write_wav(&librivox, &audio);
    let pyannote = testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}"));
    let pyannote_text = testdata::pyannote_text().unwrap_or_else(|e| panic!("{e}"));
    let sets: Vec<(&str, Vec<Clip>)> = vec![
        ("LibriVox", clips.clone()),
        ("cards", testdata::cards().unwrap_or_else(|e| panic!("{e}"))),
        (
            "pyannote call",
            vec![Clip {
                id: "sample".into(),
                path: pyannote.clone(),
                text: pyannote_text.clone(),
            }],
        ),
        ("short replies", replies()),
    ];

    println!(
        "\nEach clip one utterance, default options ({search}, short audio context, unvoiced \
         edges {}), language en, {threads} threads. RTF: wall time / audio. Repairs: segments \
         kept after a retry, segments trimmed, segments dropped.\n",
        voiced_margin.map_or("kept".to_string(), |m| format!("cut to {m} s"))
    );
    println!("| model | size (MB) | set | WER | RTF | retried / trimmed / dropped |");
    println!("|---|---:|---|---:|---:|---|");
    let mut ten_second = Vec::new();
    let mut detection = Vec::new();
    let mut shifted = Vec::new();
    let call = read(&pyannote);
    for choice in &choices {
        let path = resolve_whisper(&models, choice).unwrap_or_else(|e| panic!("{e}"));
        let mb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
        let model = WhisperModel::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for (name, clips) in &sets {
            let t = transcribe_set(&model, clips, &o);
            println!(
                "| {choice} | {mb:.0} | {name} | {:.1}% | {:.3} | {} / {} / {} |",
                t.errors.rate() * 100.0,
                t.wall / t.audio,
                t.retried,
                t.trimmed,
                t.dropped
            );
        }
        // A 10 s utterance: the LibriVox reader, cut to 10 s, best of 3.
        let (audio, _) = joined(&clips, 0.0);
        let ten = &audio[..160_000.min(audio.len())];
        let mut t = model.transcriber().unwrap_or_else(|e| panic!("{e}"));
        let best = best_of_3(|| {
            t.transcribe(ten, &o).unwrap_or_else(|e| panic!("{e}"));
        });
        ten_second.push((choice.clone(), best / 10.0));
        // One recording is one draw: the call as one utterance, started 0, 20, ..., 140 samples
        // later (every phase of the 10 ms frames of Whisper's mel and of the syllable nuclei).
        let wers: Vec<f64> = (0..8)
            .map(|k| {
                let out = t
                    .transcribe(&call[k * 20..], &o)
                    .unwrap_or_else(|e| panic!("{e}"));
                nina_eval::wer(&pyannote_text, &out.text())
            })
            .collect();
        shifted.push((choice.clone(), wers));
        // Language detection alone, on the shrunken and on the full window (best of 3).
        if model.is_multilingual() {
            for seconds in [3usize, 10] {
                let clip = &audio[..(seconds * 16_000).min(audio.len())];
                let mut time = |short_audio_context: bool| {
                    let o = TranscribeOptions {
                        language: None,
                        short_audio_context,
                        ..o.clone()
                    };
                    best_of_3(|| {
                        t.detect_language(clip, &o)
                            .unwrap_or_else(|e| panic!("{e}"));
                    })
                };
                detection.push((choice.clone(), seconds, time(true), time(false)));
            }
        }
    }
    println!(
        "\n| model | utterance | language detection, shrunken window (ms) | full 30 s window (ms) |\n|---|---:|---:|---:|"
    );
    for (m, seconds, short, full) in &detection {
        println!(
            "| {m} | {seconds} s | {:.0} | {:.0} |",
            short * 1000.0,
            full * 1000.0
        );
    }
    println!("\n| model | RTF of a 10 s utterance (best of 3) |\n|---|---:|");
    for (m, rtf) in &ten_second {
        println!("| {m} | {rtf:.3} |");
    }
    println!(
        "\n| model | pyannote call as one utterance, 8 starts 1.25 ms apart: mean WER | min | max | each |\n|---|---:|---:|---:|---|"
    );
    for (m, wers) in &shifted {
        let pct = |w: f64| format!("{:.1}%", w * 100.0);
        let mean = wers.iter().sum::<f64>() / wers.len() as f64;
        let (lo, hi) = wers
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
        let each: Vec<String> = wers.iter().map(|w| pct(*w)).collect();
        println!(
            "| {m} | {} | {} | {} | {} |",
            pct(mean),
            pct(lo),
            pct(hi),
            each.join(" ")
        );
    }

    // The whole run, model load included, on whole recordings.
    let recordings = [
        ("four voices, 12 turns", &conversation, &conversation_text),
        ("LibriVox, 5 clips", &librivox, &librivox_text),
        ("pyannote call", &pyannote, &pyannote_text),
    ];
    let fw_dir = std::env::var_os("NINA_FASTER_WHISPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| testdata::workspace_root().join(".cache/faster-whisper"));
    let fw_python = fw_dir.join("venv/bin/python");
    let fw_model = fw_dir.join("whisper-base");
    let fw_script = testdata::workspace_root().join("tests/benches/fw_transcribe.py");
    println!(
        "\nWhole run, model load included: `reprocess file` (Silero, one worker, {threads} \
         threads, {search}) beside faster-whisper {} (int8, Silero VAD filter, beam 5, \
         cpu_threads {threads}), same base weights.\n",
        if fw_python.is_file() {
            ""
        } else {
            "(not measured: run scripts/faster-whisper.sh)"
        }
    );
    println!(
        "| recording | audio (s) | engine | model | wall (s) | CPU (s) | WER |\n|---|---:|---|---|---:|---:|---:|"
    );
    for (name, path, reference) in recordings {
        let seconds = read(path).len() as f64 / 16_000.0;
        for choice in &choices {
            if choice.contains("tiny") {
                continue;
            }
            let (cpu0, _) = cpu_seconds();
            let t0 = Instant::now();
            let mut cfg = config(choice);
            cfg.vad = VadChoice::Silero;
            cfg.transcribe.threads = threads;
            cfg.transcribe.decoding = decoding;
            cfg.transcribe.voiced_margin = voiced_margin;
            let p = Pipeline::new(cfg).unwrap_or_else(|e| panic!("{e}"));
            let out = tempfile::tempdir().unwrap();
            let sd = SessionDir::new(out.path().join("s"));
            p.process_file(path, &sd, true, &NoProgress)
                .unwrap_or_else(|e| panic!("{e}"));
            let wall = t0.elapsed().as_secs_f64();
            let cpu = cpu_seconds().0 - cpu0;
            let wer = nina_eval::wer(reference, &transcript_text(sd.root()));
            println!(
                "| {name} | {seconds:.1} | reprocess file | {choice} | {wall:.2} | {cpu:.2} | {:.1}% |",
                wer * 100.0
            );
        }
        if fw_python.is_file() {
            for compute in ["int8", "float32"] {
                let (_, child0) = cpu_seconds();
                let t0 = Instant::now();
                let out = Command::new(&fw_python)
                    .arg(&fw_script)
                    .arg(&fw_model)
                    .arg(compute)
                    .arg(threads.to_string())
                    .arg(path)
                    .output()
                    .unwrap_or_else(|e| panic!("{}: {e}", fw_python.display()));
                let wall = t0.elapsed().as_secs_f64();
                let cpu = cpu_seconds().1 - child0;
                assert!(
                    out.status.success(),
                    "faster-whisper: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let wer = nina_eval::wer(reference, &text);
                println!(
                    "| {name} | {seconds:.1} | faster-whisper | base {compute} | {wall:.2} | {cpu:.2} | {:.1}% |",
                    wer * 100.0
                );
            }
        }
    }
}
