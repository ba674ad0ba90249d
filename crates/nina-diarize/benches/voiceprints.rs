//! `cargo bench -p nina-diarize --bench voiceprints`: the calibration of
//! [`nina_diarize::IDENTIFY_THRESHOLD`]. Same-speaker and cross-speaker cosine similarity of a
//! diarized speaker's centroid to an enrolled voiceprint, and the false-accept and false-reject
//! rates at a range of thresholds. Needs `scripts/setup.sh`.
//!
//! Speakers: the six test voices (LibriVox reader, cards speaker, flite slt, rms, awb, kal16),
//! the two women of the pyannote call (their turns that no one else talks over), and each test
//! voice played 10 % slower and 10 % faster (pitch and formants move with the speed: a
//! different-sounding speaker with the same prosody, the hardest impostor we can make here).
//! Each speaker's speech is split in two: the first half enrols the print (the mean of its
//! diarization windows, pooled as diarization pools them: what a clean stream enrols), the rest
//! is cut into pieces of
//! 2 s and of 5 s (the test voices have 4 to 14 s each to test), whose window means stand for diarized speakers.

use nina_diarize::{DiarizeConfig, OnnxEmbedder, SpeakerEmbedder, cosine};
use nina_eval::conversation::test_voices;
use nina_eval::testdata;
use nina_models::ModelDir;

const RATE: f64 = 16_000.0;
/// Lengths of the test pieces, seconds.
const LENGTHS: [f64; 2] = [2.0, 5.0];

/// `x` played `speed` times faster (linear interpolation).
fn speed(x: &[f32], speed: f64) -> Vec<f32> {
    let n = (x.len() as f64 / speed) as usize;
    (0..n)
        .map(|i| {
            let p = i as f64 * speed;
            let j = p as usize;
            let f = (p - j as f64) as f32;
            let a = x.get(j).copied().unwrap_or(0.0);
            let b = x.get(j + 1).copied().unwrap_or(a);
            a + f * (b - a)
        })
        .collect()
}

/// The unit mean of the diarization windows of `audio` (one speech region), embedded as
/// diarization embeds them ([`SpeakerEmbedder::embed_windows`]): what a speaker's centroid is.
fn centroid(e: &mut OnnxEmbedder, audio: &[f32]) -> Vec<f32> {
    let cfg = DiarizeConfig::default();
    let (w, s) = ((cfg.window * RATE) as usize, (cfg.step * RATE) as usize);
    let mut windows = Vec::new();
    let mut a = 0;
    while a + w <= audio.len() {
        windows.push((a, a + w));
        a += s;
    }
    if windows.is_empty() {
        windows.push((0, audio.len()));
    }
    let v = e
        .embed_windows(&[(audio, &windows)])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut m = vec![0.0f32; v[0].len()];
    for x in &v {
        m.iter_mut().zip(x).for_each(|(a, b)| *a += b);
    }
    let n = m.iter().map(|x| x * x).sum::<f32>().sqrt();
    m.iter_mut().for_each(|x| *x /= n);
    m
}

struct Speaker {
    name: String,
    /// The voice it was made from (a speed variant shares its original's).
    family: String,
    audio: Vec<f32>,
}

fn speakers() -> Vec<Speaker> {
    let mut out = Vec::new();
    for v in test_voices().unwrap_or_else(|e| panic!("{e}")) {
        let audio: Vec<f32> = v.clips.concat();
        for (tag, f) in [("", 1.0), (" slow", 0.9), (" fast", 1.1)] {
            out.push(Speaker {
                name: format!("{}{tag}", v.name),
                family: v.name.clone(),
                audio: if f == 1.0 {
                    audio.clone()
                } else {
                    speed(&audio, f)
                },
            });
        }
    }
    let py =
        testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let turns = testdata::pyannote_rttm().unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = turns.iter().map(|t| t.speaker.clone()).collect();
    names.sort();
    names.dedup();
    for n in names {
        // The 10 ms frames where this speaker and no one else talks.
        let frames = py.len() / 160;
        let alone = |f: usize| {
            let t = (f as f64 + 0.5) * 0.01;
            let on: Vec<&str> = turns
                .iter()
                .filter(|x| x.start <= t && t < x.end)
                .map(|x| x.speaker.as_str())
                .collect();
            on == [n.as_str()]
        };
        let mut audio = Vec::new();
        for f in (0..frames).filter(|&f| alone(f)) {
            audio.extend_from_slice(&py[f * 160..(f + 1) * 160]);
        }
        out.push(Speaker {
            name: format!("pyannote {n}"),
            family: n.clone(),
            audio,
        });
    }
    out
}

