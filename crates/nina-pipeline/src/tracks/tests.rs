use std::path::Path;

use nina_models::ModelDir;
use nina_store::{
    CURRENT_VERSION, OpusTrackWriter, Participant, Place, Recorder, SCHEMA, Session, SessionDir,
    TrackRecord, track_file,
};

use crate::{NoProgress, Pipeline, PipelineConfig, VadChoice};

/// User A speaks from 0.5 s, user B from 3.5 s (3 s later), 12 dB quieter.
pub(crate) const A: (u64, &str, f64, f32) =
    (11, "sense_and_sensibility_01_austen_64kb-0880", 0.5, 1.0);
pub(crate) const B: (u64, &str, f64, f32) =
    (22, "sense_and_sensibility_01_austen_64kb-0930", 3.5, 0.251);
/// Length of the session, seconds.
pub(crate) const END: f64 = 7.5;

pub(crate) fn clip(name: &str) -> Vec<f32> {
    let p = nina_eval::testdata::require(&format!("librivox/{name}.wav")).unwrap();
    nina_eval::testdata::read_wav_16k_mono(&p).unwrap()
}

/// Where speech starts in a clip: the first 10 ms with an RMS above -35 dBFS, seconds.
pub(crate) fn onset(x: &[f32]) -> f64 {
    let i = x
        .chunks(160)
        .position(|c| (c.iter().map(|v| v * v).sum::<f32>() / 160.0).sqrt() > 0.018)
        .unwrap();
    i as f64 * 0.01
}

/// Encodes `speech` (16 kHz mono) as Discord sends it (48 kHz stereo, 20 ms) into a track
/// starting `at` seconds into the session, times `gain`.
fn write_track(path: &Path, user: u64, speech: &[f32], at: f64, gain: f32) {
    let mut enc =
        opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
    let mut w = OpusTrackWriter::create(path, user as u32, 2, &[]).unwrap();
    let mut pos = (at * 48_000.0) as u64;
    for f in 0..speech.len() / 320 {
        let mut pcm = Vec::with_capacity(1920);
        for i in 0..960 {
            let v = speech[f * 320 + i / 3] * gain;
            pcm.extend([v, v]);
        }
        w.push(pos, &enc.encode_vec_float(&pcm, 4000).unwrap())
            .unwrap();
        pos += 960;
    }
    w.finish((END * 48_000.0) as u64).unwrap();
}

/// A session recorded in raw mode with the tracks of A and B.
pub(crate) fn raw_session(root: &Path) -> SessionDir {
    let dir = SessionDir::new(root);
    let mut tracks = Vec::new();
    let mut participants = Vec::new();
    for (user, name, at, gain) in [A, B] {
        write_track(&root.join(track_file(user)), user, &clip(name), at, gain);
        tracks.push(TrackRecord {
            user_id: user,
            file: track_file(user),
            channels: 2,
            duration: END,
        });
        participants.push(Participant {
            user_id: user,
            display_name: Some(format!("user{user}")),
            presence: vec![],
        });
    }
    let s = Session {
        schema: SCHEMA.into(),
        schema_version: CURRENT_VERSION,
        id: "raw-1".into(),
        guild: Place { id: 1, name: None },
        channel: Place { id: 2, name: None },
        started_at_ms: 1_700_000_000_000,
        ended_at_ms: Some(1_700_000_007_500),
        participants,
        utterances: vec![],
        processing: vec![],
        source: None,
        tracks,
        gaps: vec![],
        recorder: Some(Recorder {
            name: "test".into(),
            version: "0".into(),
            decode: false,
            config: serde_json::Value::Null,
        }),
        dave: None,
    };
    dir.save(&s).unwrap();
    dir
}

fn energy() -> Pipeline {
    Pipeline::new(PipelineConfig {
        vad: VadChoice::Energy,
        models: ModelDir::new("/nonexistent"),
        ..PipelineConfig::default()
    })
    .unwrap()
}

