//! Acceptance: a minimal songbird receiver (twilight front end, `receive` feature) runs as a
//! child process trusting the fake's CA through `SSL_CERT_FILE`, joins a voice channel with
//! three fake users speaking real speech at the same time, and must decode each user's audio
//! under the right user id. With two guilds, the receiver joins a channel in each and must hear
//! each guild's speaker on that guild's connection only.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nina_fake_discord::audio::{self, FRAME_SAMPLES};
use nina_fake_discord::{FakeDiscord, Faults, SpeechReport};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "NINA_FAKE_RECEIVER_JOB";

/// What the parent tells the receiver child.
#[derive(Serialize, Deserialize)]
struct Job {
    gateway_url: String,
    token: String,
    bot_user_id: u64,
    /// `(guild, voice channel)` to join, one call per guild; results go to
    /// `received-{guild}.json`.
    calls: Vec<(u64, u64)>,
    xchacha: bool,
    out_dir: PathBuf,
}

/// One decoded 20 ms frame of one SSRC: `S` speech, `Z` silence frame, `G` gap (lost, concealed).
#[derive(Serialize, Deserialize, Default)]
struct Stream {
    kinds: String,
    odd_sized: usize,
    samples: Vec<i16>,
}

#[derive(Serialize, Deserialize, Default)]
struct Received {
    ssrc_user: HashMap<u32, u64>,
    streams: HashMap<u32, Stream>,
    disconnects: Vec<u64>,
}

// ---------------------------------------------------------------- the receiver (child) ---

struct Handler(Arc<Mutex<Received>>);

#[async_trait::async_trait]
impl songbird::events::EventHandler for Handler {
    async fn act(
        &self,
        ctx: &songbird::events::EventContext<'_>,
    ) -> Option<songbird::events::Event> {
        use songbird::events::EventContext as E;
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match ctx {
            E::SpeakingStateUpdate(s) => {
                if let Some(u) = s.user_id {
                    r.ssrc_user.insert(s.ssrc, u.0);
                }
            }
            E::ClientDisconnect(d) => r.disconnects.push(d.user_id.0),
            E::VoiceTick(t) => {
                for (ssrc, data) in &t.speaking {
                    let Some(pcm) = &data.decoded_voice else {
                        continue;
                    };
                    let kind = match &data.packet {
                        None => 'G',
                        Some(p) => {
                            let rtp = p.rtp();
                            let payload = songbird::packet::Packet::payload(&rtp);
                            // Opus sits after the extension and before the 16-byte tag + 4-byte nonce.
                            let ext = if songbird::packet::rtp::RtpPacket::get_extension(&rtp) != 0
                                && payload.len() >= 4
                            {
                                4 + 4 * usize::from(u16::from_be_bytes([payload[2], payload[3]]))
                            } else {
                                0
                            };
                            let opus = payload
                                .get(ext..payload.len().saturating_sub(20))
                                .unwrap_or(&[]);
                            if opus == audio::SILENCE_FRAME {
                                'Z'
                            } else {
                                'S'
                            }
                        }
                    };
                    let s = r.streams.entry(*ssrc).or_default();
                    s.kinds.push(kind);
                    // One tick is 20 ms. songbird's loss concealment with a mono decoder returns
                    // 40 ms (its buffer is sized for stereo), so keep exactly one frame per tick.
                    if pcm.len() != FRAME_SAMPLES {
                        s.odd_sized += 1;
                    }
                    let mut frame = pcm.clone();
                    frame.resize(FRAME_SAMPLES, 0);
                    s.samples.extend_from_slice(&frame);
                }
            }
            _ => {}
        }
        None
    }
}

