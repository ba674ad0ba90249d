//! The commands Nina prints when a model is missing work as printed.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use nina_models::{ModelDir, ModelError, SETUP_COMMAND, catalog};

fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The backquoted command of a missing model's fix.
fn printed_command(err: &ModelError) -> String {
    let text = err.to_string();
    let start = text
        .find('`')
        .unwrap_or_else(|| panic!("no command in: {text}"));
    let rest = &text[start + 1..];
    rest[..rest
        .find('`')
        .unwrap_or_else(|| panic!("unterminated in: {text}"))]
        .to_string()
}

#[test]
fn the_printed_fetch_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let models_dir = dir.path().join("models");
    let models = ModelDir::new(&models_dir);
    let spec = &catalog::SILERO_VAD;
    let err = models.require(spec).unwrap_err();
    let command = printed_command(&err);
    let words: Vec<&str> = command.split_whitespace().collect();

    // `cargo run -p <this package> -- ARGS`: the package is this one, its only binary is the
    // `nina-models` command, so cargo runs it with ARGS.
    assert_eq!(&words[..3], ["cargo", "run", "-p"], "{command}");
    assert_eq!(words[3], env!("CARGO_PKG_NAME"), "{command}");
    assert_eq!(words[4], "--", "{command}");
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert_eq!(manifest.matches("[[bin]]").count(), 1);
    assert!(!manifest.contains("required-features"));

    // Run those ARGS, offline: a cached wheel with the wrong file in it stands for the registry.
    // The command parses, looks in the cache, extracts, verifies, and refuses the file.
    let catalog::Source::Wheel { member, .. } = spec.source else {
        panic!("silero comes from a wheel")
    };
    let cache = dir.path().join(".cache/wheels");
    fs::create_dir_all(&cache).unwrap();
    let mut zip =
        zip::ZipWriter::new(File::create(cache.join("silero_vad-6.2.3-py3-none-any.whl")).unwrap());
    zip.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"not silero").unwrap();
    zip.finish().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nina-models"))
        .args(&words[5..])
        .current_dir(dir.path())
        .env_remove("NINA_MODELS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(!models_dir.join(spec.file).exists());
}

#[test]
fn the_printed_setup_script_exists_and_fills_the_per_user_directory() {
    // Discovery without $NINA_MODELS names scripts/setup.sh, run from the repository's root.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nina-models"))
        .arg("dirs")
        .env_remove("NINA_MODELS")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let user_dir = home.path().join(".local/share/nina/models");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\tper-user\n", user_dir.display())
    );

    let script = workspace_root().join(SETUP_COMMAND);
    let text = fs::read_to_string(&script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            fs::metadata(&script).unwrap().permissions().mode() & 0o111,
            0
        );
    }
    assert!(
        text.contains(&format!("cargo run -q -p {} --", env!("CARGO_PKG_NAME"))),
        "setup.sh runs this package's command"
    );
    assert!(
        text.contains("${XDG_DATA_HOME"),
        "setup.sh fills the per-user directory"
    );
}
