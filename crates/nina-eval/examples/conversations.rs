//! Writes the synthesized evaluation conversations (WAV + reference RTTM) into a directory:
//!
//! ```text
//! cargo run -p nina-eval --example conversations -- OUT_DIR
//! reprocess score --ref OUT_DIR/turns.rttm --hyp HYP.rttm
//! ```
//!
//! - `turns`: the six test voices, turns of 1–2 s, 10 minutes.
//! - `overlap`: four voices, turns of 1.5–4 s, 30 % of turns starting 0.3–0.8 s into the
//!   previous one, 10 minutes.
//! - `long`: the six voices, turns of 1–6 s, 35 minutes.

use nina_eval::conversation::{self, Spec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: conversations OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let voices = conversation::test_voices()?;
    for (name, spec, n) in sets() {
        let c = conversation::synthesize(&voices[..n], &spec);
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: conversation::RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(out.join(format!("{name}.wav")), spec)?;
        for s in &c.audio {
            w.write_sample((s * 32767.0) as i16)?;
        }
        w.finalize()?;
        std::fs::write(
            out.join(format!("{name}.rttm")),
            nina_eval::rttm::write(name, &c.turns),
        )?;
        println!(
            "{name}: {:.0} s, {} turns, {:.0} s overlapped",
            c.audio.len() as f64 / f64::from(conversation::RATE),
            c.turns.len(),
            c.overlapped
        );
    }
    Ok(())
}

/// `(name, spec, number of voices)`.
fn sets() -> Vec<(&'static str, Spec, usize)> {
    vec![
        (
            "turns",
            Spec {
                seconds: 600.0,
                turn: (1.0, 2.0),
                seed: 11,
                ..Spec::default()
            },
            6,
        ),
        (
            "overlap",
            Spec {
                seconds: 600.0,
                turn: (1.5, 4.0),
                overlap_chance: 0.3,
                seed: 12,
                ..Spec::default()
            },
            4,
        ),
        (
            "long",
            Spec {
                seconds: 2100.0,
                turn: (1.0, 6.0),
                seed: 13,
                ..Spec::default()
            },
            6,
        ),
    ]
}
