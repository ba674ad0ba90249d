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
        .args(["--jobs", "1"])
        .stdin(Stdio::null());
    c
}

/// `reprocess [common options] file AUDIO --out OUT`; more options may follow.
fn file_into(audio: impl AsRef<std::ffi::OsStr>, out: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = reprocess();
    c.arg("file").arg(audio).arg("--out").arg(out);
    c
}

fn nina_eval_models() -> std::path::PathBuf {
    nina_tests::config("whisper-tiny-en")
        .models
        .root()
        .to_path_buf()
}

fn code(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn exit_3_for_audio_that_cannot_be_read() {
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
    let (c, e) = code(&mut file_into(&text, &out));
    assert_eq!(c, 3, "{e}");
    assert!(e.contains("notes.wav"), "{e}");
}

#[test]
fn exit_4_for_missing_models() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let (c, e) = code(
        reprocess()
            .args(["--models", "/nonexistent-models", "file"])
            .arg(&speech)
            .arg("--out")
            .arg(dir.path().join("s")),
    );
    assert_eq!(c, 4, "{e}");
    assert!(e.contains("setup.sh"), "{e}");
}

#[test]
fn exit_5_for_a_damaged_session() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("session.json"),
        r#"{"schema": "nina.session", "schema_version": 1, "id": 5}"#,
    )
    .unwrap();
    let (c, e) = code(reprocess().arg("session").arg(&out));
    assert_eq!(c, 5, "{e}");
    assert!(e.contains("`id`"), "{e}");
}

/// Every option is checked before any model loads: with no models at all, a bad option is
/// still exit 2 (a model load would be exit 4).
#[test]
fn exit_2_for_bad_usage_before_any_model_loads() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let out = dir.path().join("s");
    for bad in [
        &["--jobs", "0"][..],
        &["--threads", "0"],
        &["--max-utterance", "1"],
        &["--language", "xx"],
        &["--diarize", "--speakers", "0"],
        &["--diarize", "--diarize-threshold", "2"],
        &["--diarize", "--min-speakers", "3", "--max-speakers", "2"],
        &["--speakers", "2"],
        &["--diarize", "--identify-threshold", "5"],
        &["--voiceprints-of", "1"],
        &["--diarize", "--voiceprints-of", "1"],
        &["--diarize", "--no-voiceprints", "--voiceprints-of", "1"],
    ] {
        let (c, e) = code(
            reprocess()
                .args(["--models", "/nonexistent-models"])
                .args(bad)
                .arg("file")
                .arg(&speech)
                .arg("--out")
                .arg(&out),
        );
        assert_eq!(c, 2, "{bad:?}: {e}");
        assert!(!out.exists(), "{bad:?}: nothing written");
    }
    let (c, e) = code(reprocess().arg("file").arg(&speech));
    assert_eq!(c, 2, "--out or --data is required: {e}");
}

#[test]
fn exit_6_when_the_disk_fills() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    // A 32 KiB file system of its own (a private mount namespace: no root needed).
    let run = reprocess();
    let mut c = Command::new("unshare");
    c.args([
        "-rm",
        "sh",
        "-c",
        r#"mount -t tmpfs -o size=32k tmpfs "$1" && shift && exec "$@""#,
        "sh",
    ])
    .arg(&small)
    .arg(run.get_program())
    .args(run.get_args())
    .args(["--vad", "energy", "file"])
    .arg(&speech)
    .arg("--out")
    .arg(small.join("s"))
    .env("NINA_MODELS", nina_eval_models())
    .stdin(Stdio::null());
    let (code_, e) = code(&mut c);
    assert_eq!(code_, 6, "{e}");
    assert!(e.contains("No space left"), "{e}");
}

#[test]
fn exit_7_when_another_process_holds_the_session() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let (c, e) = code(&mut file_into(&speech, &out));
    assert_eq!(c, 0, "{e}");
    let before = tree(&out);
    let held = nina_store::SessionDir::new(&out).open().unwrap();
    for args in [&["--force", "session"][..], &["--force", "file"]] {
        let mut r = reprocess();
        r.args(args);
        if args[1] == "file" {
            r.arg(&speech).arg("--out");
        }
        let (c, e) = code(r.arg(&out));
        assert_eq!(c, 7, "{args:?}: {e}");
        assert!(e.contains("in use"), "{e}");
    }
    drop(held);
    assert_eq!(tree(&out), before, "the second process changed nothing");
}

#[test]
fn a_3_khz_recording_is_resampled_not_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let low = dir.path().join("low.wav");
    let st = Command::new("sox")
        .arg(data(
            "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
        ))
        .args(["-r", "3000"])
        .arg(&low)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.path().join("s");
    let (c, e) = code(&mut file_into(&low, &out));
    assert_eq!(c, 0, "{e}");
    let s = nina_store::SessionDir::new(&out).load().unwrap();
    assert!(!s.utterances.is_empty());
    assert_eq!(s.utterances[0].sample_rate, 3000);
}

