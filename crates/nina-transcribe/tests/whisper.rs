//! The default Whisper model (base, q8_0 weights) on real speech (needs `scripts/setup.sh`).

use std::sync::OnceLock;

use nina_eval::testdata;
use nina_models::{ModelDir, catalog};
use nina_transcribe::{DropReason, TranscribeError, TranscribeOptions, Transcriber, WhisperModel};

/// A catalogue model from the set-up models directory (panics naming the fix when missing).
fn load(spec: &catalog::ModelSpec) -> WhisperModel {
    let path = ModelDir::new(testdata::models_dir())
        .require(spec)
        .unwrap_or_else(|e| panic!("{e}"));
    WhisperModel::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn base() -> &'static WhisperModel {
    static MODEL: OnceLock<WhisperModel> = OnceLock::new();
    MODEL.get_or_init(|| load(&catalog::DEFAULT_WHISPER))
}

/// Whisper tiny.en: for tests whose point is plumbing (chunking, the pool), not accuracy.
fn tiny() -> &'static WhisperModel {
    static MODEL: OnceLock<WhisperModel> = OnceLock::new();
    MODEL.get_or_init(|| load(&catalog::WHISPER_TINY_EN))
}

/// The default options on one thread: the harness runs two tests at once on CI's two cores,
/// and whisper.cpp's spinning threads slow down many times over when they outnumber the cores.
fn defaults() -> TranscribeOptions {
    TranscribeOptions {
        threads: 1,
        ..TranscribeOptions::default()
    }
}

fn english() -> TranscribeOptions {
    TranscribeOptions {
        language: Some("en".into()),
        ..defaults()
    }
}

fn corpus_errors(clips: &[testdata::Clip], options: &TranscribeOptions) -> nina_eval::WordErrors {
    let mut t = base().transcriber().unwrap();
    clips
        .iter()
        .map(|c| {
            let audio = testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}"));
            let out = t.transcribe(&audio, options).unwrap();
            let e = nina_eval::word_errors(&c.text, &out.text());
            eprintln!(
                "{}: wer {:.3}\n  ref: {}\n  hyp: {}",
                c.id,
                e.rate(),
                c.text,
                out.text()
            );
            e
        })
        .sum()
}

#[test]
fn librivox_word_error_rate() {
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let wer = corpus_errors(&clips, &english()).rate();
    eprintln!("LibriVox WER {:.2}%", wer * 100.0);
    assert!(wer <= 0.10, "LibriVox WER {wer:.3} above 10%");
}

/// The "cards" set: 1-3.5 s utterances of card names. With default options the base model
/// hears "clubs" as "clothes"/"close" (see docs/measurements.md); the pooled LibriVox + cards
/// rate stays within 15%, and a guild prompt (the feature made for such jargon) brings cards
/// alone within 10%.
#[test]
fn cards_word_error_rate_and_the_initial_prompt() {
    let cards = testdata::cards().unwrap_or_else(|e| panic!("{e}"));
    let libri = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let plain = corpus_errors(&cards, &english());
    let pooled = (plain + corpus_errors(&libri, &english())).rate();
    let prompted = corpus_errors(
        &cards,
        &TranscribeOptions {
            initial_prompt: Some("Ten of clubs, queen of hearts.".into()),
            ..english()
        },
    )
    .rate();
    eprintln!(
        "cards WER {:.2}% (default), {:.2}% (with prompt); LibriVox + cards pooled {:.2}%",
        plain.rate() * 100.0,
        prompted * 100.0,
        pooled * 100.0
    );
    assert!(pooled <= 0.15, "pooled WER {pooled:.3} above 15%");
    assert!(
        prompted <= 0.10,
        "cards WER with a prompt {prompted:.3} above 10%"
    );
    assert!(
        prompted < plain.rate(),
        "the prompt did not help: {prompted} vs {}",
        plain.rate()
    );
}

#[test]
fn language_is_detected_with_probability() {
    let clip = &testdata::librivox().unwrap_or_else(|e| panic!("{e}"))[0];
    let audio = testdata::read_wav_16k_mono(&clip.path).unwrap();
    let out = base()
        .transcriber()
        .unwrap()
        .transcribe(&audio, &defaults())
        .unwrap();
    assert_eq!(out.language.as_deref(), Some("en"));
    let p = out.language_probability.unwrap();
    assert!(p > 0.5 && p <= 1.0, "probability {p}");
    // Words carry times inside the audio, in order, and probabilities.
    let words: Vec<_> = out.segments.iter().flat_map(|s| &s.words).collect();
    assert!(words.len() >= 15, "{} words", words.len());
    let dur = audio.len() as f64 / 16_000.0;
    for w in words.windows(2) {
        assert!(w[0].start <= w[1].start + 1e-9);
    }
    assert!(
        words
            .iter()
            .all(|w| w.start >= 0.0 && w.end <= dur + 1e-9 && w.start <= w.end)
    );
    assert!(words.iter().all(|w| (0.0..=1.0).contains(&w.probability)));
}