fn quantile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let models = ModelDir::new(testdata::models_dir());
    let mut e = OnnxEmbedder::from_models(&models, 2).unwrap_or_else(|e| panic!("{e}"));
    let speakers = speakers();
    let mut prints = Vec::new();
    let mut tests: Vec<(usize, f64, Vec<f32>)> = Vec::new();
    for (i, s) in speakers.iter().enumerate() {
        let half = s.audio.len() / 2;
        prints.push(centroid(&mut e, &s.audio[..half]));
        for len in LENGTHS {
            let n = (len * RATE) as usize;
            for piece in s.audio[half..].chunks_exact(n).take(8) {
                tests.push((i, len, centroid(&mut e, piece)));
            }
        }
        eprintln!(
            "{}: {:.0} s enrolled, {:.0} s to test",
            s.name,
            half as f64 / RATE,
            (s.audio.len() - half) as f64 / RATE
        );
    }
    println!(
        "{} speakers; enrolment: the first half of each speaker's speech\n",
        speakers.len()
    );
    println!(
        "| piece | same pairs | same mean | same 5th pct | same min | cross pairs | cross mean | cross 99th pct | cross max | variant pairs | variant mean | variant max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut by_len = Vec::new();
    for len in LENGTHS {
        let mut same = Vec::new();
        let mut cross = Vec::new();
        let mut variant = Vec::new();
        for (i, l, v) in &tests {
            if *l != len {
                continue;
            }
            for (j, p) in prints.iter().enumerate() {
                let c = cosine(v, p);
                if *i == j {
                    same.push(c);
                } else if speakers[*i].family == speakers[j].family {
                    variant.push(c);
                } else {
                    cross.push(c);
                }
            }
        }
        same.sort_by(f32::total_cmp);
        cross.sort_by(f32::total_cmp);
        variant.sort_by(f32::total_cmp);
        let mean = |x: &[f32]| x.iter().sum::<f32>() / x.len().max(1) as f32;
        println!(
            "| {len} s | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} |",
            same.len(),
            mean(&same),
            quantile(&same, 0.05),
            same.first().copied().unwrap_or(f32::NAN),
            cross.len(),
            mean(&cross),
            quantile(&cross, 0.99),
            cross.last().copied().unwrap_or(f32::NAN),
            variant.len(),
            mean(&variant),
            variant.last().copied().unwrap_or(f32::NAN),
        );
        by_len.push((len, same, cross, variant));
    }
    println!(
        "\nCross pairs are of different voices; a voice against its own 10 % speed variants is \
         counted apart (variant pairs).\n"
    );
    println!(
        "| threshold | piece | false accepts (cross) | false-accept rate | false accepts (variants) | false rejects | false-reject rate |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for th in [0.5f32, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8] {
        for (len, same, cross, variant) in &by_len {
            let fa = cross.iter().filter(|c| **c >= th).count();
            let fav = variant.iter().filter(|c| **c >= th).count();
            let fr = same.iter().filter(|c| **c < th).count();
            println!(
                "| {th:.2} | {len} s | {fa} / {} | {:.2} % | {fav} / {} | {fr} / {} | {:.1} % |",
                cross.len(),
                100.0 * fa as f64 / cross.len().max(1) as f64,
                variant.len(),
                same.len(),
                100.0 * fr as f64 / same.len().max(1) as f64,
            );
        }
    }
    // Which impostor pairs come closest, to see what a false accept would look like.
    let (_, _, cross_long, _) = &by_len[1];
    let worst = cross_long.last().copied().unwrap_or(f32::NAN);
    for (i, l, v) in &tests {
        for (j, p) in prints.iter().enumerate() {
            if *l == LENGTHS[1]
                && speakers[*i].family != speakers[j].family
                && (cosine(v, p) - worst).abs() < 1e-6
            {
                println!(
                    "\nclosest impostor ({} s): {} against the print of {} ({worst:.3})",
                    LENGTHS[1], speakers[*i].name, speakers[j].name
                );
            }
        }
    }
}
