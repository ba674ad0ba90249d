//! The collector's configuration: a TOML file (see `collector.example.toml`, every key
//! documented there) plus the environment (`DISCORD_TOKEN`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nina_capture::{Decode, Endpoints, Token};
use nina_pipeline::{PipelineConfig, VadChoice};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where sessions are stored.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Models directory (default: `$NINA_MODELS`, the per-user directory, then `./models`).
    #[serde(default)]
    pub models: Option<PathBuf>,
    /// A file holding the bot token (used when `DISCORD_TOKEN` is not set).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Also log to this file.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Discord endpoints (only for a stand-in).
    #[serde(default)]
    pub discord: DiscordSection,
    /// Receiving.
    #[serde(default)]
    pub capture: CaptureSection,
    /// Transcription.
    #[serde(default)]
    pub transcribe: TranscribeSection,
    /// Voice channels to record: joined at start-up, or, with `follow`, whenever someone is in
    /// them.
    #[serde(default)]
    pub channels: Vec<ChannelRef>,
    /// Join a configured channel when someone enters it and leave when it empties.
    #[serde(default)]
    pub follow: bool,
    /// Commands.
    #[serde(default)]
    pub commands: CommandsSection,
    /// Post each finished utterance's text to this text channel (recordings of its guild only).
    #[serde(default)]
    pub captions_channel: Option<u64>,
    /// Voiceprints.
    #[serde(default)]
    pub voiceprints: VoiceprintsSection,
    /// The operators' web page.
    #[serde(default)]
    pub web: WebSection,
}

/// `[web]`: the operators' web page (live view and stored sessions), off unless `listen` is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Address to serve on (`127.0.0.1:PORT`); anything but loopback needs `token_file`.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// A file holding the access token (never recorded in `session.json`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `[voiceprints]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceprintsSection {
    /// When a session ends, enrol each user whose stream is one clean voice into the guild's
    /// voiceprints (`<data_dir>/<guild>/voiceprints.json`), never an opted-out user.
    #[serde(default = "yes")]
    pub enrol: bool,
    /// Seconds of each user's speech (their first) diarized to enrol them, bounding the work
    /// done when a session ends.
    #[serde(default = "default_enrol_seconds")]
    pub max_seconds: f64,
}

impl Default for VoiceprintsSection {
    fn default() -> Self {
        Self {
            enrol: true,
            max_seconds: default_enrol_seconds(),
        }
    }
}

fn default_enrol_seconds() -> f64 {
    60.0
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `[discord]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordSection {
    /// Gateway URL instead of the one Discord announces.
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// `host:port` of a plain-HTTP REST API instead of Discord's.
    #[serde(default)]
    pub api: Option<String>,
}

/// `[capture]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// Decode, segment and transcribe live; `false` keeps only the Opus tracks (`reprocess
    /// session` does the rest later).
    #[serde(default = "yes")]
    pub decode: bool,
    /// Threads that cut decoded audio into utterances (voice activity detection), shared by
    /// every session; 0: one per core.
    #[serde(default)]
    pub segment_threads: usize,
}

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            decode: true,
            segment_threads: 0,
        }
    }
}

impl CaptureSection {
    /// Segmenter threads to start.
    pub fn segment_threads(&self) -> usize {
        match self.segment_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[transcribe]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscribeSection {
    /// Transcribe live.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whisper model id or ggml file.
    #[serde(default = "default_model")]
    pub model: String,
    /// Language code to force one, or several comma-separated (`pt,en`) to detect among them;
    /// detected among all when absent.
    #[serde(default)]
    pub language: Option<String>,
    /// Names and jargon that condition the decoder.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Transcription workers.
    #[serde(default = "one")]
    pub workers: usize,
    /// Utterances waiting for transcription at most; beyond, they are stored for `reprocess`.
    #[serde(default = "default_backlog")]
    pub max_backlog: usize,
    /// Voice activity detector: `auto`, `silero` or `energy`.
    #[serde(default = "default_vad")]
    pub vad: String,
}

impl Default for TranscribeSection {
    fn default() -> Self {
        Self {
            enabled: true,
            model: default_model(),
            language: None,
            prompt: None,
            workers: 1,
            max_backlog: default_backlog(),
            vad: default_vad(),
        }
    }
}

fn default_model() -> String {
    nina_models::catalog::DEFAULT_WHISPER.id.into()
}
fn one() -> usize {
    1
}
fn default_backlog() -> usize {
    200
}
fn default_vad() -> String {
    "auto".into()
}

/// A voice channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRef {
    /// Guild id.
    pub guild: u64,
    /// Voice channel id.
    pub channel: u64,
}

/// `[commands]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    /// Register and answer `/record start|stop|status|optout|optin`.
    #[serde(default = "yes")]
    pub slash: bool,
    /// Prefix for `join` / `leave` typed in a text channel (e.g. `!`); off when absent. Needs
    /// the privileged message content intent.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Members with this role may start and stop recordings.
    #[serde(default)]
    pub role: Option<u64>,
    /// These users may too.
    #[serde(default)]
    pub users: Vec<u64>,
    /// Without `role`, members with Manage Channels may too.
    #[serde(default = "yes")]
    pub manage_channels: bool,
}