/// `reprocess session DIR` and `file --out DIR` on a directory that is not a Nina session touch
/// nothing in it (it used to delete every hidden `*.tmp` under it first).
#[test]
fn files_that_are_not_the_sessions_are_never_touched() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("deep/er")).unwrap();
    std::fs::write(home.join("deep/er/.notes.tmp"), b"mine").unwrap();
    std::fs::write(home.join(".x.tmp"), b"mine").unwrap();
    let before = tree(&home);
    let (c, e) = code(reprocess().arg("session").arg(&home));
    assert_eq!(c, 5, "{e}");
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let (c, e) = code(&mut file_into(&speech, &home));
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(tree(&home), before);
}

/// One bad utterance no longer blocks its session: it is recorded with its reason, the rest is
/// transcribed, the run exits 8, and a rerun retries only the failed one.
#[test]
fn exit_8_when_utterances_fail_and_a_rerun_retries_only_those() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let speech = data("formats/librivox.flac");
    let (c, e) = code(file_into(&speech, &out).args(["--max-utterance", "6"]));
    assert_eq!(c, 0, "{e}");
    let sd = nina_store::SessionDir::new(&out);
    let s = sd.load().unwrap();
    let n = s.utterances.len();
    assert!(n >= 3, "{n} utterances");
    let victim = out.join(&s.utterances[1].file);
    let good = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"RIFF garbage").unwrap();
    let (c, e) = code(reprocess().args(["--force", "session"]).arg(&out));
    assert_eq!(c, 8, "{e}");
    assert!(
        e.contains("1 FAILED") && e.contains(&s.utterances[1].file),
        "{e}"
    );
    let after = sd.load().unwrap();
    let failed = &after.processing_of("transcribe").unwrap().failed;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].file, s.utterances[1].file);
    let text = std::fs::read_to_string(out.join("transcript.txt")).unwrap();
    assert!(!text.trim().is_empty(), "the others were transcribed");
    // Repaired: the rerun does only the failed one.
    std::fs::write(&victim, good).unwrap();
    let (c, e) = code(reprocess().arg("session").arg(&out));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains(&format!("({} resumed", n - 1)), "{e}");
    assert!(
        sd.load()
            .unwrap()
            .processing_of("transcribe")
            .unwrap()
            .failed
            .is_empty()
    );
    assert!(!out.join(".work").exists());
}

