//! The d-vector embedder (configured through `EmbedderConfig::dvector`) through ONNX Runtime loaded
//! from `models/` (needs `scripts/setup.sh`).

use nina_diarize::{DVECTOR_DIM, OnnxEmbedder, SpeakerEmbedder, cosine};
use nina_eval::testdata;
use nina_models::ModelDir;

fn embedder() -> OnnxEmbedder {
    OnnxEmbedder::dvector_from_models(&ModelDir::new(testdata::models_dir()), 2)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn embed(e: &mut OnnxEmbedder, clip: &testdata::Clip) -> Vec<f32> {
    let audio = testdata::read_wav_16k_mono(&clip.path).unwrap_or_else(|e| panic!("{e}"));
    e.embed(&audio).unwrap()
}

#[test]
fn same_reader_is_closer_than_another_voice() {
    let mut e = embedder();
    let libri = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let slt = testdata::flite("slt").unwrap_or_else(|e| panic!("{e}"));
    let a = embed(&mut e, &libri[0]);
    let b = embed(&mut e, &libri[3]);
    let f = embed(&mut e, &slt[0]);
    for v in [&a, &b, &f] {
        assert_eq!(v.len(), DVECTOR_DIM);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let same = cosine(&a, &b);
    let other = cosine(&a, &f);
    eprintln!("cosine same reader {same:.3}, reader vs flite slt {other:.3}");
    assert!(same > other, "same {same} <= other {other}");
}

#[test]
fn bad_audio_is_an_error() {
    let mut e = embedder();
    assert!(e.embed(&[0.0; 100]).is_err());
    assert!(e.embed(&vec![f32::NAN; 16_000]).is_err());
}

#[test]
fn batched_d_vectors_equal_one_at_a_time() {
    let mut e = embedder();
    let libri = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let audio = testdata::read_wav_16k_mono(&libri[0].path).unwrap_or_else(|e| panic!("{e}"));
    // A short window (padded to one 80-frame window) and longer ones (several, averaged).
    let windows: Vec<&[f32]> = vec![&audio[..8_000], &audio[..24_000], &audio[4_000..40_000]];
    let batched = e.embed_batch(&windows).unwrap();
    for (w, b) in windows.iter().zip(&batched) {
        let cos = cosine(&e.embed(w).unwrap(), b);
        assert!(
            cos > 0.99999,
            "{} samples: batched vs single {cos}",
            w.len()
        );
    }
}
