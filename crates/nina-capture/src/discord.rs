//! The Discord connection: one gateway shard (twilight), the REST client, songbird's voice
//! driver, and who is in which voice channel.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use songbird::shards::TwilightMap;
use songbird::{CoreEvent, Songbird};
use tokio::sync::mpsc;
use twilight_gateway::{ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt};
use twilight_model::gateway::payload::incoming::GuildCreate;
use twilight_model::guild::Member;
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, ChannelMarker, GuildMarker, UserMarker};
use twilight_model::voice::VoiceState;

use crate::receive::{Receiver, Shared};
use crate::{CaptureError, CaptureEvent, CaptureStats, UserId, VoiceConfig};

/// A bot token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token (surrounding whitespace removed; a leading `Bot ` is accepted).
    pub fn new(token: &str) -> Self {
        let t = token.trim();
        Self(t.strip_prefix("Bot ").unwrap_or(t).to_string())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret, for the libraries that send it.
    fn secret(&self) -> String {
        self.0.clone()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where Discord is. Both default to the real Discord; tests point them at a stand-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Gateway URL (`ws://` or `wss://`), instead of the one Discord announces.
    pub gateway: Option<String>,
    /// `host:port` of a plain-HTTP REST API, instead of Discord's.
    pub api: Option<String>,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct DiscordConfig {
    /// The bot token.
    pub token: Token,
    /// Also receive guild messages with their content (for prefix commands; a privileged intent).
    pub message_content: bool,
    /// Endpoints.
    pub endpoints: Endpoints,
    /// Voice receive.
    pub voice: VoiceConfig,
}

/// A person in a voice channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceMember {
    /// User id.
    pub user: UserId,
    /// The name shown in the guild (nickname, else global name, else user name), when known.
    pub name: Option<String>,
    /// A bot account.
    pub bot: bool,
}

#[derive(Debug, Default)]
struct GuildState {
    name: Option<String>,
    channels: HashMap<u64, String>,
    /// user -> voice channel.
    voice: HashMap<u64, u64>,
    members: HashMap<u64, (Option<String>, bool)>,
}

#[derive(Debug)]
struct Active {
    channel: u64,
    shared: Arc<Shared>,
    /// The bot is leaving to join again at once ([`Discord::reconnect_voice`]): its voice
    /// state without a channel does not end the recording.
    reconnecting: bool,
}

#[derive(Debug, Default)]
struct State {
    guilds: Mutex<HashMap<u64, GuildState>>,
    recordings: Mutex<HashMap<u64, Active>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn member_name(m: &Member) -> Option<String> {
    m.nick
        .clone()
        .or_else(|| m.user.global_name.clone())
        .or_else(|| Some(m.user.name.clone()))
}

impl State {
    /// Sends an event to every recording.
    fn broadcast(&self, ev: impl Fn(u64) -> CaptureEvent) {
        for rec in lock(&self.recordings).values() {
            rec.shared.send(ev(rec.shared.now()));
        }
    }

    fn member(&self, guild: u64, user: u64) -> VoiceMember {
        let guilds = lock(&self.guilds);
        let (name, bot) = guilds
            .get(&guild)
            .and_then(|g| g.members.get(&user).cloned())
            .unwrap_or((None, false));
        VoiceMember {
            user: UserId(user),
            name,
            bot,
        }
    }

    fn voice_state(&self, bot: UserId, vs: &VoiceState) {
        let Some(guild) = vs.guild_id.map(|g| g.get()) else {
            return;
        };
        let user = vs.user_id.get();
        let channel = vs.channel_id.map(|c| c.get());
        let before = {
            let mut guilds = lock(&self.guilds);
            let g = guilds.entry(guild).or_default();
            if let Some(m) = &vs.member {
                g.members.insert(user, (member_name(m), m.user.bot));
            }
            match channel {
                Some(c) => g.voice.insert(user, c),
                None => g.voice.remove(&user),
            }
        };
        let recordings = lock(&self.recordings);
        let Some(rec) = recordings.get(&guild) else {
            return;
        };
        let s = &rec.shared;
        if UserId(user) == bot {
            match channel {
                Some(c) if c == rec.channel => {}
                None if rec.reconnecting => {}
                Some(c) => s.send(CaptureEvent::Ended {
                    frame: s.now(),
                    reason: format!("moved to channel {c}"),
                }),
                None => s.send(CaptureEvent::Ended {
                    frame: s.now(),
                    reason: "disconnected from the voice channel".into(),
                }),
            }
            return;
        }
        let was_in = before == Some(rec.channel);
        let is_in = channel == Some(rec.channel);
        if is_in && !was_in {
            lock(&s.members).insert(UserId(user));
            s.send(CaptureEvent::Joined {
                frame: s.now(),
                member: self.member(guild, user),
            });
        } else if was_in && !is_in {
            lock(&s.members).remove(&UserId(user));
            s.left(UserId(user));
            s.send(CaptureEvent::Left {
                frame: s.now(),
                user: UserId(user),
            });
        }
    }

    fn has_guild(&self, guild: u64) -> bool {
        lock(&self.guilds).contains_key(&guild)
    }

    fn guild_create(&self, bot: UserId, g: &GuildCreate) {
        let GuildCreate::Available(g) = g else {
            return;
        };
        {
            let mut guilds = lock(&self.guilds);
            let st = guilds.entry(g.id.get()).or_default();
            st.name = Some(g.name.clone());
            for c in &g.channels {
                if let Some(n) = &c.name {
                    st.channels.insert(c.id.get(), n.clone());
                }
            }
            for m in &g.members {
                st.members
                    .insert(m.user.id.get(), (member_name(m), m.user.bot));
            }
        }
        for vs in &g.voice_states {
            let mut vs = vs.clone();
            vs.guild_id = Some(g.id);
            self.voice_state(bot, &vs);
        }
    }
}

/// A connection to Discord: gateway, REST and voice.
#[derive(Clone)]
pub struct Discord {
    http: Arc<twilight_http::Client>,
    songbird: Arc<Songbird>,
    state: Arc<State>,
    bot: UserId,
    application: Id<ApplicationMarker>,
    voice: VoiceConfig,
}

impl fmt::Debug for Discord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discord")
            .field("bot", &self.bot)
            .field("application", &self.application)
            .finish_non_exhaustive()
    }
}

