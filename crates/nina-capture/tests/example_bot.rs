//! The `record_wavs` example (a bot on nina-capture alone), run as a process against
//! `nina-fake-discord`: two people speak 1.5 s apart and each gets a WAV, aligned on one clock.

use std::process::Stdio;
use std::time::Duration;

use nina_fake_discord::FakeDiscord;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The offset in `hay` where `needle` correlates best (normalised).
fn locate(hay: &[f32], needle: &[f32]) -> usize {
    let nn: f32 = needle.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut best = (f32::MIN, 0);
    for off in (0..hay.len().saturating_sub(needle.len())).step_by(4) {
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

fn read(path: &std::path::Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_bot_writes_one_aligned_wav_per_person() {
    let clips = nina_eval::testdata::librivox().expect("run scripts/setup.sh");
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/record_wavs");
    assert!(example.is_file(), "{} not built", example.display());
    // Under DAVE (the fake's default). The example binary is built by `cargo test`, not by
    // `cargo test --test example_bot` alone: an old build would be run as it is.
    let fake = FakeDiscord::start().await.unwrap();
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let (ann, ben) = (control.add_user("Ann"), control.add_user("Ben"));
    let out = tempfile_dir();
    let mut child = tokio::process::Command::new(&example)
        .args([fc.guild_id.to_string(), voice.to_string()])
        .arg(&out)
        .envs(fake.child_env())
        .env("DISCORD_TOKEN", &fc.token)
        .env("NINA_GATEWAY_URL", fake.gateway_url())
        .env("NINA_API", fake.http_proxy())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the example did not start")
            .unwrap()
            .expect("the example exited");
        if l == "recording" {
            break;
        }
    }
    control.join_voice(ann, voice).unwrap();
    control.join_voice(ben, voice).unwrap();
    let a = control.speak_wav(ann, &clips[0].path).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = control.speak_wav(ben, &clips[1].path).await.unwrap();
    let ra = a.finished(Duration::from_secs(60)).await.unwrap();
    let rb = b.finished(Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let wa = read(&out.join(format!("{ann}.wav")));
    let wb = read(&out.join(format!("{ben}.wav")));
    let ca = nina_eval::testdata::read_wav_16k_mono(&clips[0].path).unwrap();
    let cb = nina_eval::testdata::read_wav_16k_mono(&clips[1].path).unwrap();
    // Where each clip's second second sits in each file, on the same clock.
    let pa = locate(&wa, &ca[16_000..32_000]) as f64 / 16_000.0 - 1.0;
    let pb = locate(&wb, &cb[16_000..32_000]) as f64 / 16_000.0 - 1.0;
    let sent_apart = (rb.first_sent_unix_ms - ra.first_sent_unix_ms) as f64 / 1000.0;
    eprintln!("Ann's clip at {pa:.3} s, Ben's at {pb:.3} s; sent {sent_apart:.3} s apart");
    assert!(
        ((pb - pa) - sent_apart).abs() <= 0.1,
        "apart {:.3} s in the files, {sent_apart:.3} s when sent",
        pb - pa
    );
    fake.shutdown().await;
    let _ = std::fs::remove_dir_all(&out);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nina-record-wavs-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