/// A transcript depends only on its audio and options, not on what the transcriber decoded
/// before: the reuse of one state made whisper.cpp's beam search draw its candidates from a
/// random generator left where the last utterance put it, and the call's opening 8 s gave a
/// different text on each of four runs ("Hello. Hello." / "Hello, hello.", ...). Beam search,
/// since greedy decoding draws nothing unless it falls back to a higher temperature.
#[test]
fn a_transcript_does_not_depend_on_the_utterances_before_it() {
    let audio = testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let at = |from: f64, seconds: f64| {
        let start = (from * 16_000.0) as usize;
        audio[start..start + (seconds * 16_000.0) as usize].to_vec()
    };
    let (opening, later) = (at(6.3, 8.0), at(21.0, 9.0));
    let o = TranscribeOptions {
        decoding: nina_transcribe::Decoding::Beam { beam_size: 5 },
        ..english()
    };
    let mut t = base().transcriber().unwrap();
    let key = |out: nina_transcribe::Transcript| {
        out.segments
            .iter()
            .map(|s| (s.text.clone(), s.avg_logprob.to_bits()))
            .collect::<Vec<_>>()
    };
    let first = key(t.transcribe(&opening, &o).unwrap());
    assert!(!first.is_empty());
    for before in [&opening, &later] {
        t.transcribe(before, &o).unwrap();
        assert_eq!(key(t.transcribe(&opening, &o).unwrap()), first);
    }
}

#[test]
fn a_long_unvoiced_lead_in_neither_shifts_nor_loops_the_transcript() {
    // The pyannote call as one 30 s utterance: 6.7 s of line noise before the first "Hello?".
    // Decoded whole, Whisper timed its first words at 0 s, ran ahead of the audio and, with 7 s
    // of "audio" left, said sentences from the start of the call again.
    let audio = testdata::read_wav_16k_mono(&testdata::pyannote_wav().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    let reference = testdata::pyannote_text().unwrap_or_else(|e| panic!("{e}"));
    let out = base()
        .transcriber()
        .unwrap()
        .transcribe(&audio, &english())
        .unwrap();
    let first = out.segments.first().expect("segments");
    assert!(
        first.start >= 5.0 && first.words.iter().all(|w| w.start >= 5.0),
        "the first segment starts at {} s, before the lead-in ends: {first:?}",
        first.start
    );
    let words = norm_words(&out.text());
    for n in words.windows(6) {
        let again = words.windows(6).filter(|m| m == &n).count();
        assert_eq!(again, 1, "{n:?} said {again} times: {}", out.text());
    }
    let wer = nina_eval::wer(&reference, &out.text());
    eprintln!(
        "pyannote call as one utterance: WER {wer:.3}\n  {}",
        out.text()
    );
    assert!(wer < 0.3, "WER {wer}: {}", out.text());
}

#[test]
fn silence_and_noise_give_no_text() {
    let mut t = base().transcriber().unwrap();
    let silence = vec![0.0f32; 16_000 * 3];
    let out = t.transcribe(&silence, &defaults()).unwrap();
    assert!(out.segments.is_empty(), "{:?}", out.segments);
    assert!(matches!(out.dropped[0].reason, DropReason::Silence { .. }));

    // White noise at -20 dBFS from a fixed-seed generator.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<f32> = (0..16_000 * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.35
        })
        .collect();
    let out = t.transcribe(&noise, &defaults()).unwrap();
    assert_eq!(
        out.text(),
        "",
        "noise produced text; dropped: {:?}",
        out.dropped
    );
}

