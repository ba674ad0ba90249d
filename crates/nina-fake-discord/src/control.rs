//! The control handle: drive the fake guilds and read what the bot did.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::info;

use crate::audio;
use crate::config::Faults;
use crate::dave::{DaveCallState, DaveFault};
use crate::error::{Error, Result};
use crate::gateway::bot_leave_voice;
use crate::media::TRAILING_SILENCE;
use crate::payloads;
use crate::state::{
    FakeUser, GwOut, InteractionRec, RecordedCommand, RecordedRequest, RtpStream, Shared, Speech,
    SpeechReport, State, Stats, VoiceOut,
};

/// Cloneable handle to a running [`crate::FakeDiscord`].
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// A queued speech; await [`SpeechHandle::finished`] for its report.
#[derive(Debug)]
pub struct SpeechHandle {
    /// The speaking user.
    pub user_id: u64,
    /// Number of 20 ms Opus frames queued.
    pub frames: usize,
    /// The exact Opus frames queued, so a test can decode them as a reference.
    pub opus_frames: Vec<Vec<u8>>,
    done: oneshot::Receiver<SpeechReport>,
}

impl SpeechHandle {
    /// The report, if the speech has already finished (never waits).
    #[cfg(test)]
    pub(crate) fn try_report(&mut self) -> Option<SpeechReport> {
        self.done.try_recv().ok()
    }

    /// Waits until the speech and its trailing silence have been sent (or dropped).
    pub async fn finished(self, timeout: Duration) -> Result<SpeechReport> {
        match tokio::time::timeout(timeout, self.done).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::Timeout(timeout, "speech to finish")),
        }
    }
}

/// A simulated slash command, as sent in INTERACTION_CREATE.
#[derive(Debug, Clone, Serialize)]
pub struct Interaction {
    /// Interaction id.
    pub id: u64,
    /// Interaction token (the bot answers at `/interactions/{id}/{token}/callback`).
    pub token: String,
}

/// The bot's voice in one guild, in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuildVoice {
    /// The guild.
    pub guild_id: u64,
    /// The bot's voice channel there (per its op 4), if any.
    pub channel: Option<u64>,
    /// True once the guild's voice connection has a negotiated key and UDP peer.
    pub media_ready: bool,
    /// The bot's SSRC on that voice connection.
    pub ssrc: Option<u32>,
    /// The encryption mode the bot selected there.
    pub crypto_mode: Option<&'static str>,
}