fn child_main(job: Job) -> anyhow::Result<()> {
    use twilight_gateway::{
        ConfigBuilder, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cfg = ConfigBuilder::new(
            job.token.clone(),
            Intents::GUILDS | Intents::GUILD_VOICE_STATES,
        )
        .proxy_url(job.gateway_url.clone())
        .build();
        let mut shard = Shard::with_config(ShardId::ONE, cfg);
        let map = songbird::shards::TwilightMap::new(HashMap::from([(0u32, shard.sender())]));
        let songbird = Arc::new(songbird::Songbird::twilight(
            Arc::new(map),
            twilight_model::id::Id::<twilight_model::id::marker::UserMarker>::new(job.bot_user_id),
        ));
        let mut config = songbird::Config::default().decode_mode(
            songbird::driver::DecodeMode::Decode(songbird::driver::DecodeConfig::new(
                songbird::driver::Channels::Mono,
                songbird::driver::SampleRate::Hz48000,
            )),
        );
        if job.xchacha {
            config = config.crypto_mode(songbird::driver::CryptoMode::XChaCha20Poly1305);
        }
        songbird.set_config(config);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sb = songbird.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
                let Ok(ev) = item else { continue };
                if matches!(ev, twilight_gateway::Event::GuildCreate(_))
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                sb.process(&ev).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx).await??;
        let mut results = Vec::new();
        for (guild, channel) in &job.calls {
            let call = songbird
                .join(
                    twilight_model::id::Id::<twilight_model::id::marker::GuildMarker>::new(*guild),
                    twilight_model::id::Id::<twilight_model::id::marker::ChannelMarker>::new(
                        *channel,
                    ),
                )
                .await?;
            let received = Arc::new(Mutex::new(Received::default()));
            let mut c = call.lock().await;
            for ev in [
                songbird::CoreEvent::SpeakingStateUpdate,
                songbird::CoreEvent::VoiceTick,
                songbird::CoreEvent::ClientDisconnect,
            ] {
                c.add_global_event(ev.into(), Handler(received.clone()));
            }
            results.push((*guild, received));
        }
        println!("NINA-RECEIVER-LISTENING");
        // Run until the parent says stop (one line on stdin), at most two minutes.
        let stop = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        let _ = tokio::time::timeout(Duration::from_secs(120), stop).await;
        for (guild, received) in results {
            let _ = songbird
                .leave(twilight_model::id::Id::<
                    twilight_model::id::marker::GuildMarker,
                >::new(guild))
                .await;
            let r = received.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::write(
                job.out_dir.join(format!("received-{guild}.json")),
                serde_json::to_vec(&*r)?,
            )?;
        }
        Ok(())
    })
}

#[test]
#[ignore = "the receiver child process of the acceptance tests; they start it themselves"]
fn receiver_child() {
    let job = std::env::var(CHILD_ENV).expect("run by the acceptance tests, which set the job");
    let job: Job = serde_json::from_str(&job).expect("job JSON");
    child_main(job).expect("receiver child failed");
}

// ---------------------------------------------------------------- the parent (test) ---

