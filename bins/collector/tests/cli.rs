//! `collector --check-config`: validation without connecting, and the token never shown.

use std::process::Command;

fn collector(args: &[&str], token: Option<&str>) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_collector"));
    c.args(args).env_remove("DISCORD_TOKEN");
    if let Some(t) = token {
        c.env("DISCORD_TOKEN", t);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_validates_without_connecting_and_never_shows_the_token() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/collector.example.toml");
    let secret = "MTIz.secret-token-value";
    let (ok, out) = collector(&["--config", example, "--check-config"], Some(secret));
    assert!(ok, "{out}");
    assert!(out.contains("token: set (from DISCORD_TOKEN)"), "{out}");
    assert!(!out.contains(secret));
    // A token file works too, and is not shown either.
    let d = tempfile::tempdir().unwrap();
    let tf = d.path().join("token");
    std::fs::write(&tf, format!("{secret}\n")).unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("token_file = {:?}\n", tf.display().to_string()),
    )
    .unwrap();
    let (ok, out) = collector(&["--config", cfg.to_str().unwrap(), "--check-config"], None);
    assert!(
        ok && out.contains("from token_file") && !out.contains(secret),
        "{out}"
    );
    // No token: refused, saying how to give one.
    let (ok, out) = collector(&["--config", example, "--check-config"], None);
    assert!(!ok && out.contains("DISCORD_TOKEN"), "{out}");
    // A mistake is named.
    std::fs::write(&cfg, "[transcribe]\nvad = \"loud\"\n").unwrap();
    let (ok, out) = collector(
        &["--config", cfg.to_str().unwrap(), "--check-config"],
        Some(secret),
    );
    assert!(!ok && out.contains("transcribe.vad"), "{out}");
}

/// The README's run command: a simulated call, transcripts printed, a session stored.
#[test]
fn the_demo_records_a_simulated_call() {
    nina_eval::testdata::librivox().expect("run scripts/setup.sh");
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("demo");
    let (ok, out) = collector(
        &[
            "--demo",
            "--demo-model",
            "whisper-tiny-en",
            "--data",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}");
    for name in ["Ann", "Ben", "Cat"] {
        assert!(
            out.contains(&format!("] {name}: ")),
            "no transcript of {name}: {out}"
        );
    }
    assert!(out.contains("session stored in"), "{out}");
    let dirs = nina_store::Store::new(&data).sessions().unwrap();
    assert_eq!(dirs.len(), 1);
    let s = dirs[0].load().unwrap();
    assert_eq!(s.tracks.len(), 3);
    assert!(dirs[0].root().join("transcript.txt").is_file());
}
