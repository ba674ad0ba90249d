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
    /// The one guild the bot is in.
    pub guild_id: u64,
    /// The guild's name.
    pub guild_name: String,
    /// Text channels: `(id, name)`.
    pub text_channels: Vec<(u64, String)>,
    /// Voice channels: `(id, name)`.
    pub voice_channels: Vec<(u64, String)>,
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
            heartbeat_interval: Duration::from_millis(41_250),
            voice_heartbeat_interval: Duration::from_millis(13_750),
            crypto_modes: vec![
                CryptoMode::Aes256GcmRtpSize,
                CryptoMode::XChaCha20Poly1305RtpSize,
            ],
            opus_bitrate: 64_000,
            speed: 1.0,
            faults: Faults::default(),
        }
    }
}
