//! The bot: gateway events, commands, starting and stopping sessions, shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nina_capture::twilight_gateway::Event;
use nina_capture::twilight_model::application::command::Command;
use nina_capture::twilight_model::application::interaction::application_command::CommandOptionValue;
use nina_capture::twilight_model::application::interaction::{Interaction, InteractionData};
use nina_capture::twilight_model::channel::message::MessageFlags;
use nina_capture::twilight_model::guild::Permissions;
use nina_capture::twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use nina_capture::twilight_model::id::Id;
use nina_capture::{Discord, DiscordConfig, VoiceConfig};
use nina_pipeline::Pipeline;
use nina_pipeline::live::{LiveTranscriber, LiveWorkers, SegmentWorkers};
use nina_store::{Place, Store};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::optout::OptOut;
use crate::session::{self, Report, SessionJob, SessionStatus};

/// The notice posted when recording starts.
pub const NOTICE: &str = "🔴 Recording this voice channel: each person on their own track, \
transcribed by Nina. To not be recorded, use `/record optout` (your audio is dropped, never \
stored); `/record optin` undoes it.";

struct Running {
    channel: u64,
    /// Where notices about the recording go.
    notice: u64,
    started: Instant,
    status: Arc<SessionStatus>,
    thread: JoinHandle<()>,
}

/// The running bot.
pub struct Bot {
    cfg: Config,
    discord: Discord,
    pipeline: Arc<Pipeline>,
    /// Segmenter threads and transcription, shared by every session.
    workers: LiveWorkers,
    store: Store,
    optout: Arc<OptOut>,
    sessions: HashMap<u64, Running>,
    reports_tx: mpsc::UnboundedSender<Report>,
    /// Guilds whose follow-mode recording Discord ended (kicked, moved): not rejoined until
    /// the channel empties.
    held_off: std::collections::HashSet<u64>,
    /// The web page's live view, when served (`[web] listen`).
    web: Option<nina_web::LiveHub>,
}

fn ephemeral(text: &str) -> InteractionResponse {
    InteractionResponse {
        kind: InteractionResponseType::ChannelMessageWithSource,
        data: Some(InteractionResponseData {
            content: Some(text.to_string()),
            flags: Some(MessageFlags::EPHEMERAL),
            ..Default::default()
        }),
    }
}

fn record_command() -> Result<Command> {
    let sub = |name: &str, description: &str| serde_json::json!({"type": 1, "name": name, "description": description});
    Ok(serde_json::from_value(serde_json::json!({
        "name": "record",
        "description": "Record this voice channel with Nina",
        "type": 1,
        "version": "1",
        "options": [
            sub("start", "Start recording the voice channel you are in"),
            sub("stop", "Stop recording"),
            sub("status", "Show what is being recorded"),
            sub("optout", "Do not record me in this server"),
            sub("optin", "Record me again in this server"),
        ],
    }))?)
}

/// Connects and runs until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> Result<()> {
    let (token, _) = cfg.token()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    let store = Store::new(&cfg.data_dir);
    let pipeline = Arc::new(Pipeline::new(cfg.pipeline())?);
    // Finish what a crash left before recording anything new.
    crate::recover::recover_all(
        &store,
        &pipeline,
        cfg.transcribe.enabled && cfg.capture.decode,
    )?;
    let transcriber = if cfg.transcribe.enabled && cfg.capture.decode {
        let p = pipeline.clone();
        let backlog = cfg.transcribe.max_backlog;
        Some(
            tokio::task::spawn_blocking(move || LiveTranscriber::start(&p, backlog))
                .await?
                .context("cannot load the transcription model")?,
        )
    } else {
        None
    };
    let segmenters = if cfg.capture.decode {
        let p = pipeline.clone();
        let threads = cfg.capture.segment_threads();
        Some(
            tokio::task::spawn_blocking(move || SegmentWorkers::start(&p, threads))
                .await?
                .context("cannot start the segmenters")?,
        )
    } else {
        None
    };
    let workers = LiveWorkers {
        segmenters,
        transcriber,
    };
    let optout = Arc::new(OptOut::load(cfg.data_dir.join(nina_store::OPTOUT_JSON))?);
    let (discord, mut events) = Discord::connect(DiscordConfig {
        token,
        message_content: cfg.commands.prefix.is_some(),
        endpoints: cfg.endpoints(),
        voice: VoiceConfig {
            decode: cfg.decode(),
            ..VoiceConfig::default()
        },
    })
    .await
    .context("cannot connect to Discord")?;
    tracing::info!(bot = discord.bot_id().0, "connected");
    if cfg.commands.slash {
        let cmds = [record_command()?];
        if let Err(e) = discord
            .http()
            .interaction(discord.application_id())
            .set_global_commands(&cmds)
            .await
        {
            tracing::warn!("cannot register slash commands: {e}");
        }
    }
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let web = crate::web::start(&cfg)
        .await
        .context("cannot serve the web page")?;
    let mut bot = Bot {
        cfg,
        discord,
        pipeline,
        workers,
        store,
        optout,
        sessions: HashMap::new(),
        reports_tx,
        held_off: std::collections::HashSet::new(),
        web,
    };
    if !bot.cfg.follow {
        for c in bot.cfg.channels.clone() {
            if let Err(e) = bot.start(c.guild, c.channel, None).await {
                tracing::error!(guild = c.guild, channel = c.channel, "cannot record: {e:#}");
            }
        }
    } else {
        bot.follow_all().await;
    }
    println!("NINA-COLLECTOR-READY");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => bot.event(ev).await,
                None => {
                    tracing::error!("the gateway connection ended for good");
                    break;
                }
            },
            Some(r) = reports.recv() => bot.report(r).await,
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: finishing"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: finishing"); break; }
        }
    }
    bot.shutdown(&mut reports).await;
    Ok(())
}