impl Discord {
    /// Connects: checks the token over REST, starts the gateway shard and waits for READY and
    /// the GUILD_CREATE of every guild it lists (up to 30 s; a guild still unavailable then is
    /// not waited for, a bot in no guild does not wait). Every gateway event is handed to the returned receiver after
    /// songbird and the voice-channel bookkeeping have seen it; the receiver ends when the
    /// shard stops for good (a fatal close such as an invalid token).
    pub async fn connect(
        cfg: DiscordConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), CaptureError> {
        if cfg.token.is_empty() {
            return Err(CaptureError::Config("the bot token is empty".into()));
        }
        let mut http = twilight_http::Client::builder().token(cfg.token.secret());
        if let Some(api) = &cfg.endpoints.api {
            http = http.proxy(api.clone(), true);
        }
        let http = Arc::new(http.timeout(Duration::from_secs(15)).build());
        let rest = |e: &dyn fmt::Display| CaptureError::Http(e.to_string());
        let me = http
            .current_user()
            .await
            .map_err(|e| rest(&e))?
            .model()
            .await
            .map_err(|e| rest(&e))?;
        let app = http
            .current_user_application()
            .await
            .map_err(|e| rest(&e))?
            .model()
            .await
            .map_err(|e| rest(&e))?;
        let bot = UserId(me.id.get());
        let mut intents = Intents::GUILDS | Intents::GUILD_VOICE_STATES;
        if cfg.message_content {
            intents |= Intents::GUILD_MESSAGES | Intents::MESSAGE_CONTENT;
        }
        let mut gw = ConfigBuilder::new(cfg.token.secret(), intents);
        if let Some(url) = &cfg.endpoints.gateway {
            gw = gw.proxy_url(url.clone());
        }
        let mut shard = Shard::with_config(ShardId::ONE, gw.build());
        let map = TwilightMap::new(HashMap::from([(0u32, shard.sender())]));
        let songbird = Arc::new(Songbird::twilight(Arc::new(map), me.id));
        songbird.set_config(cfg.voice.songbird());
        let state = Arc::new(State::default());
        let (tx, rx) = mpsc::unbounded_channel();
        // Start-up: READY seen (`Some`), then every guild it lists created (the set empties).
        let (ready_tx, mut ready_rx) =
            tokio::sync::watch::channel::<Result<Option<usize>, String>>(Ok(None));
        {
            let songbird = songbird.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let mut pending: Option<HashSet<u64>> = None;
                while let Some(item) = shard.next_event(EventTypeFlags::all()).await {
                    let ev = match item {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(error = %e, "gateway receive error");
                            continue;
                        }
                    };
                    match &ev {
                        Event::GuildCreate(g) => {
                            state.guild_create(bot, g);
                            if let Some(p) = pending.as_mut()
                                && p.remove(&g.id().get())
                            {
                                let _ = ready_tx.send(Ok(Some(p.len())));
                            }
                        }
                        Event::VoiceStateUpdate(v) => state.voice_state(bot, &v.0),
                        Event::GatewayClose(frame) => {
                            let code = frame.as_ref().map(|f| f.code);
                            tracing::warn!(?code, "gateway closed");
                            state.broadcast(|frame| CaptureEvent::GatewayLost {
                                frame,
                                reason: format!("gateway closed ({code:?})"),
                            });
                        }
                        Event::GatewayReconnect => {
                            tracing::info!("gateway reconnecting");
                            state.broadcast(|frame| CaptureEvent::GatewayLost {
                                frame,
                                reason: "gateway asked to reconnect".into(),
                            });
                        }
                        Event::GatewayInvalidateSession(resumable) => {
                            tracing::info!(resumable, "gateway session invalidated");
                            state.broadcast(|frame| CaptureEvent::GatewayLost {
                                frame,
                                reason: format!(
                                    "gateway session invalidated (resumable: {resumable})"
                                ),
                            });
                        }
                        Event::Resumed => {
                            tracing::info!("gateway resumed");
                            state.broadcast(|frame| CaptureEvent::GatewayBack {
                                frame,
                                resumed: true,
                            });
                        }
                        Event::Ready(r) => {
                            tracing::info!(guilds = r.guilds.len(), "gateway ready");
                            if pending.is_none() {
                                let p: HashSet<u64> = r
                                    .guilds
                                    .iter()
                                    .map(|g| g.id.get())
                                    .filter(|g| !state.has_guild(*g))
                                    .collect();
                                let _ = ready_tx.send(Ok(Some(p.len())));
                                pending = Some(p);
                            }
                            state.broadcast(|frame| CaptureEvent::GatewayBack {
                                frame,
                                resumed: false,
                            });
                        }
                        _ => {}
                    }
                    songbird.process(&ev).await;
                    let _ = tx.send(ev);
                }
                tracing::warn!("gateway shard stopped");
                ready_tx.send_if_modified(|r| {
                    if matches!(r, Ok(Some(0))) {
                        return false;
                    }
                    *r = Err("the gateway closed the connection".into());
                    true
                });
            });
        }
        // Wait for READY and every guild it lists (names for the sessions); a guild that stays
        // unavailable for 30 s is not waited for.
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            ready_rx.wait_for(|r| !matches!(r, Ok(None) | Ok(Some(1..)))),
        )
        .await
        .map(|r| r.map(|v| v.clone()));
        match waited {
            Ok(Ok(r)) => {
                if let Err(e) = r {
                    return Err(CaptureError::Gateway(e));
                }
            }
            Ok(Err(_)) => return Err(CaptureError::Gateway("the shard task ended".into())),
            Err(_) => match &*ready_rx.borrow() {
                Ok(Some(n)) => tracing::warn!(unavailable = n, "guilds not created within 30 s"),
                _ => return Err(CaptureError::Gateway("no READY within 30 s".into())),
            },
        }
        Ok((
            Self {
                http,
                songbird,
                state,
                bot,
                application: app.id,
                voice: cfg.voice,
            },
            rx,
        ))
    }

    /// The REST client (authorised as the bot).
    pub fn http(&self) -> &twilight_http::Client {
        &self.http
    }

    /// songbird's manager.
    pub fn songbird(&self) -> &Arc<Songbird> {
        &self.songbird
    }

    /// The bot's user id.
    pub fn bot_id(&self) -> UserId {
        self.bot
    }

    /// The application id (for slash commands).
    pub fn application_id(&self) -> Id<ApplicationMarker> {
        self.application
    }

    /// The voice channel `user` is in, in `guild`.
    pub fn voice_channel_of(&self, guild: u64, user: u64) -> Option<u64> {
        lock(&self.state.guilds)
            .get(&guild)
            .and_then(|g| g.voice.get(&user).copied())
    }

    /// People (not the bot) in a voice channel.
    pub fn members_in(&self, guild: u64, channel: u64) -> Vec<VoiceMember> {
        let users: Vec<u64> = lock(&self.state.guilds)
            .get(&guild)
            .map(|g| {
                g.voice
                    .iter()
                    .filter(|(u, c)| **c == channel && **u != self.bot.0)
                    .map(|(u, _)| *u)
                    .collect()
            })
            .unwrap_or_default();
        let mut v: Vec<VoiceMember> = users
            .into_iter()
            .map(|u| self.state.member(guild, u))
            .collect();
        v.sort_by_key(|m| m.user);
        v
    }

    /// A guild's name, when known.
    pub fn guild_name(&self, guild: u64) -> Option<String> {
        lock(&self.state.guilds)
            .get(&guild)
            .and_then(|g| g.name.clone())
    }

    /// A channel's name, when known.
    pub fn channel_name(&self, guild: u64, channel: u64) -> Option<String> {
        lock(&self.state.guilds)
            .get(&guild)
            .and_then(|g| g.channels.get(&channel).cloned())
    }

    /// Guilds the bot is in.
    pub fn guilds(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.state.guilds).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The voice channel being recorded in `guild`, if any.
    pub fn recording_in(&self, guild: u64) -> Option<u64> {
        lock(&self.state.recordings).get(&guild).map(|a| a.channel)
    }

    /// Joins `channel` of `guild` and starts receiving. One recording per guild: a guild
    /// already recorded is refused.
    pub async fn record(&self, guild: u64, channel: u64) -> Result<Recording, CaptureError> {
        let join_err = |reason: String| CaptureError::Join {
            guild,
            channel,
            reason,
        };
        let gid = match (
            Id::<GuildMarker>::new_checked(guild),
            Id::<ChannelMarker>::new_checked(channel),
        ) {
            (Some(g), Some(_)) => g,
            _ => return Err(join_err("ids must not be 0".into())),
        };
        let (tx, rx) = mpsc::channel(self.voice.queue.max(16));
        let shared = Arc::new(Shared::new(&self.voice, tx));
        {
            let mut recs = lock(&self.state.recordings);
            if let Some(a) = recs.get(&guild) {
                return Err(join_err(format!("already recording channel {}", a.channel)));
            }
            recs.insert(
                guild,
                Active {
                    channel,
                    shared: shared.clone(),
                    reconnecting: false,
                },
            );
        }
        let started_at = SystemTime::now();
        crate::dave::reset(channel);
        let joined = self.join_with_handlers(guild, channel, &shared).await;
        if let Err(e) = joined {
            lock(&self.state.recordings).remove(&guild);
            let _ = self.songbird.remove(gid).await;
            return Err(join_err(e.to_string()));
        }
        tracing::info!(guild, channel, "recording");
        Ok(Recording {
            guild,
            channel,
            started_at,
            events: rx,
            shared,
        })
    }

    async fn join_with_handlers(
        &self,
        guild: u64,
        channel: u64,
        shared: &Arc<Shared>,
    ) -> Result<(), songbird::error::JoinError> {
        let (Some(gid), Some(cid)) = (
            Id::<GuildMarker>::new_checked(guild),
            Id::<ChannelMarker>::new_checked(channel),
        ) else {
            return Err(songbird::error::JoinError::NoCall);
        };
        // Handlers go on before joining, so the first Speaking events are not missed.
        {
            let call = self.songbird.get_or_insert(gid);
            let mut call = call.lock().await;
            call.remove_all_global_events();
            for ev in [
                CoreEvent::SpeakingStateUpdate,
                CoreEvent::VoiceTick,
                CoreEvent::RtpPacket,
                CoreEvent::ClientDisconnect,
                CoreEvent::DriverConnect,
                CoreEvent::DriverReconnect,
                CoreEvent::DriverDisconnect,
            ] {
                call.add_global_event(ev.into(), Receiver(shared.clone()));
            }
        }
        let present = self.members_in(guild, channel);
        {
            let mut m = lock(&shared.members);
            for p in &present {
                m.insert(p.user);
            }
        }
        for member in present {
            shared.send(CaptureEvent::Joined { frame: 0, member });
        }
        self.songbird.join(gid, cid).await.map(|_| ())
    }

    /// Leaves the recorded channel of `guild` and joins it again at once, keeping the
    /// recording: a new voice connection, with new DAVE state. For a connection whose DAVE
    /// state went bad (audio that keeps failing to decrypt, a transition that never ends).
    pub async fn reconnect_voice(&self, guild: u64) -> Result<(), CaptureError> {
        let Some(channel) = self.recording_in(guild) else {
            return Ok(());
        };
        let err = |reason: String| CaptureError::Join {
            guild,
            channel,
            reason,
        };
        let (Some(gid), Some(cid)) = (
            Id::<GuildMarker>::new_checked(guild),
            Id::<ChannelMarker>::new_checked(channel),
        ) else {
            return Ok(());
        };
        let set = |on: bool| {
            if let Some(a) = lock(&self.state.recordings).get_mut(&guild) {
                a.reconnecting = on;
            }
        };
        set(true);
        let result = async {
            let call = self
                .songbird
                .get(gid)
                .ok_or_else(|| err("no call".into()))?;
            call.lock()
                .await
                .leave()
                .await
                .map_err(|e| err(e.to_string()))?;
            // A join sent before Discord confirmed the leave is cancelled by that confirmation:
            // wait for it (at most 5 s), and try the join a few times.
            let bot = self.bot_id().0;
            for _ in 0..50 {
                let still_in = lock(&self.state.guilds)
                    .get(&guild)
                    .is_some_and(|g| g.voice.contains_key(&bot));
                if !still_in {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let mut last = String::new();
            for attempt in 0..3 {
                match self.songbird.join(gid, cid).await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(guild, attempt, "rejoin failed: {e}");
                        last = e.to_string();
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
            Err(err(last))
        }
        .await;
        set(false);
        result
    }

    /// Leaves the voice channel of `guild` and ends its recording (its stream then ends).
    pub async fn stop(&self, guild: u64) -> Result<(), CaptureError> {
        lock(&self.state.recordings).remove(&guild);
        if let Some(gid) = Id::<GuildMarker>::new_checked(guild) {
            if let Some(call) = self.songbird.get(gid) {
                call.lock().await.remove_all_global_events();
            }
            self.songbird
                .remove(gid)
                .await
                .or_else(|e| match e {
                    songbird::error::JoinError::NoCall => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| CaptureError::Join {
                    guild,
                    channel: 0,
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Joins the channel again after the voice connection was lost for good (songbird gave up
    /// reconnecting), keeping the same recording.
    pub async fn rejoin(&self, guild: u64) -> Result<(), CaptureError> {
        let Some(channel) = self.recording_in(guild) else {
            return Ok(());
        };
        let (Some(gid), Some(cid)) = (
            Id::<GuildMarker>::new_checked(guild),
            Id::<ChannelMarker>::new_checked(channel),
        ) else {
            return Ok(());
        };
        self.songbird
            .join(gid, cid)
            .await
            .map(|_| ())
            .map_err(|e| CaptureError::Join {
                guild,
                channel,
                reason: e.to_string(),
            })
    }

    /// The user id type twilight uses, for convenience.
    pub fn user_id(id: UserId) -> Option<Id<UserMarker>> {
        Id::new_checked(id.0)
    }
}

/// The event stream of a [`Recording`] is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the recording's event stream is closed")]
pub struct Closed;

/// One voice channel being recorded: its events, in order.
#[derive(Debug)]
pub struct Recording {
    /// Guild id.
    pub guild: u64,
    /// Voice channel id.
    pub channel: u64,
    /// When frame 0 began (wall clock).
    pub started_at: SystemTime,
    events: mpsc::Receiver<CaptureEvent>,
    shared: Arc<Shared>,
}

impl Recording {
    /// The next event; `None` once the recording was stopped and everything was delivered.
    pub async fn next(&mut self) -> Option<CaptureEvent> {
        self.events.recv().await
    }

    /// The next event, waiting on a thread that is not the async runtime's.
    pub fn blocking_next(&mut self) -> Option<CaptureEvent> {
        self.events.blocking_recv()
    }

    /// The next event if one is waiting (`Ok(None)`: none yet); `Err(Closed)` once the stream
    /// is closed and empty.
    pub fn try_next(&mut self) -> Result<Option<CaptureEvent>, Closed> {
        match self.events.try_recv() {
            Ok(ev) => Ok(Some(ev)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Closed),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CaptureStats {
        self.shared.stats()
    }

    /// Audio that never reached the recording, per user (users with no loss are absent).
    pub fn losses(&self) -> std::collections::HashMap<UserId, crate::UserLoss> {
        self.shared.losses()
    }

    /// What DAVE did in this recording's voice connection; `None` when the process has no
    /// [`crate::dave::layer`] to observe it.
    pub fn dave(&self) -> Option<crate::DaveStats> {
        crate::dave::stats(self.channel)
    }

    /// Events waiting to be taken.
    pub fn queued(&self) -> usize {
        self.events.len()
    }

    /// The current frame on the session clock.
    pub fn now(&self) -> u64 {
        self.shared.now()
    }

    /// Closes the stream: events already queued are still delivered, then `next` gives `None`.
    pub fn close(&mut self) {
        self.events.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows() {
        let t = Token::new("  Bot abc.def.secret \n");
        assert_eq!(t.secret(), "abc.def.secret");
        assert!(!format!("{t:?} {t}").contains("secret"));
        let cfg = DiscordConfig {
            token: t,
            message_content: false,
            endpoints: Endpoints::default(),
            voice: VoiceConfig::default(),
        };
        assert!(!format!("{cfg:?}").contains("secret"));
    }
}