/// A run killed part-way and resumed with another `--jobs` (so other threads per worker)
/// redoes nothing that was saved.
#[test]
fn a_killed_run_resumed_with_other_jobs_redoes_nothing_saved() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s");
    let speech = data("formats/librivox.flac");
    let (c, e) = code(file_into(&speech, &out).args(["--max-utterance", "4", "--vad", "energy"]));
    assert_eq!(c, 0, "{e}");
    // Kill a rerun with other options as soon as it has saved some work.
    let mut child = reprocess()
        .args(["--beam", "5", "session"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let work = |out: &Path| -> usize {
        walk(&out.join(".work"))
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .count()
    };
    let t0 = Instant::now();
    while work(&out) < 1 && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = work(&out);
    assert!(saved >= 1, "nothing was saved before the kill");
    let n = nina_store::SessionDir::new(&out)
        .load()
        .unwrap()
        .utterances
        .len();
    assert!(saved < n, "the run finished before the kill ({saved}/{n})");
    let (c, e) = code(
        reprocess()
            .args(["--beam", "5", "--jobs", "2", "--threads", "1", "session"])
            .arg(&out),
    );
    assert_eq!(c, 0, "{e}");
    assert!(
        e.contains(&format!("({saved} resumed")),
        "{saved} saved: {e}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Checks that every finished file of a session directory is whole (temporary files may exist
/// while a run is under way).
fn assert_whole(dir: &Path) {
    for (rel, bytes) in tree(dir) {
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if nina_fs::is_temp_name(&name) {
            continue;
        }
        let path = dir.join(&rel);
        match rel.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Some("wav") => {
                nina_store::read_wav(&path, usize::MAX)
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
    let (c, e) = code(&mut file_into(&audio, &reference));
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
        let mut child = file_into(&audio, &killed)
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

    let (c, e) = code(&mut file_into(&audio, &killed));
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
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !nina_fs::is_temp_name(&name) && !s.starts_with(".work"),
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
    let (c, e) = code(reprocess().args(["--beam", "5", "session"]).arg(sd.root()));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("utterances"), "{e}");
    let second = sd.load().unwrap();
    assert_eq!(second.processing.len(), 2);
    assert_ne!(second.processing[1].key, first.processing[1].key);
    assert_eq!(second.processing[1].options["decoding"]["kind"], "beam");
    let (c, e) = code(
        reprocess()
            .args(["--beam", "5", "--force", "all"])
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
    let downloaded =
        nina_model_setup::download_path(&nina_models::ModelDir::new(&own_models), &url, sha)
            .unwrap();
    assert!(
        downloaded.starts_with(&own_models),
        "{}",
        downloaded.display()
    );
    assert_eq!(nina_fs::sha256_file(&downloaded).unwrap(), sha);
    let text = std::fs::read_to_string(dir.path().join("a/transcript.txt")).unwrap();
    assert!(text.to_lowercase().contains("young man"), "{text}");
    // A checksum that does not match is refused, and nothing is kept under its name.
    let wrong = "0".repeat(64);
    let (c, e) = run(&wrong, "b");
    assert_eq!(c, 4, "{e}");
    assert!(e.contains("sha256") || e.contains("checksum"), "{e}");
    let wrong_place =
        nina_model_setup::download_path(&nina_models::ModelDir::new(&own_models), &url, &wrong)
            .unwrap();
    assert!(
        !wrong_place.exists(),
        "a file failing its checksum is not kept"
    );
    assert!(downloaded.exists(), "the good download is untouched");
    // A URL without its checksum is refused before anything is fetched (bad usage).
    let (c, e) = code(
        reprocess()
            .arg("--models")
            .arg(&own_models)
            .args(["--whisper", &url, "file"])
            .arg(&speech)
            .arg("--out")
            .arg(dir.path().join("d")),
    );
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("--whisper-sha256"), "{e}");
}

/// Run from any directory, with neither `--models` nor `$NINA_MODELS`: the models are found in
/// the per-user directory that scripts/setup.sh fills; when they are not, the error lists every
/// place looked in.
#[test]
fn models_are_found_from_any_working_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    let data_home = dir.path().join("share");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(data_home.join("nina")).unwrap();
    let speech = data("librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let run = |out: &str| {
        let mut c = reprocess();
        c.env_remove("NINA_MODELS")
            .env("XDG_DATA_HOME", &data_home)
            .current_dir(&elsewhere)
            .arg("file")
            .arg(&speech)
            .arg("--out")
            .arg(dir.path().join(out));
        code(&mut c)
    };
    let (c, e) = run("a");
    assert_eq!(c, 4, "{e}");
    assert!(
        e.contains(&data_home.join("nina/models").display().to_string()),
        "the places looked in are listed: {e}"
    );
    std::os::unix::fs::symlink(nina_eval_models(), data_home.join("nina/models")).unwrap();
    let (c, e) = run("b");
    assert_eq!(c, 0, "{e}");
}

/// A session recorded in raw mode: user 11 reads from 0.5 s, user 22 (12 dB quieter) from
/// 3.5 s, 7.5 s in all, as 48 kHz stereo Opus tracks.
fn raw_session(root: &Path) {
    let mut s = serde_json::json!({
        "schema": "nina.session", "schema_version": 1, "id": "raw-1",
        "guild": {"id": 1}, "channel": {"id": 2}, "started_at_ms": 1_700_000_000_000i64,
        "participants": [], "tracks": [],
        "recorder": {"name": "test", "version": "0", "decode": false, "config": null}
    });
    for (user, clip, at, gain) in [(11u64, "0880", 0.5, 1.0f32), (22, "0930", 3.5, 0.251)] {
        let mut r = hound::WavReader::open(data(&format!(
            "librivox/sense_and_sensibility_01_austen_64kb-{clip}.wav"
        )))
        .unwrap();
        let speech: Vec<f32> = r
            .samples::<i16>()
            .map(|v| f32::from(v.unwrap()) / 32768.0 * gain)
            .collect();
        let file = nina_store::track_file(user);
        let mut w =
            nina_store::OpusTrackWriter::create(&root.join(&file), user as u32, 2, &[]).unwrap();
        let mut enc =
            opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
        let mut pos = (at * 48_000.0) as u64;
        for f in 0..speech.len() / 320 {
            let pcm: Vec<f32> = (0..1920).map(|i| speech[f * 320 + i / 6]).collect();
            w.push(pos, &enc.encode_vec_float(&pcm, 4000).unwrap())
                .unwrap();
            pos += 960;
        }
        w.finish(360_000).unwrap();
        s["participants"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"user_id": user}));
        s["tracks"].as_array_mut().unwrap().push(
            serde_json::json!({"user_id": user, "file": file, "channels": 2, "duration": 7.5}),
        );
    }
    nina_fs::write(&root.join("session.json"), s.to_string().as_bytes()).unwrap();
}

#[test]
fn mix_renders_every_track_and_exits_7_while_the_session_is_held() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    raw_session(&s);
    let (c, e) = code(reprocess().arg("mix").arg(&s));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("user 11") && e.contains("user 22"), "{e}");
    let r = hound::WavReader::open(s.join("mix.wav")).unwrap();
    assert_eq!((r.spec().sample_rate, r.spec().channels), (48_000, 1));
    assert!((f64::from(r.duration()) / 48_000.0 - 7.5).abs() < 0.03);
    let out = dir.path().join("elsewhere/call.wav");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (c, e) = code(reprocess().arg("mix").arg(&s).arg("--out").arg(&out));
    assert_eq!(c, 0, "{e}");
    assert!(out.is_file());
    let held = nina_store::SessionDir::new(&s).open().unwrap();
    let (c, e) = code(reprocess().arg("mix").arg(&s).arg("--out").arg(&out));
    assert_eq!(c, 7, "{e}");
    drop(held);
    let (c, e) = code(reprocess().arg("mix").arg(dir.path().join("none")));
    assert_eq!(c, 5, "not a session: {e}");
}

