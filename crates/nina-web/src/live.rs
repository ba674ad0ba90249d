//! The live view's hub: the collector pushes what it sees (channels and members, speaking
//! levels, finished utterances, health) and every open `/live` page gets it through one
//! server-sent-events stream.
//!
//! - Speaking levels go through a `watch` channel: a page reads them at most 10 times a second
//!   (coalesced), so a busy call costs the same as a quiet one.
//! - Utterances go through a `broadcast` channel and a ring buffer of the last
//!   [`RING`] events, numbered; a page that reconnects with `Last-Event-ID` gets what it missed.
//! - Channels and health are state (`watch`): sent on connect and when they change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Utterances kept for pages that reconnect.
pub const RING: usize = 256;
/// How often a page gets speaking levels, at most.
pub const LEVEL_PERIOD: Duration = Duration::from_millis(100);

/// A member of a recorded channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Discord user id.
    pub user_id: u64,
    /// Display name.
    pub name: String,
}

/// A channel being recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    /// Guild id.
    pub guild_id: u64,
    /// Guild name, when known.
    pub guild_name: Option<String>,
    /// Voice channel id.
    pub channel_id: u64,
    /// Channel name, when known.
    pub channel_name: Option<String>,
    /// The session being written.
    pub session_id: String,
    /// Who is in the channel.
    pub members: Vec<Member>,
}

/// Health of the recorder.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Health {
    /// Connected to the gateway / voice.
    pub connected: bool,
    /// DAVE (end-to-end encryption) state, e.g. `"ok"`, `"off"`, `"3 undecryptable"`.
    pub dave: String,
    /// Utterances waiting for transcription.
    pub backlog: usize,
    /// Anything else worth showing, short.
    pub detail: String,
}

/// A finished utterance with its transcript.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Utterance {
    /// Voice channel id.
    pub channel_id: u64,
    /// Speaker's user id.
    pub user_id: u64,
    /// Speaker label.
    pub speaker: String,
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Transcript.
    pub text: String,
}

/// An utterance as kept in the ring: numbered, stamped with the time it was pushed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// Event id (1, 2, ...): what `Last-Event-ID` names.
    pub id: u64,
    /// Unix ms when pushed.
    pub at_ms: i64,
    /// The utterance.
    pub utterance: Utterance,
}

/// Speaking levels per user (0 = silent, up to 1).
pub type Levels = BTreeMap<u64, f32>;

struct Inner {
    levels: watch::Sender<Levels>,
    channels: watch::Sender<Vec<Channel>>,
    health: watch::Sender<Health>,
    utterances: broadcast::Sender<Stamped>,
    ring: Mutex<VecDeque<Stamped>>,
    next: AtomicU64,
    pages: AtomicU64,
}

/// The handle the collector pushes live events into; cheap to clone.
#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHub")
            .field("pages", &self.pages())
            .finish()
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new()
    }
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl LiveHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                levels: watch::Sender::new(Levels::new()),
                channels: watch::Sender::new(Vec::new()),
                health: watch::Sender::new(Health::default()),
                utterances: broadcast::Sender::new(RING),
                ring: Mutex::new(VecDeque::with_capacity(RING)),
                next: AtomicU64::new(1),
                pages: AtomicU64::new(0),
            }),
        }
    }

    /// Sets a user's speaking level (0 when they stop). Cheap: call it per audio packet.
    pub fn speaking(&self, user_id: u64, level: f32) {
        let level = if level.is_finite() {
            level.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.inner.levels.send_if_modified(|m| {
            let old = m.get(&user_id).copied().unwrap_or(0.0);
            if (old > 0.0) == (level > 0.0) && (old - level).abs() < 0.05 {
                return false;
            }
            if level > 0.0 {
                m.insert(user_id, level);
            } else {
                m.remove(&user_id);
            }
            true
        });
    }

    /// Replaces the list of recorded channels and their members.
    pub fn set_channels(&self, channels: Vec<Channel>) {
        self.inner.channels.send_if_modified(|c| {
            if *c == channels {
                return false;
            }
            *c = channels;
            true
        });
    }

    /// Adds or replaces one channel (by channel id): what each recording pushes.
    pub fn upsert_channel(&self, channel: Channel) {
        self.inner.channels.send_if_modified(|c| {
            match c.iter_mut().find(|x| x.channel_id == channel.channel_id) {
                Some(x) if *x == channel => return false,
                Some(x) => *x = channel,
                None => c.push(channel),
            }
            true
        });
    }

    /// Removes a channel (its recording ended) and its members' speaking levels.
    pub fn remove_channel(&self, channel_id: u64) {
        let mut gone = Vec::new();
        self.inner.channels.send_if_modified(|c| {
            let before = c.len();
            c.retain(|x| {
                if x.channel_id == channel_id {
                    gone.extend(x.members.iter().map(|m| m.user_id));
                }
                x.channel_id != channel_id
            });
            c.len() != before
        });
        for u in gone {
            self.speaking(u, 0.0);
        }
    }

    /// Replaces the health shown.
    pub fn set_health(&self, health: Health) {
        self.inner.health.send_if_modified(|h| {
            if *h == health {
                return false;
            }
            *h = health;
            true
        });
    }

    /// Publishes a finished utterance; returns its event id.
    pub fn utterance(&self, utterance: Utterance) -> u64 {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let s = Stamped {
            id,
            at_ms: now_ms(),
            utterance,
        };
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(s.clone());
        // No receiver is not an error: nobody is looking.
        let _ = self.inner.utterances.send(s);
        id
    }

    /// Pages connected now.
    pub fn pages(&self) -> u64 {
        self.inner.pages.load(Ordering::Relaxed)
    }

    /// Utterances after event `after` still in the ring (all of them for `None`, at most
    /// `limit`, the newest).
    pub fn since(&self, after: Option<u64>, limit: usize) -> Vec<Stamped> {
        let ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        let v: Vec<Stamped> = ring
            .iter()
            .filter(|s| after.is_none_or(|a| s.id > a))
            .cloned()
            .collect();
        let skip = v.len().saturating_sub(limit);
        v.into_iter().skip(skip).collect()
    }

    /// A subscription: what one page's stream reads.
    pub fn subscribe(&self) -> Subscription {
        self.inner.pages.fetch_add(1, Ordering::Relaxed);
        let mut levels = self.inner.levels.subscribe();
        levels.mark_changed();
        Subscription {
            hub: self.clone(),
            levels,
            channels: self.inner.channels.subscribe(),
            health: self.inner.health.subscribe(),
            utterances: self.inner.utterances.subscribe(),
        }
    }

    /// Current channels.
    pub fn channels(&self) -> Vec<Channel> {
        self.inner.channels.borrow().clone()
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.inner.health.borrow().clone()
    }
}

