//! Configuration of a fake Discord instance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A voice transport encryption mode of Discord's voice UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CryptoMode {
    /// `aead_aes256_gcm_rtpsize`.
    Aes256GcmRtpSize,
    /// `aead_xchacha20_poly1305_rtpsize`.
    XChaCha20Poly1305RtpSize,
}

impl CryptoMode {
    /// The mode's name on the voice gateway.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes256GcmRtpSize => "aead_aes256_gcm_rtpsize",
            Self::XChaCha20Poly1305RtpSize => "aead_xchacha20_poly1305_rtpsize",
        }
    }

    /// Parses a mode name sent by a client.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "aead_aes256_gcm_rtpsize" => Some(Self::Aes256GcmRtpSize),
            "aead_xchacha20_poly1305_rtpsize" => Some(Self::XChaCha20Poly1305RtpSize),
            _ => None,
        }
    }
}

/// Network faults applied to the RTP packets sent to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    /// Probability that a packet is held back and sent after the next packet of the same user.
    pub reorder: f64,
    /// Each packet is delayed by a uniform random time in `[0, jitter]`.
    pub jitter: Duration,
    /// Seed of the fault generator, so a run can be repeated.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            jitter: Duration::ZERO,
            seed: 0x5EED,
        }
    }
}

/// A guild the bot is in besides the first one (see [`Config::extra_guilds`]).
///
/// Channel ids must be unique across all guilds, so a channel names its guild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuildSpec {
    /// Guild id.
    pub id: u64,
    /// Guild name.
    pub name: String,
    /// Text channels: `(id, name)`.
    #[serde(default)]
    pub text_channels: Vec<(u64, String)>,
    /// Voice channels: `(id, name)`.
    #[serde(default)]
    pub voice_channels: Vec<(u64, String)>,
}

impl GuildSpec {
    /// A guild without channels.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            text_channels: Vec::new(),
            voice_channels: Vec::new(),
        }
    }

    /// A guild shaped like the default one (one text, two voice channels) with every id
    /// offset by `n * 1000`; `n >= 1` gives ids distinct from the default guild's and from
    /// each other's. Named `Fake Guild {n + 1}`.
    pub fn numbered(n: u64) -> Self {
        let base = 1_100_000_000_000_000_000 + n * 1000;
        Self {
            id: base + 100,
            name: format!("Fake Guild {}", n + 1),
            text_channels: vec![(base + 200, "general".into())],
            voice_channels: vec![
                (base + 300, "Voice A".into()),
                (base + 301, "Voice B".into()),
            ],
        }
    }

    /// Adds a text channel.
    pub fn text_channel(mut self, id: u64, name: impl Into<String>) -> Self {
        self.text_channels.push((id, name.into()));
        self
    }

    /// Adds a voice channel.
    pub fn voice_channel(mut self, id: u64, name: impl Into<String>) -> Self {
        self.voice_channels.push((id, name.into()));
        self
    }

    /// Whether `channel` is one of this guild's voice channels.
    pub fn has_voice_channel(&self, channel: u64) -> bool {
        self.voice_channels.iter().any(|(id, _)| *id == channel)
    }

    /// Whether `channel` is one of this guild's channels (text or voice).
    pub fn has_channel(&self, channel: u64) -> bool {
        self.text_channels
            .iter()
            .chain(self.voice_channels.iter())
            .any(|(id, _)| *id == channel)
    }
}

