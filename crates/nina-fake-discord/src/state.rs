//! Shared state of the fake: the guilds' users, the bot's sessions, and what the bot sent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, CryptoMode, Faults, GuildSpec};
use crate::dave::{DaveServer, ToBot};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// One HTTP request the bot sent to the fake REST API.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path after `/api/v10`, e.g. `/channels/1/messages`.
    pub path: String,
    /// JSON body (or `null` when there was none or it was not JSON).
    pub body: Value,
    /// Status code the fake answered with.
    pub status: u16,
}

/// One command the bot sent on a gateway (main or voice). Tokens are redacted.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedCommand {
    /// Opcode.
    pub op: u64,
    /// Payload (`d`), with any `token` field replaced by `"<redacted>"`.
    pub d: Value,
}

/// What happened to one queued speech, delivered when its last packet has been handled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpeechReport {
    /// The speaking user.
    pub user_id: u64,
    /// The SSRC the audio was sent with.
    pub ssrc: u32,
    /// Opus speech frames in the speech (20 ms each).
    pub frames: u32,
    /// Speech frames put on the wire to the bot (before loss).
    pub sent: u32,
    /// When the first speech frame was put on the wire (Unix milliseconds; 0 if none was).
    pub first_sent_unix_ms: i64,
    /// Speech frames nobody heard (the bot was not connected to the user's channel).
    pub unheard: u32,
    /// Speech frames dropped by the loss fault.
    pub lost: u32,
    /// Trailing silence frames sent after the speech.
    pub silence_frames: u32,
    /// Silence frames dropped by the loss fault.
    pub silence_lost: u32,
    /// Packets sent twice by the duplicate fault.
    pub duplicated: u32,
    /// Packets held back behind their successor by the reorder fault.
    pub reordered: u32,
    /// Sequence numbers of the lost speech frames.
    pub lost_seqs: Vec<u16>,
    /// Speech frames put on the wire per DAVE epoch (0: no end-to-end encryption).
    pub epochs: BTreeMap<u64, u32>,
    /// Speech frames not sent because the user held no DAVE keys (early-audio fault).
    pub dave_unready: u32,
}

pub(crate) struct Speech {
    /// The Opus frames, shared (a replay of one encoding by many users copies nothing).
    pub(crate) frames: Arc<[Vec<u8>]>,
    /// Index in `frames` of the next frame to send (wraps around).
    pub(crate) next: usize,
    /// Speech frames still to send.
    pub(crate) left: usize,
    pub(crate) silence_left: u8,
    pub(crate) report: SpeechReport,
    pub(crate) done: Option<oneshot::Sender<SpeechReport>>,
    pub(crate) started: bool,
    /// Speaking (op 5) was sent to the bot's current connection for this speech.
    pub(crate) announced: bool,
}

/// RTP stream state of one user.
pub(crate) struct RtpStream {
    pub(crate) seq: u16,
    pub(crate) ts: u32,
    pub(crate) held: Option<Vec<u8>>,
}

pub(crate) struct FakeUser {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) voice_channel: Option<u64>,
    pub(crate) session_id: String,
    pub(crate) ssrc: u32,
    pub(crate) rtp: RtpStream,
    pub(crate) speaking: Option<Speech>,
    pub(crate) pending: VecDeque<Speech>,
}

/// The bot's voice state in one guild (per its op 4).
pub(crate) struct BotVoice {
    pub(crate) channel_id: u64,
    pub(crate) session_id: String,
    pub(crate) token: String,
}

/// Message to a main-gateway connection task.
#[derive(Debug)]
pub(crate) enum GwOut {
    Text(String),
    Close(u16),
    Drop,
}

pub(crate) struct GwSession {
    pub(crate) seq: u64,
    pub(crate) history: VecDeque<(u64, String)>,
    pub(crate) conn: Option<(u64, mpsc::UnboundedSender<GwOut>)>,
    pub(crate) resumable: bool,
}

