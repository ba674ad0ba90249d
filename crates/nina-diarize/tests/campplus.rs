//! CAM++ against the reference pipeline (3D-Speaker's Kaldi fbank through torchaudio and the
//! network in PyTorch), on the project's own test speech: `tests/fixtures/campplus.json` holds,
//! per case, the fbank frame count, the first five raw fbank frames, the per-bin means and the
//! 192-d embedding. Needs `scripts/setup.sh` (models and testdata); fails, naming the command,
//! without them.

use nina_diarize::{
    CAMPPLUS_DIM, EmbedderConfig, FbankConfig, KaldiFbank, OnnxEmbedder, SpeakerEmbedder, cosine,
};
use nina_eval::testdata;
use nina_models::{ModelDir, catalog};
use serde_json::Value;

struct Case {
    file: String,
    audio: Vec<f32>,
    frames: usize,
    first_frames: Vec<Vec<f32>>,
    means: Vec<f32>,
    embedding: Vec<f32>,
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn cases() -> Vec<Case> {
    let json: Value =
        serde_json::from_str(include_str!("fixtures/campplus.json")).expect("fixtures parse");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let file = c["file"].as_str().expect("file").to_string();
            let path = testdata::require(&file).unwrap_or_else(|e| panic!("{e}"));
            let sha = nina_fs::sha256_bytes(&std::fs::read(&path).expect("readable"));
            assert_eq!(
                sha,
                c["file_sha256"].as_str().expect("sha"),
                "{file} is not the file the reference was computed on (run scripts/setup.sh)"
            );
            let audio = testdata::read_wav_16k_mono(&path).unwrap_or_else(|e| panic!("{e}"));
            let (s, e) = (
                c["start_sample"].as_u64().expect("start") as usize,
                c["end_sample"].as_u64().expect("end") as usize,
            );
            Case {
                file,
                audio: audio[s..e].to_vec(),
                frames: c["frames"].as_u64().expect("frames") as usize,
                first_frames: c["fbank_first_frames"]
                    .as_array()
                    .expect("frames")
                    .iter()
                    .map(floats)
                    .collect(),
                means: floats(&c["fbank_frame_means"]),
                embedding: floats(&c["embedding"]),
            }
        })
        .collect()
}

fn embedder() -> OnnxEmbedder {
    OnnxEmbedder::from_models(&ModelDir::new(testdata::models_dir()), 1)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn fbank_matches_the_kaldi_reference() {
    let fbank = KaldiFbank::new(FbankConfig::default()).unwrap();
    let mut worst = 0.0f32;
    for c in cases() {
        let f = fbank.compute(&c.audio);
        assert_eq!(f.frames, c.frames, "{}", c.file);
        let mut frame_err = 0.0f32;
        for (t, want) in c.first_frames.iter().enumerate() {
            for (a, b) in f.frame(t).unwrap().iter().zip(want) {
                frame_err = frame_err.max((a - b).abs());
            }
        }
        let mean_err = f
            .means()
            .iter()
            .zip(&c.means)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{:<55} {} frames  max |error| first frames {frame_err:.2e}, means {mean_err:.2e}",
            c.file, f.frames
        );
        assert!(frame_err < 1e-3 && mean_err < 1e-3, "{}", c.file);
        worst = worst.max(frame_err).max(mean_err);
    }
    eprintln!("fbank: worst error {worst:.2e}");
}

#[test]
fn embeddings_match_the_pytorch_reference() {
    let mut e = embedder();
    assert_eq!(e.dim(), CAMPPLUS_DIM);
    let cases = cases();
    let mut ours = Vec::new();
    for c in &cases {
        let v = e.embed(&c.audio).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(v.len(), CAMPPLUS_DIM);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let cos = cosine(&v, &c.embedding);
        eprintln!(
            "{:<55} cosine to reference {cos:.7} (1 - cos = {:.1e})",
            c.file,
            1.0 - cos
        );
        assert!(cos >= 0.999, "{}: cosine {cos}", c.file);
        ours.push(v);
    }
    // The same LibriVox reader in the first two cases; other voices in the last two.
    let same = cosine(&ours[0], &ours[1]);
    let other = cosine(&ours[0], &ours[2]).max(cosine(&ours[0], &ours[3]));
    eprintln!("same reader {same:.3}, across voices at most {other:.3}");
    assert!(same > other + 0.2, "same {same}, other {other}");
}

