//! Live capture: attributing Discord voice to users and placing it on the session clock.
//!
//! Discord sends each speaker's audio as RTP with an SSRC; the voice gateway's Speaking event
//! (op 5) says which user an SSRC belongs to. songbird decodes packets and hands them over in
//! 20 ms ticks. [`SsrcMap`] keeps SSRC -> user, and [`TickAssembler`] turns ticks into
//! per-user [`UserFrame`]s on the session clock, which is what the segmenter consumes: one
//! stream per Discord user.

use std::collections::{HashMap, VecDeque};

/// A Discord user id (snowflake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// Samples per channel in one 20 ms tick at 48 kHz.
pub const TICK_SAMPLES: usize = 960;
/// Channels songbird decodes to.
pub const CHANNELS: usize = 2;
/// Length of one tick in milliseconds.
pub const TICK_MS: u64 = 20;

/// Errors of capture.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaptureError {
    /// Ticks must arrive in order.
    #[error("tick {got} arrived after tick {last}")]
    TickOrder {
        /// The tick received.
        got: u64,
        /// The last tick processed.
        last: u64,
    },
}

/// SSRC -> user, from Speaking events.
#[derive(Debug, Default, Clone)]
pub struct SsrcMap {
    by_ssrc: HashMap<u32, UserId>,
}

impl SsrcMap {
    /// Records that `ssrc` belongs to `user` (a Speaking event). A user announced with a new SSRC
    /// (after reconnecting) loses the old one. Returns the previous owner of `ssrc`, if different.
    pub fn speaking(&mut self, ssrc: u32, user: UserId) -> Option<UserId> {
        self.by_ssrc.retain(|s, u| *u != user || *s == ssrc);
        self.by_ssrc.insert(ssrc, user).filter(|u| *u != user)
    }

    /// Forgets a user who left the channel.
    pub fn disconnect(&mut self, user: UserId) {
        self.by_ssrc.retain(|_, u| *u != user);
    }

    /// The user an SSRC belongs to.
    pub fn user(&self, ssrc: u32) -> Option<UserId> {
        self.by_ssrc.get(&ssrc).copied()
    }
}

/// One 20 ms frame of one user's audio on the session clock.
#[derive(Debug, Clone, PartialEq)]
pub struct UserFrame {
    /// Whose audio.
    pub user: UserId,
    /// Start on the session clock, milliseconds.
    pub start_ms: u64,
    /// 48 kHz interleaved stereo, exactly [`TICK_SAMPLES`] x [`CHANNELS`] samples.
    pub samples: Vec<i16>,
    /// The packet was lost: `samples` is what the decoder concealed it with (or silence).
    pub lost: bool,
}

/// What arrived for one SSRC in one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum TickAudio {
    /// Decoded interleaved stereo samples (songbird may give more than 20 ms after a loss).
    Decoded(Vec<i16>),
    /// The SSRC is speaking but its packet for this tick is missing.
    Lost,
}

/// Per-user packet statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserStats {
    /// Frames emitted.
    pub frames: u64,
    /// Of which lost packets.
    pub lost: u64,
}

/// Most SSRCs whose audio is held at once while waiting for their Speaking event.
pub const MAX_UNATTRIBUTED_SSRCS: usize = 64;

/// Turns songbird's 20 ms voice ticks into per-user frames on the session clock.
#[derive(Debug)]
pub struct TickAssembler {
    ssrcs: SsrcMap,
    last_tick: Option<u64>,
    /// Audio of SSRCs not yet announced: (tick, audio), oldest first, bounded.
    unattributed: HashMap<u32, VecDeque<(u64, TickAudio)>>,
    max_held_ticks: usize,
    stats: HashMap<UserId, UserStats>,
}

impl Default for TickAssembler {
    fn default() -> Self {
        Self::new(50)
    }
}