impl GwSession {
    /// Assigns the next sequence number to a dispatch, stores it for Resume and sends it.
    pub(crate) fn dispatch(&mut self, t: &str, d: &Value) {
        self.seq += 1;
        let text = serde_json::json!({"op": 0, "s": self.seq, "t": t, "d": d}).to_string();
        self.history.push_back((self.seq, text.clone()));
        while self.history.len() > 2000 {
            self.history.pop_front();
        }
        if let Some((_, tx)) = &self.conn {
            let _ = tx.send(GwOut::Text(text));
        }
    }
}

/// Message to a voice-gateway connection task.
#[derive(Debug)]
pub(crate) enum VoiceOut {
    Text(String),
    Binary(Vec<u8>),
    Close(u16),
}

/// A slash command interaction the fake sent, so the bot's answers can be checked and placed.
pub(crate) struct InteractionRec {
    pub(crate) token: String,
    pub(crate) channel_id: u64,
}

/// The bot's voice connection in one guild (survives a voice WebSocket Resume).
pub(crate) struct VoiceConn {
    pub(crate) session_id: String,
    pub(crate) token: String,
    pub(crate) channel_id: u64,
    pub(crate) ssrc: u32,
    pub(crate) version: u8,
    pub(crate) seq: u64,
    pub(crate) mode: Option<CryptoMode>,
    pub(crate) key: Option<[u8; 32]>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) nonce: u32,
    pub(crate) ws: Option<(u64, mpsc::UnboundedSender<VoiceOut>)>,
    /// DAVE messages waiting for the WebSocket to come back (voice Resume).
    pub(crate) backlog: Vec<VoiceOut>,
}

impl VoiceConn {
    /// Sends a voice gateway payload (adds `seq` for gateway v8 and later).
    pub(crate) fn send(&mut self, op: u8, d: Value) {
        self.seq += 1;
        let mut v = serde_json::json!({"op": op, "d": d});
        if self.version >= 8 {
            v["seq"] = self.seq.into();
        }
        if let Some((_, tx)) = &self.ws {
            let _ = tx.send(VoiceOut::Text(v.to_string()));
        }
    }

    /// Sends a DAVE message, or keeps it for after a Resume when the WebSocket is down.
    pub(crate) fn send_dave(&mut self, msg: ToBot) {
        let out = match msg {
            ToBot::Binary(b) => VoiceOut::Binary(b),
            ToBot::Json(op, d) => {
                self.seq += 1;
                let mut v = serde_json::json!({"op": op, "d": d});
                if self.version >= 8 {
                    v["seq"] = self.seq.into();
                }
                VoiceOut::Text(v.to_string())
            }
        };
        match &self.ws {
            Some((_, tx)) => {
                let _ = tx.send(out);
            }
            None => self.backlog.push(out),
        }
    }

    /// True once Session Description was sent and media can flow.
    pub(crate) fn media_ready(&self) -> bool {
        self.key.is_some() && self.peer.is_some() && self.mode.is_some()
    }
}

/// Counters that tests can read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Successful main gateway Identifies.
    pub identifies: u32,
    /// Successful main gateway Resumes.
    pub resumes: u32,
    /// Main gateway connections accepted.
    pub gateway_connections: u32,
    /// Voice gateway Identifies.
    pub voice_identifies: u32,
    /// Voice gateway Resumes.
    pub voice_resumes: u32,
    /// Voice gateway heartbeats answered.
    pub voice_heartbeats: u32,
    /// Main gateway heartbeats answered.
    pub heartbeats: u32,
    /// IP discovery requests answered.
    pub ip_discoveries: u32,
    /// Other UDP packets received from the bot (its own RTP, keep-alives).
    pub bot_udp_packets: u32,
    /// RTP packets sent to the bot (including duplicates).
    pub rtp_sent: u64,
}