#[test]
fn raw_tracks_become_utterances_of_their_users_on_the_session_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_session(&tmp.path().join("s"));
    let p = energy();
    let t0 = std::time::Instant::now();
    let s = p.segment_tracks(&dir, false, &NoProgress).unwrap();
    eprintln!("segment_tracks: {:?} for 2 x {END} s", t0.elapsed());
    assert!(!s.is_raw());
    for (user, name, at, _) in [A, B] {
        let us: Vec<_> = s.utterances.iter().filter(|u| u.user_id == user).collect();
        assert!(!us.is_empty(), "no utterance of {user}");
        let expected = at + onset(&clip(name));
        let heard = us[0].speech_start;
        eprintln!("user {user}: speech placed at {expected:.3} s, heard at {heard:.3} s");
        assert!(
            (heard - expected).abs() < 0.1,
            "{user}: {heard} vs {expected}"
        );
        for u in &us {
            assert!(u.file.starts_with(&format!("audio/{user}/")));
            assert_eq!((u.sample_rate, u.channels), (16_000, 1));
            assert!(u.start >= at - 0.5 && u.end <= at + 3.5 + 0.5, "{u:?}");
            let a = nina_store::read_wav(&dir.root().join(&u.file), usize::MAX).unwrap();
            assert!((a.samples.len() as f64 / 16_000.0 - (u.end - u.start)).abs() < 0.01);
        }
    }
    // Done: not redone; redone with force, with the same result.
    let before = std::fs::read(dir.root().join("session.json")).unwrap();
    assert_eq!(p.segment_tracks(&dir, false, &NoProgress).unwrap(), s);
    let again = p.segment_tracks(&dir, true, &NoProgress).unwrap();
    assert_eq!(again.utterances.len(), s.utterances.len());
    assert_eq!(
        std::fs::read(dir.root().join("session.json")).unwrap(),
        before
    );
    // Other settings re-segment (the old audio goes), a live-segmented session is left alone.
    let mut cfg = p.config().clone();
    cfg.segmenter.padding = 0.05;
    let q = Pipeline::new(cfg).unwrap();
    let other = q.segment_tracks(&dir, false, &NoProgress).unwrap();
    assert_ne!(other.utterances, s.utterances);
    for u in &s.utterances {
        assert!(!dir.root().join(&u.file).exists(), "{} left", u.file);
    }
    let mut live = other.clone();
    live.processing[0].options = serde_json::json!({});
    dir.save(&live).unwrap();
    assert_eq!(p.segment_tracks(&dir, false, &NoProgress).unwrap(), live);
}

#[test]
fn a_torn_track_is_segmented_as_far_as_it_is_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_session(&tmp.path().join("s"));
    let b = dir.root().join(track_file(B.0));
    let bytes = std::fs::read(&b).unwrap();
    std::fs::write(&b, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let s = energy().segment_tracks(&dir, false, &NoProgress).unwrap();
    assert!(s.utterances.iter().any(|u| u.user_id == B.0));
    assert!(s.utterances.iter().any(|u| u.user_id == A.0));
    // A session without tracks is a usage error.
    let plain = SessionDir::new(tmp.path().join("p"));
    let mut none = s.clone();
    none.tracks.clear();
    none.utterances.clear();
    std::fs::create_dir_all(plain.root()).unwrap();
    plain.save(&none).unwrap();
    let e = energy()
        .segment_tracks(&plain, false, &NoProgress)
        .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Usage, "{e}");
}

/// Decoding a track to 48 kHz stereo then segmenting (the segmenter resamples) against
/// decoding straight to 16 kHz mono. Run with `--ignored --nocapture` to print the figures.
#[test]
#[ignore = "measurement"]
fn measure_decode_rates() {
    use nina_segment::{SampleFormat, Samples, Segmenter, StreamFormat};
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_session(&tmp.path().join("s"));
    let track = nina_store::read_opus_track(&dir.root().join(track_file(A.0))).unwrap();
    // Ten copies of the track's packets: 75 s of audio.
    for (rate, ch) in [(48_000u32, 2u16), (16_000, 1)] {
        let t0 = std::time::Instant::now();
        let mut dec = super::TrackDecoder::new(Path::new("x"), rate, ch).unwrap();
        let mut decode = std::time::Duration::ZERO;
        let fmt = StreamFormat {
            sample_rate: rate,
            channels: ch,
            format: SampleFormat::F32,
        };
        let mut seg = Segmenter::new(
            Default::default(),
            fmt,
            Box::new(nina_segment::vad::EnergyVad::default()),
        )
        .unwrap();
        let mut n = 0;
        let mut bytes = 0;
        for r in 0..10 {
            for p in &track.packets {
                let d0 = std::time::Instant::now();
                let pcm = dec.decode(&p.data, p.samples).to_vec();
                decode += d0.elapsed();
                let at = (r as f64 * END) + p.start as f64 / 48_000.0;
                for u in seg.push(Samples::F32(&pcm), at).unwrap() {
                    n += 1;
                    bytes += u.samples.len() * 2;
                }
            }
        }
        for u in seg.finish().unwrap() {
            n += 1;
            bytes += u.samples.len() * 2;
        }
        eprintln!(
            "{rate} Hz x {ch}: 75 s decoded in {decode:?}, decoded + segmented in {:?}; {n} utterances, {bytes} bytes of 16-bit WAV",
            t0.elapsed()
        );
    }
}