#[test]
fn session_segments_a_raw_recording_then_transcribes_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    raw_session(&s);
    let (c, e) = code(reprocess().arg("session").arg(&s));
    assert_eq!(c, 0, "{e}");
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.join("session.json")).unwrap()).unwrap();
    let users: std::collections::BTreeSet<u64> = session["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_u64().unwrap())
        .collect();
    assert_eq!(users, [11, 22].into(), "{session}");
    let steps: Vec<&str> = session["processing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["segment", "transcribe"]);
    let text = std::fs::read_to_string(s.join("transcript.txt"))
        .unwrap()
        .to_lowercase();
    assert!(text.contains("11") && text.contains("22"), "{text}");
    assert!(text.split_whitespace().count() > 10, "{text}");
    // Run again: nothing to redo.
    let (c, e) = code(reprocess().arg("session").arg(&s));
    assert_eq!(c, 0, "{e}");
    assert!(e.contains("already transcribed"), "{e}");
}

/// `reprocess score`: DER as a table and as JSON, at collars 0 and 0.25 s, against the
/// pyannote sample's own reference; exit 2 for an RTTM that does not parse.
#[test]
fn score_compares_two_rttm_files() {
    let dir = tempfile::tempdir().unwrap();
    let reference = nina_eval::testdata::pyannote_rttm().expect("run scripts/setup.sh");
    let r = dir.path().join("ref.rttm");
    std::fs::write(&r, nina_eval::rttm::write("sample", &reference)).unwrap();
    // The hypothesis: the reference with its speakers renamed and every turn 0.1 s late.
    let hyp: Vec<_> = reference
        .iter()
        .map(|t| nina_eval::testdata::Turn {
            speaker: format!("spk_{}", t.speaker.chars().rev().collect::<String>()),
            start: t.start + 0.1,
            end: t.end + 0.1,
            text: String::new(),
        })
        .collect();
    let h = dir.path().join("hyp.rttm");
    std::fs::write(&h, nina_eval::rttm::write("sample", &hyp)).unwrap();
    let score = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reprocess"));
        c.args(["score", "--ref"]).arg(&r).arg("--hyp").arg(&h);
        c
    };
    let out = score().arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let der = |i: usize| scores[i]["der"].as_f64().unwrap();
    assert_eq!(scores[0]["collar"], 0.0);
    assert_eq!(scores[1]["collar"], 0.25);
    assert!(
        der(0) > 0.005,
        "a 0.1 s shift costs something without a collar: {scores}"
    );
    assert!(der(1) < 1e-6, "and nothing with a 0.25 s collar: {scores}");
    // Its table, and an RTTM that does not parse.
    let table = score().output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("| 0.25 | 0.00% |"));
    std::fs::write(&h, "SPEAKER x 1 zero 1 <NA> <NA> A <NA> <NA>\n").unwrap();
    let (c, err) = code(&mut score());
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("line 1"), "{err}");
}

/// `reprocess voiceprints list|forget`: an operator deletes one user's print on request.
#[test]
fn voiceprints_are_listed_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = nina_store::VoicePrints::load(dir.path(), 9).unwrap();
    v.enrol(7, "campplus", &[1.0, 0.0], 2.5, 0).unwrap();
    v.enrol(8, "campplus", &[0.0, 1.0], 4.0, 0).unwrap();
    v.save().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reprocess"))
            .args(["voiceprints", "--data"])
            .arg(dir.path())
            .args(["--guild", "9"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&["list"]);
    assert!(
        listed.contains("7\tcampplus\t2.5 s") && listed.contains("8\t"),
        "{listed}"
    );
    run(&["forget", "7"]);
    let listed = run(&["list"]);
    assert!(
        !listed.contains("7\t") && listed.contains("8\t"),
        "{listed}"
    );
    let left = nina_store::VoicePrints::load(dir.path(), 9).unwrap();
    assert!(left.get(7, "campplus").is_none());
}
