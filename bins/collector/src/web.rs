//! The collector's side of the operators' web page: the server (`[web] listen`), and what each
//! recording pushes into its live view (members, who is speaking, finished utterances, health).

use std::collections::HashMap;

use anyhow::{Context, Result};
use nina_web::{Channel, Health, LiveHub, Member};

use crate::config::Config;

/// Frames (20 ms) without a packet after which a user counts as silent.
const SILENT_AFTER: u64 = 10;

/// Starts the web server on the runtime when `[web] listen` is set; returns its hub.
pub async fn start(cfg: &Config) -> Result<Option<LiveHub>> {
    let Some(listen) = cfg.web.listen else {
        return Ok(None);
    };
    let token = match &cfg.web.token_file {
        Some(f) => Some(
            nina_web::read_token(f)
                .with_context(|| format!("cannot read web.token_file {}", f.display()))?,
        ),
        None => None,
    };
    let hub = LiveHub::new();
    let web = nina_web::Web::new(nina_web::WebConfig {
        data: cfg.data_dir.clone(),
        listen,
        token,
    })?
    .with_hub(hub.clone());
    let bound = web.bind().await?;
    tracing::info!(addr = %bound.local_addr(), "web page served");
    println!("NINA-WEB http://{}/", bound.local_addr());
    tokio::spawn(async move {
        if let Err(e) = bound.serve(std::future::pending()).await {
            tracing::error!("web page: {e}");
        }
    });
    Ok(Some(hub))
}

/// One recording's pushes into the hub.
pub struct LiveFeed {
    hub: LiveHub,
    channel: Channel,
    /// Last frame heard per user speaking now.
    heard: HashMap<u64, u64>,
    connected: bool,
    last_health: Option<Health>,
}

impl LiveFeed {
    /// A feed for the recording of `channel`.
    pub fn new(hub: LiveHub, channel: Channel) -> Self {
        hub.upsert_channel(channel.clone());
        Self {
            hub,
            channel,
            heard: HashMap::new(),
            connected: true,
            last_health: None,
        }
    }

    /// Someone joined (or was seen).
    pub fn joined(&mut self, user: u64, name: Option<&str>) {
        let name = name.map(str::to_string).unwrap_or_else(|| user.to_string());
        match self.channel.members.iter_mut().find(|m| m.user_id == user) {
            Some(m) => m.name = name,
            None => self.channel.members.push(Member {
                user_id: user,
                name,
            }),
        }
        self.hub.upsert_channel(self.channel.clone());
    }

    /// Someone left.
    pub fn left(&mut self, user: u64) {
        self.channel.members.retain(|m| m.user_id != user);
        self.heard.remove(&user);
        self.hub.speaking(user, 0.0);
        self.hub.upsert_channel(self.channel.clone());
    }

    /// A packet of `user` at `frame` (`pcm` when decoded): they are speaking.
    pub fn audio(&mut self, user: u64, frame: u64, pcm: Option<&[i16]>) {
        if !self.channel.members.iter().any(|m| m.user_id == user) {
            self.joined(user, None);
        }
        let level = pcm
            .filter(|p| !p.is_empty())
            .map(|p| {
                let peak = p.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
                (f32::from(peak) / 32768.0).max(0.01)
            })
            .unwrap_or(1.0);
        self.heard.insert(user, frame);
        self.hub.speaking(user, level);
    }

    /// Called each turn of the recording loop: silences users not heard lately, updates health.
    pub fn tick(&mut self, now: u64, backlog: usize, dave: &str) {
        let quiet: Vec<u64> = self
            .heard
            .iter()
            .filter(|(_, f)| now.saturating_sub(**f) > SILENT_AFTER)
            .map(|(u, _)| *u)
            .collect();
        for u in quiet {
            self.heard.remove(&u);
            self.hub.speaking(u, 0.0);
        }
        let h = Health {
            connected: self.connected,
            dave: dave.to_string(),
            backlog,
            detail: String::new(),
        };
        if self.last_health.as_ref() != Some(&h) {
            self.hub.set_health(h.clone());
            self.last_health = Some(h);
        }
    }

    /// The voice connection dropped or came back.
    pub fn connection(&mut self, up: bool) {
        self.connected = up;
    }

    /// A finished utterance's text.
    pub fn utterance(&self, user: u64, speaker: &str, start: f64, end: f64, text: &str) {
        self.hub.utterance(nina_web::Utterance {
            channel_id: self.channel.channel_id,
            user_id: user,
            speaker: speaker.to_string(),
            start,
            end,
            text: text.to_string(),
        });
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.hub.remove_channel(self.channel.channel_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> (LiveHub, LiveFeed) {
        let hub = LiveHub::new();
        let f = LiveFeed::new(
            hub.clone(),
            Channel {
                guild_id: 1,
                guild_name: None,
                channel_id: 2,
                channel_name: None,
                session_id: "s".into(),
                members: vec![],
            },
        );
        (hub, f)
    }

    #[test]
    fn speaking_starts_with_audio_and_stops_after_silence() {
        let (hub, mut f) = feed();
        let mut sub = hub.subscribe();
        sub.levels.borrow_and_update();
        f.audio(7, 100, Some(&[0, 16384, -3]));
        assert_eq!(hub.channels()[0].members[0].user_id, 7);
        assert!((sub.levels.borrow_and_update()[&7] - 0.5).abs() < 0.01);
        f.tick(105, 0, "ok");
        assert!(!sub.levels.has_changed().unwrap());
        f.tick(111, 0, "ok");
        assert!(sub.levels.borrow_and_update().is_empty());
        assert_eq!(hub.health().dave, "ok");
        f.left(7);
        assert!(hub.channels()[0].members.is_empty());
        drop(f);
        assert!(hub.channels().is_empty());
    }

    #[test]
    fn utterances_reach_the_ring() {
        let (hub, f) = feed();
        f.utterance(7, "Ann", 1.0, 2.0, "hello");
        let r = hub.since(None, 10);
        assert_eq!(r[0].utterance.text, "hello");
        assert_eq!(r[0].utterance.channel_id, 2);
    }
}