impl Bot {
    async fn say(&self, channel: u64, text: &str) {
        let Some(c) = Id::new_checked(channel) else {
            return;
        };
        if let Err(e) = self.discord.http().create_message(c).content(text).await {
            tracing::warn!(channel, "cannot post a message: {e}");
        }
    }

    async fn set_recording_nick(&self, guild: u64, on: bool) {
        let Some(g) = Id::new_checked(guild) else {
            return;
        };
        let nick = on.then_some("🔴 Nina (recording)");
        if let Err(e) = self
            .discord
            .http()
            .update_current_member(g)
            .nick(nick)
            .await
        {
            tracing::debug!(guild, "cannot change the nickname: {e}");
        }
    }

    /// Starts recording `channel`; the notice goes to `notice` (else the voice channel's chat).
    async fn start(&mut self, guild: u64, channel: u64, notice: Option<u64>) -> Result<()> {
        let recording = self.discord.record(guild, channel).await?;
        let started_at_ms = recording
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let gplace = Place {
            id: guild,
            name: self.discord.guild_name(guild),
        };
        let cplace = Place {
            id: channel,
            name: self.discord.channel_name(guild, channel),
        };
        let probe = nina_store::Session::new(
            session::session_id(started_at_ms),
            gplace.clone(),
            cplace.clone(),
            started_at_ms,
        );
        let dir = self.store.session_dir(&probe)?;
        let status = Arc::new(SessionStatus::default());
        let job = SessionJob {
            recording,
            dir,
            guild: gplace,
            channel: cplace,
            pipeline: self.pipeline.clone(),
            workers: self.workers.clone(),
            decode: self.cfg.decode().format(),
            config: self.cfg.recorded(),
            optout: self.optout.clone(),
            status: status.clone(),
            reports: self.reports_tx.clone(),
            enrol: self
                .cfg
                .voiceprints
                .enrol
                .then(|| (self.cfg.data_dir.clone(), self.cfg.voiceprints.max_seconds)),
            data: self.cfg.data_dir.clone(),
            live: self.web.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("nina-session-{guild}"))
            .spawn(move || session::run(job))?;
        self.sessions.insert(
            guild,
            Running {
                channel,
                notice: notice.unwrap_or(channel),
                started: Instant::now(),
                status,
                thread,
            },
        );
        self.say(notice.unwrap_or(channel), NOTICE).await;
        self.set_recording_nick(guild, true).await;
        Ok(())
    }

