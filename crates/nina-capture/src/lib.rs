//! Live capture: joining Discord voice channels and turning what each person says into frames
//! on one session clock.
//!
//! - [`Discord`] connects the gateway (twilight) and the voice driver (songbird), keeps track of
//!   who is in which voice channel, and hands every gateway event to the caller.
//! - [`Discord::record`] joins a voice channel and returns a [`Recording`]: a typed async stream
//!   of [`CaptureEvent`]s (people joining and leaving, one [`UserFrame`] per user per 20 ms with
//!   the Opus packet as received and, when decoding, its audio; losses and connection gaps).
//! - [`Assembler`] is the transport-free core: it attributes SSRCs to users and places packets by
//!   their RTP timestamps, so that every user's stream stays aligned with the others for hours.
//!
//! Nothing here writes files: Nina's pipeline (or your bot) consumes the events.

mod assemble;
pub mod dave;
mod discord;
mod receive;

pub use assemble::{
    Assembler, MAX_UNATTRIBUTED_SSRCS, RESYNC_FRAMES, RtpInfo, TickPacket, UNSEEN_HOLE, UserLoss,
};
pub use dave::DaveStats;
pub use discord::{Closed, Discord, DiscordConfig, Endpoints, Recording, Token, VoiceMember};
pub use receive::{Decode, VoiceConfig};

/// Re-exported so that callers use the same versions.
pub use {songbird, twilight_gateway, twilight_http, twilight_model};

/// A Discord user id (snowflake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// Length of one frame in milliseconds.
pub const FRAME_MS: u64 = 20;
/// RTP timestamp units (48 kHz) in one frame.
pub const FRAME_RTP_TICKS: u32 = 960;

/// One 20 ms frame of one user's audio, at its place on the session clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFrame {
    /// Whose audio.
    pub user: UserId,
    /// Frame number on the session clock: the frame starts at `frame * 20` ms after the start.
    pub frame: u64,
    /// The Opus packet as received (transport encryption removed); `None` when lost.
    pub opus: Option<Vec<u8>>,
    /// Decoded audio (interleaved, the decoder's rate and channels, exactly 20 ms), when
    /// decoding; for a lost packet, the decoder's concealment.
    pub pcm: Option<Vec<i16>>,
    /// The packet was lost.
    pub lost: bool,
}

/// What a [`Recording`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    /// The voice connection is up (`reconnect`: after a drop).
    Connected {
        /// Session-clock frame.
        frame: u64,
        /// Not the first connection.
        reconnect: bool,
    },
    /// The voice connection dropped; nothing is received until [`CaptureEvent::Connected`].
    Disconnected {
        /// Session-clock frame.
        frame: u64,
        /// Why, as songbird reports it.
        reason: String,
    },
    /// The gateway connection (commands, voice states) dropped or was told to reconnect; voice
    /// keeps flowing on its own connection, but who joins or leaves may be missed until
    /// [`CaptureEvent::GatewayBack`].
    GatewayLost {
        /// Session-clock frame.
        frame: u64,
        /// What happened.
        reason: String,
    },
    /// The gateway is back: resumed (nothing missed) or a new session (re-identified).
    GatewayBack {
        /// Session-clock frame.
        frame: u64,
        /// Resumed rather than re-identified.
        resumed: bool,
    },
    /// Someone is in the recorded channel (at the start, or entering it).
    Joined {
        /// Session-clock frame.
        frame: u64,
        /// Who, with the name shown in the guild.
        member: VoiceMember,
    },
    /// Someone left the recorded channel.
    Left {
        /// Session-clock frame.
        frame: u64,
        /// Who.
        user: UserId,
    },
    /// One frame of one user.
    Audio(UserFrame),
    /// The bot itself was disconnected from the channel (kicked, or the channel deleted) or
    /// moved elsewhere; the recording is over.
    Ended {
        /// Session-clock frame.
        frame: u64,
        /// What happened.
        reason: String,
    },
}

/// Counters of a recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets placed.
    pub packets: u64,
    /// Packets lost on the network (concealed frames).
    pub lost: u64,
    /// Packets that arrived after their place was taken (duplicates, very late).
    pub late: u64,
    /// RTP clocks re-anchored after a jump.
    pub resyncs: u64,
    /// Frames of SSRCs never attributed to a user, dropped.
    pub unattributed_dropped: u64,
    /// Events dropped inside the bot because the consumer fell behind.
    pub overflowed: u64,
    /// Packets a sender numbered that never arrived, not even as a reported loss: holes in a
    /// stream's sequence numbers while connected. songbird drops packets it cannot decrypt
    /// (DAVE) without a trace; this is where they show.
    pub unseen: u64,
    /// Holes of at least [`crate::UNSEEN_HOLE`] packets among [`Self::unseen`].
    pub unseen_holes: u64,
    /// Packets estimated missing at the start of streams (see
    /// [`crate::UserLoss::missed_at_start`]).
    pub missed_at_start: u64,
    /// Voiced frames that came end-to-end encrypted (DAVE).
    pub e2ee_frames: u64,
    /// Voiced frames under transport encryption only.
    pub plain_frames: u64,
    /// Whether the latest voiced frame came end-to-end encrypted (a downgrade to transport
    /// encryption shows here: songbird reports none).
    pub last_voiced_e2ee: Option<bool>,
}

/// Errors of capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A REST call to Discord failed.
    #[error("Discord REST call failed: {0}")]
    Http(String),
    /// The gateway did not become ready.
    #[error("the Discord gateway did not become ready: {0}")]
    Gateway(String),
    /// Joining the voice channel failed.
    #[error("could not join voice channel {channel} of guild {guild}: {reason}")]
    Join {
        /// Guild id.
        guild: u64,
        /// Channel id.
        channel: u64,
        /// Why.
        reason: String,
    },
    /// A configuration value is wrong.
    #[error("invalid capture configuration: {0}")]
    Config(String),
}
