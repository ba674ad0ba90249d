//! `reprocess file` end to end on real speech with the real models.

use nina_eval::testdata;
use nina_pipeline::{NoProgress, Outcome, Pipeline};
use nina_store::SessionDir;
use nina_tests::{config, data, librivox_text, speech_regions, transcript_text};

#[test]
fn pyannote_sample_speech_regions_match_the_rttm_and_are_transcribed() {
    let dir = tempfile::tempdir().unwrap();
    let sd = SessionDir::new(dir.path().join("s"));
    let p = Pipeline::new(config("whisper-base")).unwrap();
    let wav = testdata::pyannote_wav().unwrap_or_else(|e| panic!("{e}"));
    let (session, outcome) = p.process_file(&wav, &sd, false, &NoProgress).unwrap();
    assert!(matches!(outcome, Outcome::Done { .. }), "{outcome:?}");

    let reference: Vec<(f64, f64)> = testdata::pyannote_rttm()
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|t| (t.start, t.end))
        .collect();
    let hyp = speech_regions(&session);
    let score = nina_eval::frame_f1(&reference, &hyp, 30.0, 0.01);
    eprintln!("utterances {hyp:?}\nframe score {score:?}");
    assert!(score.f1 >= 0.9, "{score:?}");

    // The transcript is there in every format, made with the recorded model.
    let text = transcript_text(sd.root());
    let wer = nina_eval::wer(&testdata::pyannote_text().unwrap(), &text);
    eprintln!("transcript (WER {wer:.3} against sample.stm): {text}");
    assert!(wer < 0.5, "{wer}");
    for f in ["transcript.srt", "transcript.vtt", "transcript.txt"] {
        let body = std::fs::read_to_string(sd.root().join(f)).unwrap();
        assert!(body.contains("sample"), "{f} names the speaker: {body}");
    }
    let steps: Vec<&str> = session.processing.iter().map(|p| p.step.as_str()).collect();
    assert_eq!(steps, ["segment", "transcribe"]);
    let tr = &session.processing[1];
    assert_eq!(
        tr.sha256.as_deref(),
        Some(nina_models::catalog::WHISPER_BASE.sha256)
    );

    // The same model and options again: skipped. Other options: redone and recorded.
    assert_eq!(
        p.transcribe_session(&sd, false, &NoProgress).unwrap(),
        Outcome::Skipped
    );
    let mut beam = config("whisper-base");
    beam.transcribe.decoding = nina_transcribe::Decoding::Beam { beam_size: 5 };
    let g = Pipeline::new(beam).unwrap();
    assert!(matches!(
        g.transcribe_session(&sd, false, &NoProgress).unwrap(),
        Outcome::Done { .. }
    ));
    let again = sd.load().unwrap();
    assert_eq!(again.processing.len(), 2);
    assert_ne!(again.processing[1].key, tr.key);
    assert!(!sd.root().join(".work").exists());
}

#[test]
fn librivox_as_44k_stereo_flac_is_transcribed_within_target() {
    let dir = tempfile::tempdir().unwrap();
    let sd = SessionDir::new(dir.path().join("s"));
    let p = Pipeline::new(config("whisper-base")).unwrap();
    let (session, _) = p
        .process_file(&data("formats/librivox.flac"), &sd, false, &NoProgress)
        .unwrap();
    let text = transcript_text(sd.root());
    let errors = nina_eval::word_errors(&librivox_text(), &text);
    eprintln!(
        "{} utterances; WER {:.4} ({} errors / {} words)\n{text}",
        session.utterances.len(),
        errors.rate(),
        errors.errors(),
        errors.reference_words
    );
    assert!(errors.rate() <= 0.10, "{errors:?}");
    // The stored audio keeps the source's quality.
    for u in &session.utterances {
        assert_eq!((u.sample_rate, u.channels), (44_100, 2));
    }
}

#[test]
fn every_format_segments_alike() {
    let p = Pipeline::new(config("whisper-base")).unwrap();
    let mut regions = Vec::new();
    for f in [
        "librivox.flac",
        "librivox.ogg",
        "librivox.mp3",
        "librivox-48k-f32.wav",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(dir.path().join("s"));
        let s = p
            .segment_file(&data(&format!("formats/{f}")), &sd, false, &NoProgress)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        eprintln!("{f}: {:?}", speech_regions(&s));
        regions.push((f, speech_regions(&s)));
    }
    let (_, flac) = &regions[0];
    assert!(flac.len() >= 3, "{flac:?}");
    for (f, r) in &regions[1..] {
        let total = |r: &[(f64, f64)]| r.iter().map(|(a, b)| b - a).sum::<f64>();
        let score = nina_eval::frame_f1(flac, r, 60.0, 0.01);
        assert!(
            score.f1 > 0.95,
            "{f}: {score:?} ({} s vs {} s)",
            total(r),
            total(flac)
        );
    }
}
