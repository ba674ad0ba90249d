//! Silero VAD through ONNX Runtime loaded from `models/` (needs `scripts/setup.sh`).

use nina_eval::testdata;
use nina_models::ModelDir;
use nina_segment::vad::{SileroVad, VoiceDetector, probabilities};

fn silero() -> SileroVad {
    SileroVad::from_models(&ModelDir::new(testdata::models_dir())).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn speech_is_likely_and_silence_is_not() {
    let mut vad = silero();
    for clip in testdata::librivox().unwrap_or_else(|e| panic!("{e}")) {
        vad.reset();
        let audio = testdata::read_wav_16k_mono(&clip.path).unwrap();
        let p = probabilities(&mut vad, &audio).unwrap();
        let mut sorted = p.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        let speech_share = p.iter().filter(|&&x| x > 0.5).count() as f32 / p.len() as f32;
        eprintln!(
            "{}: median p {median:.3}, {:.0}% of frames > 0.5",
            clip.id,
            speech_share * 100.0
        );
        assert!(
            median > 0.5,
            "{}: median speech probability {median}",
            clip.id
        );
    }
    vad.reset();
    let silence = vec![0.0f32; 16_000 * 3];
    let p = probabilities(&mut vad, &silence).unwrap();
    let max = p.iter().copied().fold(0.0, f32::max);
    eprintln!("digital silence: max p {max:.4}");
    assert!(max < 0.2, "silence max probability {max}");
}

#[test]
fn wrong_frame_size_is_an_error() {
    let mut vad = silero();
    assert!(vad.speech_probability(&[0.0; 100]).is_err());
}

#[test]
fn a_corrupt_model_is_named() {
    let models = ModelDir::new(testdata::models_dir());
    let env =
        nina_models::onnx::environment(&nina_models::onnx::library_path(&models).unwrap()).unwrap();
    let bad = std::env::temp_dir().join(format!("nina-corrupt-{}.onnx", std::process::id()));
    std::fs::write(&bad, b"this is not an onnx model").unwrap();
    let e = SileroVad::load(&env, &bad).unwrap_err().to_string();
    std::fs::remove_file(&bad).unwrap();
    assert!(e.contains("nina-corrupt"), "{e}");
}

#[test]
fn streams_sharing_a_model_keep_their_own_state() {
    // Two clips run interleaved frame by frame on two streams of one model must give exactly
    // what each gives alone: the recurrent state and context are the stream's, not the model's.
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let a = testdata::read_wav_16k_mono(&clips[0].path).unwrap();
    let b = testdata::read_wav_16k_mono(&clips[1].path).unwrap();
    let alone_a = probabilities(&mut silero(), &a).unwrap();
    let alone_b = probabilities(&mut silero(), &b).unwrap();
    let base = silero();
    let (mut sa, mut sb) = (base.new_stream(), base.new_stream());
    let frames = a.len().min(b.len()) / 512;
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    for i in 0..frames {
        let f = |x: &[f32]| x[i * 512..(i + 1) * 512].to_vec();
        pa.push(sa.speech_probability(&f(&a)).unwrap());
        pb.push(sb.speech_probability(&f(&b)).unwrap());
    }
    assert!(frames > 50, "clips too short: {frames} frames");
    assert_eq!(pa, alone_a[..frames], "stream a");
    assert_eq!(pb, alone_b[..frames], "stream b");
    assert_ne!(pa, pb, "two different clips gave identical probabilities");
}
