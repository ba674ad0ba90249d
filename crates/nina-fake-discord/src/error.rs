//! Typed errors of the fake Discord.

use std::path::PathBuf;

/// Everything that can go wrong when starting or driving the fake Discord.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound, read or written.
    #[error("network I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or server configuration could not be built.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    /// A WAV file could not be read.
    #[error("cannot read WAV file {path}: {reason}")]
    Wav {
        /// The file that failed.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// Audio could not be resampled or Opus-encoded.
    #[error("audio processing failed: {0}")]
    Audio(String),
    /// The named user does not exist in the fake guild.
    #[error("unknown user {0}")]
    UnknownUser(u64),
    /// The named channel does not exist or has the wrong kind.
    #[error("unknown or unsuitable channel {0}")]
    UnknownChannel(u64),
    /// The user must be in a voice channel for this action.
    #[error("user {0} is not in a voice channel")]
    NotInVoice(u64),
    /// The bot is not in a voice channel.
    #[error("the bot is not in a voice channel")]
    BotNotInVoice,
    /// A wait on the fake's state ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The fake has shut down.
    #[error("the fake Discord has shut down")]
    Shutdown,
    /// The configuration is inconsistent (e.g. a channel id used in two guilds).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The guild is not one the bot is in.
    #[error("unknown guild {0}")]
    UnknownGuild(u64),
    /// A scenario file is malformed.
    #[error("invalid scenario: {0}")]
    Scenario(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