/// One page's view of the hub; counts as an open page until dropped.
pub struct Subscription {
    hub: LiveHub,
    /// Speaking levels (read at most every [`LEVEL_PERIOD`]).
    pub levels: watch::Receiver<Levels>,
    /// Channels and members.
    pub channels: watch::Receiver<Vec<Channel>>,
    /// Health.
    pub health: watch::Receiver<Health>,
    /// Utterances as they come.
    pub utterances: broadcast::Receiver<Stamped>,
}

impl Subscription {
    /// The hub.
    pub fn hub(&self) -> &LiveHub {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.inner.pages.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utt(text: &str) -> Utterance {
        Utterance {
            channel_id: 1,
            user_id: 2,
            speaker: "ann".into(),
            start: 0.0,
            end: 1.0,
            text: text.into(),
        }
    }

    #[test]
    fn ring_keeps_the_last_and_replays_after_an_id() {
        let hub = LiveHub::new();
        for i in 0..(RING + 10) {
            hub.utterance(utt(&i.to_string()));
        }
        let all = hub.since(None, usize::MAX);
        assert_eq!(all.len(), RING);
        assert_eq!(all[0].id, 11);
        let after = hub.since(Some(RING as u64 + 5), usize::MAX);
        assert_eq!(
            after.iter().map(|s| s.id).collect::<Vec<_>>(),
            (RING as u64 + 6..=RING as u64 + 10).collect::<Vec<_>>()
        );
        assert_eq!(hub.since(None, 3).len(), 3);
    }

    #[tokio::test]
    async fn levels_coalesce_and_pages_are_counted() {
        let hub = LiveHub::new();
        let mut sub = hub.subscribe();
        assert_eq!(hub.pages(), 1);
        assert!(sub.levels.has_changed().unwrap());
        sub.levels.borrow_and_update();
        hub.speaking(5, 0.5);
        hub.speaking(5, 0.51); // within 0.05: not a change
        assert!(sub.levels.has_changed().unwrap());
        assert_eq!(sub.levels.borrow_and_update().get(&5), Some(&0.5));
        hub.speaking(5, 0.52);
        assert!(!sub.levels.has_changed().unwrap());
        hub.speaking(5, 0.0);
        assert!(sub.levels.borrow_and_update().is_empty());
        hub.speaking(6, f32::NAN);
        assert!(!sub.levels.has_changed().unwrap());
        let id = hub.utterance(utt("hello"));
        assert_eq!(sub.utterances.recv().await.unwrap().id, id);
        drop(sub);
        assert_eq!(hub.pages(), 0);
    }

    #[test]
    fn channels_are_added_replaced_and_removed() {
        let hub = LiveHub::new();
        let ch = |id: u64, members: Vec<u64>| Channel {
            guild_id: 1,
            guild_name: None,
            channel_id: id,
            channel_name: None,
            session_id: "s".into(),
            members: members
                .into_iter()
                .map(|user_id| Member {
                    user_id,
                    name: user_id.to_string(),
                })
                .collect(),
        };
        hub.upsert_channel(ch(5, vec![1]));
        hub.upsert_channel(ch(6, vec![2]));
        hub.upsert_channel(ch(5, vec![1, 3]));
        assert_eq!(hub.channels().len(), 2);
        assert_eq!(hub.channels()[0].members.len(), 2);
        hub.speaking(3, 0.9);
        hub.remove_channel(5);
        assert_eq!(hub.channels().len(), 1);
        assert!(hub.inner.levels.borrow().is_empty());
    }

    #[test]
    fn unchanged_state_is_not_resent() {
        let hub = LiveHub::new();
        let mut sub = hub.subscribe();
        hub.set_health(Health::default());
        assert!(!sub.health.has_changed().unwrap());
        hub.set_health(Health {
            connected: true,
            ..Health::default()
        });
        assert!(sub.health.has_changed().unwrap());
        sub.health.borrow_and_update();
        hub.set_channels(vec![]);
        assert!(!sub.channels.has_changed().unwrap());
    }
}
