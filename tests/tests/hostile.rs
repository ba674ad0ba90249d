//! Hostile input: damaged audio and session files give errors, never panics, and nothing is
//! written outside the session directory.

use std::fs;
use std::path::Path;

use nina_pipeline::{ErrorKind, NoProgress, Pipeline, PipelineConfig, VadChoice};
use nina_store::SessionDir;
use nina_tests::{data, tree};

fn energy() -> Pipeline {
    Pipeline::new(PipelineConfig {
        vad: VadChoice::Energy,
        ..nina_tests::config("whisper-tiny-en")
    })
    .unwrap()
}

/// A 16-bit mono WAV header claiming `riff` and `data` sizes, then `payload` bytes.
fn wav_with_sizes(riff: u32, data: u32, channels: u16, rate: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&riff.to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&rate.wrapping_mul(2 * u32::from(channels)).to_le_bytes());
    let block_align = 2u16.wrapping_mul(channels);
    b.extend_from_slice(&block_align.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn run(p: &Pipeline, audio: &Path, out: &Path) -> Result<usize, nina_pipeline::PipelineError> {
    let sd = SessionDir::new(out);
    p.segment_file(audio, &sd, true, &NoProgress)
        .map(|s| s.utterances.len())
}

#[test]
fn damaged_audio_is_an_error_or_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let p = energy();
    let speech = fs::read(data(
        "librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    ))
    .unwrap();

    // Zero-length, not audio, header only.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.wav", vec![]),
        (
            "text.wav",
            b"this is not audio, whatever its name says".to_vec(),
        ),
        ("header-only.wav", speech[..44].to_vec()),
        (
            "no-rate.wav",
            wav_with_sizes(36 + 3200, 3200, 1, 0, &[1u8; 3200]),
        ),
        (
            "many-channels.wav",
            wav_with_sizes(36 + 3200, 3200, 65_535, 16_000, &[1u8; 3200]),
        ),
    ];
    for (name, bytes) in &cases {
        let f = root.join(name);
        fs::write(&f, bytes).unwrap();
        let e = run(&p, &f, &root.join("out").join(name.replace('.', "-"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Audio, "{name}: {e}");
        eprintln!("{name}: {e}");
    }

    // Truncated mid-file, and a header claiming 4 GiB: the audio that is there is used.
    let truncated = root.join("truncated.wav");
    fs::write(&truncated, &speech[..speech.len() / 2 + 1]).unwrap();
    let absurd = root.join("absurd.wav");
    fs::write(
        &absurd,
        wav_with_sizes(u32::MAX, u32::MAX - 64, 1, 16_000, &speech[44..]),
    )
    .unwrap();
    for f in [&truncated, &absurd] {
        let n = run(&p, f, &root.join("out").join(f.file_stem().unwrap()))
            .unwrap_or_else(|e| panic!("{}: the audio that is there is used: {e}", f.display()));
        assert!(n >= 1, "{}: speech is found", f.display());
    }
    // Nothing but session directories was created, and no temporary file is left.
    for (path, _) in tree(root) {
        let s = path.to_string_lossy();
        assert!(s.starts_with("out/") || !s.contains('/'), "{s}");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!nina_fs::is_temp_name(&name) && !s.ends_with(".tmp"), "{s}");
    }
}

#[test]
fn sessions_with_path_like_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let sd = SessionDir::new(data_dir.join("1/2/2024-05-01/s1"));
    let p = energy();
    let good = serde_json::json!({
        "schema": "nina.session", "schema_version": 1, "id": "s1",
        "guild": {"id": 1, "name": "../../guild"}, "channel": {"id": 2},
        "started_at_ms": 0,
        "participants": [{"user_id": 7, "display_name": "../../../etc/passwd"}],
        "utterances": [{"user_id": 7, "seq": 0, "start": 0.0, "end": 1.0, "speech_start": 0.1,
            "speech_end": 0.9, "file": "audio/7/000000-0000000000.wav", "sample_rate": 16000, "channels": 1}],
    });
    let bad_values = [
        (
            "/utterances/0/file",
            serde_json::json!("../../../../outside.wav"),
        ),
        ("/utterances/0/file", serde_json::json!("/tmp/outside.wav")),
        ("/utterances/0/file", serde_json::json!("audio/8/x.wav")),
        ("/id", serde_json::json!("../../x")),
        ("/utterances/0/end", serde_json::json!(-1.0)),
        ("/schema_version", serde_json::json!(99)),
        ("/utterances/0/channels", serde_json::json!("two")),
    ];
    for (field, value) in bad_values {
        let mut doc = good.clone();
        *doc.pointer_mut(field).unwrap() = value.clone();
        fs::create_dir_all(sd.root()).unwrap();
        fs::write(sd.root().join("session.json"), doc.to_string()).unwrap();
        let before = tree(dir.path());
        let e = p.transcribe_session(&sd, false, &NoProgress).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Session, "{field}={value}: {e}");
        let msg = e.to_string();
        let leaf = field.rsplit('/').next().unwrap();
        assert!(
            msg.contains(leaf) || msg.contains("schema_version"),
            "{msg} names {leaf}"
        );
        assert_eq!(
            tree(dir.path()),
            before,
            "nothing written for {field}={value}"
        );
        eprintln!("{field}={value}: {e}");
    }
    // The good document is accepted, and its display names never become paths.
    fs::write(sd.root().join("session.json"), good.to_string()).unwrap();
    let s = sd.load().unwrap();
    assert_eq!(
        s.participants[0].display_name.as_deref(),
        Some("../../../etc/passwd")
    );
    assert!(!dir.path().join("etc").exists() && !data_dir.join("guild").exists());
}