#[test]
fn sixty_seconds_are_chunked_with_monotonic_times() {
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let mut audio = Vec::new();
    let mut reference = String::new();
    while audio.len() < 16_000 * 60 {
        for c in &clips {
            audio.extend(testdata::read_wav_16k_mono(&c.path).unwrap());
            audio.extend(std::iter::repeat_n(0.0, 8_000));
            reference.push_str(&c.text);
            reference.push(' ');
        }
    }
    let dur = audio.len() as f64 / 16_000.0;
    let out = tiny()
        .transcriber()
        .unwrap()
        .transcribe(&audio, &english())
        .unwrap();
    assert!(out.segments.len() >= 4);
    for s in out.segments.windows(2) {
        assert!(s[0].start <= s[1].start, "{} > {}", s[0].start, s[1].start);
    }
    let last = out.segments.last().unwrap();
    assert!(
        last.end > dur - 15.0 && last.end <= dur + 1e-9,
        "last segment ends at {} of {dur}",
        last.end
    );
    let wer = nina_eval::wer(&reference, &out.text());
    eprintln!(
        "60 s input: {} segments, WER {:.3}",
        out.segments.len(),
        wer
    );
    assert!(wer < 0.2, "WER {wer}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut t = base().transcriber().unwrap();
    assert!(matches!(
        t.transcribe(&[], &english()),
        Err(TranscribeError::Audio(_))
    ));
    assert!(matches!(
        t.transcribe(&[0.1, f32::NAN, 0.2], &english()),
        Err(TranscribeError::Audio(_))
    ));
}

#[test]
fn missing_or_corrupt_model_names_the_file() {
    let dir = std::env::temp_dir().join(format!("nina-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("ggml-none.bin");
    let e = WhisperModel::load(&missing).unwrap_err().to_string();
    assert!(
        e.contains("ggml-none.bin") && e.contains("scripts/setup.sh"),
        "{e}"
    );

    let corrupt = dir.join("ggml-corrupt.bin");
    let real = std::fs::read(
        ModelDir::new(testdata::models_dir())
            .require(&catalog::WHISPER_TINY_EN)
            .unwrap(),
    )
    .unwrap();
    std::fs::write(&corrupt, &real[..real.len() / 2]).unwrap();
    let e = WhisperModel::load(&corrupt).unwrap_err().to_string();
    assert!(
        e.contains("ggml-corrupt.bin") && e.contains("truncated"),
        "{e}"
    );
    std::fs::write(&corrupt, b"definitely not a model").unwrap();
    let e = WhisperModel::load(&corrupt).unwrap_err().to_string();
    assert!(e.contains("ggml-corrupt.bin"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_pool_returns_real_transcripts_in_order_per_stream() {
    use nina_transcribe::TranscriptionPool;
    let clips = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    let options = TranscribeOptions {
        threads: 1,
        ..english()
    };
    let mut pool = TranscriptionPool::new(2, 2, options, || base().transcriber()).unwrap();
    // Two users, each saying the clips in a different order, on a session clock.
    let mut expected: Vec<(&str, String)> = Vec::new();
    for (i, c) in clips.iter().enumerate() {
        for (user, clip) in [("alice", c), ("bob", &clips[clips.len() - 1 - i])] {
            let audio = testdata::read_wav_16k_mono(&clip.path).unwrap();
            pool.submit(user, 10.0 * i as f64, audio).unwrap();
            expected.push((user, clip.text.clone()));
        }
    }
    let results = pool.finish().unwrap();
    assert_eq!(results.len(), expected.len());
    for user in ["alice", "bob"] {
        let got: Vec<_> = results.iter().filter(|r| r.stream == user).collect();
        let want: Vec<_> = expected
            .iter()
            .filter(|(u, _)| *u == user)
            .map(|(_, t)| t)
            .collect();
        for (n, (r, text)) in got.iter().zip(&want).enumerate() {
            assert_eq!(r.seq, n as u64);
            let t = r.on_session_clock().unwrap();
            assert!(
                nina_eval::wer(text, &t.text()) < 0.25,
                "{user} #{n}: {}",
                t.text()
            );
            assert!(
                t.segments
                    .iter()
                    .all(|s| s.start >= r.start && s.end <= r.start + r.duration + 1e-6)
            );
        }
    }
}

/// Normalised words of `text`.
/// Normalised words; "OK" and "okay" are one word (the same reply is spelt either way).
fn norm_words(text: &str) -> Vec<String> {
    nina_eval::normalize(text)
        .into_iter()
        .map(|w| if w == "ok" { "okay".into() } else { w })
        .collect()
}

/// Whether every word of `expected` is in `got` (as many times).
fn missing(expected: &[String], got: &[String]) -> Vec<String> {
    let mut left = got.to_vec();
    let mut out = Vec::new();
    for w in expected {
        match left.iter().position(|g| g == w) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(w.clone()),
        }
    }
    out
}

/// Short utterances keep their words: the first 1.5-3 s of each LibriVox clip and of the cards
/// recordings (cut between two words; the words ending in the last 0.25 s before the cut do not
/// count), and the flite voices' short replies ("bye bye"), each
/// transcribed alone (replies of two voices), lose none of the words the same model gets right when the same speech
/// sits in a longer context (the whole clip; the reply after a sentence of the same voice).
/// Guard repairs are counted.
#[test]
fn short_utterances_lose_no_words_the_model_gets_in_context() {
    let mut t = base().transcriber().unwrap();
    let o = english();
    let (mut cases, mut lost, mut repaired) = (0, Vec::new(), 0);
    let mut doubled = Vec::new();
    let mut check = |t: &mut nina_transcribe::WhisperTranscriber,
                     name: &str,
                     alone: &[f32],
                     expected: &[String],
                     reference: &str| {
        let out = t.transcribe(alone, &o).unwrap();
        repaired += out.segments.iter().filter(|s| s.repair.is_some()).count();
        let got = norm_words(&out.text());
        // Words of the reference the model heard in context must be heard alone.
        let reference = norm_words(reference);
        let heard: Vec<String> = expected
            .iter()
            .filter(|w| reference.contains(w))
            .cloned()
            .collect();
        let m = missing(&heard, &got);
        eprintln!(
            "{name}: in context {heard:?}, alone {got:?}{}{}",
            if m.is_empty() {
                String::new()
            } else {
                format!(" LOST {m:?}")
            },
            if out.dropped.is_empty() {
                String::new()
            } else {
                format!(
                    " dropped {:?}",
                    out.dropped
                        .iter()
                        .map(|d| (d.segment.text.clone(), d.reason.name()))
                        .collect::<Vec<_>>()
                )
            }
        );
        cases += 1;
        if !m.is_empty() {
            lost.push((name.to_string(), m));
        }
        got
    };
    let mut sets = testdata::librivox().unwrap_or_else(|e| panic!("{e}"));
    sets.extend(testdata::cards().unwrap_or_else(|e| panic!("{e}")));
    for c in &sets {
        let audio = testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}"));
        let whole = t.transcribe(&audio, &o).unwrap();
        let words: Vec<&nina_transcribe::Word> =
            whole.segments.iter().flat_map(|s| &s.words).collect();
        // Cut in the first gap between two words after 1.5 s and before 3 s (the whole clip
        // when it is shorter).
        let cut = words
            .windows(2)
            .find(|w| w[0].end >= 1.5 && w[1].start <= 3.0 && w[1].start >= w[0].end)
            .map_or(audio.len() as f64 / 16_000.0, |w| {
                (w[0].end + w[1].start) / 2.0
            });
        let n = ((cut * 16_000.0) as usize).min(audio.len());
        // Whisper's word times are rough (a word may run on past its end time): the words
        // that count end a quarter of a second before the cut.
        let expected: Vec<String> = words
            .iter()
            .filter(|w| w.end <= cut - 0.25)
            .flat_map(|w| norm_words(&w.text))
            .collect();
        check(
            &mut t,
            &format!("{} first {cut:.2} s", c.id),
            &audio[..n],
            &expected,
            &c.text,
        );
    }
    // Two of the four voices: each reply costs two decodes of the base model.
    for voice in ["slt", "awb"] {
        let sentence = &testdata::flite(voice).unwrap_or_else(|e| panic!("{e}"))[0];
        let lead = testdata::read_wav_16k_mono(&sentence.path).unwrap_or_else(|e| panic!("{e}"));
        for r in testdata::replies(voice).unwrap_or_else(|e| panic!("{e}")) {
            let reply = testdata::read_wav_16k_mono(&r.path).unwrap_or_else(|e| panic!("{e}"));
            // In context: the sentence, half a second, the reply.
            let mut context = lead.clone();
            context.extend(std::iter::repeat_n(0.0, 8_000));
            let offset = context.len() as f64 / 16_000.0;
            context.extend_from_slice(&reply);
            let out = t.transcribe(&context, &o).unwrap();
            let expected: Vec<String> = out
                .segments
                .iter()
                .flat_map(|s| &s.words)
                .filter(|w| w.start >= offset - 0.1)
                .flat_map(|w| norm_words(&w.text))
                .collect();
            let got = check(&mut t, &r.id, &reply, &expected, &r.text);
            // Nor does a reply come back said twice ("no no" for "No.").
            let reference = norm_words(&r.text);
            let count = |words: &[String], w: &String| words.iter().filter(|x| *x == w).count();
            if got
                .iter()
                .any(|w| count(&got, w) > count(&reference, w).max(1))
            {
                doubled.push((r.id.clone(), got));
            }
        }
    }
    eprintln!(
        "{cases} short utterances, {} lost words, {repaired} segments repaired",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "words lost alone but heard in context: {lost:?}"
    );
    assert!(doubled.is_empty(), "replies said twice: {doubled:?}");
}

/// Whisper base detects the language of synthesized speech in Portuguese (Brazilian), Spanish,
/// German, French and English (espeak-ng, two sentences each). Measured, free detection on the
/// window shrunk to the sentence (the default) gets 6 of 10 (espeak's Portuguese is heard as
/// Latin and Spanish, a German sentence as Latin, a French one as Thai); among the five languages
/// a guild declares (`language: "pt,es,de,fr,en"`) on the full 30 s window
/// (`short_audio_context: false`), 9 of 10 (one Portuguese sentence is heard as Spanish; 8 of 10
/// on the shrunken window). espeak's Portuguese is the weak part: base mishears it even when
/// told the language (WER 0.6-0.9).
#[test]
fn the_language_is_detected_per_utterance_and_can_be_forced() {
    let mut t = base().transcriber().unwrap();
    let among = TranscribeOptions {
        language: Some("pt,es,de,fr,en".into()),
        short_audio_context: false,
        ..defaults()
    };
    let mut wrong = Vec::new();
    let mut wrong_among = Vec::new();
    let mut sentences = Vec::new();
    for code in ["pt", "es", "de", "fr", "en"] {
        for c in testdata::espeak(code).unwrap_or_else(|e| panic!("{e}")) {
            let audio = testdata::read_wav_16k_mono(&c.path).unwrap_or_else(|e| panic!("{e}"));
            for (options, wrong) in [(&defaults(), &mut wrong), (&among, &mut wrong_among)] {
                let (language, p) = t.detect_language(&audio, options).unwrap();
                eprintln!(
                    "{} ({}): detected {language} (p {p:.2})",
                    c.id,
                    options.language.as_deref().unwrap_or("any"),
                );
                assert!(p > 0.0 && p <= 1.0, "probability {p}");
                if language != code {
                    wrong.push((c.id.clone(), language));
                }
            }
            sentences.push((code, c, audio));
        }
    }
    eprintln!("detected wrongly: {wrong:?}; among five: {wrong_among:?}");
    // Free: English, Spanish, German and French are each detected right at least once.
    for code in ["en", "es", "de", "fr"] {
        assert!(
            wrong.iter().filter(|(id, _)| id.starts_with(code)).count() < 2,
            "{code} never detected: {wrong:?}"
        );
    }
    // Among the five: every non-Portuguese sentence right, and Portuguese at least once.
    assert!(
        wrong_among.iter().all(|(id, _)| id.starts_with("pt")) && wrong_among.len() < 2,
        "detected wrongly among the five languages: {wrong_among:?}"
    );

    // A transcript carries the language detection gave, whatever was decoded before it:
    // whisper.cpp keeps the last decode's encoder window in its state, and detection once
    // reused it (a 10 s decode before a 3 s sentence changed the answer).
    let (_, pt, pt_audio) = sentences
        .iter()
        .find(|(code, c, _)| *code == "pt" && !wrong_among.iter().any(|(id, _)| *id == c.id))
        .expect("a Portuguese sentence detected right");
    let before = t.detect_language(pt_audio, &defaults()).unwrap();
    let librivox = testdata::read_wav_16k_mono(
        &testdata::librivox().unwrap_or_else(|e| panic!("{e}"))[0].path,
    )
    .unwrap();
    t.transcribe(&librivox[..160_000.min(librivox.len())], &english())
        .unwrap();
    let out = t.transcribe(pt_audio, &among).unwrap();
    assert_eq!(out.language.as_deref(), Some("pt"), "{}", pt.id);
    let after = t.detect_language(pt_audio, &defaults()).unwrap();
    assert_eq!(before.0, after.0);
    assert!(
        (before.1 - after.1).abs() < 1e-4,
        "{before:?} then {after:?}"
    );

    // Forced: the Portuguese sentence is given as Spanish, and comes back as Spanish.
    let forced = TranscribeOptions {
        language: Some("es".into()),
        decoding: nina_transcribe::Decoding::Greedy { best_of: 1 },
        ..defaults()
    };
    assert_eq!(
        t.detect_language(pt_audio, &forced).unwrap(),
        ("es".to_string(), 1.0)
    );
    let out = t.transcribe(pt_audio, &forced).unwrap();
    assert_eq!(out.language.as_deref(), Some("es"));
    assert_eq!(out.language_probability, Some(1.0));
}
