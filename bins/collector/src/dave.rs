//! Watching DAVE (end-to-end encryption) in a recording, and deciding when to start it over.
//!
//! songbird recovers from one bad commit or welcome by itself (it reports it and asks to be
//! added again), but a call can still go silent: a transition that never completes leaves it
//! holding keys nobody uses, and then every packet fails to decrypt. Peers' recorders have
//! shown exactly that (silent tracks after epoch changes). The watcher asks for a rejoin, which
//! gives the connection new DAVE state, when failures keep coming: [`MAX_INVALID`] commits or
//! welcomes refused within [`INVALID_WINDOW`] (songbird's own start-over is not working), or [`DECRYPT_FAILURES`] packets lost within
//! [`WINDOW`] without a trace. songbird drops a packet it cannot decrypt silently, so those
//! are seen as holes in the senders' sequence numbers ([`nina_capture::CaptureStats::unseen`],
//! known when the sender's next packet arrives, at the latest the silence that ends each of
//! their bursts), plus the failures davey logs. Rejoins are at least [`COOLDOWN`] apart, so a call that cannot be fixed costs a
//! rejoin per cooldown, not a loop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use nina_capture::{CaptureStats, DaveStats, UserId, UserLoss};
use nina_store::{DaveRecord, DaveUserLoss};

/// Refused commits or welcomes within [`INVALID_WINDOW`] (and since the last rejoin) that
/// start a rejoin.
pub const MAX_INVALID: u32 = 3;
/// The window over which refused commits and welcomes are counted: songbird recovers from
/// one by itself, so only a run of them in a short time calls for a rejoin.
pub const INVALID_WINDOW: Duration = Duration::from_secs(60);
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
    /// `(when, invalid)` samples within [`INVALID_WINDOW`].
    refusals: VecDeque<(Instant, u32)>,
    last_rejoin: Option<Instant>,
    rejoins: u32,
    unseen: u64,
    capture: CaptureStats,
    losses: Vec<DaveUserLoss>,
}

impl DaveWatch {
    /// Takes the latest counters (DAVE's, and the packets that never arrived); returns why to
    /// rejoin, when it is time to.
    pub fn update(&mut self, now: Instant, stats: DaveStats, unseen: u64) -> Option<Rejoin> {
        self.last = stats;
        self.unseen = unseen;
        // The count just before the window is the base: keep one sample older than it.
        let old = |t: &Instant| now.duration_since(*t) > INVALID_WINDOW;
        while self.refusals.get(1).is_some_and(|(t, _)| old(t)) {
            self.refusals.pop_front();
        }
        let refused_base = match self.refusals.front() {
            Some((t, n)) if old(t) => (*n).max(self.invalid_base),
            _ => self.invalid_base,
        };
        self.refusals.push_back((now, stats.invalid));
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
        let refused = stats.invalid.saturating_sub(refused_base);
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
        self.refusals.clear();
        Some(Rejoin {
            reason,
            lost_packets: failing,
        })
    }

    /// Takes what the capture saw of the frames themselves: how many came end-to-end
    /// encrypted, and the audio lost per user.
    pub fn observe(&mut self, capture: CaptureStats, losses: &HashMap<UserId, UserLoss>) {
        self.capture = capture;
        self.losses = losses
            .iter()
            .map(|(u, l)| DaveUserLoss {
                user_id: u.0,
                unseen_packets: l.unseen,
                missed_at_start: l.missed_at_start,
            })
            .collect();
        self.losses.sort_by_key(|l| l.user_id);
    }

    /// What goes in `session.json`. The protocol version is DAVE's (1) while the connection
    /// negotiated it and the latest voiced frame came end-to-end encrypted; songbird reports
    /// no downgrade, so a downgrade shows as frames arriving under transport encryption only.
    pub fn record(&self) -> DaveRecord {
        let s = &self.last;
        let c = &self.capture;
        DaveRecord {
            protocol_version: u16::from(s.active && c.last_voiced_e2ee != Some(false)),
            epoch: s.epoch,
            epoch_changes: s.epoch_changes,
            invalid_commits: s.invalid,
            proposal_errors: s.proposal_errors,
            decrypt_failures: s.decrypt_failures,
            unseen_packets: self.unseen,
            rejoins: self.rejoins,
            missed_at_start: c.missed_at_start,
            e2ee_frames: c.e2ee_frames,
            plain_frames: c.plain_frames,
            users: self.losses.clone(),
        }
    }
}

/// One line for `/record status`.
pub fn status_line(r: Option<&DaveRecord>) -> String {
    match r {
        None => "end-to-end encryption not observed".into(),
        Some(r) if r.protocol_version == 0 => "end-to-end encryption off".into(),
        Some(r) => format!(
            "end-to-end encrypted (DAVE epoch {}, {} changes, {} packets undecryptable or missing, {} missed before keys were ready, {} rejoins)",
            r.epoch.map_or_else(|| "-".into(), |e| e.to_string()),
            r.epoch_changes,
            r.decrypt_failures + r.unseen_packets,
            r.missed_at_start,
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
        // Refusals spread out over more than the window do not add up.
        let mut t = later;
        for i in 1..=MAX_INVALID {
            t += INVALID_WINDOW / 2 + Duration::from_secs(1);
            assert_eq!(w.update(t, stats(MAX_INVALID + i, 0), 0), None, "{i}");
            t += INVALID_WINDOW / 2;
            assert_eq!(w.update(t, stats(MAX_INVALID + i, 0), 0), None, "{i}");
        }
        // A run of them within it does.
        t += Duration::from_secs(1);
        assert_eq!(w.update(t, stats(2 * MAX_INVALID + 1, 0), 0), None);
        assert!(w.update(t, stats(3 * MAX_INVALID, 0), 0).is_some());
        let r = w.record();
        assert_eq!(
            (r.protocol_version, r.epoch, r.invalid_commits, r.rejoins),
            (1, Some(3), 3 * MAX_INVALID, 2)
        );
        assert!(status_line(Some(&r)).contains("epoch 3"));
        assert_eq!(status_line(None), "end-to-end encryption not observed");
    }

    #[test]
    fn the_record_shows_a_downgrade_and_the_losses_per_user() {
        let mut w = DaveWatch::default();
        w.update(Instant::now(), stats(0, 0), 9);
        let mut c = CaptureStats {
            unseen: 9,
            missed_at_start: 12,
            e2ee_frames: 500,
            last_voiced_e2ee: Some(true),
            ..CaptureStats::default()
        };
        let losses = HashMap::from([
            (
                UserId(7),
                UserLoss {
                    unseen: 9,
                    missed_at_start: 0,
                },
            ),
            (
                UserId(3),
                UserLoss {
                    unseen: 0,
                    missed_at_start: 12,
                },
            ),
        ]);
        w.observe(c, &losses);
        let r = w.record();
        assert_eq!(r.protocol_version, 1);
        assert_eq!(r.missed_at_start, 12);
        assert_eq!(
            r.users.iter().map(|l| l.user_id).collect::<Vec<_>>(),
            vec![3, 7]
        );
        assert_eq!(r.users[1].unseen_packets, 9);
        // Frames under transport encryption only after the DAVE ones: downgraded.
        c.plain_frames = 100;
        c.last_voiced_e2ee = Some(false);
        w.observe(c, &losses);
        let r = w.record();
        assert_eq!((r.protocol_version, r.plain_frames), (0, 100));
        assert_eq!(status_line(Some(&r)), "end-to-end encryption off");
    }
}
