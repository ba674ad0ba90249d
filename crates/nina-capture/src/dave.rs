//! What DAVE (Discord's end-to-end encryption of voice) is doing in each voice connection.
//!
//! songbird 0.6 runs DAVE through `davey` and exposes none of it: no epoch, no error, and
//! packets it cannot decrypt are dropped without an event. What it does say, it says in its
//! logs (and davey in its own). [`layer`] is a `tracing` layer that reads those records and
//! keeps [`DaveStats`] per voice channel; [`crate::Recording::dave`] returns them. Each songbird
//! driver runs its tasks under one root span; davey names the channel when it makes the
//! connection's first key package ("Created key package for channel N"), which ties that root
//! span, and every later record under it, to the channel.
//!
//! This reads log messages, so it is tied to the versions it was written against (songbird
//! 0.6.1, davey 0.1.5); the collector's DAVE tests fail if a new version changes them. Packets
//! songbird drops because no key is ready yet (or because it does not know whose SSRC it is)
//! leave no record at all: they show only as lost packets in the user's stream.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// DAVE counters of one voice channel's connection, since its recording started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaveStats {
    /// The connection negotiated DAVE (a key package was made) and has not dropped it since.
    pub active: bool,
    /// The MLS epoch the bot last moved to.
    pub epoch: Option<u64>,
    /// Epochs the bot moved through (commits followed and welcomes taken).
    pub epoch_changes: u32,
    /// Key packages the bot made (one per join, and one per start-over).
    pub key_packages: u32,
    /// Commits or welcomes the bot could not process (it then reports them, op 31, and starts
    /// over with a new key package).
    pub invalid: u32,
    /// Proposals the bot refused (for example adding a user it was not told about).
    pub proposal_errors: u32,
    /// Times the DAVE state was reset.
    pub resets: u32,
    /// Packets that failed DAVE decryption (no key for their generation, or a bad tag).
    pub decrypt_failures: u64,
}

fn registry() -> &'static Mutex<HashMap<u64, DaveStats>> {
    static R: OnceLock<Mutex<HashMap<u64, DaveStats>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn installed() -> &'static OnceLock<()> {
    static I: OnceLock<()> = OnceLock::new();
    &I
}

/// Counters of voice `channel`; `None` when no [`layer`] is installed in the process
/// (nothing is observed then).
pub fn stats(channel: u64) -> Option<DaveStats> {
    installed().get()?;
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    Some(r.get(&channel).copied().unwrap_or_default())
}

/// Forgets `channel`'s counters (a new recording starts).
pub(crate) fn reset(channel: u64) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&channel);
}

/// The layer that keeps [`DaveStats`]; add it to the process's subscriber. It only sees
/// songbird's and davey's records (and its own spans), whatever the other layers' filters.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let _ = installed().set(());
    DaveLayer.with_filter(filter())
}

fn filter<S>() -> impl Filter<S> {
    FilterFn::new(|m: &Metadata<'_>| {
        let t = m.target();
        if m.is_span() {
            // songbird's task spans tie the records of one driver together.
            return t.starts_with("songbird");
        }
        (t.starts_with("davey") && *m.level() <= Level::DEBUG)
            || (t.starts_with("songbird") && *m.level() <= Level::WARN)
    })
}

struct DaveLayer;

/// The voice channel of a songbird driver's root span.
struct Channel(u64);

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S> Layer<S> for DaveLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(root) = ctx.event_scope(event).and_then(|s| s.from_root().next()) else {
            return;
        };
        let mut msg = Message::default();
        event.record(&mut msg);
        if let Some(channel) = channel_in(&msg.0) {
            // `replace`, not `insert` (which asserts the slot is empty): a reconnect names it again.
            root.extensions_mut().replace(Channel(channel));
        }
        let Some(channel) = root.extensions().get::<Channel>().map(|c| c.0) else {
            return;
        };
        let Some(change) = classify(&msg.0) else {
            return;
        };
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        apply(r.entry(channel).or_default(), change);
    }
}

/// The channel davey names when it makes a key package or a pending group.
fn channel_in(msg: &str) -> Option<u64> {
    [
        "Created key package for channel ",
        "Created pending group for channel ",
    ]
    .iter()
    .find_map(|p| msg.strip_prefix(p))
    .and_then(|rest| rest.trim().parse().ok())
}

/// What one log record says about DAVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    KeyPackage,
    Epoch(Option<u64>),
    Invalid,
    ProposalError,
    Reset,
    DecryptFailure,
}

