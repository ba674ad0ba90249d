//! The `reprocess` binary as a user runs it: exit codes, and a run killed with SIGKILL at random
//! points that, started again, ends with the same session as an uninterrupted run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nina_tests::{data, tree};

/// The tests of this file run one at a time: the kill test's timing must not depend on its
/// siblings loading models at the same moment.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reprocess() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reprocess"));
    c.env("NINA_MODELS", nina_eval_models())
        .args([
            "--whisper",
            "whisper-tiny-en",
            "--language",
            "en",
            "--vad",
            "silero",
        ])
        .args(["--jobs", "1", "--threads", "2"])
        .stdin(Stdio::null());
    c
}

fn nina_eval_models() -> std::path::PathBuf {
    nina_tests::config("whisper-tiny-en").models
}

fn code(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn exit_codes_tell_what_went_wrong() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "not audio").unwrap();

    let (c, e) = code(
        reprocess()
            .args(["file", "/nonexistent.wav", "--out"])
            .arg(&out),
    );
    assert_eq!(c, 3, "{e}");
    let (c, e) = code(reprocess().arg("file").arg(&text).arg("--out").arg(&out));
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("notes.wav"), "{e}");

    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let (c, e) = code(
        reprocess()
            .args(["--models", "/nonexistent-models", "file"])
            .arg(&speech)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(c, 4, "{e}");
    assert!(e.contains("setup.sh"), "{e}");

    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("session.json"),
        r#"{"schema": "nina.session", "schema_version": 1, "id": 5}"#,
    )
    .unwrap();
    let (c, e) = code(reprocess().arg("session").arg(&out));
    assert_eq!(c, 5, "{e}");
    assert!(e.contains("`id`"), "{e}");

    let (c, e) = code(reprocess().args(["--diarize", "session"]).arg(&out));
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("diarize"), "{e}");
    let (c, _) = code(reprocess().arg("file").arg(&speech));
    assert_eq!(c, 2, "--out or --data is required");
}

/// Checks that every finished file of a session directory is whole (temporary files may exist
/// while a run is under way).
fn assert_whole(dir: &Path) {
    for (rel, bytes) in tree(dir) {
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            continue;
        }
        let path = dir.join(&rel);
        match rel.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some("wav") => {
                nina_segment::wav::read(&path, usize::MAX)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            _ => {}
        }
    }
}