impl TickAssembler {
    /// An assembler that holds at most `max_held_ticks` ticks (20 ms each) of an SSRC's audio
    /// while waiting for the Speaking event that names its user; older audio is dropped.
    pub fn new(max_held_ticks: usize) -> Self {
        Self {
            ssrcs: SsrcMap::default(),
            last_tick: None,
            unattributed: HashMap::new(),
            max_held_ticks,
            stats: HashMap::new(),
        }
    }

    /// The SSRC map (read-only).
    pub fn ssrcs(&self) -> &SsrcMap {
        &self.ssrcs
    }

    /// A Speaking event: `ssrc` is `user`. Audio held for that SSRC is released, in order.
    pub fn speaking(&mut self, ssrc: u32, user: UserId) -> Vec<UserFrame> {
        self.ssrcs.speaking(ssrc, user);
        let held = self.unattributed.remove(&ssrc).unwrap_or_default();
        held.into_iter()
            .map(|(tick, audio)| self.frame(user, tick, audio))
            .collect()
    }

    /// A user left: forget their SSRC.
    pub fn disconnect(&mut self, user: UserId) {
        self.ssrcs.disconnect(user);
    }

    /// Packet statistics per user.
    pub fn stats(&self, user: UserId) -> UserStats {
        self.stats.get(&user).copied().unwrap_or_default()
    }

    fn frame(&mut self, user: UserId, tick: u64, audio: TickAudio) -> UserFrame {
        let n = TICK_SAMPLES * CHANNELS;
        let (mut samples, lost) = match audio {
            TickAudio::Decoded(s) => (s, false),
            TickAudio::Lost => (Vec::new(), true),
        };
        // songbird conceals a loss with up to 40 ms; one tick is exactly 20 ms.
        samples.resize(n, 0);
        let s = self.stats.entry(user).or_default();
        s.frames += 1;
        s.lost += u64::from(lost);
        UserFrame {
            user,
            start_ms: tick * TICK_MS,
            samples,
            lost,
        }
    }

    /// Processes tick number `tick` (counted from the start of the session) holding the audio
    /// of each SSRC heard in it. Returns the frames of known users, ordered by user id.
    pub fn tick(
        &mut self,
        tick: u64,
        audio: Vec<(u32, TickAudio)>,
    ) -> Result<Vec<UserFrame>, CaptureError> {
        if let Some(last) = self.last_tick
            && tick <= last
        {
            return Err(CaptureError::TickOrder { got: tick, last });
        }
        self.last_tick = Some(tick);
        let mut out = Vec::new();
        for (ssrc, a) in audio {
            match self.ssrcs.user(ssrc) {
                Some(user) => out.push(self.frame(user, tick, a)),
                None => {
                    let q = self.unattributed.entry(ssrc).or_default();
                    q.push_back((tick, a));
                    while q.len() > self.max_held_ticks {
                        q.pop_front();
                    }
                }
            }
        }
        self.prune_unattributed(tick);
        out.sort_by_key(|f| f.user);
        Ok(out)
    }

    /// Keeps the held audio bounded in SSRCs as well as in ticks: an SSRC whose newest audio
    /// left the holding window is forgotten, and past [`MAX_UNATTRIBUTED_SSRCS`] the SSRCs
    /// heard least recently go first.
    fn prune_unattributed(&mut self, now: u64) {
        let window = self.max_held_ticks as u64;
        self.unattributed.retain(|_, q| {
            q.back()
                .is_some_and(|(t, _)| now.saturating_sub(*t) < window.max(1))
        });
        while self.unattributed.len() > MAX_UNATTRIBUTED_SSRCS {
            let oldest = self
                .unattributed
                .iter()
                .min_by_key(|(ssrc, q)| (q.back().map_or(0, |(t, _)| *t), **ssrc))
                .map(|(ssrc, _)| *ssrc);
            match oldest {
                Some(ssrc) => {
                    self.unattributed.remove(&ssrc);
                }
                None => break,
            }
        }
    }

