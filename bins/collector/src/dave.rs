//! Watching DAVE (end-to-end encryption) in a recording, and deciding when to start it over.
//!
//! songbird recovers from one bad commit or welcome by itself (it reports it and asks to be
//! added again), but a call can still go silent: a transition that never completes leaves it
//! holding keys nobody uses, and then every packet fails to decrypt. Peers' recorders have
//! shown exactly that (silent tracks after epoch changes). The watcher asks for a rejoin, which
//! gives the connection new DAVE state, when failures keep coming: [`MAX_INVALID`] commits or
//! welcomes refused since the last (re)join, or [`DECRYPT_FAILURES`] packets lost within
//! [`WINDOW`] without a trace. songbird drops a packet it cannot decrypt silently, so those
//! are seen as holes in the senders' sequence numbers ([`nina_capture::CaptureStats::unseen`],
//! known when the sender's next packet arrives, at the latest the silence that ends each of
//! their bursts), plus the failures davey logs. Rejoins are at least [`COOLDOWN`] apart, so a call that cannot be fixed costs a
//! rejoin per cooldown, not a loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nina_capture::DaveStats;
use nina_store::DaveRecord;

/// Refused commits or welcomes since the last (re)join that start a rejoin.
pub const MAX_INVALID: u32 = 3;
/// Packets lost without a trace within [`WINDOW`] that start a rejoin (3 s of one speaker).
pub const DECRYPT_FAILURES: u64 = 150;
/// The window over which decryption failures are counted.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Least time between two rejoins.
pub const COOLDOWN: Duration = Duration::from_secs(30);

/// A rejoin to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejoin {
    /// What failed, for the log, the channel and the gap.
    pub reason: String,
    /// Packets lost within the window (20 ms each; several speakers' add up).
    pub lost_packets: u64,
}

/// DAVE state of one recording, and the rejoin policy.
#[derive(Debug, Default)]
pub struct DaveWatch {
    last: DaveStats,
    /// `invalid` at the last (re)join.
    invalid_base: u32,
    /// `(when, failures)` samples within the window (failures: decryption failures logged plus
    /// packets that never arrived).
    samples: VecDeque<(Instant, u64)>,
    last_rejoin: Option<Instant>,
    rejoins: u32,
    unseen: u64,
}

impl DaveWatch {
    /// Takes the latest counters (DAVE's, and the packets that never arrived); returns why to
    /// rejoin, when it is time to.
    pub fn update(&mut self, now: Instant, stats: DaveStats, unseen: u64) -> Option<Rejoin> {
        self.last = stats;
        self.unseen = unseen;
        self.samples
            .push_back((now, stats.decrypt_failures.saturating_add(unseen)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        if self
            .last_rejoin
            .is_some_and(|t| now.duration_since(t) < COOLDOWN)
        {
            return None;
        }
        let oldest = self.samples.front().map_or(0, |(_, n)| *n);
        let failing = stats
            .decrypt_failures
            .saturating_add(unseen)
            .saturating_sub(oldest);
        let refused = stats.invalid.saturating_sub(self.invalid_base);
        let reason = if refused >= MAX_INVALID {
            format!("{refused} encryption group updates could not be processed")
        } else if failing >= DECRYPT_FAILURES && stats.active {
            format!(
                "{failing} audio packets could not be decrypted in {} s",
                WINDOW.as_secs()
            )
        } else {
            return None;
        };
        self.last_rejoin = Some(now);
        self.rejoins += 1;
        self.invalid_base = stats.invalid;
        self.samples.clear();
        Some(Rejoin {
            reason,
            lost_packets: failing,
        })
    }

    /// What goes in `session.json`.
    pub fn record(&self) -> DaveRecord {
        let s = &self.last;
        DaveRecord {
            protocol_version: u16::from(s.active),
            epoch: s.epoch,
            epoch_changes: s.epoch_changes,
            invalid_commits: s.invalid,
            proposal_errors: s.proposal_errors,
            decrypt_failures: s.decrypt_failures,
            unseen_packets: self.unseen,
            rejoins: self.rejoins,
        }
    }
}

/// One line for `/record status`.
pub fn status_line(r: Option<&DaveRecord>) -> String {
    match r {
        None => "end-to-end encryption not observed".into(),
        Some(r) if r.protocol_version == 0 => "end-to-end encryption off".into(),
        Some(r) => format!(
            "end-to-end encrypted (DAVE epoch {}, {} changes, {} packets undecryptable or missing, {} rejoins)",
            r.epoch.map_or_else(|| "-".into(), |e| e.to_string()),
            r.epoch_changes,
            r.decrypt_failures + r.unseen_packets,
            r.rejoins
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(invalid: u32, failures: u64) -> DaveStats {
        DaveStats {
            active: true,
            epoch: Some(3),
            invalid,
            decrypt_failures: failures,
            ..DaveStats::default()
        }
    }

    #[test]
    fn failures_spread_thin_do_not_rejoin_a_burst_does() {
        let t0 = Instant::now();
        let mut w = DaveWatch::default();
        // 100 failures every 11 s: never 150 within 10 s.
        for i in 0..10u64 {
            let at = t0 + Duration::from_secs(11 * i);
            assert_eq!(w.update(at, stats(0, 50 * i), 50 * i), None, "step {i}");
        }
        // Then 200 within a second.
        assert_eq!(
            w.update(t0 + Duration::from_secs(110), stats(0, 450), 450),
            None
        );
        let at = t0 + Duration::from_secs(111);
        let why = w.update(at, stats(0, 450), 450 + 200).expect("rejoin");
        assert!(why.reason.contains("could not be decrypted"), "{why:?}");
        assert_eq!(why.lost_packets, 200);
        assert_eq!(w.record().rejoins, 1);
        // Still failing right after: the cooldown holds the next rejoin back.
        assert_eq!(
            w.update(at + Duration::from_secs(5), stats(0, 2000), 700),
            None
        );
        let later = at + COOLDOWN + Duration::from_secs(1);
        assert_eq!(
            w.update(later - Duration::from_secs(1), stats(0, 2000), 700),
            None
        );
        assert!(w.update(later, stats(0, 2300), 700).is_some());
        assert_eq!((w.record().rejoins, w.record().unseen_packets), (2, 700));
        // Without DAVE, holes alone do not rejoin (a rejoin would not help).
        let mut off = DaveWatch::default();
        let plain = DaveStats::default();
        assert_eq!(off.update(t0, plain, 0), None);
        assert_eq!(off.update(t0 + Duration::from_secs(1), plain, 1000), None);
    }

    #[test]
    fn refused_commits_count_since_the_last_rejoin() {
        let t0 = Instant::now();
        let mut w = DaveWatch::default();
        assert_eq!(w.update(t0, stats(MAX_INVALID - 1, 0), 0), None);
        let why = w
            .update(t0 + Duration::from_secs(1), stats(MAX_INVALID, 0), 0)
            .expect("rejoin");
        assert!(why.reason.contains("could not be processed"), "{why:?}");
        // The same count after the cooldown does not rejoin again: only new refusals do.
        let later = t0 + COOLDOWN + Duration::from_secs(2);
        assert_eq!(w.update(later, stats(MAX_INVALID, 0), 0), None);
        assert!(w.update(later, stats(2 * MAX_INVALID, 0), 0).is_some());
        let r = w.record();
        assert_eq!(
            (r.protocol_version, r.epoch, r.invalid_commits, r.rejoins),
            (1, Some(3), 2 * MAX_INVALID, 2)
        );
        assert!(status_line(Some(&r)).contains("epoch 3"));
        assert_eq!(status_line(None), "end-to-end encryption not observed");
    }
}
