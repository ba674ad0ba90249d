//! Acceptance: a minimal songbird receiver (twilight front end, `receive` feature) runs as a
//! child process trusting the fake's CA through `SSL_CERT_FILE`, joins a voice channel with
//! three fake users speaking real speech at the same time, and must decode each user's audio
//! under the right user id. Calls are DAVE end-to-end encrypted (one test has transport
//! encryption only); songbird decrypts and the receiver decodes. With two guilds, the receiver joins a channel in each and must hear
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

impl Job {
    /// A job for the receiver, against `fake`, joining `calls`, writing into `out_dir`.
    fn new(fake: &FakeDiscord, calls: Vec<(u64, u64)>, xchacha: bool, out_dir: &Path) -> Self {
        let cfg = fake.config();
        Self {
            gateway_url: fake.gateway_url(),
            token: cfg.token.clone(),
            bot_user_id: cfg.bot_user_id,
            calls,
            xchacha,
            out_dir: out_dir.to_path_buf(),
        }
    }
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

struct Handler {
    received: Arc<Mutex<Received>>,
    /// One Opus decoder per SSRC (48 kHz mono).
    decoders: Arc<Mutex<HashMap<u32, opus2::Decoder>>>,
}

/// The Opus frame of a received packet, cut the way a DAVE-aware receiver must: after the
/// encrypted header extension, before the transport tag and nonce (20 bytes here), and before
/// the DAVE trailer that songbird 0.6.1 leaves behind the plaintext it decrypted in place
/// (`tag ‖ nonce ‖ size ‖ FA FA`: `size` counts the whole trailer).
fn opus_of(payload: &[u8], extension: bool) -> &[u8] {
    let ext = if extension && payload.len() >= 4 {
        4 + 4 * usize::from(u16::from_be_bytes([payload[2], payload[3]]))
    } else {
        0
    };
    let body = payload
        .get(ext..payload.len().saturating_sub(20))
        .unwrap_or(&[]);
    let n = body.len();
    if n >= 11 && body[n - 2..] == [0xFA, 0xFA] {
        let size = usize::from(body[n - 3]);
        if (11..=n).contains(&size) {
            return &body[..n - size];
        }
    }
    body
}

#[async_trait::async_trait]
impl songbird::events::EventHandler for Handler {
    async fn act(
        &self,
        ctx: &songbird::events::EventContext<'_>,
    ) -> Option<songbird::events::Event> {
        use songbird::events::EventContext as E;
        let mut r = self.received.lock().unwrap_or_else(|p| p.into_inner());
        match ctx {
            E::SpeakingStateUpdate(s) => {
                if let Some(u) = s.user_id {
                    r.ssrc_user.insert(s.ssrc, u.0);
                }
            }
            E::ClientDisconnect(d) => r.disconnects.push(d.user_id.0),
            E::VoiceTick(t) => {
                let mut decoders = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
                for (ssrc, data) in &t.speaking {
                    let Some(dec) = (match decoders.entry(*ssrc) {
                        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            opus2::Decoder::new(48_000, opus2::Channels::Mono)
                                .ok()
                                .map(|d| v.insert(d))
                        }
                    }) else {
                        continue;
                    };
                    let mut frame = vec![0i16; FRAME_SAMPLES];
                    // songbird only decrypts here (its own decoder would read the DAVE trailer
                    // as Opus); a missing packet is concealed.
                    let (kind, decoded) = match &data.packet {
                        None => ('G', dec.decode(&[], &mut frame, false)),
                        Some(p) => {
                            let rtp = p.rtp();
                            let payload = songbird::packet::Packet::payload(&rtp);
                            let ext = songbird::packet::rtp::RtpPacket::get_extension(&rtp) != 0;
                            let opus = opus_of(payload, ext);
                            let kind = if opus == audio::SILENCE_FRAME {
                                'Z'
                            } else {
                                'S'
                            };
                            (kind, dec.decode(opus, &mut frame, false))
                        }
                    };
                    let s = r.streams.entry(*ssrc).or_default();
                    s.kinds.push(kind);
                    if decoded.map_or(true, |n| n != FRAME_SAMPLES) {
                        s.odd_sized += 1;
                    }
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
        let mut config =
            songbird::Config::default().decode_mode(songbird::driver::DecodeMode::Decrypt);
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
            let decoders = Arc::new(Mutex::new(HashMap::new()));
            let mut c = call.lock().await;
            for ev in [
                songbird::CoreEvent::SpeakingStateUpdate,
                songbird::CoreEvent::VoiceTick,
                songbird::CoreEvent::ClientDisconnect,
            ] {
                c.add_global_event(
                    ev.into(),
                    Handler {
                        received: received.clone(),
                        decoders: decoders.clone(),
                    },
                );
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

async fn run(faults: Faults, xchacha: bool, dave: bool) -> Vec<UserResult> {
    let _serial = SERIAL.lock().await;
    let speeches = common::three_speeches();
    let fake = FakeDiscord::builder()
        .faults(faults)
        .dave(dave)
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
    let job = Job::new(&fake, vec![(cfg.guild_id, channel)], xchacha, out.path());
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
    let results = run(Faults::default(), false, true).await;
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
    // Transport encryption only (DAVE negotiated off): the one songbird test without DAVE.
    let results = run(faults, true, false).await;
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
    let job = Job::new(
        &fake,
        vec![(cfg.guild_id, v1), (g2.id, v2)],
        false,
        out.path(),
    );
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

/// DAVE twin of the three-user test: Alice and Bob share a group before the bot joins; Carol
/// joins while Alice and Bob speak (a new epoch), Bob leaves while Alice speaks (another). Every
/// stream must decode and be attributed, and the packets lost around each epoch change are
/// counted (none when the fake orders the transition as Discord does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dave_users_joining_and_leaving_mid_call_stay_decoded_and_attributed() {
    let _serial = SERIAL.lock().await;
    let speeches = common::three_speeches();
    let fake = FakeDiscord::builder().start().await.expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let channel = cfg.voice_channels[0].0;
    let alice = control.add_user("alice");
    let bob = control.add_user("bob");
    let carol = control.add_user("carol");
    control.join_voice(alice, channel).expect("alice joins");
    control.join_voice(bob, channel).expect("bob joins");
    let before = control.dave_state(channel).expect("call");
    assert_eq!(
        (before.epoch, before.members.len()),
        (1, 2),
        "Alice and Bob share a group"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let job = Job::new(&fake, vec![(cfg.guild_id, channel)], false, out.path());
    let mut child = start_receiver(&fake, &job, out.path()).await;
    let log = || std::fs::read_to_string(out.path().join("child.log")).unwrap_or_default();
    let joined = control
        .wait_for_dave(channel, Duration::from_secs(30), |s| {
            s.bot_in_sync && s.members.contains(&cfg.bot_user_id) && !s.transition_pending
        })
        .await;
    let joined = match joined {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            panic!("the bot never joined the DAVE group ({e}); log:\n{}", log());
        }
    };
    assert_eq!(joined.epoch, 2, "the bot's join is epoch 2");
    assert_eq!(joined.bot_key_packages, 1);

    // Alice speaks for 10 s (her clip, looped), Bob once; Carol joins after a second.
    let pcm = audio::load_wav_mono_48k(&speeches[0]).expect("clip");
    let alice_frames: Arc<[Vec<u8>]> = audio::encode_opus_frames(&pcm, cfg.opus_bitrate)
        .expect("encode")
        .into();
    let h_alice = control
        .speak_opus_shared(alice, alice_frames, 0, 500)
        .expect("alice speaks");
    let h_bob = control
        .speak_wav(bob, &speeches[1])
        .await
        .expect("bob speaks");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    control.join_voice(carol, channel).expect("carol joins");
    let with_carol = control
        .wait_for_dave(channel, Duration::from_secs(10), |s| {
            s.members.contains(&carol) && !s.transition_pending
        })
        .await
        .expect("carol's epoch executes");
    assert_eq!(with_carol.epoch, 3);
    let h_carol = control
        .speak_wav(carol, &speeches[2])
        .await
        .expect("carol speaks");
    let bob_frames = h_bob.opus_frames.clone();
    let r_bob = h_bob
        .finished(Duration::from_secs(30))
        .await
        .expect("bob done");
    // Leaving drops the receiver's state for Bob at once (op 13): let his last packets out of
    // its playout buffer first, as a person does not hang up mid-word.
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.leave_voice(bob).expect("bob leaves");
    let without_bob = control
        .wait_for_dave(channel, Duration::from_secs(10), |s| {
            !s.members.contains(&bob) && !s.transition_pending
        })
        .await
        .expect("bob's removal executes");
    assert_eq!(without_bob.epoch, 4);
    let carol_frames = h_carol.opus_frames.clone();
    let r_carol = h_carol
        .finished(Duration::from_secs(30))
        .await
        .expect("carol done");
    let r_alice = h_alice
        .finished(Duration::from_secs(30))
        .await
        .expect("alice done");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    assert!(
        wait_child(&mut child, Duration::from_secs(60)),
        "receiver child failed; log:\n{}",
        log()
    );
    let end = control.dave_state(channel).expect("call");
    assert_eq!(
        end.transitions_timed_out, 0,
        "the bot answered every transition"
    );
    assert_eq!(end.bot_invalid_reports, 0);
    let received = read_received(out.path(), cfg.guild_id);
    // Alice spoke through both epoch changes: her frames went out under epochs 2, 3 and 4.
    assert!(
        [2, 3, 4]
            .iter()
            .all(|e| r_alice.epochs.get(e).copied().unwrap_or(0) > 0),
        "alice's frames per epoch: {:?}",
        r_alice.epochs
    );
    for r in [&r_alice, &r_bob, &r_carol] {
        assert_eq!(
            received.ssrc_user.get(&r.ssrc),
            Some(&r.user_id),
            "SSRC {} attributed to {}",
            r.ssrc,
            r.user_id
        );
        let stream = &received.streams[&r.ssrc];
        // A packet that DAVE drops in mid-stream shows as a concealed gap. Packets that arrived
        // (speech and trailing silence; a speech frame may itself be a silence frame) are
        // also counted against those sent: the receiver may hold one back at an end.
        let gaps = stream.kinds.chars().filter(|k| *k == 'G').count();
        let arrived = stream.kinds.chars().filter(|k| *k != 'G').count();
        let sent = (r.sent + r.silence_frames) as usize;
        println!(
            "user {}: sent {sent} (speech per epoch {:?}), arrived {arrived}, lost in mid-stream {gaps} ({:.0} ms)",
            r.user_id,
            r.epochs,
            gaps as f64 * 20.0,
        );
        assert_eq!(r.lost, 0, "no network loss injected");
        assert_eq!(gaps, 0, "no frame may be lost to an epoch change");
        assert!(arrived + 1 >= sent, "{arrived} of {sent} packets arrived");
    }
    for (r, wav, frames) in [
        (r_bob, &speeches[1], bob_frames),
        (r_carol, &speeches[2], carol_frames),
    ] {
        let stream = &received.streams[&r.ssrc];
        let res = analyse(wav, &frames, r, stream);
        assert!(res.correlation > 0.9, "correlation {}", res.correlation);
    }
}

/// The DAVE faults a bot must survive, one after another in one call, with songbird as the
/// bot: a garbage commit, a welcome that does not match, and a member proposed without Clients
/// Connect. After each, songbird reports the failure (op 31), sends a new key package, is
/// welcomed back, and a user speaking afterwards is decoded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dave_songbird_recovers_from_each_fault_and_hears_again() {
    use nina_fake_discord::DaveFault;

    let _serial = SERIAL.lock().await;
    let speeches = common::three_speeches();
    let fake = FakeDiscord::builder().start().await.expect("fake starts");
    let control = fake.control();
    let cfg = fake.config().clone();
    let channel = cfg.voice_channels[0].0;
    let users: Vec<u64> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|n| control.add_user(n))
        .collect();
    control.join_voice(users[0], channel).expect("alice joins");
    let out = tempfile::tempdir().expect("tempdir");
    let job = Job::new(&fake, vec![(cfg.guild_id, channel)], false, out.path());
    let mut child = start_receiver(&fake, &job, out.path()).await;
    let log = || std::fs::read_to_string(out.path().join("child.log")).unwrap_or_default();
    let in_sync = |s: &nina_fake_discord::DaveCallState| {
        s.bot_in_sync && s.members.contains(&cfg.bot_user_id) && !s.transition_pending
    };
    if let Err(e) = control
        .wait_for_dave(channel, Duration::from_secs(30), in_sync)
        .await
    {
        let _ = child.kill();
        panic!("the bot never joined the DAVE group ({e}); log:\n{}", log());
    }
    let mut reports = Vec::new();
    // Each round is set off by a membership change (the next user joins) and expects one op 31
    // per fault. A mismatched welcome needs the bot to be joining: a garbage commit first
    // makes it start over, and the welcome that would take it back is the mismatched one.
    let rounds = [
        vec![DaveFault::GarbageCommit],
        vec![DaveFault::GarbageCommit, DaveFault::MismatchedWelcome],
        vec![DaveFault::AddWithoutClientsConnect],
    ];
    for (i, fault) in rounds.into_iter().enumerate() {
        let before = control.dave_state(channel).expect("call");
        for f in &fault {
            control.dave_fault(*f);
        }
        control
            .join_voice(users[i + 1], channel)
            .expect("user joins");
        let after = control
            .wait_for_dave(channel, Duration::from_secs(30), |s| {
                in_sync(s)
                    && s.members.contains(&users[i + 1])
                    && s.bot_key_packages >= before.bot_key_packages + fault.len() as u32
            })
            .await;
        let after = match after {
            Ok(s) => s,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "no recovery from {fault:?} ({e}): {:?}; log:\n{}",
                    control.dave_state(channel),
                    log()
                );
            }
        };
        println!("{fault:?}: {before:?} -> {after:?}");
        assert_eq!(
            after.bot_invalid_reports,
            before.bot_invalid_reports + fault.len() as u32,
            "{fault:?}: the bot reports each failure (op 31)"
        );
        // The user who just joined speaks, and must be heard.
        let h = control
            .speak_wav(users[i + 1], &speeches[i % 3])
            .await
            .expect("speech");
        reports.push(h.finished(Duration::from_secs(30)).await.expect("spoken"));
    }
    // Downgrade to transport encryption only, speak, upgrade back to DAVE, speak.
    control.dave_downgrade(channel).expect("downgrade");
    let down = control
        .wait_for_dave(channel, Duration::from_secs(10), |s| {
            s.protocol_version == 0 && !s.transition_pending
        })
        .await
        .expect("downgrade executes");
    assert_eq!(
        down.transitions_timed_out, 0,
        "the bot answered the downgrade"
    );
    let h = control
        .speak_wav(users[0], &speeches[0])
        .await
        .expect("speech");
    let plain = h.finished(Duration::from_secs(30)).await.expect("spoken");
    assert_eq!(plain.epochs.keys().copied().collect::<Vec<_>>(), vec![0]);
    reports.push(plain);
    let kps = control.dave_state(channel).expect("call").bot_key_packages;
    control.dave_upgrade(channel).expect("upgrade");
    control
        .wait_for_dave(channel, Duration::from_secs(30), |s| {
            s.protocol_version == 1 && in_sync(s) && s.bot_key_packages > kps
        })
        .await
        .expect("upgrade: the bot makes a new key package and is welcomed");
    let h = control
        .speak_wav(users[1], &speeches[1])
        .await
        .expect("speech");
    let upgraded = h.finished(Duration::from_secs(30)).await.expect("spoken");
    assert!(
        upgraded.epochs.keys().all(|e| *e > 0),
        "{:?}",
        upgraded.epochs
    );
    reports.push(upgraded);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    assert!(
        wait_child(&mut child, Duration::from_secs(60)),
        "receiver child failed; log:\n{}",
        log()
    );
    let received = read_received(out.path(), cfg.guild_id);
    for r in &reports {
        let stream = received
            .streams
            .get(&r.ssrc)
            .unwrap_or_else(|| panic!("nothing decoded for {} after recovery", r.user_id));
        let arrived = stream.kinds.chars().filter(|k| *k != 'G').count();
        println!(
            "user {}: sent {} arrived {arrived} epochs {:?}",
            r.user_id,
            r.sent + r.silence_frames,
            r.epochs
        );
        assert!(arrived + 1 >= (r.sent + r.silence_frames) as usize);
        assert_eq!(received.ssrc_user.get(&r.ssrc), Some(&r.user_id));
    }
}
