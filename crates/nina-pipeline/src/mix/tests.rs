use nina_store::track_file;

use super::*;
use crate::tracks::tests::{A, B, END, clip, onset, raw_session};

/// RMS (dBFS) of the 20 ms frames of `x[from..to]` (seconds) louder than -60 dBFS.
fn active_db(x: &[f32], from: f64, to: f64) -> f64 {
    let (a, b) = ((from * 48_000.0) as usize, (to * 48_000.0) as usize);
    let e: Vec<f64> = x[a..b.min(x.len())]
        .chunks(960)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c.len() as f64)
        .filter(|&e| e > 1e-6)
        .collect();
    dbfs((e.iter().sum::<f64>() / e.len().max(1) as f64).sqrt())
}

/// The same measure on a 16 kHz clip.
fn active_db16(x: &[f32]) -> f64 {
    let e: Vec<f64> = x
        .chunks(320)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c.len() as f64)
        .collect();
    let loudest = e.iter().copied().fold(0.0, f64::max);
    let a: Vec<f64> = e
        .into_iter()
        .filter(|&v| v > (loudest * 1e-3).max(1e-6))
        .collect();
    dbfs((a.iter().sum::<f64>() / a.len() as f64).sqrt())
}

fn read(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, 48_000);
    assert_eq!(r.spec().channels, 1);
    r.samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

#[test]
fn both_voices_at_their_places_and_at_the_same_level() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_session(&tmp.path().join("s"));
    let out = dir.root().join(MIX_FILE);
    let t0 = std::time::Instant::now();
    let r = mix_session(&dir, &out, &MixOptions::default()).unwrap();
    eprintln!("mix: {:?} for 2 x {END} s; {r:?}", t0.elapsed());
    assert!((r.seconds - END).abs() < 0.03);
    let (a, b) = (&r.tracks[0], &r.tracks[1]);
    let input_diff = a.active_dbfs.unwrap() - b.active_dbfs.unwrap();
    // The two readings differ by themselves; B was then made 12 dB quieter.
    let natural = active_db16(&clip(A.1)) - active_db16(&clip(B.1));
    eprintln!("inputs {input_diff:.1} dB apart: {natural:.1} dB natural + 12 dB");
    assert!(
        (input_diff - natural - 12.0).abs() < 1.5,
        "inputs differ by {input_diff} dB, {natural} dB without the 12 dB"
    );
    let x = read(&out);
    assert!((x.len() as f64 / 48_000.0 - END).abs() < 0.03);
    // A alone speaks in [0.5, 3.5], B alone in [3.5, 6.8]: equal levels after the gains.
    let la = active_db(&x, A.2, B.2);
    let lb = active_db(&x, B.2, END);
    eprintln!("mix levels: A {la:.1} dBFS, B {lb:.1} dBFS (inputs {input_diff:.1} dB apart)");
    assert!((la - lb).abs() < 3.0, "A {la} dB, B {lb} dB");
    assert!((la - -20.0).abs() < 3.0, "{la}");
    // Silence before A's speech, and each voice where it was placed (energy envelope).
    let quiet = active_db(&x, 0.0, A.2 + onset(&clip(A.1)) - 0.05);
    assert!(
        quiet < -80.0 || x[..20_000].iter().all(|v| v.abs() < 1e-3),
        "{quiet}"
    );
    let first_loud = |from: f64| {
        let i = x[(from * 48_000.0) as usize..]
            .chunks(480)
            .position(|c| c.iter().map(|v| v * v).sum::<f32>() / 480.0 > 0.018 * 0.018)
            .unwrap();
        from + i as f64 * 0.01
    };
    let heard_a = first_loud(0.0);
    assert!(
        (heard_a - (A.2 + onset(&clip(A.1)))).abs() < 0.1,
        "{heard_a}"
    );
    // After the end of A's reading (3.49 s).
    let heard_b = first_loud(A.2 + clip(A.1).len() as f64 / 16_000.0 + 0.05);
    assert!(
        (heard_b - (B.2 + onset(&clip(B.1)))).abs() < 0.15,
        "{heard_b}"
    );
    assert!(x.iter().all(|v| v.abs() <= CEILING + 1e-3), "clipped");
}

#[test]
fn the_sum_never_clips_and_a_torn_track_is_mixed_as_far_as_it_is_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_session(&tmp.path().join("s"));
    let b = dir.root().join(track_file(B.0));
    let bytes = std::fs::read(&b).unwrap();
    std::fs::write(&b, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let out = tmp.path().join("loud.wav");
    let loud = MixOptions {
        target_dbfs: 0.0,
        ..MixOptions::default()
    };
    let r = mix_session(&dir, &out, &loud).unwrap();
    assert!(r.tracks[1].damage.is_some());
    assert!(r.tracks[1].seconds < END - 0.5);
    assert!(r.limited > 0.0);
    let x = read(&out);
    assert!(x.iter().all(|v| v.abs() <= CEILING + 1e-3), "clipped");
    // Busy while someone holds the session.
    let _held = dir.open().unwrap();
    let e = mix_session(&dir, &out, &loud).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Busy, "{e}");
}
