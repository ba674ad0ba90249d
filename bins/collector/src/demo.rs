//! `collector --demo`: a simulated call with no Discord account. The fake Discord
//! (`nina-fake-discord`) runs in this process; the real collector runs as a child process against
//! it (trusting the fake's certificate through `SSL_CERT_FILE`), three fake people speak the test
//! speech, overlapping, and the transcripts are printed as they come.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nina_fake_discord::FakeDiscord;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The test speech (from scripts/setup.sh), looked up from the working directory, then the
/// repository this binary was built in.
fn speech() -> Result<Vec<PathBuf>> {
    let candidates = [
        PathBuf::from("testdata/librivox"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/librivox"),
    ];
    for dir in candidates {
        let mut wavs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        wavs.sort();
        if wavs.len() >= 3 {
            return Ok(wavs);
        }
    }
    bail!("the demo's test speech is missing: run scripts/setup.sh")
}

/// Runs the demo, recording into `data` (default `demo-data`).
pub fn run(data: &Option<PathBuf>, seconds: u64, model: &str) -> Result<()> {
    let model = model.to_string();
    let wavs = speech()?;
    let data = data.clone().unwrap_or_else(|| PathBuf::from("demo-data"));
    std::fs::create_dir_all(&data)?;
    let data = data.canonicalize()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let fake = FakeDiscord::start()
            .await
            .context("cannot start the fake Discord")?;
        let fc = fake.config().clone();
        let (voice, _) = fc.voice_channels[0].clone();
        let config = format!(
            "data_dir = {data:?}\n[discord]\ngateway_url = {gw:?}\napi = {api:?}\n\
             [transcribe]\nmodel = {model:?}\nlanguage = \"en\"\n\
             [[channels]]\nguild = {guild}\nchannel = {voice}\n",
            data = data.display().to_string(),
            gw = fake.gateway_url(),
            api = fake.http_proxy(),
            guild = fc.guild_id,
        );
        let cfg_path = data.join("demo-collector.toml");
        std::fs::write(&cfg_path, config)?;
        println!(
            "fake Discord on loopback; recording into {}",
            data.display()
        );
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&cfg_path)
            .envs(fake.child_env())
            .env("DISCORD_TOKEN", &fc.token)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the collector")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let printer = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if l == "NINA-COLLECTOR-READY" {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                } else if l.starts_with("NINA-CAPTION ") {
                    // Timing for the load benchmark; not for people.
                } else if let Some(dir) = l.strip_prefix("NINA-SESSION-DONE ") {
                    println!("session stored in {dir}");
                } else {
                    println!("{l}");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), ready_rx)
            .await
            .context("the collector did not start within 120 s")??;
        let control = fake.control();
        control
            .wait_for_voice_ready(Duration::from_secs(30))
            .await
            .context("the collector did not join the voice channel")?;
        let mut speeches = Vec::new();
        for (i, (name, wav)) in ["Ann", "Ben", "Cat"].iter().zip(&wavs).enumerate() {
            let user = control.add_user(name);
            control.join_voice(user, voice)?;
            tokio::time::sleep(Duration::from_millis(if i == 0 { 500 } else { 2500 })).await;
            println!("{name} starts speaking");
            speeches.push(control.speak_wav(user, wav).await?);
        }
        for s in speeches {
            s.finished(Duration::from_secs(seconds)).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("call over; stopping the collector (SIGTERM)");
        if let Some(pid) = child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        let status = tokio::time::timeout(Duration::from_secs(300), child.wait())
            .await
            .context("the collector did not stop within 300 s")??;
        let _ = printer.await;
        fake.shutdown().await;
        if !status.success() {
            bail!("the collector exited with {status}");
        }
        Ok(())
    })
}
