//! Same-speaker vs cross-speaker cosine on the hard case, the pyannote sample (a real two-woman
//! phone call with its reference RTTM): CAM++ must separate the two voices, and better than the
//! d-vector. Needs `scripts/setup.sh`.

use nina_diarize::{OnnxEmbedder, SpeakerEmbedder, cosine};
use nina_eval::testdata;
use nina_models::ModelDir;

/// (mean same-speaker cosine, mean cross-speaker cosine, pair AUC) over turns of at least 1 s.
fn separation(e: &mut OnnxEmbedder) -> (f32, f32, f32) {
    let audio =
        testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let turns: Vec<_> = testdata::pyannote_rttm()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|t| t.end - t.start >= 1.0)
        .collect();
    let windows: Vec<&[f32]> = turns
        .iter()
        .map(|t| {
            let s = (t.start * 16_000.0) as usize;
            let e = ((t.end * 16_000.0) as usize).min(audio.len());
            &audio[s..e]
        })
        .collect();
    let v = e.embed_batch(&windows).unwrap_or_else(|e| panic!("{e}"));
    let (mut same, mut cross) = (Vec::new(), Vec::new());
    for i in 0..v.len() {
        for j in i + 1..v.len() {
            let c = cosine(&v[i], &v[j]);
            if turns[i].speaker == turns[j].speaker {
                same.push(c);
            } else {
                cross.push(c);
            }
        }
    }
    assert!(!same.is_empty() && !cross.is_empty());
    let mean = |x: &[f32]| x.iter().sum::<f32>() / x.len() as f32;
    // AUC: the share of (same, cross) pairs ordered correctly (ties count half).
    let mut wins = 0.0;
    for s in &same {
        for c in &cross {
            wins += if s > c {
                1.0
            } else if s == c {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (same.len() * cross.len()) as f32;
    eprintln!(
        "{} turns >= 1 s: {} same-speaker pairs, {} cross-speaker pairs",
        turns.len(),
        same.len(),
        cross.len()
    );
    (mean(&same), mean(&cross), auc)
}

#[test]
fn campplus_separates_the_two_women_of_the_pyannote_call() {
    let models = ModelDir::new(testdata::models_dir());
    let mut cam = OnnxEmbedder::from_models(&models, 2).unwrap_or_else(|e| panic!("{e}"));
    let mut dvec = OnnxEmbedder::dvector_from_models(&models, 2).unwrap_or_else(|e| panic!("{e}"));
    let (cs, cx, cauc) = separation(&mut cam);
    let (ds, dx, dauc) = separation(&mut dvec);
    eprintln!("CAM++:    same {cs:.3}, cross {cx:.3}, pair AUC {cauc:.3}");
    eprintln!("d-vector: same {ds:.3}, cross {dx:.3}, pair AUC {dauc:.3}");
    assert!(cauc >= 0.9, "CAM++ pair AUC {cauc}");
    assert!(cs - cx >= 0.1, "CAM++ same {cs}, cross {cx}");
    assert!(cauc > dauc, "CAM++ {cauc} vs d-vector {dauc}");
}