    /// Asks a session to end; its thread reports when it has.
    fn stop(&self, guild: u64) -> bool {
        match self.sessions.get(&guild) {
            Some(r) => {
                r.status.stop.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    async fn report(&mut self, r: Report) {
        match r {
            Report::Caption {
                guild,
                speaker,
                start,
                end_unix_ms,
                text,
            } => {
                let line = format!("[{:>7.2}s] {speaker}: {text}", start);
                // Machine-readable, for the load benchmark: utterance end and arrival, Unix ms.
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                println!(
                    "NINA-CAPTION guild={guild} end_unix_ms={end_unix_ms} at_unix_ms={now_ms}"
                );
                println!("{line}");
                // Only the captions channel's own guild is captioned there: another server's
                // talk must not show up in it.
                if let Some(c) = self.cfg.captions_channel
                    && self.discord.channel_name(guild, c).is_some()
                {
                    self.say(c, &line).await;
                }
            }
            Report::DaveRejoin { guild, reason } => {
                let Some(notice) = self.sessions.get(&guild).map(|r| r.notice) else {
                    return;
                };
                self.say(
                    notice,
                    &format!(
                        "⚠️ End-to-end encryption failed ({reason}): rejoining the channel to keep recording. A few seconds may be missing."
                    ),
                )
                .await;
                if let Err(e) = self.discord.reconnect_voice(guild).await {
                    tracing::error!(guild, "rejoining for DAVE failed: {e}");
                }
            }
            Report::Finished {
                guild,
                result,
                ended_by_discord,
            } => {
                if let Some(r) = self.sessions.remove(&guild) {
                    let _ = tokio::task::spawn_blocking(move || r.thread.join()).await;
                }
                if let Err(e) = self.discord.stop(guild).await {
                    tracing::warn!(guild, "leaving the voice channel: {e}");
                }
                if ended_by_discord {
                    self.held_off.insert(guild);
                } else {
                    self.set_recording_nick(guild, false).await;
                }
                match result {
                    Ok(dir) => {
                        println!("NINA-SESSION-DONE {}", dir.root().display());
                        tracing::info!(guild, dir = %dir.root().display(), "session finished");
                    }
                    Err(e) => tracing::error!(guild, "session failed: {e}"),
                }
            }
        }
    }

    fn allowed(&self, user: u64, roles: &[u64], permissions: Option<Permissions>) -> bool {
        let c = &self.cfg.commands;
        if c.users.contains(&user) {
            return true;
        }
        match c.role {
            Some(r) => roles.contains(&r),
            None => {
                c.manage_channels
                    && permissions.is_some_and(|p| {
                        p.contains(Permissions::MANAGE_CHANNELS)
                            || p.contains(Permissions::ADMINISTRATOR)
                    })
            }
        }
    }

    /// `start` by `user`: the reply.
    async fn command_start(&mut self, guild: u64, user: u64, notice: Option<u64>) -> String {
        let Some(channel) = self.discord.voice_channel_of(guild, user) else {
            return "Join a voice channel first, then run this again.".into();
        };
        if let Some(r) = self.sessions.get(&guild) {
            return if r.channel == channel {
                "Already recording this channel.".into()
            } else {
                format!(
                    "Already recording <#{}> in this server; stop that first.",
                    r.channel
                )
            };
        }
        match self.start(guild, channel, notice).await {
            Ok(()) => format!("Recording <#{channel}>."),
            Err(e) => {
                tracing::error!(guild, channel, "cannot record: {e:#}");
                "Could not join the voice channel; see the bot's log.".into()
            }
        }
    }

    fn status_text(&self, guild: u64) -> String {
        let backlog = self
            .workers
            .transcriber
            .as_ref()
            .map(|t| t.stats())
            .unwrap_or_default();
        // Frames are 20 ms; the backlog is summed over every speaker of every session.
        let unsegmented = self
            .workers
            .segmenters
            .as_ref()
            .map_or(0.0, |s| s.queued() as f64 * 0.02);
        match self.sessions.get(&guild) {
            Some(r) => format!(
                "Recording <#{}> for {} s: {} speakers, {} utterances stored; transcription backlog {} ({} left for reprocess); {unsegmented:.1} s of audio waiting to be segmented; {}.",
                r.channel,
                r.started.elapsed().as_secs(),
                r.status.speakers.load(Ordering::Relaxed),
                r.status.utterances.load(Ordering::Relaxed),
                backlog.backlog,
                backlog.skipped,
                crate::dave::status_line(
                    r.status
                        .dave
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                ),
            ),
            None => "Not recording in this server.".into(),
        }
    }

    async fn interaction(&mut self, i: &Interaction) {
        let Some(InteractionData::ApplicationCommand(cmd)) = &i.data else {
            return;
        };
        if cmd.name != "record" {
            return;
        }
        let sub = cmd.options.first().map(|o| o.name.as_str()).unwrap_or("");
        let _ = cmd
            .options
            .first()
            .map(|o| matches!(o.value, CommandOptionValue::SubCommand(_)));
        let user = i.author_id().map_or(0, |u| u.get());
        let reply = match i.guild_id.map(|g| g.get()) {
            None => "Use this in a server.".to_string(),
            Some(guild) => {
                let member = i.member.as_ref();
                let roles: Vec<u64> = member
                    .map(|m| m.roles.iter().map(|r| r.get()).collect())
                    .unwrap_or_default();
                let perms = member.and_then(|m| m.permissions);
                let may = self.allowed(user, &roles, perms);
                let notice = i.channel.as_ref().map(|c| c.id.get());
                match sub {
                    "start" | "stop" if !may => {
                        tracing::info!(guild, user, sub, "command refused: no permission");
                        "You are not allowed to start or stop recordings here.".into()
                    }
                    "start" => self.command_start(guild, user, notice).await,
                    "stop" => {
                        if self.stop(guild) {
                            "Stopping; the session is being finished.".into()
                        } else {
                            "Not recording in this server.".into()
                        }
                    }
                    "status" => self.status_text(guild),
                    "optout" | "optin" => {
                        let out = sub == "optout";
                        match self.optout.set(guild, user, out) {
                            Ok(()) if out => "You will not be recorded in this server: your audio is dropped as it arrives. `/record optin` undoes it.".into(),
                            Ok(()) => "You will be recorded again in this server.".into(),
                            Err(e) => {
                                tracing::error!("cannot save opt-out: {e:#}");
                                "Could not save that; try again.".into()
                            }
                        }
                    }
                    _ => "Unknown command.".into(),
                }
            }
        };
        if let Err(e) = self
            .discord
            .http()
            .interaction(self.discord.application_id())
            .create_response(i.id, &i.token, &ephemeral(&reply))
            .await
        {
            tracing::warn!("cannot answer the command: {e}");
        }
    }

    async fn message(&mut self, m: &nina_capture::twilight_model::channel::Message) {
        let Some(prefix) = self.cfg.commands.prefix.clone() else {
            return;
        };
        if m.author.bot {
            return;
        }
        let Some(cmd) = m.content.trim().strip_prefix(&prefix) else {
            return;
        };
        let Some(guild) = m.guild_id.map(|g| g.get()) else {
            return;
        };
        let user = m.author.id.get();
        let roles: Vec<u64> = m
            .member
            .as_ref()
            .map(|p| p.roles.iter().map(|r| r.get()).collect())
            .unwrap_or_default();
        let reply = match cmd {
            "join" | "leave" if !self.allowed(user, &roles, None) => {
                tracing::info!(guild, user, cmd, "command refused: no permission");
                "You are not allowed to start or stop recordings here.".to_string()
            }
            "join" => {
                self.command_start(guild, user, Some(m.channel_id.get()))
                    .await
            }
            "leave" => {
                if self.stop(guild) {
                    "Stopping; the session is being finished.".into()
                } else {
                    "Not recording in this server.".into()
                }
            }
            _ => return,
        };
        self.say(m.channel_id.get(), &reply).await;
    }

    /// Follow mode: record a configured channel while someone is in it.
    async fn follow_all(&mut self) {
        for c in self.cfg.channels.clone() {
            let occupied = !self.discord.members_in(c.guild, c.channel).is_empty();
            let recording = self.sessions.get(&c.guild).map(|r| r.channel);
            if !occupied {
                self.held_off.remove(&c.guild);
            }
            if occupied && recording.is_none() && !self.held_off.contains(&c.guild) {
                if let Err(e) = self.start(c.guild, c.channel, None).await {
                    tracing::error!(guild = c.guild, "cannot record: {e:#}");
                }
            } else if !occupied && recording == Some(c.channel) {
                self.stop(c.guild);
            }
        }
    }

    async fn event(&mut self, ev: Event) {
        match ev {
            Event::InteractionCreate(i) => self.interaction(&i).await,
            Event::MessageCreate(m) => self.message(&m).await,
            Event::VoiceStateUpdate(_) | Event::GuildCreate(_) if self.cfg.follow => {
                self.follow_all().await
            }
            _ => {}
        }
    }

    /// Ends every session (flushing open utterances) and waits for them.
    async fn shutdown(mut self, reports: &mut mpsc::UnboundedReceiver<Report>) {
        for r in self.sessions.values() {
            r.status.stop.store(true, Ordering::Relaxed);
        }
        while !self.sessions.is_empty() {
            match tokio::time::timeout(Duration::from_secs(300), reports.recv()).await {
                Ok(Some(r)) => self.report(r).await,
                _ => break,
            }
        }
        let LiveWorkers {
            segmenters,
            transcriber,
        } = std::mem::take(&mut self.workers);
        // The last handle of the segmenters joins their threads: off the runtime too.
        let _ = tokio::task::spawn_blocking(move || {
            drop(segmenters);
            if let Some(t) = transcriber {
                t.shutdown();
            }
        })
        .await;
    }
}