pub(crate) struct State {
    pub(crate) users: BTreeMap<u64, FakeUser>,
    /// The bot's voice state, per guild.
    pub(crate) bot_voice: BTreeMap<u64, BotVoice>,
    pub(crate) sessions: HashMap<String, GwSession>,
    /// The bot's voice connections, per guild.
    pub(crate) voice: BTreeMap<u64, VoiceConn>,
    pub(crate) rest_log: Vec<RecordedRequest>,
    pub(crate) gateway_log: Vec<RecordedCommand>,
    pub(crate) voice_log: Vec<RecordedCommand>,
    pub(crate) commands: Vec<Value>,
    /// Guild application commands, per guild.
    pub(crate) guild_commands: BTreeMap<u64, Vec<Value>>,
    pub(crate) interactions: HashMap<u64, InteractionRec>,
    /// The bot's nickname per guild (set with `PATCH /guilds/{id}/members/@me`).
    pub(crate) nicks: BTreeMap<u64, Option<String>>,
    pub(crate) bot_messages: Vec<Value>,
    pub(crate) faults: Faults,
    pub(crate) fault_rng: Rng,
    pub(crate) rng: Rng,
    pub(crate) speed: f64,
    pub(crate) next_id: u64,
    pub(crate) next_conn: u64,
    pub(crate) stats: Stats,
    /// The DAVE delivery service.
    pub(crate) dave: DaveServer,
}

impl State {
    pub(crate) fn new(cfg: &Config) -> Self {
        let seed = rand::random::<u64>();
        Self {
            users: BTreeMap::new(),
            bot_voice: BTreeMap::new(),
            sessions: HashMap::new(),
            voice: BTreeMap::new(),
            rest_log: Vec::new(),
            gateway_log: Vec::new(),
            voice_log: Vec::new(),
            commands: Vec::new(),
            guild_commands: BTreeMap::new(),
            interactions: HashMap::new(),
            nicks: BTreeMap::new(),
            bot_messages: Vec::new(),
            faults: cfg.faults,
            fault_rng: Rng::new(cfg.faults.seed),
            rng: Rng::new(seed),
            speed: cfg.speed,
            next_id: 1_200_000_000_000_000_000,
            next_conn: 1,
            stats: Stats::default(),
            dave: DaveServer::new(cfg.dave, cfg.bot_user_id, cfg.dave_timing),
        }
    }

    /// A fresh snowflake.
    pub(crate) fn snowflake(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A fresh connection id.
    pub(crate) fn conn_id(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// A random hex string of `n` bytes.
    pub(crate) fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| format!("{:02x}", self.rng.next_u64() as u8))
            .collect()
    }

    /// A fresh SSRC not used by anyone.
    pub(crate) fn ssrc(&mut self) -> u32 {
        loop {
            let s = (self.rng.next_u64() as u32) | 1;
            let used = self.users.values().any(|u| u.ssrc == s)
                || self.voice.values().any(|v| v.ssrc == s);
            if !used {
                return s;
            }
        }
    }

    /// Sends a dispatch to every session (connected ones get it now, resumable ones on Resume).
    pub(crate) fn dispatch_all(&mut self, t: &str, d: &Value) {
        for s in self.sessions.values_mut() {
            s.dispatch(t, d);
        }
    }

