//! `cargo bench -p collector --bench load`: the collector under load, against the fake Discord
//! at real-time pace. For each row (users × mode) the real `collector` binary runs as a child
//! process; every fake user replays one shared Opus encoding of the test speech (encoded once)
//! in bursts of 4–10 s with 0.3–1 s pauses, so utterances end and get transcribed. The child's
//! CPU time and RSS are sampled from `/proc` every second, the fake's own CPU from its threads
//! (`/proc/self/task/*/stat`, the fake runs on its own runtime whose threads are named
//! `nina-fake`). Needs `scripts/setup.sh` (test speech, models). Packets the kernel dropped
//! because the voice socket's receive buffer was full are counted from `/proc/net/snmp` (the
//! whole machine's UDP, so run nothing else that receives UDP meanwhile); the fake sends every
//! user's packet of a 20 ms tick at once, a burstier load than Discord's.
//!
//! Environment:
//! - `NINA_LOAD_SECONDS`: load per row (default 30).
//! - `NINA_LOAD_USERS`: comma-separated user counts (default `10,50,100`).
//! - `NINA_LOAD_MODES`: comma-separated, of `raw` (Opus tracks only), `segment` (decode +
//!   segment, transcription off), `transcribe` (decode + segment + whisper-tiny-en); default all.
//! - `NINA_LOAD_PATTERN`: `overlap` (default: everyone speaks at once, as above) or `turns`
//!   (one speaker at a time in random order, turns of 3–8 s with 0.3–1 s between them: a
//!   conversation, for the latency goal).
//! - `NINA_LOAD_SLOPE_MINUTES`: instead of the table, one long run (first user count, first
//!   mode) with users leaving and rejoining; prints the RSS slope (least squares, MiB/hour).
//! - `NINA_LOAD_DAVE`: `1` (default) calls are DAVE end-to-end encrypted, `0` transport
//!   encryption only. The DAVE column: time from the collector's voice connection to everyone
//!   being in one MLS group with it (audio starts then), epochs the call went through, and
//!   packets that never reached the collector (holes in sequence numbers: under DAVE, packets
//!   it could not decrypt), the worst user's share of them, and the collector's rejoins.
//! - `NINA_LOAD_PAGES`: the collector serves its web page (`[web] listen` on loopback) and this
//!   many live pages follow `/live/events` for the whole row, as a browser's EventSource would
//!   (`0`: served, no page open). A second table gives, per row, the collector's memory and how
//!   long after a user starts speaking each page is told so (the `members` event that first
//!   marks them speaking, against the moment the fake starts sending their speech).
//! - `NINA_LOAD_DAVE_REJOIN_EVERY`: seconds; in the long run (`NINA_LOAD_SLOPE_MINUTES`), arm
//!   three corrupt commits that often, so the collector refuses three group updates within a
//!   minute and rejoins the channel: memory across many rejoins.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nina_fake_discord::{Control, FakeDiscord};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Thread name of the fake's runtime, to find its threads in `/proc/self/task`.
const FAKE_THREAD: &str = "nina-fake";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Clock ticks per second of `/proc/*/stat` times.
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(comm, utime + stime)` of a `/proc/.../stat` file.
fn stat_cpu(path: &Path) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // After the comm: state is field 3, utime field 14, stime field 15.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((comm, ut + st))
}

/// `VmRSS` and `VmHWM` of a process, KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// The kernel's count of UDP datagrams dropped because a socket's receive buffer was full
/// (`RcvbufErrors` in `/proc/net/snmp`, all sockets of the machine).
fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// CPU ticks of the fake's threads (those alive now).
fn fake_ticks() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| stat_cpu(&e.path().join("stat")))
        .filter(|(comm, _)| comm.starts_with(FAKE_THREAD))
        .map(|(_, t)| t)
        .sum()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Segment,
    Transcribe,
}

impl Mode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "raw" => Self::Raw,
            "segment" => Self::Segment,
            "transcribe" => Self::Transcribe,
            _ => bail!("unknown mode {s:?} (raw, segment, transcribe)"),
        })
    }
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw (Opus tracks only)",
            Self::Segment => "decode + segment",
            Self::Transcribe => "decode + segment + tiny.en",
        }
    }
    fn toml(self) -> &'static str {
        match self {
            Self::Raw => "[capture]\ndecode = false\n[transcribe]\nenabled = false\n",
            Self::Segment => "[transcribe]\nenabled = false\n",
            Self::Transcribe => "[transcribe]\nmodel = \"whisper-tiny-en\"\nlanguage = \"en\"\n",
        }
    }
}

/// Who speaks when.
#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    /// Everyone at once, in bursts.
    Overlap,
    /// One at a time.
    Turns,
}

impl Pattern {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "overlap" => Self::Overlap,
            "turns" => Self::Turns,
            _ => bail!("unknown pattern {s:?} (overlap, turns)"),
        })
    }
}

/// A small deterministic generator for the speaking pattern.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// What the fake sent, summed over users.
#[derive(Default)]
struct Sent {
    speech_frames: AtomicU64,
    /// When each burst of speech started: (user, Unix ms).
    onsets: std::sync::Mutex<Vec<(u64, i64)>>,
}

impl Sent {
    fn onset(&self, user: u64) {
        self.onsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((user, unix_ms()));
    }
}

/// One live page: follows `/live/events` at `addr` until `until`, and returns when each user
/// was first shown speaking after being shown silent: (user, Unix ms).
async fn page(addr: String, until: Instant) -> Result<Vec<(u64, i64)>> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    stream
        .write_all(
            format!(
                "GET /live/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut lines = BufReader::new(stream).lines();
    let mut event = String::new();
    let mut speaking = std::collections::HashSet::<u64>::new();
    let mut onsets = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            Ok(Ok(None)) => bail!("the live stream ended"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(onsets),
        };
        let at = unix_ms();
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:")
            && event == "members"
        {
            // One `<li class="member speaking" data-user="...">` per member speaking now.
            for part in data.split("<li class=\"member").skip(1) {
                let on = part.starts_with(" speaking");
                let user = part
                    .split("data-user=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|u| u.parse::<u64>().ok());
                if let Some(user) = user {
                    if on && speaking.insert(user) {
                        onsets.push((user, at));
                    } else if !on {
                        speaking.remove(&user);
                    }
                }
            }
        } else if line.is_empty() {
            event.clear();
        }
    }
}

/// Per burst and page: milliseconds from the burst's start to the page showing its speaker
/// speaking (bursts the page never showed within 5 s are counted apart).
fn shown_after(onsets: &[(u64, i64)], pages: &[Vec<(u64, i64)>]) -> (Vec<f64>, usize) {
    let (mut delays, mut missed) = (Vec::new(), 0);
    for &(user, t0) in onsets {
        for p in pages {
            match p
                .iter()
                .filter(|(u, t)| *u == user && *t >= t0 && *t <= t0 + 5_000)
                .map(|(_, t)| t - t0)
                .min()
            {
                Some(d) => delays.push(d as f64),
                None => missed += 1,
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    (delays, missed)
}

/// One fake user's part in a row.
struct Speaker {
    control: Control,
    user: u64,
    channel: u64,
    speech: Arc<[Vec<u8>]>,
    seed: u64,
    until: Instant,
    churn: bool,
    sent: Arc<Sent>,
}

/// Bursts of the shared speech until `until`; with `churn`, the user sometimes leaves the
/// channel for a while and comes back.
async fn speaker(sp: Speaker) -> Result<()> {
    let Speaker {
        control,
        user,
        channel,
        speech,
        seed,
        until,
        churn,
        sent,
    } = sp;
    let mut rng = Lcg(seed);
    // Users do not all start on the same frame.
    tokio::time::sleep(Duration::from_millis(rng.range(0, 1000))).await;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now()).as_millis() as u64 / 20;
        let frames = rng.range(200, 500).min(left) as usize;
        if frames < 25 {
            break;
        }
        let start = rng.next() as usize;
        sent.onset(user);
        let h = control.speak_opus_shared(user, speech.clone(), start, frames)?;
        let r = h
            .finished(Duration::from_secs(frames as u64 / 50 + 60))
            .await?;
        sent.speech_frames
            .fetch_add(u64::from(r.sent), Ordering::Relaxed);
        if churn && rng.range(0, 9) < 2 {
            control.leave_voice(user)?;
            tokio::time::sleep(Duration::from_secs(rng.range(5, 20))).await;
            control.join_voice(user, channel)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.range(300, 1000))).await;
        }
    }
    Ok(())
}

/// Users taking turns until `until`: one speaks 3–8 s, a pause of 0.3–1 s, the next (never
/// the same twice in a row).
async fn conductor(
    control: Control,
    users: Vec<u64>,
    speech: Arc<[Vec<u8>]>,
    until: Instant,
    sent: Arc<Sent>,
) -> Result<()> {
    let mut rng = Lcg(0x7e57_7a1c);
    let mut last = usize::MAX;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now()).as_millis() as u64 / 20;
        let frames = rng.range(150, 400).min(left) as usize;
        if frames < 25 {
            break;
        }
        let mut who = rng.range(0, users.len() as u64 - 1) as usize;
        if who == last && users.len() > 1 {
            who = (who + 1) % users.len();
        }
        last = who;
        let start = rng.next() as usize;
        sent.onset(users[who]);
        let h = control.speak_opus_shared(users[who], speech.clone(), start, frames)?;
        let r = h
            .finished(Duration::from_secs(frames as u64 / 50 + 60))
            .await?;
        sent.speech_frames
            .fetch_add(u64::from(r.sent), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.range(300, 1000))).await;
    }
    Ok(())
}

struct Row {
    users: usize,
    mode: Mode,
    pattern: Pattern,
    avg_speaking: f64,
    bot_cpu_pct: f64,
    peak_rss_mib: f64,
    end_rss_mib: f64,
    sent: u64,
    stored: u64,
    capture: String,
    utterances: String,
    captions: usize,
    latency: Option<(f64, f64)>,
    fake_cpu_pct: f64,
    socket_drops: Option<u64>,
    slope_mib_per_hour: Option<f64>,
    /// With `NINA_LOAD_PAGES`: pages open, and ms from speech to the page showing it (sorted),
    /// with the bursts a page never showed.
    web: Option<(usize, Vec<f64>, usize)>,
    /// `(seconds to the group, epochs, packets never arrived)`; `None` without DAVE.
    dave: Option<(f64, u32, String)>,
    note: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Least-squares slope of `(seconds, MiB)` points, in MiB per hour.
fn slope_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 3600.0)
}

/// `key=value` out of a log line (tracing's fmt layer, no colours).
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
}

async fn run_row(
    speech: Arc<[Vec<u8>]>,
    users: usize,
    mode: Mode,
    pattern: Pattern,
    seconds: u64,
    churn: bool,
) -> Result<Row> {
    let tck = clk_tck();
    let data = tempfile::tempdir()?;
    let data_path = data.path().to_path_buf();
    // The fake on its own runtime, so its threads can be told apart.
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(FAKE_THREAD)
        .enable_all()
        .build()?;
    let dave = std::env::var("NINA_LOAD_DAVE").map_or(true, |v| v != "0");
    let fake = fake_rt
        .spawn(FakeDiscord::builder().dave(dave).start())
        .await?
        .context("starting the fake")?;
    let fc = fake.config().clone();
    let (voice, _) = fc.voice_channels[0].clone();
    let control = fake.control();
    let ids: Vec<u64> = (0..users)
        .map(|i| control.add_user(&format!("user{i}")))
        .collect();
    let pages: Option<usize> = std::env::var("NINA_LOAD_PAGES")
        .ok()
        .and_then(|v| v.parse().ok());
    let cfg = format!(
        "data_dir = {data:?}\n{mode}{web}[discord]\ngateway_url = {gw:?}\napi = {api:?}\n\
         [[channels]]\nguild = {guild}\nchannel = {voice}\n",
        web = if pages.is_some() {
            "[web]\nlisten = \"127.0.0.1:0\"\n"
        } else {
            ""
        },
        data = data_path.display().to_string(),
        mode = mode.toml(),
        gw = fake.gateway_url(),
        api = fake.http_proxy(),
        guild = fc.guild_id,
    );
    let cfg_path = data_path.join("collector.toml");
    std::fs::write(&cfg_path, cfg)?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("--config")
        .arg(&cfg_path)
        .envs(fake.child_env())
        .env("DISCORD_TOKEN", &fc.token)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the collector")?;
    let pid = child.id().context("no child pid")?;
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(i64, String)>();
    let stdout = child.stdout.take().context("no stdout")?;
    tokio::spawn(async move {
        let mut r = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = r.next_line().await {
            let _ = out_tx.send((unix_ms(), l));
        }
    });
    let (err_tx, mut err_rx) = mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().context("no stderr")?;
    let log_path = data_path.join("collector.stderr");
    tokio::spawn(async move {
        let mut log = Vec::new();
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = r.next_line().await {
            log.extend_from_slice(l.as_bytes());
            log.push(b'\n');
            if l.contains("session recorded") {
                let _ = err_tx.send(l);
            }
        }
        let _ = std::fs::write(log_path, log);
    });
    // Ready, and in the voice channel.
    let ready_by = Instant::now() + Duration::from_secs(180);
    let mut web_addr = None;
    loop {
        let left = ready_by.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, out_rx.recv()).await {
            Ok(Some((_, l))) if l == "NINA-COLLECTOR-READY" => break,
            Ok(Some((_, l))) if l.starts_with("NINA-WEB ") => {
                web_addr = l
                    .trim_start_matches("NINA-WEB http://")
                    .split('/')
                    .next()
                    .map(str::to_string);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the collector exited at start-up"),
            Err(_) => bail!("the collector did not start within 180 s"),
        }
    }
    control
        .wait_for_voice_ready(Duration::from_secs(30))
        .await
        .context("the collector did not join")?;
    let voice_ready = Instant::now();
    for u in &ids {
        control.join_voice(*u, voice)?;
    }
    let mut group_ready = None;
    if dave {
        let everyone = users + 1;
        control
            .wait_for_dave(voice, Duration::from_secs(300), |s| {
                s.bot_in_sync && s.members.len() == everyone && !s.transition_pending
            })
            .await
            .context("the DAVE group never formed")?;
        group_ready = Some(voice_ready.elapsed().as_secs_f64());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Load, sampling every second.
    let sent = Arc::new(Sent::default());
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let cpu0 = stat_cpu(Path::new(&format!("/proc/{pid}/stat")))
        .context("child stat")?
        .1;
    let fake0 = fake_ticks();
    let drops0 = udp_rcvbuf_errors();
    let mut page_tasks = Vec::new();
    if let Some(n) = pages {
        let addr = web_addr.context("the collector did not print NINA-WEB")?;
        for _ in 0..n {
            page_tasks.push(tokio::spawn(page(
                addr.clone(),
                until + Duration::from_secs(2),
            )));
        }
    }
    let mut tasks = Vec::new();
    if pattern == Pattern::Turns {
        tasks.push(tokio::spawn(conductor(
            control.clone(),
            ids.clone(),
            speech.clone(),
            until,
            sent.clone(),
        )));
    }
    for (i, u) in ids.iter().enumerate() {
        if pattern == Pattern::Turns {
            break;
        }
        tasks.push(tokio::spawn(speaker(Speaker {
            control: control.clone(),
            user: *u,
            channel: voice,
            speech: speech.clone(),
            seed: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x1000_0000_01b3),
            until,
            churn,
            sent: sent.clone(),
        })));
    }
    let rejoin_every: u64 = env_or("NINA_LOAD_DAVE_REJOIN_EVERY", 0);
    if churn && dave && rejoin_every > 0 {
        let control = control.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(rejoin_every)).await;
                if Instant::now() >= until {
                    break;
                }
                for _ in 0..3 {
                    control.dave_fault(nina_fake_discord::DaveFault::GarbageCommit);
                }
            }
            anyhow::Ok(())
        }));
    }
    let mut rss_points = Vec::new();
    let mut peak_kib = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < until {
        tick.tick().await;
        if let Some((rss, hwm)) = rss_kib(pid) {
            peak_kib = peak_kib.max(hwm);
            rss_points.push((t0.elapsed().as_secs_f64(), rss as f64 / 1024.0));
        }
    }
    for t in tasks {
        t.await??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut seen = Vec::new();
    for t in page_tasks {
        seen.push(t.await??);
    }
    let web = pages.map(|n| {
        let onsets = sent
            .onsets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (delays, missed) = shown_after(&onsets, &seen);
        (n, delays, missed)
    });
    let cpu1 = stat_cpu(Path::new(&format!("/proc/{pid}/stat")))
        .context("child stat")?
        .1;
    let fake1 = fake_ticks();
    let drops1 = udp_rcvbuf_errors();
    let (end_rss, hwm) = rss_kib(pid).unwrap_or((0, 0));
    peak_kib = peak_kib.max(hwm);
    let sent_frames = sent.speech_frames.load(Ordering::Relaxed);

    // Let the last utterances close and their transcripts arrive, then stop.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut captions = Vec::new();
    while let Ok((_, l)) = out_rx.try_recv() {
        if let Some(rest) = l.strip_prefix("NINA-CAPTION ") {
            let end: Option<i64> = field(rest, "end_unix_ms").and_then(|v| v.parse().ok());
            let at: Option<i64> = field(rest, "at_unix_ms").and_then(|v| v.parse().ok());
            if let (Some(end), Some(at)) = (end, at) {
                captions.push((at - end) as f64 / 1000.0);
            }
        }
    }
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let mut note = String::new();
    let recorded = tokio::time::timeout(Duration::from_secs(180), err_rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        // Transcribing what live transcription skipped can take long; the figures are in.
        child.kill().await?;
        note.push_str("killed 60 s after the session was recorded; ");
    }
    let capture = format!(
        "{}/{}/{}/{}",
        field(&recorded, "lost").unwrap_or_else(|| "?".into()),
        field(&recorded, "late").unwrap_or_else(|| "?".into()),
        field(&recorded, "overflowed").unwrap_or_else(|| "?".into()),
        field(&recorded, "unattributed").unwrap_or_else(|| "?".into()),
    );
    let utterances = field(&recorded, "utterances").unwrap_or_else(|| "?".into());
    // Voiced packets stored in each track, against what the fake sent.
    let mut stored = 0u64;
    let sessions = nina_store::Store::new(&data_path).sessions()?;
    let session = sessions.first().context("no session stored")?;
    let loaded = session.load()?;
    let dave_row = group_ready.map(|g| {
        let epochs = control.dave_state(voice).map_or(0, |s| s.epoch_changes);
        // Per user: packets that never arrived plus those missed at a stream's start.
        let worst = loaded.dave.as_ref().map_or(0, |d| {
            d.users
                .iter()
                .map(|l| l.unseen_packets + l.missed_at_start)
                .max()
                .unwrap_or(0)
        });
        let rejoins = loaded.dave.as_ref().map_or(0, |d| d.rejoins);
        (
            g,
            epochs,
            format!(
                "{} (worst user {worst}) / {rejoins} rejoins",
                field(&recorded, "unseen").unwrap_or_else(|| "?".into())
            ),
        )
    });
    // Users who never spoke (turn-taking) have no track.
    let tracks: Vec<u64> = loaded.tracks.iter().map(|t| t.user_id).collect();
    for u in ids.iter().filter(|u| tracks.contains(u)) {
        let path = session.root().join(nina_store::track_file(*u));
        match nina_store::read_opus_track(&path) {
            Ok(t) => {
                stored += t
                    .packets
                    .iter()
                    .filter(|p| p.data != nina_store::OPUS_SILENCE)
                    .count() as u64
            }
            Err(e) => note.push_str(&format!("track of {u}: {e}; ")),
        }
    }
    fake_rt.spawn(fake.shutdown()).await?;
    fake_rt.shutdown_background();
    if std::env::var_os("NINA_LOAD_KEEP").is_some() {
        let kept = data.keep();
        note.push_str(&format!("data kept in {}; ", kept.display()));
    }
    captions.sort_by(f64::total_cmp);
    let latency =
        (!captions.is_empty()).then(|| (percentile(&captions, 0.5), percentile(&captions, 0.95)));
    Ok(Row {
        users,
        mode,
        pattern,
        avg_speaking: sent_frames as f64 / 50.0 / wall,
        bot_cpu_pct: (cpu1 - cpu0) as f64 / tck / wall * 100.0,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        end_rss_mib: end_rss as f64 / 1024.0,
        sent: sent_frames,
        stored,
        capture,
        utterances,
        captions: captions.len(),
        latency,
        fake_cpu_pct: (fake1 - fake0) as f64 / tck / wall * 100.0,
        socket_drops: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
        slope_mib_per_hour: slope_per_hour(&rss_points),
        web,
        dave: dave_row,
        note,
    })
}

/// The test speech, all LibriVox clips in a row, encoded once.
fn encode_speech() -> Result<Arc<[Vec<u8>]>> {
    let clips = nina_eval::testdata::librivox().context("test speech: run scripts/setup.sh")?;
    let mut pcm = Vec::new();
    for c in clips {
        pcm.extend(nina_fake_discord::audio::load_wav_mono_48k(&c.path)?);
    }
    let frames = nina_fake_discord::audio::encode_opus_frames(&pcm, 64_000)?;
    Ok(frames.into())
}

fn print_header() {
    println!(
        "| users | mode | mean speaking | bot CPU (% of a core) | CPU per speaker (% of a core) | speakers per core | peak RSS (MiB) | RSS at end (MiB) | speech packets sent | lost in bot (sent − stored) | of which the kernel dropped (socket buffer full) | capture lost/late/overflowed/unattributed | utterances | transcripts live | latency p50 / p95 (s) | fake CPU (% of a core) | DAVE: group after (s) / epochs / packets never arrived / rejoins |"
    );
    println!(
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
}

fn print_row(r: &Row) {
    let per = r.bot_cpu_pct / r.avg_speaking.max(f64::MIN_POSITIVE);
    let latency = match r.latency {
        Some((a, b)) => format!("{a:.2} / {b:.2}"),
        None => "–".into(),
    };
    let transcripts = if r.mode == Mode::Transcribe {
        r.captions.to_string()
    } else {
        "–".into()
    };
    println!(
        "| {} | {}{} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
        r.users,
        r.mode.name(),
        if r.pattern == Pattern::Turns {
            ", taking turns"
        } else {
            ""
        },
        r.avg_speaking,
        r.bot_cpu_pct,
        per,
        100.0 / per,
        r.peak_rss_mib,
        r.end_rss_mib,
        r.sent,
        r.sent as i64 - r.stored as i64,
        r.socket_drops.map_or("?".into(), |d| d.to_string()),
        r.capture,
        r.utterances,
        transcripts,
        latency,
        r.fake_cpu_pct,
        r.dave
            .as_ref()
            .map_or("off".into(), |(g, e, u)| format!("{g:.2} / {e} / {u}")),
    );
    if !r.note.is_empty() {
        eprintln!("  note ({} users, {}): {}", r.users, r.mode.name(), r.note);
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let seconds: u64 = env_or("NINA_LOAD_SECONDS", 30);
    let users: Vec<usize> = env_list("NINA_LOAD_USERS", "10,50,100")
        .iter()
        .map(|u| u.parse().context("NINA_LOAD_USERS"))
        .collect::<Result<_>>()?;
    let modes: Vec<Mode> = env_list("NINA_LOAD_MODES", "raw,segment,transcribe")
        .iter()
        .map(|m| Mode::parse(m))
        .collect::<Result<_>>()?;
    let pattern = Pattern::parse(&std::env::var("NINA_LOAD_PATTERN").unwrap_or("overlap".into()))?;
    let slope_minutes: Option<u64> = std::env::var("NINA_LOAD_SLOPE_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok());
    let speech = encode_speech()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(minutes) = slope_minutes {
        let (&n, &mode) = users
            .first()
            .zip(modes.first())
            .context("no users or modes")?;
        println!(
            "\nmemory over {minutes} min: {n} users speaking in bursts, leaving and rejoining, {}\n",
            mode.name()
        );
        let r = rt.block_on(run_row(speech, n, mode, pattern, minutes * 60, true))?;
        print_header();
        print_row(&r);
        match r.slope_mib_per_hour {
            Some(s) => println!("\nRSS slope (least squares over 1 s samples): {s:+.2} MiB/hour"),
            None => println!("\nRSS slope: too few samples"),
        }
        return Ok(());
    }
    let how = match pattern {
        Pattern::Overlap => "everyone at once, bursts of 4–10 s, pauses 0.3–1 s",
        Pattern::Turns => "one at a time, turns of 3–8 s, 0.3–1 s between turns",
    };
    println!(
        "\ncollector load: {seconds} s per row, real-time pace, every user replaying one shared Opus encoding ({how})\n"
    );
    print_header();
    let mut rows = Vec::new();
    for &mode in &modes {
        for &n in &users {
            match rt.block_on(run_row(speech.clone(), n, mode, pattern, seconds, false)) {
                Ok(r) => {
                    print_row(&r);
                    rows.push(r);
                }
                Err(e) => println!("| {n} | {} | failed: {e:#} |", mode.name()),
            }
        }
    }
    if rows.iter().any(|r| r.web.is_some()) {
        println!(
            "\nweb page: the collector serving `[web] listen`, live pages following /live/events\n"
        );
        println!(
            "| users | mode | pages open | peak RSS (MiB) | RSS at end (MiB) | speaking shown after, p50 / p95 (ms) | bursts × pages | never shown |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            if let Some((n, delays, missed)) = &r.web {
                let shown = if delays.is_empty() {
                    "–".to_string()
                } else {
                    format!(
                        "{:.0} / {:.0}",
                        percentile(delays, 0.5),
                        percentile(delays, 0.95)
                    )
                };
                println!(
                    "| {} | {} | {n} | {:.0} | {:.0} | {shown} | {} | {missed} |",
                    r.users,
                    r.mode.name(),
                    r.peak_rss_mib,
                    r.end_rss_mib,
                    delays.len() + missed,
                );
            }
        }
    }
    Ok(())
}