/// Settings of a fake Discord; build one with [`crate::FakeDiscord::builder`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The bot token the bot must present (gateway Identify and REST `Authorization`).
    pub token: String,
    /// The bot's user id.
    pub bot_user_id: u64,
    /// The bot's user name.
    pub bot_name: String,
    /// The application id (equal to the bot id, as on Discord).
    pub application_id: u64,
    /// The first guild the bot is in (more in [`Self::extra_guilds`]).
    pub guild_id: u64,
    /// The guild's name.
    pub guild_name: String,
    /// Text channels: `(id, name)`.
    pub text_channels: Vec<(u64, String)>,
    /// Voice channels: `(id, name)`.
    pub voice_channels: Vec<(u64, String)>,
    /// Further guilds the bot is in (none by default). Every fake user is a member of every
    /// guild; guild and channel ids must be unique across all guilds.
    pub extra_guilds: Vec<GuildSpec>,
    /// Main gateway heartbeat interval sent in Hello.
    pub heartbeat_interval: Duration,
    /// Voice gateway heartbeat interval sent in Hello.
    pub voice_heartbeat_interval: Duration,
    /// Encryption modes offered in voice Ready, in order.
    pub crypto_modes: Vec<CryptoMode>,
    /// Opus bitrate of the fake users' audio, bits per second.
    pub opus_bitrate: i32,
    /// Pacing: 1.0 is real time, 4.0 sends four 20 ms frames per 20 ms.
    pub speed: f64,
    /// Faults applied from the start.
    pub faults: Faults,
    /// Negotiate DAVE end-to-end encryption (protocol version 1) in every call; when false,
    /// `dave_protocol_version` is 0 and audio has transport encryption only.
    pub dave: bool,
    /// Timing of the DAVE delivery service.
    pub dave_timing: crate::dave::DaveTiming,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            token: "fake-bot-token".into(),
            bot_user_id: 1_100_000_000_000_000_001,
            bot_name: "nina-test-bot".into(),
            application_id: 1_100_000_000_000_000_001,
            guild_id: 1_100_000_000_000_000_100,
            guild_name: "Fake Guild".into(),
            text_channels: vec![(1_100_000_000_000_000_200, "general".into())],
            voice_channels: vec![
                (1_100_000_000_000_000_300, "Voice A".into()),
                (1_100_000_000_000_000_301, "Voice B".into()),
            ],
            extra_guilds: Vec::new(),
            heartbeat_interval: Duration::from_millis(41_250),
            voice_heartbeat_interval: Duration::from_millis(13_750),
            crypto_modes: vec![
                CryptoMode::Aes256GcmRtpSize,
                CryptoMode::XChaCha20Poly1305RtpSize,
            ],
            opus_bitrate: 64_000,
            speed: 1.0,
            faults: Faults::default(),
            dave: true,
            dave_timing: crate::dave::DaveTiming::default(),
        }
    }
}

impl Config {
    /// Every guild the bot is in: the first one (`guild_id`, `guild_name`, `text_channels`,
    /// `voice_channels`), then [`Self::extra_guilds`].
    pub fn guilds(&self) -> Vec<GuildSpec> {
        let mut out = vec![GuildSpec {
            id: self.guild_id,
            name: self.guild_name.clone(),
            text_channels: self.text_channels.clone(),
            voice_channels: self.voice_channels.clone(),
        }];
        out.extend(self.extra_guilds.iter().cloned());
        out
    }

    /// The guild a (text or voice) channel belongs to.
    pub fn guild_of_channel(&self, channel: u64) -> Option<u64> {
        self.guilds()
            .into_iter()
            .find(|g| g.has_channel(channel))
            .map(|g| g.id)
    }

    /// Checks that guild ids and channel ids are unique (a channel must name its guild).
    pub fn validate(&self) -> crate::Result<()> {
        let dup = |what: String| Err(crate::Error::Config(what));
        let mut guilds = std::collections::HashSet::new();
        let mut channels = std::collections::HashSet::new();
        for g in self.guilds() {
            if !guilds.insert(g.id) {
                return dup(format!("guild id {} is used twice", g.id));
            }
            for (c, _) in g.text_channels.iter().chain(g.voice_channels.iter()) {
                if !channels.insert(*c) {
                    return dup(format!("channel id {c} is used twice"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guilds_list_the_first_then_the_extra_ones_and_ids_must_be_unique() {
        let mut cfg = Config::default();
        assert_eq!(cfg.guilds().len(), 1);
        assert!(cfg.validate().is_ok());
        cfg.extra_guilds.push(GuildSpec::numbered(1));
        cfg.extra_guilds.push(GuildSpec::numbered(2));
        assert!(cfg.validate().is_ok());
        let g = cfg.guilds();
        assert_eq!(g[0].id, cfg.guild_id);
        assert_eq!(g[2], GuildSpec::numbered(2));
        let v = cfg.extra_guilds[0].voice_channels[1].0;
        assert_eq!(cfg.guild_of_channel(v), Some(cfg.extra_guilds[0].id));
        assert_eq!(
            cfg.guild_of_channel(cfg.voice_channels[0].0),
            Some(cfg.guild_id)
        );
        assert_eq!(cfg.guild_of_channel(1), None);
        cfg.extra_guilds
            .push(GuildSpec::new(7, "dup").voice_channel(cfg.voice_channels[0].0, "x"));
        assert!(cfg.validate().is_err());
        cfg.extra_guilds.pop();
        cfg.extra_guilds
            .push(GuildSpec::new(cfg.guild_id, "same id"));
        assert!(cfg.validate().is_err());
    }
}