/// A point-in-time view of the fake's state.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The bot's voice channel in the first guild (per its op 4), if any.
    pub bot_voice_channel: Option<u64>,
    /// True once the bot's voice connection in the first guild has a negotiated key and UDP peer.
    pub voice_media_ready: bool,
    /// The bot's SSRC on the first guild's voice connection.
    pub bot_ssrc: Option<u32>,
    /// The encryption mode the bot selected in the first guild.
    pub crypto_mode: Option<&'static str>,
    /// The bot's voice in every guild, the first guild first.
    pub guilds: Vec<GuildVoice>,
    /// Fake users: `(id, name, voice channel, ssrc)`.
    pub users: Vec<(u64, String, Option<u64>, u32)>,
    /// Counters.
    pub stats: Stats,
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Adds a member of every guild (announced with GUILD_MEMBER_ADD in each); returns its
    /// user id.
    pub fn add_user(&self, name: &str) -> u64 {
        let shared = &self.shared;
        self.shared.update(|st| {
            let id = st.snowflake();
            let ssrc = st.ssrc();
            let session_id = st.hex(16);
            let (seq, ts) = (st.rng.next_u64() as u16, st.rng.next_u64() as u32);
            st.users.insert(
                id,
                FakeUser {
                    id,
                    name: name.to_string(),
                    voice_channel: None,
                    session_id,
                    ssrc,
                    rtp: RtpStream {
                        seq,
                        ts,
                        held: None,
                    },
                    speaking: None,
                    pending: Default::default(),
                },
            );
            for g in &shared.guilds {
                let mut m = payloads::member(id, name, false);
                m["guild_id"] = json!(g.id.to_string());
                st.dispatch_all("GUILD_MEMBER_ADD", &m);
            }
            info!(user = id, "fake user added");
            id
        })
    }

    fn check_voice_channel(&self, channel: u64) -> Result<()> {
        match self.shared.guild_of_voice_channel(channel) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownChannel(channel)),
        }
    }

    /// Puts `user` in voice `channel` of any guild (joining, or moving from another channel,
    /// possibly of another guild: that guild then sees the user leave).
    pub fn join_voice(&self, user: u64, channel: u64) -> Result<()> {
        self.check_voice_channel(channel)?;
        self.shared
            .update(|st| set_user_channel(&self.shared, st, user, Some(channel), false))
    }

    /// Moves `user` to another voice channel (same as [`Self::join_voice`]).
    pub fn move_user(&self, user: u64, channel: u64) -> Result<()> {
        self.join_voice(user, channel)
    }

    /// Takes `user` out of voice.
    pub fn leave_voice(&self, user: u64) -> Result<()> {
        self.shared
            .update(|st| set_user_channel(&self.shared, st, user, None, false))
    }

    /// Disconnects and reconnects `user` to the same channel: a new SSRC, as after a real reconnect.
    /// Returns the new SSRC.
    pub fn rejoin_voice(&self, user: u64) -> Result<u32> {
        self.shared.update(|st| {
            let ch = st
                .user(user)?
                .voice_channel
                .ok_or(Error::NotInVoice(user))?;
            set_user_channel(&self.shared, st, user, None, false)?;
            set_user_channel(&self.shared, st, user, Some(ch), true)?;
            Ok(st.user(user)?.ssrc)
        })
    }

    /// Queues a WAV file as `user`'s speech (converted to 48 kHz, Opus-encoded, 20 ms frames).
    pub async fn speak_wav(&self, user: u64, path: &Path) -> Result<SpeechHandle> {
        let path = path.to_path_buf();
        let pcm = tokio::task::spawn_blocking(move || audio::load_wav_mono_48k(&path))
            .await
            .map_err(|e| Error::Audio(e.to_string()))??;
        self.speak_pcm(user, pcm).await
    }

    /// Queues 48 kHz mono samples as `user`'s speech.
    pub async fn speak_pcm(&self, user: u64, pcm_48k: Vec<f32>) -> Result<SpeechHandle> {
        let bitrate = self.shared.cfg.opus_bitrate;
        let frames =
            tokio::task::spawn_blocking(move || audio::encode_opus_frames(&pcm_48k, bitrate))
                .await
                .map_err(|e| Error::Audio(e.to_string()))??;
        self.speak_opus(user, frames)
    }

    /// Queues ready-made 20 ms Opus frames (48 kHz stereo) as `user`'s speech.
    pub fn speak_opus(&self, user: u64, frames: Vec<Vec<u8>>) -> Result<SpeechHandle> {
        let n = frames.len();
        let rx = self.queue(user, frames.clone().into(), 0, n)?;
        Ok(SpeechHandle {
            user_id: user,
            frames: n,
            opus_frames: frames,
            done: rx,
        })
    }

    /// Queues `count` frames of a shared Opus encoding as `user`'s speech, starting at frame
    /// `start` and wrapping around to the first frame at the end: many users can replay one
    /// encoding, for as long as wanted, without copying or encoding anything. The media clock
    /// gives every packet its own sequence number and timestamp, as for any speech.
    /// The handle's `opus_frames` is empty (the frames are the caller's `frames`).
    pub fn speak_opus_shared(
        &self,
        user: u64,
        frames: Arc<[Vec<u8>]>,
        start: usize,
        count: usize,
    ) -> Result<SpeechHandle> {
        if frames.is_empty() && count > 0 {
            return Err(Error::Audio("no Opus frames to replay".into()));
        }
        let start = if frames.is_empty() {
            0
        } else {
            start % frames.len()
        };
        let rx = self.queue(user, frames, start, count)?;
        Ok(SpeechHandle {
            user_id: user,
            frames: count,
            opus_frames: Vec::new(),
            done: rx,
        })
    }

    fn queue(
        &self,
        user: u64,
        frames: Arc<[Vec<u8>]>,
        start: usize,
        count: usize,
    ) -> Result<oneshot::Receiver<SpeechReport>> {
        let (tx, rx) = oneshot::channel();
        self.shared.update(|st| {
            let u = st.user(user)?;
            u.pending.push_back(Speech {
                frames,
                next: start,
                left: count,
                silence_left: TRAILING_SILENCE,
                report: SpeechReport {
                    user_id: user,
                    frames: u32::try_from(count).unwrap_or(u32::MAX),
                    ..Default::default()
                },
                done: Some(tx),
                started: false,
                announced: false,
            });
            Ok::<_, Error>(())
        })?;
        Ok(rx)
    }

    /// `user` types `content` in `channel` of any guild (MESSAGE_CREATE with that guild's id);
    /// returns the message id.
    pub fn type_message(&self, user: u64, channel: u64, content: &str) -> Result<u64> {
        let guild = self
            .shared
            .guild_of_channel(channel)
            .map(|g| g.id)
            .ok_or(Error::UnknownChannel(channel))?;
        self.shared.update(|st| {
            let (uid, name) = {
                let u = st.user(user)?;
                (u.id, u.name.clone())
            };
            let id = st.snowflake();
            let author = payloads::user(uid, &name, false);
            let m = payloads::message(guild, id, channel, &author, false, content);
            st.dispatch_all("MESSAGE_CREATE", &m);
            Ok(id)
        })
    }

    /// `user` runs slash command `name` with `options` (a JSON array of option objects)
    /// in `channel` (INTERACTION_CREATE, with the guild `channel` belongs to; the first guild
    /// for an unknown channel). The command need not be registered.
    pub fn slash_command(
        &self,
        user: u64,
        channel: u64,
        name: &str,
        options: Value,
    ) -> Result<Interaction> {
        let cfg = &self.shared.cfg;
        let guild = self
            .shared
            .guild_of_channel(channel)
            .unwrap_or_else(|| self.shared.first_guild());
        self.shared.update(|st| {
            let command_id = st
                .commands
                .iter()
                .chain(st.guild_commands.get(&guild.id).into_iter().flatten())
                .find(|c| c["name"] == name)
                .and_then(|c| c["id"].as_str().and_then(|s| s.parse().ok()));
            let command_id = match command_id {
                Some(c) => c,
                None => st.snowflake(),
            };
            let id = st.snowflake();
            let token = format!("interaction-{}", st.hex(24));
            let u = st.users.get(&user).ok_or(Error::UnknownUser(user))?;
            let i = payloads::interaction(
                cfg, guild, id, &token, u, channel, command_id, name, &options,
            );
            st.interactions.insert(
                id,
                InteractionRec {
                    token: token.clone(),
                    channel_id: channel,
                },
            );
            st.dispatch_all("INTERACTION_CREATE", &i);
            Ok(Interaction { id, token })
        })
    }

    /// Kicks the bot out of its voice channel in the first guild (as a moderator would):
    /// VOICE_STATE_UPDATE with no channel, and the voice socket closed with 4014.
    pub fn kick_bot(&self) -> Result<()> {
        self.kick_bot_in(self.shared.first_guild().id)
    }

    /// [`Self::kick_bot`] in `guild`.
    pub fn kick_bot_in(&self, guild: u64) -> Result<()> {
        self.shared.update(|st| {
            if !st.bot_voice.contains_key(&guild) {
                return Err(Error::BotNotInVoice);
            }
            bot_leave_voice(&self.shared, st, guild, Some(4014));
            Ok(())
        })
    }

    /// Drops every main gateway TCP connection without a close frame (the bot should Resume).
    /// Returns how many connections were dropped.
    pub fn drop_gateway(&self) -> usize {
        self.shared.update(|st| st.gateway_signal(|| GwOut::Drop))
    }

    /// Closes every main gateway connection with `code` (e.g. 4000, resumable).
    pub fn close_gateway(&self, code: u16) -> usize {
        self.shared
            .update(|st| st.gateway_signal(|| GwOut::Close(code)))
    }

    /// Sends op 7 Reconnect on every main gateway connection.
    pub fn send_reconnect(&self) -> usize {
        let t = json!({"op": 7, "s": null, "t": null, "d": null}).to_string();
        self.shared
            .update(|st| st.gateway_signal(|| GwOut::Text(t.clone())))
    }

    /// Sends op 9 Invalid Session; when not `resumable`, the sessions are forgotten.
    pub fn invalidate_session(&self, resumable: bool) -> usize {
        let t = json!({"op": 9, "s": null, "t": null, "d": resumable}).to_string();
        self.shared.update(|st| {
            let n = st.gateway_signal(|| GwOut::Text(t.clone()));
            if !resumable {
                st.sessions.clear();
            }
            n
        })
    }

    /// Closes the bot's voice WebSocket in the first guild with `code` (4015 = voice server
    /// crashed, resumable; 4014 = disconnected; 4006 = session no longer valid). The UDP
    /// session is kept for Resume.
    pub fn close_voice(&self, code: u16) -> Result<()> {
        self.close_voice_in(self.shared.first_guild().id, code)
    }

    /// [`Self::close_voice`] for the voice connection of `guild`.
    pub fn close_voice_in(&self, guild: u64, code: u16) -> Result<()> {
        self.shared.update(|st| {
            let v = st.voice.get_mut(&guild).ok_or(Error::BotNotInVoice)?;
            if let Some((_, tx)) = v.ws.take() {
                let _ = tx.send(VoiceOut::Close(code));
            }
            if (code == 4014 || code == 4006)
                && let Some(v) = st.voice.remove(&guild)
            {
                st.dave.bot_gone(v.channel_id);
                st.dave_pump(tokio::time::Instant::now());
            }
            Ok(())
        })
    }

    /// Replaces the RTP faults (loss, reordering, duplicates, jitter).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.update(|st| {
            st.faults = faults;
            st.fault_rng = crate::rng::Rng::new(faults.seed);
        });
    }

    /// Arms a one-shot DAVE fault: it applies to the next event it fits (see [`DaveFault`]).
    pub fn dave_fault(&self, fault: DaveFault) {
        self.shared.update(|st| st.dave.arm(fault));
    }

    /// Lets fake users speak as soon as they hold keys themselves, before the bot can decrypt
    /// them (by default a speech waits until the bot is in the group).
    pub fn set_dave_early_audio(&self, on: bool) {
        self.shared.update(|st| st.dave.early_audio = on);
    }

    /// Downgrades the call in voice `channel` to transport encryption only (op 21 version 0,
    /// then op 22 once the bot is ready).
    pub fn dave_downgrade(&self, channel: u64) -> Result<()> {
        self.check_voice_channel(channel)?;
        self.shared.update(|st| {
            let now = tokio::time::Instant::now();
            let bot_here = st
                .voice_in_channel(channel)
                .is_some_and(|v| v.media_ready());
            let out = st.dave.downgrade(channel, bot_here, now);
            st.dave_deliver(out.into_iter().map(|m| (channel, m)).collect());
            st.dave_pump(now);
        });
        Ok(())
    }

    /// Upgrades the call in voice `channel` to DAVE (op 24 epoch 1: every participant makes a
    /// new key package and the group is formed again).
    pub fn dave_upgrade(&self, channel: u64) -> Result<()> {
        self.check_voice_channel(channel)?;
        self.shared.update(|st| {
            let users: Vec<u64> = st
                .users
                .values()
                .filter(|u| u.voice_channel == Some(channel))
                .map(|u| u.id)
                .collect();
            let bot_here = st
                .voice_in_channel(channel)
                .is_some_and(|v| v.media_ready());
            let out = st.dave.upgrade(channel, &users, bot_here);
            st.dave_deliver(out.into_iter().map(|m| (channel, m)).collect());
            st.dave_pump(tokio::time::Instant::now());
        });
        Ok(())
    }

    /// The DAVE state of the call in voice `channel` (`None` before anyone joined it).
    pub fn dave_state(&self, channel: u64) -> Option<DaveCallState> {
        self.shared.lock().dave.state(channel)
    }

    /// Waits until the call in `channel` satisfies `pred`; returns its state.
    pub async fn wait_for_dave(
        &self,
        channel: u64,
        timeout: Duration,
        mut pred: impl FnMut(&DaveCallState) -> bool,
    ) -> Result<DaveCallState> {
        self.shared
            .wait_for(timeout, "DAVE call state", |st| {
                st.dave.state(channel).filter(|s| pred(s))
            })
            .await
    }

    /// Changes the pacing (1.0 = real time; larger is faster, up to 50).
    pub fn set_speed(&self, speed: f64) {
        self.shared.update(|st| st.speed = speed);
    }

    /// Every REST request the bot made, in order.
    pub fn rest_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().rest_log.clone()
    }

    /// Every main gateway command the bot sent (tokens redacted).
    pub fn gateway_commands(&self) -> Vec<RecordedCommand> {
        self.shared.lock().gateway_log.clone()
    }

    /// Every voice gateway command the bot sent (tokens redacted).
    pub fn voice_commands(&self) -> Vec<RecordedCommand> {
        self.shared.lock().voice_log.clone()
    }

    /// Application commands the bot registered: global ones, then every guild's.
    pub fn registered_commands(&self) -> Vec<Value> {
        let st = self.shared.lock();
        st.commands
            .iter()
            .chain(st.guild_commands.values().flatten())
            .cloned()
            .collect()
    }

    /// Application commands the bot registered for `guild` only.
    pub fn registered_guild_commands(&self, guild: u64) -> Vec<Value> {
        self.shared
            .lock()
            .guild_commands
            .get(&guild)
            .cloned()
            .unwrap_or_default()
    }

    /// The bot's nickname in `guild`, as last set with `PATCH /guilds/{id}/members/@me`.
    pub fn bot_nick(&self, guild: u64) -> Option<String> {
        self.shared.lock().nicks.get(&guild).cloned().flatten()
    }

    /// Messages the bot created through REST.
    pub fn bot_messages(&self) -> Vec<Value> {
        self.shared.lock().bot_messages.clone()
    }

    /// The current state at a glance.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.shared.lock();
        let guilds: Vec<GuildVoice> = self
            .shared
            .guilds
            .iter()
            .map(|g| {
                let v = st.voice.get(&g.id);
                GuildVoice {
                    guild_id: g.id,
                    channel: st.bot_voice.get(&g.id).map(|b| b.channel_id),
                    media_ready: v.is_some_and(|v| v.media_ready()),
                    ssrc: v.map(|v| v.ssrc),
                    crypto_mode: v.and_then(|v| v.mode).map(|m| m.as_str()),
                }
            })
            .collect();
        let first = guilds.first().cloned();
        Snapshot {
            bot_voice_channel: first.as_ref().and_then(|g| g.channel),
            voice_media_ready: first.as_ref().is_some_and(|g| g.media_ready),
            bot_ssrc: first.as_ref().and_then(|g| g.ssrc),
            crypto_mode: first.as_ref().and_then(|g| g.crypto_mode),
            guilds,
            users: st
                .users
                .values()
                .map(|u| (u.id, u.name.clone(), u.voice_channel, u.ssrc))
                .collect(),
            stats: st.stats.clone(),
        }
    }

    /// Waits until the bot has identified on the main gateway `n` times in total.
    pub async fn wait_for_identify(&self, n: u32, timeout: Duration) -> Result<()> {
        self.shared
            .wait_for(timeout, "gateway Identify", |st| {
                (st.stats.identifies >= n).then_some(())
            })
            .await
    }

    /// Waits until a voice connection of the bot (in any guild) is ready for media; returns
    /// its channel.
    pub async fn wait_for_voice_ready(&self, timeout: Duration) -> Result<u64> {
        self.shared
            .wait_for(timeout, "voice connection ready", |st| {
                st.voice
                    .values()
                    .find(|v| v.media_ready() && v.ws.is_some())
                    .map(|v| v.channel_id)
            })
            .await
    }

    /// Waits until the bot's voice connection in `guild` is ready for media; returns its
    /// channel.
    pub async fn wait_for_voice_ready_in(&self, guild: u64, timeout: Duration) -> Result<u64> {
        if self.shared.guild(guild).is_none() {
            return Err(Error::UnknownGuild(guild));
        }
        self.shared
            .wait_for(timeout, "voice connection ready in the guild", |st| {
                st.voice
                    .get(&guild)
                    .filter(|v| v.media_ready() && v.ws.is_some())
                    .map(|v| v.channel_id)
            })
            .await
    }

    /// Waits until the bot is out of voice in every guild (per the main gateway).
    pub async fn wait_for_bot_out_of_voice(&self, timeout: Duration) -> Result<()> {
        self.shared
            .wait_for(timeout, "bot out of voice", |st| {
                st.bot_voice.is_empty().then_some(())
            })
            .await
    }

    /// Waits until a recorded REST request matches `pred`; returns it.
    pub async fn wait_for_rest(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&RecordedRequest) -> bool,
    ) -> Result<RecordedRequest> {
        self.shared
            .wait_for(timeout, "REST request", |st| {
                st.rest_log.iter().find(|r| pred(r)).cloned()
            })
            .await
    }

    /// Waits until a counter condition holds.
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Stats) -> bool,
    ) -> Result<Stats> {
        self.shared
            .wait_for(timeout, "stats condition", |st| {
                pred(&st.stats).then(|| st.stats.clone())
            })
            .await
    }
}

