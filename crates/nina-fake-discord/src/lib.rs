//! # nina-fake-discord
//!
//! A stand-in for the parts of Discord a voice-recording bot touches, served on loopback:
//! the main gateway (API v10, JSON), the REST subset bots call, the voice gateway over TLS
//! (certificate made at start), and voice UDP (IP discovery, then Opus RTP from fake users,
//! encrypted with `aead_aes256_gcm_rtpsize` or `aead_xchacha20_poly1305_rtpsize`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), nina_fake_discord::Error> {
//! let fake = nina_fake_discord::FakeDiscord::start().await?;
//! // twilight-gateway: ConfigBuilder::proxy_url(fake.gateway_url())
//! // twilight-http:    ClientBuilder::proxy(fake.http_proxy(), true)
//! // songbird (child process): SSL_CERT_FILE=fake.ca_cert_path()
//! let control = fake.control();
//! let alice = control.add_user("alice");
//! control.join_voice(alice, fake.config().voice_channels[0].0)?;
//! # Ok(()) }
//! ```
//!
//! The bot may be in several guilds ([`FakeDiscordBuilder::extra_guild`]); channel ids are
//! unique across guilds, so [`Control`] methods taking a channel act in its guild.
//!
//! Calls are end-to-end encrypted with DAVE by default (the fake is the MLS delivery service
//! and external sender; fake users are `davey` clients); [`FakeDiscordBuilder::dave`] turns it
//! off. See `docs/fake-discord.md` for what is covered and what is not.

pub mod audio;
mod config;
mod control;
mod dave;
mod error;
mod gateway;
mod media;
mod payloads;
mod rest;
mod rng;
pub mod scenario;
mod state;
mod tls;
mod voice_ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::info;

pub use config::{Config, CryptoMode, Faults, GuildSpec};
pub use control::{Control, GuildVoice, Interaction, Snapshot, SpeechHandle};
pub use dave::{DaveCallState, DaveFault, DaveTiming};
pub use error::{Error, Result};
pub use state::{RecordedCommand, RecordedRequest, SpeechReport, Stats};

/// Builder of a [`FakeDiscord`]; every setting has a working default.
#[derive(Debug, Clone, Default)]
pub struct FakeDiscordBuilder {
    cfg: Config,
}

impl FakeDiscordBuilder {
    /// Uses a whole configuration at once.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }

    /// The bot token the bot must present.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.cfg.token = token.into();
        self
    }

    /// Encryption modes offered on the voice gateway, in order.
    pub fn crypto_modes(mut self, modes: Vec<CryptoMode>) -> Self {
        self.cfg.crypto_modes = modes;
        self
    }

    /// Adds a guild the bot is in (besides the first one); see [`GuildSpec::numbered`].
    pub fn extra_guild(mut self, guild: GuildSpec) -> Self {
        self.cfg.extra_guilds.push(guild);
        self
    }

    /// Faults applied to RTP from the start.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.cfg.faults = faults;
        self
    }

    /// Negotiates DAVE end-to-end encryption (the default) or transport encryption only.
    pub fn dave(mut self, on: bool) -> Self {
        self.cfg.dave = on;
        self
    }

    /// Timing of the DAVE delivery service (commit wait, transition timeout).
    pub fn dave_timing(mut self, timing: DaveTiming) -> Self {
        self.cfg.dave_timing = timing;
        self
    }

    /// Pacing factor (1.0 = real time).
    pub fn speed(mut self, speed: f64) -> Self {
        self.cfg.speed = speed;
        self
    }

    /// Opus bitrate of the fake users' audio.
    pub fn opus_bitrate(mut self, bps: i32) -> Self {
        self.cfg.opus_bitrate = bps;
        self
    }

    /// Binds every server on 127.0.0.1 (ephemeral ports) and starts serving.
    pub async fn start(self) -> Result<FakeDiscord> {
        FakeDiscord::start_with(self.cfg).await
    }
}