/// Reads one songbird or davey message (the texts of songbird 0.6.1 and davey 0.1.5).
fn classify(msg: &str) -> Option<Change> {
    if msg.starts_with("Created key package") {
        Some(Change::KeyPackage)
    } else if msg.starts_with("Commit processed successfully")
        || msg.starts_with("Welcomed to group successfully")
    {
        Some(Change::Epoch(epoch_in(msg)))
    } else if msg.starts_with("MLS commit errored") || msg.starts_with("MLS welcome errored") {
        Some(Change::Invalid)
    } else if msg.starts_with("error processing MLS proposals") {
        Some(Change::ProposalError)
    } else if msg.starts_with("Resetting MLS session") {
        Some(Change::Reset)
    } else if msg.starts_with("decryption failed") || msg.starts_with("DAVE decryption failed") {
        Some(Change::DecryptFailure)
    } else {
        None
    }
}

/// The number after "our epoch is" (`GroupEpoch(3)` or `3`).
fn epoch_in(msg: &str) -> Option<u64> {
    let rest = &msg[msg.find("our epoch is")? + "our epoch is".len()..];
    let digits: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn apply(s: &mut DaveStats, change: Change) {
    match change {
        Change::KeyPackage => {
            s.active = true;
            s.key_packages += 1;
        }
        Change::Epoch(e) => {
            s.active = true;
            s.epoch = e.or(s.epoch);
            s.epoch_changes += 1;
        }
        Change::Invalid => s.invalid += 1,
        Change::ProposalError => s.proposal_errors += 1,
        Change::Reset => {
            s.active = false;
            s.epoch = None;
            s.resets += 1;
        }
        Change::DecryptFailure => s.decrypt_failures += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn messages_of_songbird_and_davey_are_read() {
        assert_eq!(
            classify("Created key package for channel 5"),
            Some(Change::KeyPackage)
        );
        assert_eq!(
            classify(
                "Commit processed successfully, our leaf index is 2, our epoch is GroupEpoch(7)"
            ),
            Some(Change::Epoch(Some(7)))
        );
        assert_eq!(
            classify("Welcomed to group successfully, our leaf index is 1, our epoch is 3"),
            Some(Change::Epoch(Some(3)))
        );
        assert_eq!(classify("MLS commit errored: X"), Some(Change::Invalid));
        assert_eq!(classify("MLS welcome errored: X"), Some(Change::Invalid));
        assert_eq!(
            classify("decryption failed, no cryptor found for generation 4"),
            Some(Change::DecryptFailure)
        );
        assert_eq!(classify("Resetting MLS session"), Some(Change::Reset));
        assert_eq!(classify("Heartbeat ACK received."), None);
        assert_eq!(epoch_in("our epoch is"), None);
    }

    #[test]
    fn records_count_for_the_channel_their_driver_named() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            reset(41);
            reset(42);
            // Two drivers, each a root span with a task span under it, as songbird's are.
            let driver = |channel: u64| {
                let root = tracing::info_span!(target: "songbird::driver::tasks", "runner");
                root.in_scope(|| {
                    let task = tracing::info_span!(target: "songbird::driver::tasks::ws", "runner");
                    task.in_scope(|| {
                        // Before the channel is named, records are not attributed.
                        tracing::warn!(target: "songbird::driver::tasks::ws", "MLS commit errored: early");
                        tracing::debug!(target: "davey::session", "Created key package for channel {}", channel);
                        tracing::debug!(
                            target: "davey::session",
                            "Welcomed to group successfully, our leaf index is 1, our epoch is {:?}",
                            2
                        );
                        tracing::warn!(target: "songbird::driver::tasks::ws", "MLS commit errored: bad");
                        tracing::warn!(target: "davey::cryptor::decryptor", "decryption failed, no cryptor found for generation 0");
                        // Other crates' records do not count.
                        tracing::warn!(target: "other", "decryption failed");
                    });
                });
                root
            };
            let a = driver(41);
            // A reconnect names the channel again under the same driver.
            a.in_scope(|| {
                tracing::debug!(target: "davey::session", "Created key package for channel {}", 41);
            });
            // Outside any driver: ignored.
            tracing::warn!(target: "songbird::driver::tasks::ws", "MLS commit errored: bad");
            let s = stats(41).expect("layer installed");
            assert_eq!(
                s,
                DaveStats {
                    active: true,
                    epoch: Some(2),
                    epoch_changes: 1,
                    key_packages: 2,
                    invalid: 1,
                    proposal_errors: 0,
                    resets: 0,
                    decrypt_failures: 1,
                }
            );
            assert_eq!(stats(42), Some(DaveStats::default()));
            assert_eq!(channel_in("Created pending group for channel 7"), Some(7));
            assert_eq!(channel_in("Created key package"), None);
        });
    }
}