#[test]
fn batched_windows_equal_one_at_a_time() {
    let mut e = embedder();
    let cases = cases();
    let audio = &cases[0].audio;
    // 1.5 s windows every 0.25 s, plus two of other lengths in the same call.
    let mut windows: Vec<&[f32]> = (0..6)
        .map(|k| &audio[k * 4_000..k * 4_000 + 24_000])
        .collect();
    windows.push(&cases[2].audio);
    windows.push(&audio[..20_000]);
    let batched = e.embed_batch(&windows).unwrap();
    assert_eq!(batched.len(), windows.len());
    for (w, b) in windows.iter().zip(&batched) {
        let single = e.embed(w).unwrap();
        let cos = cosine(&single, b);
        assert!(cos > 0.99999, "batched vs single: {cos}");
    }
    assert!(e.embed_batch(&[]).unwrap().is_empty());

    // Small batches: groups run when full, and all at once when too many lengths wait.
    let mut config = EmbedderConfig::campplus();
    config.max_batch = 2;
    let mut small = OnnxEmbedder::from_spec(
        &ModelDir::new(testdata::models_dir()),
        &catalog::CAMPPLUS,
        config,
        1,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let lengths: Vec<&[f32]> = (0..12)
        .map(|k| &audio[k * 1_000..k * 1_000 + 16_000 + (k % 5) * 800])
        .collect();
    let again = small.embed_batch(&lengths).unwrap();
    for (w, b) in lengths.iter().zip(&again) {
        let cos = cosine(&e.embed(w).unwrap(), b);
        assert!(cos > 0.99999, "small batches vs single: {cos}");
    }
}

#[test]
fn long_segments_are_embedded_in_bounded_parts() {
    // 100 s of speech (10,000 frames): four parts of 2,500 frames, averaged. The vector stays
    // close to that of the whole (computed with parts large enough to hold it).
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let mut long = Vec::new();
    while long.len() < 1_600_000 {
        for c in &clips {
            long.extend(testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    long.truncate(1_600_000);
    let models = ModelDir::new(testdata::models_dir());
    let mut parts = embedder();
    let v = parts.embed(&long).unwrap();
    let mut config = EmbedderConfig::campplus();
    config.max_frames = 20_000;
    let mut whole = OnnxEmbedder::from_spec(&models, &catalog::CAMPPLUS, config, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    let w = whole.embed(&long).unwrap();
    let cos = cosine(&v, &w);
    eprintln!("100 s in 4 parts vs whole: cosine {cos:.4}");
    assert!(cos > 0.99, "{cos}");
}

#[test]
fn bad_audio_is_an_error() {
    let mut e = embedder();
    assert!(e.embed(&[0.0; 100]).is_err());
    assert!(e.embed(&vec![f32::NAN; 16_000]).is_err());
    let good = vec![0.0f32; 16_000];
    assert!(e.embed_batch(&[&good, &[0.0; 10]]).is_err());
}

#[test]
fn windows_pooled_from_one_pass_over_a_region() {
    // 20 s of one reader, windows of 1.5 s every 0.75 s (the diarizer's layout).
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let mut region = Vec::new();
    while region.len() < 320_000 {
        for c in &clips {
            region.extend(testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    region.truncate(320_000);
    let windows: Vec<(usize, usize)> = (0..)
        .map(|k| (k * 12_000, k * 12_000 + 24_000))
        .take_while(|w| w.1 <= region.len())
        .collect();
    let slices: Vec<&[f32]> = windows.iter().map(|&(a, b)| &region[a..b]).collect();
    let mut e = embedder();
    let alone = e.embed_batch(&slices).unwrap();

    // Stretches of one window: exactly the windows embedded on their own.
    let models = ModelDir::new(testdata::models_dir());
    let mut config = EmbedderConfig::campplus();
    config.region_frames = 1;
    let mut single = OnnxEmbedder::from_spec(&models, &catalog::CAMPPLUS, config, 1)
        .unwrap_or_else(|err| panic!("{err}"));
    let v = single.embed_windows(&[(&region, &windows)]).unwrap();
    assert_eq!(v.len(), windows.len());
    for (a, b) in alone.iter().zip(&v) {
        let cos = cosine(a, b);
        assert!(cos > 0.99999, "one-window stretch vs window: {cos}");
    }

    // The default: stretches of up to 10 s, one trunk pass each. The vectors move (the fbank
    // mean and the context masks now cover the stretch) but stay the same voice.
    let pooled = e.embed_windows(&[(&region, &windows)]).unwrap();
    assert_eq!(pooled.len(), windows.len());
    let cos: Vec<f32> = alone
        .iter()
        .zip(&pooled)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    let min = cos.iter().copied().fold(1.0f32, f32::min);
    eprintln!(
        "{} windows pooled from 10 s stretches vs embedded alone: cosine mean {mean:.3}, min {min:.3}",
        cos.len()
    );
    assert!(mean > 0.85 && min > 0.7, "mean {mean}, min {min}");
    for p in &pooled {
        let norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }

    // Two single-threaded sessions side by side give the same vectors as one, in order; and
    // several regions in one call equal each region on its own.
    let mut two = OnnxEmbedder::from_models(&models, 2).unwrap_or_else(|err| panic!("{err}"));
    let half = &region[..160_000];
    let half_windows: Vec<(usize, usize)> = windows
        .iter()
        .copied()
        .filter(|w| w.1 <= half.len())
        .collect();
    let both = two
        .embed_windows(&[(&region, &windows), (half, &half_windows)])
        .unwrap();
    assert_eq!(both.len(), windows.len() + half_windows.len());
    let first_alone = e.embed_windows(&[(half, &half_windows)]).unwrap();
    for (a, b) in pooled.iter().chain(&first_alone).zip(&both) {
        let cos = cosine(a, b);
        assert!(cos > 0.99999, "two sessions vs one: {cos}");
    }

    // Bad windows are errors.
    assert!(e.embed_windows(&[(&region, &[(0, 400_000)])]).is_err());
    assert!(e.embed_windows(&[(&region, &[(100, 100)])]).is_err());
    assert!(e.embed_windows(&[(&region, &[(0, 100)])]).is_err());
}