/// A running fake Discord. Dropping it stops every server.
pub struct FakeDiscord {
    shared: Arc<state::Shared>,
    gateway_addr: SocketAddr,
    rest_addr: SocketAddr,
    voice_addr: SocketAddr,
    udp_addr: SocketAddr,
    ca_pem: String,
    _ca_dir: tempfile::TempDir,
    ca_path: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDiscord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDiscord")
            .field("gateway", &self.gateway_addr)
            .field("rest", &self.rest_addr)
            .field("voice", &self.voice_addr)
            .field("udp", &self.udp_addr)
            .finish_non_exhaustive()
    }
}

impl FakeDiscord {
    /// Starts a fake Discord with the default configuration.
    pub async fn start() -> Result<Self> {
        Self::start_with(Config::default()).await
    }

    /// A builder for a customised fake.
    pub fn builder() -> FakeDiscordBuilder {
        FakeDiscordBuilder::default()
    }

    async fn start_with(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let tls = tls::generate()?;
        let gw = TcpListener::bind("127.0.0.1:0").await?;
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let voice = TcpListener::bind("127.0.0.1:0").await?;
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let (gateway_addr, rest_addr, voice_addr, udp_addr) = (
            gw.local_addr()?,
            rest.local_addr()?,
            voice.local_addr()?,
            udp.local_addr()?,
        );
        let ca_dir = tempfile::Builder::new()
            .prefix("nina-fake-discord-")
            .tempdir()?;
        let ca_path = ca_dir.path().join("fake-discord-ca.pem");
        std::fs::write(&ca_path, &tls.ca_pem)?;
        let shared = Arc::new(state::Shared::new(
            cfg,
            format!("ws://{gateway_addr}"),
            format!("{voice_addr}"),
        ));
        let tasks = vec![
            tokio::spawn(gateway::serve(gw, shared.clone())),
            tokio::spawn(rest::serve(rest, shared.clone())),
            tokio::spawn(voice_ws::serve(
                voice,
                TlsAcceptor::from(tls.server.clone()),
                shared.clone(),
                udp_addr.port(),
            )),
            tokio::spawn(media::udp_receiver(udp.clone(), shared.clone())),
            tokio::spawn(media::ticker(udp, shared.clone())),
        ];
        info!(%gateway_addr, %rest_addr, %voice_addr, %udp_addr, "fake Discord listening");
        Ok(Self {
            shared,
            gateway_addr,
            rest_addr,
            voice_addr,
            udp_addr,
            ca_pem: tls.ca_pem,
            _ca_dir: ca_dir,
            ca_path,
            tasks,
        })
    }

    /// The main gateway URL (`ws://127.0.0.1:PORT`), for twilight-gateway's `proxy_url`.
    pub fn gateway_url(&self) -> String {
        format!("ws://{}", self.gateway_addr)
    }

    /// `127.0.0.1:PORT` of the REST API, for twilight-http's `proxy(.., true)` (plain HTTP).
    pub fn http_proxy(&self) -> String {
        self.rest_addr.to_string()
    }

    /// The voice endpoint sent in VOICE_SERVER_UPDATE (`127.0.0.1:PORT`, TLS).
    pub fn voice_endpoint(&self) -> String {
        self.voice_addr.to_string()
    }

    /// The voice UDP address sent in voice Ready.
    pub fn voice_udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// PEM of the CA that signed the voice server's certificate.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`Self::ca_cert_pem`]; run the bot with `SSL_CERT_FILE` set to it.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_path
    }

    /// Environment a bot child process needs to trust the voice server
    /// (`SSL_CERT_FILE`, honoured by rustls-native-certs and OpenSSL).
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![("SSL_CERT_FILE".into(), self.ca_path.display().to_string())]
    }

    /// The configuration in use (ids, token, channels).
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// A cloneable handle to drive the scenario and read what the bot did.
    pub fn control(&self) -> Control {
        Control::new(self.shared.clone())
    }

    /// Stops every server and closes open connections.
    pub async fn shutdown(mut self) {
        let _ = self.shared.shutdown.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