    /// Sends a raw (non-dispatch) gateway message to every connected session.
    pub(crate) fn gateway_signal(&mut self, out: impl Fn() -> GwOut) -> usize {
        let mut n = 0;
        for s in self.sessions.values_mut() {
            if let Some((_, tx)) = &s.conn
                && tx.send(out()).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// The bot's voice connection carrying `channel`, if any.
    pub(crate) fn voice_in_channel(&mut self, channel: u64) -> Option<&mut VoiceConn> {
        self.voice.values_mut().find(|v| v.channel_id == channel)
    }

    /// The voice connection whose WebSocket is connection `conn_id`.
    pub(crate) fn voice_by_ws(&mut self, conn_id: u64) -> Option<&mut VoiceConn> {
        self.voice
            .values_mut()
            .find(|v| v.ws.as_ref().is_some_and(|(id, _)| *id == conn_id))
    }

    /// Moves DAVE forward (rounds, commits, transitions) and delivers its messages.
    pub(crate) fn dave_pump(&mut self, now: tokio::time::Instant) {
        let bot_in: Vec<u64> = self
            .voice
            .values()
            .filter(|v| v.media_ready())
            .map(|v| v.channel_id)
            .collect();
        let out = self.dave.advance(now, &bot_in);
        self.dave_deliver(out);
    }

    /// Delivers DAVE messages to the bot's connections of their channels.
    pub(crate) fn dave_deliver(&mut self, out: Vec<(u64, ToBot)>) {
        for (channel, msg) in out {
            if let Some(v) = self.voice_in_channel(channel) {
                v.send_dave(msg);
            }
        }
    }

    pub(crate) fn user(&mut self, id: u64) -> Result<&mut FakeUser> {
        self.users.get_mut(&id).ok_or(Error::UnknownUser(id))
    }
}

/// State plus the notifications that waiters listen to.
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    /// Every guild, the first one first (from `cfg`).
    pub(crate) guilds: Vec<GuildSpec>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) gateway_url: String,
    pub(crate) voice_endpoint: String,
}

impl Shared {
    pub(crate) fn new(cfg: Config, gateway_url: String, voice_endpoint: String) -> Self {
        let state = Mutex::new(State::new(&cfg));
        Self {
            guilds: cfg.guilds(),
            cfg,
            state,
            version: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            gateway_url,
            voice_endpoint,
        }
    }

    /// The first guild.
    pub(crate) fn first_guild(&self) -> &GuildSpec {
        &self.guilds[0]
    }

    /// A guild by id.
    pub(crate) fn guild(&self, id: u64) -> Option<&GuildSpec> {
        self.guilds.iter().find(|g| g.id == id)
    }

    /// The guild a (text or voice) channel belongs to.
    pub(crate) fn guild_of_channel(&self, channel: u64) -> Option<&GuildSpec> {
        self.guilds.iter().find(|g| g.has_channel(channel))
    }

    /// The guild whose voice channel `channel` is.
    pub(crate) fn guild_of_voice_channel(&self, channel: u64) -> Option<&GuildSpec> {
        self.guilds.iter().find(|g| g.has_voice_channel(channel))
    }

    /// Locks the state for a short, non-async critical section.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells waiters that the state changed.
    pub(crate) fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Runs `f` under the lock and tells waiters the state changed.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.bump();
        out
    }

    /// Waits until `pred` returns `Some`, re-checking on each state change.
    pub(crate) async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &'static str,
        mut pred: impl FnMut(&State) -> Option<T>,
    ) -> Result<T> {
        let mut rx = self.version.subscribe();
        let fut = async {
            loop {
                if let Some(v) = pred(&self.lock()) {
                    return Ok(v);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Shutdown);
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or(Err(Error::Timeout(timeout, what)))
    }

    /// A receiver that resolves when the fake shuts down.
    pub(crate) fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Resolves when `rx` sees shutdown.
pub(crate) async fn shutdown_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Accepts connections on `listener` until the fake shuts down, running `handle` on each in a
/// task of its own. `what` names the server in warnings.
pub(crate) async fn accept_until_shutdown<F, Fut>(
    listener: tokio::net::TcpListener,
    shared: &Shared,
    what: &'static str,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut sd = shared.shutdown_rx();
    loop {
        tokio::select! {
            _ = sd.wait_for(|v| *v) => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream));
                }
                Err(e) => tracing::warn!("{what} accept failed: {e}"),
            }
        }
    }
}

/// Replaces `token` fields (any depth) with a placeholder, for logs and records.
pub(crate) fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "token" {
                        *x = Value::String("<redacted>".into());
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}
