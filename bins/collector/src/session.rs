//! One recording, on a thread of its own: capture events -> [`LiveSession`] (tracks, utterances,
//! live transcription) -> the session directory; then the transcript files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nina_capture::{CaptureEvent, Recording};
use nina_pipeline::live::{LiveOptions, LiveSession, LiveText, LiveWorkers};
use nina_pipeline::{NoProgress, Pipeline};
use nina_store::{DaveRecord, Place, Recorder, Session, SessionDir};
use tokio::sync::mpsc::UnboundedSender;

use crate::dave::DaveWatch;
use crate::optout::OptOut;

/// What the bot can see of a running session.
#[derive(Debug, Default)]
pub struct SessionStatus {
    /// Set to end the recording.
    pub stop: AtomicBool,
    /// Utterances stored.
    pub utterances: AtomicU64,
    /// People heard.
    pub speakers: AtomicU64,
    /// End-to-end encryption of the call, as last seen.
    pub dave: std::sync::Mutex<Option<DaveRecord>>,
}

/// Messages from session threads to the bot.
#[derive(Debug)]
pub enum Report {
    /// An utterance's text came back.
    Caption {
        /// Guild.
        guild: u64,
        /// Who said it.
        speaker: String,
        /// Session-clock start, seconds.
        start: f64,
        /// When the utterance ended (Unix milliseconds, from the session clock).
        end_unix_ms: i64,
        /// The text.
        text: String,
    },
    /// The call's end-to-end encryption keeps failing: warn, leave and join again.
    DaveRejoin {
        /// Guild.
        guild: u64,
        /// What failed.
        reason: String,
    },
    /// The session thread ended (`Err`: why it failed).
    Finished {
        /// Guild.
        guild: u64,
        /// The session directory and the outcome.
        result: std::result::Result<SessionDir, String>,
        /// The capture ended by itself (kicked, moved), not by a stop.
        ended_by_discord: bool,
    },
}