#[test]
fn a_run_killed_at_random_points_ends_like_an_uninterrupted_one() {
    let _serial = serial();
    let audio = data("formats/librivox.flac");
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    let (c, e) = code(
        reprocess()
            .arg("file")
            .arg(&audio)
            .arg("--out")
            .arg(&reference),
    );
    assert_eq!(c, 0, "{e}");
    let reference_time = t0.elapsed();
    let mut full = reference_time;

    // Kill points spread over the run, drawn from a fixed-seed generator (printed on failure).
    // A round that finishes before its kill point means the runs are quicker than `full` says
    // (the machine got less busy): the directory is started afresh and `full` halved, so the
    // test keeps killing real work whatever the machine's load.
    let mut seed: u64 = std::env::var("NINA_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let killed = dir.path().join("killed");
    let mut kills = 0;
    let mut log = Vec::new();
    for round in 0..24 {
        if kills >= 6 {
            break;
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let fraction = ((seed >> 33) % 1000) as f64 / 1000.0;
        let delay = full.mul_f64(fraction.clamp(0.02, 0.9));
        let mut child = reprocess()
            .arg("file")
            .arg(&audio)
            .arg("--out")
            .arg(&killed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        log.push(format!(
            "round {round}: {delay:?} {}",
            if finished { "finished" } else { "killed" }
        ));
        assert_whole(&killed);
        if finished {
            std::fs::remove_dir_all(&killed).unwrap();
            full /= 2;
        }
    }
    eprintln!("uninterrupted run {reference_time:?}; {}", log.join("; "));
    assert!(kills >= 6, "runs must really be killed: {log:?}");

    let (c, e) = code(
        reprocess()
            .arg("file")
            .arg(&audio)
            .arg("--out")
            .arg(&killed),
    );
    assert_eq!(c, 0, "{e}");
    let a = tree(&reference);
    let b = tree(&killed);
    let names =
        |t: &[(std::path::PathBuf, Vec<u8>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "same files");
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{} differs after {kills} kills ({log:?})",
            p.display()
        );
    }
    for (p, _) in &b {
        let s = p.to_string_lossy();
        assert!(
            !s.ends_with(".tmp") && !s.starts_with(".work"),
            "left behind: {s}"
        );
    }
}

#[test]
fn stored_sessions_are_rerun_only_when_model_or_options_change() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let audio = data("librivox/sense_and_sensibility_01_austen_64kb-0890.wav");
    let (c, e) = code(
        reprocess()
            .arg("file")
            .arg(&audio)
            .arg("--data")
            .arg(&data_dir),
    );
    assert_eq!(c, 0, "{e}");
    let sessions = nina_store::Store::new(&data_dir).sessions().unwrap();
    assert_eq!(
        sessions.len(),
        1,
        "placed by the layout under {}",
        data_dir.display()
    );
    let sd = &sessions[0];
    assert!(sd.root().starts_with(data_dir.join("0/0")));
    let first = sd.load().unwrap();

    // Same model and options: skipped.
    let (c, e) = code(reprocess().args(["--jobs", "2", "all"]).arg(&data_dir));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("already transcribed"), "{e}");
    // Other options: redone and recorded; --force redoes the same work.
    let (c, e) = code(reprocess().args(["--greedy", "session"]).arg(sd.root()));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("utterances"), "{e}");
    let second = sd.load().unwrap();
    assert_eq!(second.processing.len(), 2);
    assert_ne!(second.processing[1].key, first.processing[1].key);
    assert_eq!(second.processing[1].options["decoding"]["kind"], "greedy");
    let (c, e) = code(
        reprocess()
            .args(["--greedy", "--force", "all"])
            .arg(&data_dir),
    );
    assert_eq!(c, 0, "{e}");
    assert!(!e.contains("already transcribed"), "{e}");
    let text = std::fs::read_to_string(sd.root().join("transcript.txt")).unwrap();
    assert!(text.to_lowercase().contains("selfish"), "{text}");
}

/// Serves the file at `path` to every request on loopback; returns its URL.
fn serve_file(path: std::path::PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = std::fs::read(&path).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s
                .write_all(head.as_bytes())
                .and_then(|()| s.write_all(&body));
        }
    });
    format!("http://{addr}/{name}")
}

#[test]
fn a_whisper_model_given_by_url_is_downloaded_once_and_checked() {
    let _serial = serial();
    let models = nina_eval_models();
    let url = serve_file(models.join(nina_models::catalog::WHISPER_TINY_EN.file));
    let sha = nina_models::catalog::WHISPER_TINY_EN.sha256;
    let dir = tempfile::tempdir().unwrap();
    let own_models = dir.path().join("models");
    std::fs::create_dir_all(&own_models).unwrap();
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let run = |whisper_sha: &str, out: &str| {
        code(
            reprocess()
                .args(["--models"])
                .arg(&own_models)
                .args([
                    "--vad",
                    "energy",
                    "--whisper",
                    &url,
                    "--whisper-sha256",
                    whisper_sha,
                ])
                .arg("file")
                .arg(&speech)
                .arg("--out")
                .arg(dir.path().join(out)),
        )
    };
    let (c, e) = run(sha, "a");
    assert_eq!(c, 0, "{e}");
    let downloaded = own_models.join("ggml-tiny.en.bin");
    assert_eq!(nina_models::sha256_file(&downloaded).unwrap(), sha);
    let text = std::fs::read_to_string(dir.path().join("a/transcript.txt")).unwrap();
    assert!(text.to_lowercase().contains("young man"), "{text}");
    // A checksum that does not match is refused, for a new download and for the file in place.
    let wrong = "0".repeat(64);
    let (c, e) = run(&wrong, "b");
    assert_eq!(c, 4, "{e}");
    assert!(e.contains("sha256") || e.contains("checksum"), "{e}");
    std::fs::remove_file(&downloaded).unwrap();
    let (c, e) = run(&wrong, "c");
    assert_eq!(c, 4, "{e}");
    assert!(
        !downloaded.exists(),
        "a file failing its checksum is not kept"
    );
}
