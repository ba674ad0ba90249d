//! Running the `collector` binary against `nina-fake-discord` in tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nina_fake_discord::FakeDiscord;
use nina_store::{Session, SessionDir, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

pub struct Bot {
    pub child: tokio::process::Child,
    pub lines: mpsc::UnboundedReceiver<String>,
    pub stderr: PathBuf,
}

/// Starts the collector with `extra` TOML appended to a configuration pointing at the fake.
pub async fn start_bot(
    fake: &FakeDiscord,
    data: &Path,
    allowed: u64,
    extra: &str,
    transcribe: bool,
) -> Bot {
    let fc = fake.config();
    let cfg = format!(
        "data_dir = {data:?}\n{extra}\n[discord]\ngateway_url = {gw:?}\napi = {api:?}\n\
         [transcribe]\nenabled = {transcribe}\nmodel = \"whisper-tiny-en\"\nlanguage = \"en\"\n\
         [commands]\nprefix = \"!\"\nrole = 4242\nusers = [{allowed}]\n",
        data = data.display().to_string(),
        gw = fake.gateway_url(),
        api = fake.http_proxy(),
    );
    let cfg_path = data.join("collector.toml");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(&cfg_path, cfg).unwrap();
    let stderr = data.join("collector.stderr");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("--config")
        .arg(&cfg_path)
        .envs(fake.child_env())
        .env("DISCORD_TOKEN", &fc.token)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut r = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let _ = tx.send(l);
        }
    });
    loop {
        let l = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .expect("the collector did not start within 120 s")
            .expect("the collector exited at start-up");
        if l == "NINA-COLLECTOR-READY" {
            break;
        }
    }
    Bot {
        child,
        lines,
        stderr,
    }
}

impl Bot {
    /// Waits for a stdout line starting with `prefix`; returns it.
    pub async fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let l = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{prefix}` line within {timeout:?}"))
                .unwrap_or_else(|| panic!("the collector exited before `{prefix}`"));
            if l.starts_with(prefix) {
                return l;
            }
        }
    }

    /// Kills the collector with SIGKILL (a crash).
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    pub async fn sigterm(mut self) -> (Vec<String>, String) {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(300), self.child.wait())
            .await
            .expect("no exit within 300 s after SIGTERM")
            .unwrap();
        assert!(status.success(), "collector exited with {status}");
        let mut out = Vec::new();
        while let Ok(l) = self.lines.try_recv() {
            out.push(l);
        }
        (
            out,
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

/// The offset in `hay` where `needle` correlates best (normalised).
pub fn locate(hay: &[f32], needle: &[f32]) -> usize {
    let nn: f32 = needle.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut best = (f32::MIN, 0);
    for off in 0..hay.len().saturating_sub(needle.len()) {
        let w = &hay[off..off + needle.len()];
        let dot: f32 = w.iter().zip(needle).map(|(a, b)| a * b).sum();
        let wn: f32 = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        let c = dot / (wn * nn).max(1e-9);
        if c > best.0 {
            best = (c, off);
        }
    }
    best.1
}

pub fn the_session(data: &Path) -> (SessionDir, Session) {
    let dirs = Store::new(data).sessions().unwrap();
    assert_eq!(dirs.len(), 1, "one session: {dirs:?}");
    let s = dirs[0].load().unwrap();
    (dirs[0].clone(), s)
}

pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