    /// SSRCs whose audio is held waiting for their Speaking event.
    pub fn unattributed_ssrcs(&self) -> usize {
        self.unattributed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: UserId = UserId(111);
    const B: UserId = UserId(222);

    #[test]
    fn held_audio_is_bounded_in_ssrcs_and_pruned() {
        let mut a = TickAssembler::new(10);
        // A flood of SSRCs that never announce themselves.
        for t in 0..200u64 {
            let audio = (0..20u32)
                .map(|k| (t as u32 * 20 + k, TickAudio::Lost))
                .collect();
            a.tick(t, audio).unwrap();
            assert!(a.unattributed_ssrcs() <= MAX_UNATTRIBUTED_SSRCS);
        }
        // Silence from everyone: after the holding window nothing is held.
        for t in 200..211u64 {
            a.tick(t, vec![]).unwrap();
        }
        assert_eq!(a.unattributed_ssrcs(), 0);
        // A recent SSRC still gets its held audio when it announces itself.
        a.tick(211, vec![(7, TickAudio::Lost)]).unwrap();
        assert_eq!(a.speaking(7, A).len(), 1);
    }

    fn pcm(v: i16, ms: usize) -> TickAudio {
        TickAudio::Decoded(vec![v; 48 * ms * CHANNELS])
    }

    #[test]
    fn frames_are_attributed_and_timed() {
        let mut t = TickAssembler::default();
        assert!(t.speaking(1, A).is_empty());
        t.speaking(2, B);
        let f = t.tick(0, vec![(2, pcm(5, 20)), (1, pcm(7, 20))]).unwrap();
        assert_eq!(f.iter().map(|f| f.user).collect::<Vec<_>>(), vec![A, B]);
        assert_eq!(f[0].samples.len(), TICK_SAMPLES * CHANNELS);
        let f = t
            .tick(3, vec![(1, TickAudio::Lost), (2, pcm(1, 40))])
            .unwrap();
        assert_eq!(f[0].start_ms, 60);
        assert!(f[0].lost && f[0].samples.iter().all(|&s| s == 0));
        assert_eq!(
            f[1].samples.len(),
            TICK_SAMPLES * CHANNELS,
            "a 40 ms concealment is cut to 20 ms"
        );
        assert_eq!(t.stats(A), UserStats { frames: 2, lost: 1 });
        assert_eq!(
            t.tick(3, vec![]),
            Err(CaptureError::TickOrder { got: 3, last: 3 })
        );
    }

    #[test]
    fn audio_before_the_speaking_event_is_held_then_released() {
        let mut t = TickAssembler::new(3);
        for tick in 0..5 {
            assert!(
                t.tick(tick, vec![(9, pcm(tick as i16, 20))])
                    .unwrap()
                    .is_empty()
            );
        }
        let released = t.speaking(9, A);
        assert_eq!(
            released.iter().map(|f| f.start_ms).collect::<Vec<_>>(),
            vec![40, 60, 80]
        );
        assert_eq!(t.tick(5, vec![(9, pcm(0, 20))]).unwrap()[0].user, A);
    }

    #[test]
    fn a_reconnecting_user_keeps_one_stream() {
        let mut m = SsrcMap::default();
        m.speaking(1, A);
        m.speaking(5, A);
        assert_eq!(m.user(1), None);
        assert_eq!(m.user(5), Some(A));
        assert_eq!(
            m.speaking(5, B),
            Some(A),
            "an SSRC handed to someone else is reported"
        );
        m.disconnect(B);
        assert_eq!(m.user(5), None);
    }

    proptest! {
        #[test]
        fn every_frame_is_exactly_one_tick(lens in proptest::collection::vec(0usize..5000, 1..20)) {
            let mut t = TickAssembler::default();
            t.speaking(1, A);
            for (i, len) in lens.iter().enumerate() {
                let f = t.tick(i as u64, vec![(1, TickAudio::Decoded(vec![1; *len]))]).unwrap();
                prop_assert_eq!(f[0].samples.len(), TICK_SAMPLES * CHANNELS);
                prop_assert_eq!(f[0].start_ms, i as u64 * TICK_MS);
            }
        }
    }
}