/// Per-user outcome of a run.
#[derive(Debug)]
struct UserResult {
    report: SpeechReport,
    correlation: f64,
    snr_db: f64,
    opus_only_correlation: f64,
    duration_error_ms: f64,
    gaps: usize,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(faults: Faults, xchacha: bool) -> Vec<UserResult> {
    let _serial = SERIAL.lock().await;
    let speeches = common::three_speeches();
    let fake = FakeDiscord::builder()
        .faults(faults)
        .start()
        .await
        .expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let channel = cfg.voice_channels[0].0;
    let users: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| control.add_user(n))
        .collect();
    for u in &users {
        control.join_voice(*u, channel).expect("user joins");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let job = Job {
        gateway_url: fake.gateway_url(),
        token: cfg.token.clone(),
        bot_user_id: cfg.bot_user_id,
        calls: vec![(cfg.guild_id, channel)],
        xchacha,
        out_dir: out.path().to_path_buf(),
    };
    let mut child = start_receiver(&fake, &job, out.path()).await;
    let log = || std::fs::read_to_string(out.path().join("child.log")).unwrap_or_default();
    if let Err(e) = control.wait_for_voice_ready(Duration::from_secs(60)).await {
        let _ = child.kill();
        panic!(
            "bot never completed the voice handshake ({e}); child log:\n{}",
            log()
        );
    }
    let snap = control.snapshot();
    assert_eq!(
        snap.crypto_mode,
        Some(if xchacha {
            "aead_xchacha20_poly1305_rtpsize"
        } else {
            "aead_aes256_gcm_rtpsize"
        })
    );
    assert!(
        snap.stats.ip_discoveries >= 1,
        "IP discovery must have happened"
    );

    // All three speak at once.
    let mut handles = Vec::new();
    for (u, wav) in users.iter().zip(speeches.iter()) {
        handles.push(control.speak_wav(*u, wav).await.expect("speech queued"));
    }
    let mut reports = Vec::new();
    let mut frames = Vec::new();
    for h in handles {
        frames.push(h.opus_frames.clone());
        reports.push(
            h.finished(Duration::from_secs(60))
                .await
                .expect("speech finishes"),
        );
    }
    // Let the receiver's playout buffer drain, then stop it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let status = wait_child(&mut child, Duration::from_secs(60));
    assert!(status, "receiver child failed; log:\n{}", log());
    let received = read_received(out.path(), cfg.guild_id);

    let mut results = Vec::new();
    for ((u, wav), (report, opus)) in users
        .iter()
        .zip(speeches.iter())
        .zip(reports.into_iter().zip(frames))
    {
        assert_eq!(report.user_id, *u);
        assert_eq!(
            report.unheard, 0,
            "bot was connected, every frame must be heard"
        );
        assert_eq!(
            received.ssrc_user.get(&report.ssrc),
            Some(u),
            "SSRC {} must be attributed to user {u} (map: {:?})",
            report.ssrc,
            received.ssrc_user
        );
        let stream = received
            .streams
            .get(&report.ssrc)
            .unwrap_or_else(|| panic!("no audio decoded for user {u}"));
        results.push(analyse(wav, &opus, report, stream));
    }
    // No foreign SSRC carries audio: every decoded stream belongs to one of the three users.
    for ssrc in received.streams.keys() {
        assert!(
            received.ssrc_user.contains_key(ssrc),
            "decoded audio on unattributed SSRC {ssrc}"
        );
    }
    results
}

/// What the receiver got on its call in `guild`.
fn read_received(dir: &Path, guild: u64) -> Received {
    serde_json::from_slice(
        &std::fs::read(dir.join(format!("received-{guild}.json"))).expect("results written"),
    )
    .expect("results parse")
}

/// Starts the receiver child on `job`; returns it once it listens on every call.
async fn start_receiver(fake: &FakeDiscord, job: &Job, out: &Path) -> std::process::Child {
    let stderr = std::fs::File::create(out.join("child.log")).expect("log file");
    let mut child = Command::new(std::env::current_exe().expect("test exe"))
        .args([
            "--exact",
            "receiver_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(job).expect("job"))
        .envs(fake.child_env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn receiver child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("NINA-RECEIVER-LISTENING")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .is_err()
    {
        let _ = child.kill();
        panic!(
            "receiver never started listening; child log:\n{}",
            std::fs::read_to_string(out.join("child.log")).unwrap_or_default()
        );
    }
    child
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn analyse(wav: &Path, opus: &[Vec<u8>], report: SpeechReport, stream: &Stream) -> UserResult {
    let source = audio::load_wav_mono_48k(wav).expect("source loads");
    let kinds: Vec<char> = stream.kinds.chars().collect();
    assert_eq!(
        stream.samples.len(),
        kinds.len() * FRAME_SAMPLES,
        "mono 20 ms frames"
    );
    let first = kinds
        .iter()
        .position(|k| *k == 'S')
        .expect("some speech decoded");
    let last = kinds
        .iter()
        .rposition(|k| *k == 'S')
        .expect("some speech decoded");
    let span: Vec<f32> = stream.samples[first * FRAME_SAMPLES..(last + 1) * FRAME_SAMPLES]
        .iter()
        .map(|s| f32::from(*s) / 32768.0)
        .collect();
    let sim = audio::similarity(&source, &span, 2 * FRAME_SAMPLES).expect("similarity");
    let local = audio::decode_opus_frames(opus).expect("local decode");
    let opus_only = audio::similarity(&source, &local, 2 * FRAME_SAMPLES).expect("similarity");
    let duration_error_ms = (span.len() as f64 - source.len() as f64) / 48.0;
    UserResult {
        gaps: kinds.iter().filter(|k| **k == 'G').count(),
        report,
        correlation: sim.correlation,
        snr_db: sim.snr_db,
        opus_only_correlation: opus_only.correlation,
        duration_error_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_speaking_at_once_are_decoded_and_attributed() {
    let results = run(Faults::default(), false).await;
    for r in &results {
        println!(
            "user {}: ssrc {} frames {} corr {:.4} (opus alone {:.4}) snr {:.1} dB duration error {:+.1} ms gaps {}",
            r.report.user_id,
            r.report.ssrc,
            r.report.frames,
            r.correlation,
            r.opus_only_correlation,
            r.snr_db,
            r.duration_error_ms,
            r.gaps
        );
        assert_eq!(r.report.sent, r.report.frames);
        assert_eq!(r.report.lost, 0);
        assert_eq!(r.gaps, 0, "no loss injected, so no concealed gaps");
        assert!(
            r.duration_error_ms.abs() <= 40.0,
            "duration off by {} ms",
            r.duration_error_ms
        );
        assert!(
            r.correlation >= r.opus_only_correlation - 0.01,
            "received audio (corr {}) must be as good as Opus alone allows ({})",
            r.correlation,
            r.opus_only_correlation
        );
        assert!(r.correlation > 0.9, "correlation {}", r.correlation);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_with_reordering_keeps_attribution_and_counts_gaps() {
    let faults = Faults {
        loss: 0.05,
        reorder: 0.05,
        duplicate: 0.02,
        jitter: Duration::from_millis(5),
        seed: 42,
    };
    let results = run(faults, true).await;
    let mut total_lost = 0;
    for r in &results {
        let lost = (r.report.lost + r.report.silence_lost) as usize;
        total_lost += lost;
        println!(
            "user {}: ssrc {} frames {} lost {} (+{} silence) reordered {} duplicated {} gaps counted {} corr {:.4} (opus alone {:.4}) snr {:.1} dB duration error {:+.1} ms",
            r.report.user_id,
            r.report.ssrc,
            r.report.frames,
            r.report.lost,
            r.report.silence_lost,
            r.report.reordered,
            r.report.duplicated,
            r.gaps,
            r.correlation,
            r.opus_only_correlation,
            r.snr_db,
            r.duration_error_ms
        );
        // Each lost packet shows up as one concealed gap, except a loss at the very start or end
        // of the stream, which a receiver cannot notice.
        assert!(
            r.gaps <= lost,
            "more gaps ({}) than losses ({lost})",
            r.gaps
        );
        assert!(
            r.gaps + 2 >= lost,
            "gaps ({}) must account for the losses ({lost})",
            r.gaps
        );
        assert!(
            r.duration_error_ms.abs() <= 40.0,
            "duration off by {} ms",
            r.duration_error_ms
        );
        assert!(
            r.correlation > 0.6,
            "correlation {} too low under 5% loss",
            r.correlation
        );
    }
    assert!(total_lost > 0, "5% loss over ~600 packets must drop some");
    assert!(
        results.iter().map(|r| r.report.reordered).sum::<u32>() > 0,
        "some packets must be reordered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_in_two_guilds_gets_two_voice_sessions_each_with_its_own_speaker() {
    use nina_fake_discord::GuildSpec;

    let _serial = SERIAL.lock().await;
    let speeches = common::three_speeches();
    let fake = FakeDiscord::builder()
        .extra_guild(GuildSpec::numbered(1))
        .start()
        .await
        .expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let g2 = cfg.extra_guilds[0].clone();
    let (v1, v2) = (cfg.voice_channels[0].0, g2.voice_channels[0].0);
    // Alice speaks in guild 1, Bob in guild 2, Carol in guild 2's other channel (not joined).
    let alice = control.add_user("alice");
    let bob = control.add_user("bob");
    let carol = control.add_user("carol");
    control.join_voice(alice, v1).expect("alice joins");
    control.join_voice(bob, v2).expect("bob joins");
    control
        .join_voice(carol, g2.voice_channels[1].0)
        .expect("carol joins");
    let out = tempfile::tempdir().expect("tempdir");
    let job = Job {
        gateway_url: fake.gateway_url(),
        token: cfg.token.clone(),
        bot_user_id: cfg.bot_user_id,
        calls: vec![(cfg.guild_id, v1), (g2.id, v2)],
        xchacha: false,
        out_dir: out.path().to_path_buf(),
    };
    let mut child = start_receiver(&fake, &job, out.path()).await;
    let log = || std::fs::read_to_string(out.path().join("child.log")).unwrap_or_default();
    for (g, v) in &job.calls {
        match control
            .wait_for_voice_ready_in(*g, Duration::from_secs(60))
            .await
        {
            Ok(c) => assert_eq!(c, *v),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "no voice connection in guild {g} ({e}); child log:\n{}",
                    log()
                );
            }
        }
    }
    let snap = control.snapshot();
    assert_eq!(
        snap.stats.voice_identifies, 2,
        "one voice session per guild"
    );
    assert!(snap.guilds.iter().all(|g| g.media_ready));
    assert_ne!(snap.guilds[0].ssrc, snap.guilds[1].ssrc);
    assert!(snap.stats.ip_discoveries >= 2);

    // All three speak at once.
    let mut handles = Vec::new();
    for (u, wav) in [alice, bob, carol].iter().zip(speeches.iter()) {
        handles.push(control.speak_wav(*u, wav).await.expect("speech queued"));
    }
    let mut reports = Vec::new();
    let mut frames = Vec::new();
    for h in handles {
        frames.push(h.opus_frames.clone());
        reports.push(
            h.finished(Duration::from_secs(60))
                .await
                .expect("speech finishes"),
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    assert!(
        wait_child(&mut child, Duration::from_secs(60)),
        "receiver child failed; log:\n{}",
        log()
    );
    // Carol was in a channel the bot did not join: nobody heard her.
    assert_eq!(reports[2].sent, 0);
    assert_eq!(reports[2].unheard, reports[2].frames);
    for (i, (guild, _)) in job.calls.iter().enumerate() {
        let received = read_received(out.path(), *guild);
        let report = reports[i].clone();
        let user = report.user_id;
        assert_eq!(report.unheard, 0);
        assert_eq!(
            received.ssrc_user,
            HashMap::from([(report.ssrc, user)]),
            "guild {guild}'s connection announces its speaker only"
        );
        let ssrcs: Vec<u32> = received.streams.keys().copied().collect();
        assert_eq!(
            ssrcs,
            vec![report.ssrc],
            "guild {guild} decodes its speaker only"
        );
        let r = analyse(
            &speeches[i],
            &frames[i],
            report,
            &received.streams[&ssrcs[0]],
        );
        println!(
            "guild {guild}: user {user} corr {:.4} (opus alone {:.4}) duration error {:+.1} ms",
            r.correlation, r.opus_only_correlation, r.duration_error_ms
        );
        assert_eq!(r.gaps, 0);
        assert!(r.correlation > 0.9, "correlation {}", r.correlation);
    }
}
