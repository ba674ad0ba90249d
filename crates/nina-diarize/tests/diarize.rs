//! Diarization end to end with the real CAM++ model and Silero VAD, on real speech (the
//! pyannote sample call) and on a short conversation synthesized from the test voices. Needs
//! `scripts/setup.sh` (a missing model or testdata fails with what to run).

use nina_diarize::{
    DiarizeConfig, Diarizer, OnnxEmbedder, diarize, output, regions_from_probabilities,
};
use nina_eval::conversation::{Spec, synthesize, test_voices};
use nina_eval::testdata::{self, Turn};
use nina_eval::{der::der, rttm};
use nina_models::ModelDir;
use nina_segment::vad::{FRAME, SileroVad, probabilities};

fn setup() -> (OnnxEmbedder, SileroVad) {
    let models = ModelDir::new(testdata::models_dir());
    let e = OnnxEmbedder::from_models(&models, 2)
        .unwrap_or_else(|e| panic!("{e}\nrun scripts/setup.sh to fetch the models"));
    let v = SileroVad::from_models(&models)
        .unwrap_or_else(|e| panic!("{e}\nrun scripts/setup.sh to fetch the models"));
    (e, v)
}

fn regions(vad: &mut SileroVad, audio: &[f32]) -> Vec<(f64, f64)> {
    let p = probabilities(vad, audio).unwrap_or_else(|e| panic!("{e}"));
    regions_from_probabilities(&p, FRAME as f64 / 16_000.0, 0.5, 0.1, 0.1, 0.05)
}

fn hyp(d: &nina_diarize::Diarization) -> Vec<Turn> {
    rttm::parse(&output::rttm("t", d, false)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_pyannote_call_and_a_four_speaker_conversation() {
    let (mut embedder, mut vad) = setup();
    let cfg = DiarizeConfig::default();
    // Real speech: two women on a phone line, 30 s.
    let wav = testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}"));
    let audio = testdata::read_wav_16k_mono(&wav).unwrap_or_else(|e| panic!("{e}"));
    let reference = testdata::pyannote_rttm().unwrap_or_else(|e| panic!("{e}"));
    let r = regions(&mut vad, &audio);
    let d = diarize(&mut embedder, &audio, &r, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let (d0, d25) = (
        der(&reference, &hyp(&d), 0.0),
        der(&reference, &hyp(&d), 0.25),
    );
    eprintln!(
        "pyannote: {} speakers, DER {:.1} % (collar 0), {:.1} % (collar 0.25)",
        d.speakers,
        100.0 * d0.der,
        100.0 * d25.der
    );
    assert_eq!(d.speakers, 2);
    assert!(d25.der <= 0.15, "{d25:?}");
    // Given the number of speakers.
    let mut two = cfg.clone();
    two.cluster.speakers = Some(2);
    assert_eq!(
        diarize(&mut embedder, &audio, &r, &two).unwrap().speakers,
        2
    );

    // Synthesized: four voices, turns of 1-2 s, 60 s.
    let voices = test_voices().unwrap_or_else(|e| panic!("{e}"));
    let c = synthesize(
        &voices[..4],
        &Spec {
            seconds: 60.0,
            seed: 7,
            ..Spec::default()
        },
    );
    let r = regions(&mut vad, &c.audio);
    let d = diarize(&mut embedder, &c.audio, &r, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let d25 = der(&c.turns, &hyp(&d), 0.25);
    eprintln!(
        "synthesized: {} speakers, DER {:.1} % (collar 0.25)",
        d.speakers,
        100.0 * d25.der
    );
    let mut dur = vec![0.0f64; d.speakers];
    d.turns
        .iter()
        .for_each(|t| dur[t.speaker] += t.end - t.start);
    eprintln!("{dur:.1?} {:?} windows {}", d25.mapping, d.windows);
    assert_eq!(d.speakers, 4);
    assert!(d25.der <= 0.05, "{d25:?}");
    // Every reference turn's middle is given its mapped speaker.
    let map: std::collections::HashMap<_, _> = d25.mapping.iter().cloned().collect();
    let right = c
        .turns
        .iter()
        .filter(|t| {
            output::speaker_of(&d.turns, t.start + 0.1, t.end - 0.1)
                .map(output::speaker_label)
                .as_ref()
                == map.get(&t.speaker)
        })
        .count();
    assert!(
        right as f64 >= 0.95 * c.turns.len() as f64,
        "{right} of {}",
        c.turns.len()
    );

    // Embedding regions apart (as a resumed run does) gives the same result as pushing audio.
    let mut again = Diarizer::new(&mut embedder, cfg.clone()).unwrap();
    let pieces: Vec<(f64, &[f32])> = r
        .iter()
        .map(|&(s, e)| {
            (
                s,
                &c.audio[(s * 16_000.0) as usize..((e * 16_000.0) as usize).min(c.audio.len())],
            )
        })
        .collect();
    let embedded = again.embed_regions(&pieces).unwrap();
    for e in embedded {
        again.add(e).unwrap();
    }
    let d2 = again.finish().unwrap();
    assert_eq!(d2.speakers, d.speakers);
    assert!(der(&hyp(&d), &hyp(&d2), 0.0).der < 0.01);
}

#[test]
fn bad_input_is_an_error() {
    let (mut embedder, _) = setup();
    let cfg = DiarizeConfig::default();
    let audio = vec![0.0f32; 16_000];
    assert!(diarize(&mut embedder, &audio, &[(0.5, 0.2)], &cfg).is_err());
    assert!(diarize(&mut embedder, &audio, &[(f64::NAN, 1.0)], &cfg).is_err());
    let nan = vec![f32::NAN; 16_000];
    assert!(diarize(&mut embedder, &nan, &[(0.0, 1.0)], &cfg).is_err());
    let mut bad = cfg.clone();
    bad.step = 0.0;
    assert!(diarize(&mut embedder, &audio, &[], &bad).is_err());
    // No speech: no speakers, no error.
    let d = diarize(&mut embedder, &audio, &[], &cfg).unwrap();
    assert_eq!(d.speakers, 0);
}