impl Default for CommandsSection {
    fn default() -> Self {
        Self {
            slash: true,
            prefix: None,
            role: None,
            users: Vec::new(),
            manage_channels: true,
        }
    }
}

impl Config {
    /// Every default (no file).
    pub fn default_values() -> Self {
        toml::from_str("").unwrap_or_default()
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.transcribe.vad.as_str(), "auto" | "silero" | "energy") {
            bail!("transcribe.vad must be auto, silero or energy");
        }
        if self.transcribe.workers == 0 || self.transcribe.workers > 64 {
            bail!("transcribe.workers must be 1 to 64");
        }
        if let Some(addr) = self.web.listen
            && self.web.token_file.is_none()
            && !addr.ip().is_loopback()
        {
            bail!("web.listen {addr} is not a loopback address: set web.token_file too");
        }
        let m = self.voiceprints.max_seconds;
        if !(m.is_finite() && (3.0..=3600.0).contains(&m)) {
            bail!("voiceprints.max_seconds must be 3 to 3600");
        }
        if self.channels.iter().any(|c| c.guild == 0 || c.channel == 0) {
            bail!("channels: ids must not be 0");
        }
        if self.follow && self.channels.is_empty() {
            bail!("follow needs at least one entry in channels");
        }
        if let Some(p) = &self.commands.prefix
            && (p.is_empty() || p.chars().any(char::is_whitespace))
        {
            bail!("commands.prefix must be non-empty without spaces");
        }
        self.pipeline().validate()?;
        Ok(())
    }

    /// The token: `DISCORD_TOKEN`, else the token file. Never logged.
    pub fn token(&self) -> Result<(Token, &'static str)> {
        if let Ok(t) = std::env::var("DISCORD_TOKEN")
            && !t.trim().is_empty()
        {
            return Ok((Token::new(&t), "DISCORD_TOKEN"));
        }
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token_file {}", f.display()))?;
            let t = Token::new(&t);
            if t.is_empty() {
                bail!("token_file {} is empty", f.display());
            }
            return Ok((t, "token_file"));
        }
        bail!("no bot token: set DISCORD_TOKEN or token_file (or run `collector --demo`)")
    }

    /// Discord endpoints.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            gateway: self.discord.gateway_url.clone(),
            api: self.discord.api.clone(),
        }
    }

    /// How voice is decoded.
    pub fn decode(&self) -> Decode {
        if self.capture.decode {
            Decode::Mono16k
        } else {
            Decode::Off
        }
    }

    /// The pipeline settings.
    pub fn pipeline(&self) -> PipelineConfig {
        let mut cfg = PipelineConfig {
            models: nina_models::ModelDir::from_option(self.models.as_ref()),
            whisper: self.transcribe.model.clone(),
            vad: match self.transcribe.vad.as_str() {
                "silero" => VadChoice::Silero,
                "energy" => VadChoice::Energy,
                _ => VadChoice::Auto,
            },
            workers: self.transcribe.workers,
            ..PipelineConfig::default()
        };
        let t = &mut cfg.transcribe;
        t.language = self.transcribe.language.clone();
        t.initial_prompt = self.transcribe.prompt.clone();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        t.threads = u16::try_from((cores / self.transcribe.workers.max(1)).max(1)).unwrap_or(1);
        cfg
    }

    /// The configuration as recorded in each session (no secrets are in it).
    pub fn recorded(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector.example.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.commands.prefix.as_deref(), Some("!"));
        // Every key of the example is documented by a comment line above it.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let l = l.trim_start_matches('#').trim();
            if l.contains(" = ") && !l.starts_with('[') && i > 0 {
                let above = lines[i - 1].trim();
                assert!(
                    above.starts_with('#') || above.starts_with('['),
                    "undocumented key on line {}: {l}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "unknown_key = 1",
            "[transcribe]\nvad = \"loud\"",
            "follow = true",
            "[[channels]]\nguild = 0\nchannel = 1",
            "[commands]\nprefix = \"a b\"",
            "[web]\nlisten = \"0.0.0.0:8090\"",
        ] {
            let cfg: Result<Config> = toml::from_str::<Config>(bad)
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate().map(|()| c));
            assert!(cfg.is_err(), "{bad} was accepted");
        }
    }
}
