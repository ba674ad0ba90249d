//! `reprocess peaks` and `reprocess serve` on a synthetic data directory (the web crate's test
//! sessions: tones and a hand-written transcript, no model).

#[path = "../../../crates/nina-web/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn reprocess(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_reprocess"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn demo_dir(data: &std::path::Path) -> std::path::PathBuf {
    data.join("111/222/2025-11-25/demo")
}

#[test]
fn peaks_are_written_for_sessions_that_lack_them_and_forgotten_with_their_user() {
    let (_t, data) = common::data_dir(1);
    let d = data.to_str().unwrap();
    let (c, out, err) = reprocess(&["peaks", d]);
    assert_eq!(c, 0, "{err}");
    assert!(
        err.contains("peaks written for 2 user(s) in 1 session(s)"),
        "{err}"
    );
    assert!(out.contains("demo: peaks of 2 user(s)"), "{out}");
    let demo = demo_dir(&data);
    for user in [common::ANN, common::BOB] {
        let b = std::fs::read(demo.join(format!("peaks/{user}.dat"))).unwrap();
        let p = nina_web::Peaks::from_bytes(&b).unwrap();
        assert_eq!(p.pairs.len(), (common::DEMO_SECONDS * 100.0) as usize);
        assert_eq!((p.sample_rate, p.samples_per_pixel), (16_000, 160));
    }
    // Nothing left to do.
    let (c, _, err) = reprocess(&["peaks", d]);
    assert_eq!(c, 0);
    assert!(err.contains("peaks written for 0 user(s)"), "{err}");
    // Forgetting Bob takes his peaks; Ann's stay.
    let (c, _, err) = reprocess(&["forget", d, "--user", "8"]);
    assert_eq!(c, 0, "{err}");
    assert!(!demo.join("peaks/8.dat").exists());
    assert!(demo.join("peaks/7.dat").exists());
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn serve_indexes_then_answers_on_loopback_and_refuses_a_public_address_without_a_token() {
    let (_t, data) = common::data_dir(2);
    std::fs::remove_file(data.join("index.sqlite")).unwrap();
    let d = data.to_str().unwrap();
    let (c, _, err) = reprocess(&["serve", "--data", d, "--listen", "0.0.0.0:0"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("without an access token"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_reprocess"))
        .args(["serve", "--data", d, "--listen", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Some(p) = http_get(&addr, "/sessions") {
            break p;
        }
        assert!(Instant::now() < deadline, "reprocess serve did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    let session = http_get(&addr, "/s/demo").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("3 session(s)"), "{page}");
    assert!(session.contains("the quick brown fox jumps"), "{session}");
}
