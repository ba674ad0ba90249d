//! Scripted scenarios (JSON) for running the fake standalone or from tests.
//!
//! ```json
//! { "users": ["alice", "bob"],
//!   "steps": [
//!     { "join": { "user": "alice", "channel": 0 } },
//!     { "wait_for_bot_voice": { "timeout_secs": 120 } },
//!     { "speak": { "user": "alice", "wav": "testdata/librivox/a.wav", "wait": true } },
//!     { "type": { "user": "bob", "content": "!stop" } },
//!     { "sleep_ms": 500 } ] }
//! ```
//! `channel` is an index into the configured voice (for `join`) or text (for `type`, `slash`)
//! channels of guild number `guild` (optional; 0, the first guild, by default; the extra
//! guilds follow in order).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, Faults};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::state::SpeechReport;

/// A scripted scenario: users to create, then steps run in order.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    /// Names of the fake users to add first.
    #[serde(default)]
    pub users: Vec<String>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// One scenario step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Put a user in voice channel number `channel`.
    Join {
        /// User name.
        user: String,
        /// Index into the voice channels.
        channel: usize,
        /// Index of the guild (0: the first).
        #[serde(default)]
        guild: usize,
    },
    /// Take a user out of voice.
    Leave {
        /// User name.
        user: String,
    },
    /// Disconnect and reconnect a user (new SSRC).
    Rejoin {
        /// User name.
        user: String,
    },
    /// Queue a WAV file as the user's speech; with `wait`, block until it has been sent.
    Speak {
        /// User name.
        user: String,
        /// WAV path.
        wav: PathBuf,
        /// Wait for the speech to finish.
        #[serde(default)]
        wait: bool,
    },
    /// A user types a message in text channel number `channel` (default 0).
    Type {
        /// User name.
        user: String,
        /// Message text.
        content: String,
        /// Index into the text channels.
        #[serde(default)]
        channel: usize,
        /// Index of the guild (0: the first).
        #[serde(default)]
        guild: usize,
    },
    /// A user runs a slash command.
    Slash {
        /// User name.
        user: String,
        /// Command name.
        name: String,
        /// Options array.
        #[serde(default)]
        options: Value,
        /// Index into the text channels.
        #[serde(default)]
        channel: usize,
        /// Index of the guild (0: the first).
        #[serde(default)]
        guild: usize,
    },
    /// Wait until the bot's voice connection is ready.
    WaitForBotVoice {
        /// Give up after this many seconds.
        timeout_secs: u64,
    },
    /// Sleep.
    SleepMs(u64),
    /// Replace the RTP faults.
    Faults(Faults),
    /// Change the pacing.
    Speed(f64),
    /// Kick the bot from voice.
    KickBot,
    /// Drop the main gateway connection.
    DropGateway,
    /// Send op 7 Reconnect.
    Reconnect,
    /// Send op 9 Invalid Session.
    InvalidateSession {
        /// Whether the session may be resumed.
        resumable: bool,
    },
    /// Close the voice socket with a close code.
    CloseVoice(u16),
}

impl Scenario {
    /// Parses a scenario from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Scenario(e.to_string()))
    }

    /// Runs the scenario; returns the reports of the speeches that were waited for.
    pub async fn run(&self, control: &Control, cfg: &Config) -> Result<Vec<SpeechReport>> {
        let mut ids: HashMap<String, u64> = HashMap::new();
        for name in &self.users {
            ids.insert(name.clone(), control.add_user(name));
        }
        let user = |name: &str| {
            ids.get(name)
                .copied()
                .ok_or_else(|| Error::Scenario(format!("unknown user {name:?}")))
        };
        let guilds = cfg.guilds();
        let guild = |g: usize| {
            guilds
                .get(g)
                .ok_or_else(|| Error::Scenario(format!("no guild {g}")))
        };
        let voice = |g: usize, i: usize| {
            guild(g)?
                .voice_channels
                .get(i)
                .map(|c| c.0)
                .ok_or_else(|| Error::Scenario(format!("no voice channel {i} in guild {g}")))
        };
        let text = |g: usize, i: usize| {
            guild(g)?
                .text_channels
                .get(i)
                .map(|c| c.0)
                .ok_or_else(|| Error::Scenario(format!("no text channel {i} in guild {g}")))
        };
        let mut reports = Vec::new();
        for step in &self.steps {
            match step {
                Step::Join {
                    user: u,
                    channel,
                    guild,
                } => control.join_voice(user(u)?, voice(*guild, *channel)?)?,
                Step::Leave { user: u } => control.leave_voice(user(u)?)?,
                Step::Rejoin { user: u } => {
                    control.rejoin_voice(user(u)?)?;
                }
                Step::Speak { user: u, wav, wait } => {
                    let h = control.speak_wav(user(u)?, wav).await?;
                    if *wait {
                        let limit = Duration::from_millis(h.frames as u64 * 20 + 30_000);
                        reports.push(h.finished(limit).await?);
                    }
                }
                Step::Type {
                    user: u,
                    content,
                    channel,
                    guild,
                } => {
                    control.type_message(user(u)?, text(*guild, *channel)?, content)?;
                }
                Step::Slash {
                    user: u,
                    name,
                    options,
                    channel,
                    guild,
                } => {
                    let opts = if options.is_null() {
                        Value::Array(vec![])
                    } else {
                        options.clone()
                    };
                    control.slash_command(user(u)?, text(*guild, *channel)?, name, opts)?;
                }
                Step::WaitForBotVoice { timeout_secs } => {
                    control
                        .wait_for_voice_ready(Duration::from_secs(*timeout_secs))
                        .await?;
                }
                Step::SleepMs(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                Step::Faults(f) => control.set_faults(*f),
                Step::Speed(s) => control.set_speed(*s),
                Step::KickBot => control.kick_bot()?,
                Step::DropGateway => {
                    control.drop_gateway();
                }
                Step::Reconnect => {
                    control.send_reconnect();
                }
                Step::InvalidateSession { resumable } => {
                    control.invalidate_session(*resumable);
                }
                Step::CloseVoice(code) => control.close_voice(*code)?,
            }
        }
        Ok(reports)
    }
}