/// Everything a session thread needs.
pub struct SessionJob {
    /// The capture.
    pub recording: Recording,
    /// Where to record.
    pub dir: SessionDir,
    /// Guild and channel names.
    pub guild: Place,
    /// The voice channel.
    pub channel: Place,
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The shared segmenter threads and live transcription.
    pub workers: LiveWorkers,
    /// Decoded format, when decoding.
    pub decode: Option<(u32, u16)>,
    /// The configuration as recorded (no secrets).
    pub config: serde_json::Value,
    /// Opt-outs.
    pub optout: Arc<OptOut>,
    /// Status and stop flag.
    pub status: Arc<SessionStatus>,
    /// Reports to the bot.
    pub reports: UnboundedSender<Report>,
    /// The data directory and the seconds of each user's speech to enrol voiceprints from,
    /// when enrolment is on.
    pub enrol: Option<(std::path::PathBuf, f64)>,
    /// The data directory, whose search index the session keeps up to date (when it has one).
    pub data: std::path::PathBuf,
    /// The web page's live view, when served.
    pub live: Option<nina_web::LiveHub>,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The session id of a recording started at `ms`.
pub fn session_id(ms: i64) -> String {
    format!("live-{ms}")
}

/// Enrols the session's clean user streams into the guild's voiceprints.
fn enrol_voiceprints(
    pipeline: &Pipeline,
    dir: &SessionDir,
    data: &std::path::Path,
    guild: u64,
    seconds: f64,
) -> Result<()> {
    let mut prints = nina_store::VoicePrints::load(data, guild)?;
    let mut voices = nina_pipeline::Voices::new(&mut prints);
    voices.opted_out = nina_store::opted_out(data, guild)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let users = pipeline.enrol_session(dir, &mut voices, seconds, threads)?;
    if !users.is_empty() {
        tracing::info!(?users, "voiceprints enrolled");
    }
    Ok(())
}

/// Runs a session to its end; reports `Finished`.
pub fn run(job: SessionJob) {
    let guild = job.guild.id;
    // Every log line of the session names its guild and channel.
    let _span = tracing::info_span!("session", guild, channel = job.channel.id).entered();
    let reports = job.reports.clone();
    let (result, ended) = match record(job) {
        Ok((dir, ended)) => (Ok(dir), ended),
        Err(e) => {
            tracing::error!(guild, "session failed: {e:#}");
            (Err(format!("{e:#}")), false)
        }
    };
    let _ = reports.send(Report::Finished {
        guild,
        result,
        ended_by_discord: ended,
    });
}

fn record(job: SessionJob) -> Result<(SessionDir, bool)> {
    let SessionJob {
        mut recording,
        dir,
        guild,
        channel,
        pipeline,
        workers,
        decode,
        config,
        optout,
        status,
        reports,
        enrol,
        data,
        live: hub,
    } = job;
    let mut index = crate::index::IndexUpdates::new(data, dir.clone());
    let started_at_ms = unix_ms(recording.started_at);
    let skeleton = Session {
        recorder: Some(Recorder {
            name: "nina-collector".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            decode: decode.is_some(),
            config,
        }),
        ..Session::new(
            session_id(started_at_ms),
            guild.clone(),
            channel.clone(),
            started_at_ms,
        )
    };
    let opts = LiveOptions {
        decode,
        ..LiveOptions::default()
    };
    let transcribing = workers.transcriber.is_some();
    let mut live = LiveSession::start(&pipeline, dir.clone(), skeleton, opts, workers)
        .context("cannot start the session")?;
    tracing::info!(dir = %dir.root().display(), "session started");
    let mut feed = hub.map(|hub| {
        crate::web::LiveFeed::new(
            hub,
            nina_web::Channel {
                guild_id: guild.id,
                guild_name: guild.name.clone(),
                channel_id: channel.id,
                channel_name: channel.name.clone(),
                session_id: live.session().id.clone(),
                members: vec![],
            },
        )
    });
    let mut names = std::collections::HashMap::<u64, String>::new();
    // A transcript that came back, to the bot (printed, and posted as a caption).
    let caption = |t: LiveText, names: &std::collections::HashMap<u64, String>| {
        if let Ok(text) = t.text
            && !text.is_empty()
        {
            let speaker = names
                .get(&t.utterance.user_id)
                .cloned()
                .unwrap_or_else(|| t.utterance.user_id.to_string());
            let _ = reports.send(Report::Caption {
                guild: guild.id,
                speaker,
                start: t.utterance.start,
                end_unix_ms: started_at_ms + (t.utterance.end * 1000.0).round() as i64,
                text,
            });
        }
    };
    let mut down_since: Option<u64> = None;
    let mut gateway_down: Option<(u64, String)> = None;
    let mut last_audio = 0u64;
    let mut ended = false;
    let mut dave = DaveWatch::default();
    let mut next_dave_check = std::time::Instant::now();
    // A rejoin for DAVE's sake under way: where its gap starts, and why.
    let mut dave_rejoin: Option<(u64, String)> = None;
    'run: loop {
        // Once stopping, take what songbird delivered up to now (not what keeps coming), then end.
        let stopping = status.stop.load(Ordering::Relaxed);
        let mut budget = if stopping {
            recording.queued()
        } else {
            usize::MAX
        };
        loop {
            if budget == 0 {
                break;
            }
            budget -= 1;
            match recording.try_next() {
                Ok(Some(ev)) => match ev {
                    CaptureEvent::Audio(f) => {
                        if optout.contains(guild.id, f.user.0) {
                            continue; // dropped at capture: never written anywhere
                        }
                        last_audio = last_audio.max(f.frame);
                        if let Some(feed) = feed.as_mut() {
                            feed.audio(f.user.0, f.frame, f.pcm.as_deref());
                        }
                        live.audio(f.user.0, f.frame, f.opus.as_deref(), f.pcm.as_deref())?;
                    }
                    CaptureEvent::Joined { frame, member } => {
                        if member.bot || optout.contains(guild.id, member.user.0) {
                            continue;
                        }
                        if let Some(n) = &member.name {
                            names.insert(member.user.0, n.clone());
                        }
                        if let Some(feed) = feed.as_mut() {
                            feed.joined(member.user.0, member.name.as_deref());
                        }
                        live.joined(frame, member.user.0, member.name);
                    }
                    CaptureEvent::Left { frame, user } => {
                        if !optout.contains(guild.id, user.0) {
                            live.left(frame, user.0)?;
                            if let Some(feed) = feed.as_mut() {
                                feed.left(user.0);
                            }
                        }
                    }
                    CaptureEvent::Disconnected { frame, reason } => {
                        tracing::warn!(reason, "voice connection lost");
                        down_since.get_or_insert(frame);
                        if let Some(feed) = feed.as_mut() {
                            feed.connection(false);
                        }
                    }
                    CaptureEvent::Connected { frame, reconnect } => {
                        if let Some(feed) = feed.as_mut() {
                            feed.connection(true);
                        }
                        if let Some((start, reason)) = dave_rejoin.take() {
                            down_since = None;
                            live.gap(start, frame, None, &format!("DAVE: {reason}; rejoined"));
                            tracing::info!("voice connection back after a DAVE rejoin");
                        } else if let Some(start) = down_since.take() {
                            live.gap(start, frame, None, "voice connection lost");
                        } else if reconnect {
                            // Resumed without a reported drop: nothing was received since the
                            // last packet from anyone.
                            let start = (last_audio + 1).min(frame);
                            live.gap(start, frame, None, "voice connection resumed");
                        }
                        if reconnect {
                            tracing::info!("voice connection back");
                        }
                    }
                    CaptureEvent::GatewayLost { frame, reason } => {
                        tracing::warn!(reason, "gateway connection lost");
                        gateway_down.get_or_insert((frame, reason));
                    }
                    CaptureEvent::GatewayBack { frame, resumed } => {
                        if let Some((start, reason)) = gateway_down.take() {
                            let how = if resumed { "resumed" } else { "new session" };
                            live.gap(
                                start,
                                frame,
                                None,
                                &format!("gateway: {reason}; {how} (voice unaffected)"),
                            );
                        }
                    }
                    CaptureEvent::Ended { reason, .. } => {
                        tracing::warn!(reason, "recording ended by Discord");
                        ended = true;
                        break 'run;
                    }
                },
                Ok(None) => break,
                Err(_) => break 'run,
            }
        }
        for t in live.tick(recording.now())? {
            status
                .utterances
                .store(live.session().utterances.len() as u64, Ordering::Relaxed);
            if let Some(feed) = feed.as_ref()
                && let Ok(text) = &t.text
                && !text.is_empty()
            {
                let u = &t.utterance;
                let speaker = names
                    .get(&u.user_id)
                    .cloned()
                    .unwrap_or_else(|| u.user_id.to_string());
                feed.utterance(u.user_id, &speaker, u.start, u.end, text);
            }
            caption(t, &names);
        }
        status
            .speakers
            .store(live.session().participants.len() as u64, Ordering::Relaxed);
        let now = std::time::Instant::now();
        if now >= next_dave_check
            && let Some(stats) = recording.dave()
        {
            next_dave_check = now + Duration::from_secs(1);
            tracing::trace!(?stats, unseen = recording.stats().unseen, "DAVE check");
            if let Some(rejoin) = dave.update(now, stats, recording.stats().unseen)
                && dave_rejoin.is_none()
                && !stopping
            {
                let reason = rejoin.reason;
                tracing::warn!(
                    reason,
                    "end-to-end encryption failing; rejoining the channel"
                );
                // The lost packets are gone from before now (at 20 ms each, at most 10 s back).
                let frame = recording.now();
                let start = frame.saturating_sub(rejoin.lost_packets.min(500));
                dave_rejoin = Some((start, reason.clone()));
                let _ = reports.send(Report::DaveRejoin {
                    guild: guild.id,
                    reason,
                });
            }
            dave.observe(recording.stats(), &recording.losses());
            let record = dave.record();
            *status.dave.lock().unwrap_or_else(|p| p.into_inner()) = Some(record.clone());
            live.set_dave(record);
        }
        if let Some(feed) = feed.as_mut() {
            let d = status
                .dave
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            feed.tick(
                recording.now(),
                live.pending(),
                &crate::dave::status_line(d.as_ref()),
            );
        }
        if stopping {
            break;
        }
        index.tick();
        std::thread::sleep(Duration::from_millis(20));
    }
    let end = recording.now();
    if let Some(stats) = recording.dave() {
        dave.update(std::time::Instant::now(), stats, recording.stats().unseen);
        dave.observe(recording.stats(), &recording.losses());
        live.set_dave(dave.record());
    }
    if let Some((start, reason)) = dave_rejoin {
        live.gap(
            start,
            end,
            None,
            &format!("DAVE: {reason}; rejoin unfinished"),
        );
    }
    if let Some(start) = down_since {
        live.gap(start, end, None, "voice connection lost");
    }
    let stats = recording.stats();
    let skipped = live.skipped();
    let ended_at_ms = started_at_ms + i64::try_from(end * 20).unwrap_or(i64::MAX);
    let (session, texts) = live.finish(end, ended_at_ms, Duration::from_secs(60))?;
    for t in texts {
        caption(t, &names);
    }
    tracing::info!(
        utterances = session.utterances.len(),
        packets = stats.packets,
        lost = stats.lost,
        late = stats.late,
        overflowed = stats.overflowed,
        unattributed = stats.unattributed_dropped,
        resyncs = stats.resyncs,
        unseen = stats.unseen,
        "session recorded"
    );
    if skipped > 0 {
        // Transcribing them now could hold a stop for minutes; reprocess does it.
        tracing::warn!(
            skipped,
            dir = %dir.root().display(),
            "utterances left untranscribed: run `reprocess session` on the session"
        );
    } else if transcribing && !session.utterances.is_empty() {
        pipeline
            .transcribe_session(&dir, false, &NoProgress)
            .context("writing the transcripts")?;
    }
    if let Some((data, seconds)) = &enrol
        && !session.utterances.is_empty()
    {
        // A voiceprint that cannot be made (the CAM++ model missing, say) costs the session
        // nothing: it is recorded and transcribed already.
        if let Err(e) = enrol_voiceprints(&pipeline, &dir, data, guild.id, *seconds) {
            tracing::warn!("voiceprints not enrolled: {e:#}");
        }
    }
    index.finish();
    Ok((dir, ended))
}