/// Moves a user; announces it on the main gateway (to the guild it left, when that is another
/// guild, and to the guild it joined) and to the bot's voice connections of those channels.
fn set_user_channel(
    shared: &Shared,
    st: &mut State,
    user: u64,
    channel: Option<u64>,
    new_ssrc: bool,
) -> Result<()> {
    let fresh_ssrc = if new_ssrc || channel.is_none() {
        Some(st.ssrc())
    } else {
        None
    };
    let u = st.user(user)?;
    let old = u.voice_channel;
    if old == channel {
        return Ok(());
    }
    u.voice_channel = channel;
    if let Some(s) = fresh_ssrc
        && channel.is_some()
    {
        u.ssrc = s;
    }
    if old.is_none()
        && let Some(s) = fresh_ssrc
    {
        u.ssrc = s;
    }
    let (id, name, session) = (u.id, u.name.clone(), u.session_id.clone());
    let old_guild = old
        .and_then(|c| shared.guild_of_voice_channel(c))
        .map(|g| g.id);
    let new_guild = channel
        .and_then(|c| shared.guild_of_voice_channel(c))
        .map(|g| g.id);
    if let (Some(g), Some(n)) = (old_guild, new_guild)
        && g != n
    {
        let vs = payloads::voice_state(g, id, &name, false, None, &session);
        st.dispatch_all("VOICE_STATE_UPDATE", &vs);
    }
    if let Some(g) = new_guild.or(old_guild) {
        let vs = payloads::voice_state(g, id, &name, false, channel, &session);
        st.dispatch_all("VOICE_STATE_UPDATE", &vs);
    }
    if let Some(v) = old.and_then(|c| st.voice_in_channel(c)) {
        v.send(13, json!({"user_id": id.to_string()}));
    }
    if let Some(c) = old {
        st.dave.user_left(c, id);
    }
    let hide = channel.is_some() && st.dave.take_fault(DaveFault::AddWithoutClientsConnect);
    if let Some(v) = channel.and_then(|c| st.voice_in_channel(c))
        && !hide
    {
        v.send(11, json!({"user_ids": [id.to_string()]}));
    }
    if let Some(c) = channel {
        st.dave.user_joined(c, id);
    }
    st.dave_pump(tokio::time::Instant::now());
    Ok(())
}
