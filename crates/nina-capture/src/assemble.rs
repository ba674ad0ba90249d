//! Placing received packets on the session clock, per user.
//!
//! songbird clocks each SSRC's packets out of its jitter buffer once per 20 ms tick. Arrival time
//! says little about when a packet was spoken (the buffer delays it, the network jitters, a user
//! who stops talking sends nothing), so each packet is placed by its RTP timestamp: the first
//! packet of an SSRC anchors its RTP clock to the session clock, and every later packet lands at
//! `anchor + (timestamp - anchor timestamp) / 960`. Silence between talk spurts is simply absent;
//! a lost packet (a hole in the sequence numbers, which songbird reports as a tick without a
//! packet) is a frame marked `lost`.

use std::collections::{HashMap, VecDeque};

use crate::{CaptureStats, FRAME_RTP_TICKS, UserFrame, UserId};

/// Most SSRCs whose audio is held at once while waiting for their Speaking event.
pub const MAX_UNATTRIBUTED_SSRCS: usize = 64;

/// How far (in 20 ms frames) the RTP clock may disagree with the arrival clock before the SSRC
/// is re-anchored (a sender that restarted its timestamps, or a wild jump): 2 s.
pub const RESYNC_FRAMES: u64 = 100;
/// A hole of at least this many packets that never reached us (not even as a concealed loss)
/// is counted in [`CaptureStats::unseen_holes`]: 1 s of one person's audio.
pub const UNSEEN_HOLE: u64 = 50;

/// The RTP header fields the assembler needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpInfo {
    /// RTP timestamp (48 kHz).
    pub timestamp: u32,
    /// RTP sequence number.
    pub sequence: u16,
}

/// What songbird clocked out for one SSRC in one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPacket {
    /// The sender.
    pub ssrc: u32,
    /// The packet's RTP header, or `None` when the packet was lost.
    pub rtp: Option<RtpInfo>,
    /// The Opus payload as received (transport encryption removed).
    pub opus: Option<Vec<u8>>,
    /// Decoded audio, when decoding.
    pub pcm: Option<Vec<i16>>,
    /// Where this packet belongs on the session clock judging by when packets of its SSRC were
    /// received from the network (before the jitter buffer), if known; better than `arrival`
    /// for anchoring, since the jitter buffer's delay varies.
    pub received: Option<u64>,
    /// The frame came end-to-end encrypted (DAVE) and was decrypted; false for a frame under
    /// transport encryption only.
    pub e2ee: bool,
}

/// Opus silence (`F8 FF FE`): what a sender emits when it stops talking; not speech.
const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Audio of one user that never reached the recorder, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLoss {
    /// Packets the sender numbered that never arrived (holes in the sequence numbers); under
    /// DAVE mostly packets that could not be decrypted.
    pub unseen: u64,
    /// Packets estimated missing at the start of a stream: the time between the user's
    /// Speaking and their first packet that could be read, when the recorder had no key for
    /// them yet (audio sent before the recorder's keys were ready).
    pub missed_at_start: u64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    timestamp: u32,
    frame: u64,
}

#[derive(Debug, Default)]
struct SsrcState {
    anchor: Option<Anchor>,
    /// The frame after the last one placed.
    next: u64,
    /// Frames placed before the SSRC's user was known (bounded).
    held: VecDeque<UserFrame>,
    /// The arrival frame of the newest packet (for pruning).
    last_heard: u64,
    /// Sequence number of the newest packet, to see packets that never arrived at all.
    last_seq: Option<u16>,
    /// Losses songbird reported (ticks without a packet) since that packet.
    reported: u64,
    /// Losses counted before the SSRC's user was known.
    pending: UserLoss,
}

/// Turns songbird's voice ticks into per-user [`UserFrame`]s on the session clock.
#[derive(Debug)]
pub struct Assembler {
    users: HashMap<u32, UserId>,
    ssrcs: HashMap<u32, SsrcState>,
    /// SSRCs of users who left, kept until the jitter buffer has played out their last packets.
    leaving: Vec<u32>,
    max_held: usize,
    frame_samples: usize,
    stats: CaptureStats,
    losses: HashMap<UserId, UserLoss>,
}

impl Assembler {
    /// An assembler whose decoded frames hold `frame_samples` interleaved samples (20 ms at the
    /// decoder's rate and channels; 0 when not decoding), holding at most `max_held` frames of an
    /// SSRC whose user is not known yet.
    pub fn new(frame_samples: usize, max_held: usize) -> Self {
        Self {
            users: HashMap::new(),
            ssrcs: HashMap::new(),
            leaving: Vec::new(),
            max_held,
            frame_samples,
            stats: CaptureStats::default(),
            losses: HashMap::new(),
        }
    }

    /// Audio lost per user so far (users with no loss are absent).
    pub fn losses(&self) -> &HashMap<UserId, UserLoss> {
        &self.losses
    }

    /// `packets` of `ssrc`'s stream are estimated missing before its first readable packet
    /// (see [`UserLoss::missed_at_start`]).
    pub fn missed_at_start(&mut self, ssrc: u32, packets: u64) {
        if packets == 0 {
            return;
        }
        self.stats.missed_at_start += packets;
        let loss = UserLoss {
            missed_at_start: packets,
            ..UserLoss::default()
        };
        self.add_loss(ssrc, loss);
    }

    fn add_loss(&mut self, ssrc: u32, loss: UserLoss) {
        let target = match self.users.get(&ssrc) {
            Some(u) => self.losses.entry(*u).or_default(),
            None => &mut self.ssrcs.entry(ssrc).or_default().pending,
        };
        target.unseen += loss.unseen;
        target.missed_at_start += loss.missed_at_start;
    }

    /// Counters so far.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// Forgets every stream's sequence number (the voice connection dropped or was replaced:
    /// what was sent meanwhile is a connection gap, not packets gone missing).
    pub fn forget_sequences(&mut self) {
        for s in self.ssrcs.values_mut() {
            s.last_seq = None;
            s.reported = 0;
        }
    }

    /// The user an SSRC belongs to.
    pub fn user(&self, ssrc: u32) -> Option<UserId> {
        self.users.get(&ssrc).copied()
    }

    /// A Speaking event: `ssrc` is `user`. A user announced with a new SSRC (after reconnecting)
    /// keeps one stream; the old SSRC is forgotten. Returns the frames held for that SSRC.
    pub fn speaking(&mut self, ssrc: u32, user: UserId) -> Vec<UserFrame> {
        self.users.retain(|s, u| *u != user || *s == ssrc);
        self.users.insert(ssrc, user);
        let Some(state) = self.ssrcs.get_mut(&ssrc) else {
            return Vec::new();
        };
        let pending = std::mem::take(&mut state.pending);
        if pending != UserLoss::default() {
            let l = self.losses.entry(user).or_default();
            l.unseen += pending.unseen;
            l.missed_at_start += pending.missed_at_start;
        }
        state
            .held
            .drain(..)
            .map(|mut f| {
                f.user = user;
                f
            })
            .collect()
    }

    /// A user left the call: their SSRCs are forgotten at the first tick that has nothing of
    /// them, so the packets still in the jitter buffer (Discord reports the leave as soon as
    /// the last packet is sent) are placed and attributed.
    pub fn disconnect(&mut self, user: UserId) {
        let gone = self
            .users
            .iter()
            .filter(|(_, u)| **u == user)
            .map(|(s, _)| *s);
        self.leaving.extend(gone);
    }

    /// SSRCs whose audio is held waiting for their Speaking event.
    pub fn unattributed_ssrcs(&self) -> usize {
        self.ssrcs
            .iter()
            .filter(|(s, st)| !self.users.contains_key(s) && !st.held.is_empty())
            .count()
    }

    /// Attributes the only unattributed SSRC to `user` when the caller knows that exactly one
    /// person in the channel has no SSRC yet (songbird notes that Speaking is not always sent).
    /// Returns the released frames, or nothing when the guess would be ambiguous.
    pub fn attribute_sole_stranger(&mut self, user: UserId) -> Vec<UserFrame> {
        if self.users.values().any(|u| *u == user) {
            return Vec::new();
        }
        let strangers: Vec<u32> = self
            .ssrcs
            .iter()
            .filter(|(s, st)| !self.users.contains_key(s) && !st.held.is_empty())
            .map(|(s, _)| *s)
            .collect();
        match strangers.as_slice() {
            [ssrc] => {
                tracing::info!(ssrc, user = user.0, "attributed an unannounced SSRC");
                self.speaking(*ssrc, user)
            }
            _ => Vec::new(),
        }
    }

    /// Places one tick's packets. `arrival` is the tick's frame on the session clock minus the
    /// jitter-buffer delay, i.e. when the packets clocked out now were received. Returns the
    /// frames of known users, ordered by user then frame.
    pub fn tick(&mut self, arrival: u64, packets: Vec<TickPacket>) -> Vec<UserFrame> {
        let mut out = Vec::new();
        if !self.leaving.is_empty() {
            let (still, gone): (Vec<u32>, Vec<u32>) = std::mem::take(&mut self.leaving)
                .into_iter()
                .partition(|s| packets.iter().any(|p| p.ssrc == *s));
            for s in gone {
                self.users.remove(&s);
                self.ssrcs.remove(&s);
            }
            self.leaving = still;
        }
        for p in packets {
            let user = self.users.get(&p.ssrc).copied();
            let frame_samples = self.frame_samples;
            if p.opus.as_deref().is_some_and(|o| o != OPUS_SILENCE) {
                if p.e2ee {
                    self.stats.e2ee_frames += 1;
                } else {
                    self.stats.plain_frames += 1;
                }
                self.stats.last_voiced_e2ee = Some(p.e2ee);
            }
            let state = self.ssrcs.entry(p.ssrc).or_default();
            state.last_heard = arrival;
            match p.rtp {
                Some(rtp) => {
                    // Packets the sender numbered that neither arrived nor were reported lost
                    // (songbird drops what it cannot decrypt without a trace): the hole in the
                    // sequence numbers. Late and repeated packets are not holes.
                    let step = state.last_seq.map(|prev| rtp.sequence.wrapping_sub(prev));
                    if let Some(d) = step.filter(|d| (2..0x8000).contains(d)) {
                        let unseen = u64::from(d - 1).saturating_sub(state.reported);
                        self.stats.unseen += unseen;
                        if unseen >= UNSEEN_HOLE {
                            self.stats.unseen_holes += 1;
                            tracing::debug!(ssrc = p.ssrc, unseen, "packets never arrived");
                        }
                        if unseen > 0 {
                            let target = match user {
                                Some(u) => self.losses.entry(u).or_default(),
                                None => &mut state.pending,
                            };
                            target.unseen += unseen;
                        }
                    }
                    if step.is_none_or(|d| (1..0x8000).contains(&d)) {
                        state.last_seq = Some(rtp.sequence);
                        state.reported = 0;
                    }
                }
                None => state.reported += 1,
            }
            let frame = match p.rtp {
                Some(rtp) => {
                    let placed = state.anchor.and_then(|a| {
                        let delta = i64::from(rtp.timestamp.wrapping_sub(a.timestamp) as i32);
                        let f = a.frame as i64 + delta.div_euclid(i64::from(FRAME_RTP_TICKS));
                        u64::try_from(f).ok()
                    });
                    let seen = p.received.unwrap_or(arrival);
                    match placed {
                        Some(f) if f.abs_diff(seen) <= RESYNC_FRAMES => f,
                        other => {
                            if other.is_some() {
                                self.stats.resyncs += 1;
                                tracing::debug!(ssrc = p.ssrc, "RTP clock re-anchored");
                            }
                            // Never place a packet over frames already placed.
                            let f = seen.max(state.next);
                            tracing::debug!(
                                ssrc = p.ssrc,
                                frame = f,
                                received = ?p.received,
                                arrival,
                                "SSRC anchored"
                            );
                            state.anchor = Some(Anchor {
                                timestamp: rtp.timestamp,
                                frame: f,
                            });
                            f
                        }
                    }
                }
                None if state.anchor.is_some() => state.next,
                None => continue,
            };
            if frame < state.next {
                self.stats.late += 1;
                continue;
            }
            state.next = frame + 1;
            let lost = p.rtp.is_none();
            let pcm = p.pcm.map(|mut s| {
                // songbird may conceal a loss with more than one frame; a frame is 20 ms.
                s.resize(frame_samples, 0);
                s
            });
            let f = UserFrame {
                user: user.unwrap_or(UserId(0)),
                frame,
                opus: p.opus,
                pcm,
                lost,
            };
            if lost {
                self.stats.lost += 1;
            } else {
                self.stats.packets += 1;
            }
            match user {
                Some(_) => out.push(f),
                None => {
                    state.held.push_back(f);
                    while state.held.len() > self.max_held {
                        state.held.pop_front();
                        self.stats.unattributed_dropped += 1;
                    }
                }
            }
        }
        self.prune(arrival);
        out.sort_by_key(|f| (f.user, f.frame));
        out
    }

    /// Keeps the held audio bounded: an unattributed SSRC silent for longer than the holding
    /// window is forgotten, and past [`MAX_UNATTRIBUTED_SSRCS`] the least recently heard go.
    fn prune(&mut self, now: u64) {
        let window = (self.max_held as u64).max(1);
        let users = &self.users;
        let mut dropped = 0;
        self.ssrcs.retain(|s, st| {
            let keep = users.contains_key(s) || now.saturating_sub(st.last_heard) < window;
            if !keep {
                dropped += st.held.len() as u64;
            }
            keep
        });
        loop {
            let strangers: Vec<(u64, u32)> = self
                .ssrcs
                .iter()
                .filter(|(s, _)| !self.users.contains_key(s))
                .map(|(s, st)| (st.last_heard, *s))
                .collect();
            if strangers.len() <= MAX_UNATTRIBUTED_SSRCS {
                break;
            }
            if let Some((_, s)) = strangers.iter().min()
                && let Some(st) = self.ssrcs.remove(s)
            {
                dropped += st.held.len() as u64;
            }
        }
        self.stats.unattributed_dropped += dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: UserId = UserId(111);
    const B: UserId = UserId(222);

    fn pkt(ssrc: u32, ts: u32, seq: u16) -> TickPacket {
        TickPacket {
            ssrc,
            rtp: Some(RtpInfo {
                timestamp: ts,
                sequence: seq,
            }),
            opus: Some(vec![1, 2, 3]),
            pcm: Some(vec![7; 320]),
            received: None,
            e2ee: false,
        }
    }

    fn lost(ssrc: u32) -> TickPacket {
        TickPacket {
            ssrc,
            rtp: None,
            opus: None,
            pcm: Some(vec![0; 640]),
            received: None,
            e2ee: false,
        }
    }

    #[test]
    fn packets_that_never_arrived_are_counted_from_sequence_holes() {
        let mut a = Assembler::new(320, 50);
        a.speaking(1, A);
        for (i, seq) in [100u16, 101, 102].into_iter().enumerate() {
            a.tick(10 + i as u64, vec![pkt(1, 960 * i as u32, seq)]);
        }
        // 60 packets never came (songbird could not decrypt them): one hole.
        a.tick(73, vec![pkt(1, 960 * 63, 163)]);
        assert_eq!((a.stats().unseen, a.stats().unseen_holes), (60, 1));
        // One reported loss, then the next packet: nothing unseen.
        a.tick(74, vec![lost(1)]);
        a.tick(75, vec![pkt(1, 960 * 65, 165)]);
        assert_eq!(a.stats().unseen, 60);
        // A late packet and a repeat are not holes, and do not move the sequence back.
        a.tick(76, vec![pkt(1, 960 * 20, 120)]);
        a.tick(77, vec![pkt(1, 960 * 65, 165)]);
        a.tick(78, vec![pkt(1, 960 * 66, 166)]);
        assert_eq!(a.stats().unseen, 60);
        // Across the sequence wrap, a small hole.
        a.tick(79, vec![pkt(2, 0, 65_534)]);
        a.speaking(2, B);
        a.tick(80, vec![pkt(2, 960 * 4, 2)]);
        assert_eq!((a.stats().unseen, a.stats().unseen_holes), (63, 1));
        // After the connection was replaced, the first packet is no hole.
        a.forget_sequences();
        a.tick(200, vec![pkt(1, 960 * 190, 5000)]);
        assert_eq!(a.stats().unseen, 63);
    }

    #[test]
    fn losses_are_kept_per_user_and_frames_by_encryption() {
        let mut a = Assembler::new(320, 50);
        // SSRC 1 loses packets and misses its start before its user is known.
        a.missed_at_start(1, 7);
        a.tick(10, vec![pkt(1, 0, 10)]);
        a.tick(11, vec![pkt(1, 960 * 5, 15)]);
        assert!(a.losses().is_empty());
        a.speaking(1, A);
        assert_eq!(
            a.losses()[&A],
            UserLoss {
                unseen: 4,
                missed_at_start: 7
            }
        );
        // Known user: counted at once; another user's stream apart.
        a.speaking(2, B);
        a.tick(12, vec![pkt(2, 0, 1)]);
        a.tick(13, vec![pkt(2, 960 * 3, 4)]);
        a.tick(14, vec![pkt(1, 960 * 7, 17)]);
        assert_eq!(a.losses()[&A].unseen, 5);
        assert_eq!(a.losses()[&B].unseen, 2);
        assert_eq!((a.stats().unseen, a.stats().missed_at_start), (7, 7));
        // Voiced frames by encryption; silence is not counted.
        let mut e = pkt(2, 960 * 4, 5);
        e.e2ee = true;
        a.tick(15, vec![e]);
        let mut silence = pkt(2, 960 * 5, 6);
        silence.opus = Some(OPUS_SILENCE.to_vec());
        a.tick(16, vec![silence]);
        let s = a.stats();
        assert_eq!((s.e2ee_frames, s.plain_frames), (1, 5));
        assert_eq!(s.last_voiced_e2ee, Some(true));
        a.tick(17, vec![pkt(2, 960 * 6, 7)]);
        assert_eq!(a.stats().last_voiced_e2ee, Some(false));
    }

    #[test]
    fn packets_are_placed_by_rtp_timestamp_not_arrival() {
        let mut a = Assembler::new(320, 50);
        a.speaking(1, A);
        // Anchored at arrival frame 10.
        let f = a.tick(10, vec![pkt(1, 5000, 1)]);
        assert_eq!(f[0].frame, 10);
        // Jitter: the next packet is clocked out two ticks late; its timestamp says frame 11.
        let f = a.tick(13, vec![pkt(1, 5000 + 960, 2)]);
        assert_eq!(f[0].frame, 11);
        // The user paused 1 s (50 frames) and went on: the timestamp carries the pause.
        let f = a.tick(62, vec![pkt(1, 5000 + 960 * 51, 3)]);
        assert_eq!(f[0].frame, 61);
        // A lost packet follows the last frame, marked lost, audio cut to one frame.
        let f = a.tick(63, vec![lost(1)]);
        assert_eq!(
            (f[0].frame, f[0].lost, f[0].pcm.as_ref().unwrap().len()),
            (62, true, 320)
        );
        // A duplicate or late packet never overwrites placed frames.
        assert!(a.tick(64, vec![pkt(1, 5000 + 960 * 51, 3)]).is_empty());
        assert_eq!(a.stats().late, 1);
        assert_eq!((a.stats().packets, a.stats().lost), (3, 1));
    }

    #[test]
    fn the_receive_time_anchors_better_than_the_jitter_buffer() {
        let mut a = Assembler::new(0, 50);
        a.speaking(1, A);
        // Clocked out at frame 30 but received (first packet) at frame 20.
        let mut p = pkt(1, 9600, 1);
        p.received = Some(20);
        assert_eq!(a.tick(30, vec![p])[0].frame, 20);
        assert_eq!(a.tick(31, vec![pkt(1, 9600 + 960, 2)])[0].frame, 21);
    }

    #[test]
    fn timestamps_wrap_and_wild_jumps_reanchor() {
        let mut a = Assembler::new(0, 50);
        a.speaking(1, A);
        let start = u32::MAX - 960;
        assert_eq!(a.tick(5, vec![pkt(1, start, 1)])[0].frame, 5);
        assert_eq!(
            a.tick(6, vec![pkt(1, start.wrapping_add(960), 2)])[0].frame,
            6
        );
        assert_eq!(
            a.tick(7, vec![pkt(1, start.wrapping_add(1920), 3)])[0].frame,
            7
        );
        // A sender that restarts its clock lands where it arrives, never over placed frames.
        assert_eq!(a.tick(9, vec![pkt(1, 0x4000_0000, 4)])[0].frame, 9);
        assert_eq!(a.stats().resyncs, 1);
        assert_eq!(a.tick(10, vec![pkt(1, 0x4000_0000 + 960, 5)])[0].frame, 10);
    }

    #[test]
    fn audio_before_the_speaking_event_is_held_then_released() {
        let mut a = Assembler::new(320, 3);
        for t in 0..5u64 {
            assert!(a.tick(t, vec![pkt(9, t as u32 * 960, t as u16)]).is_empty());
        }
        assert_eq!(a.unattributed_ssrcs(), 1);
        let released = a.speaking(9, A);
        assert_eq!(
            released
                .iter()
                .map(|f| (f.user, f.frame))
                .collect::<Vec<_>>(),
            vec![(A, 2), (A, 3), (A, 4)]
        );
        assert_eq!(a.stats().unattributed_dropped, 2);
        assert_eq!(a.tick(5, vec![pkt(9, 5 * 960, 5)])[0].user, A);
    }

    #[test]
    fn a_sole_stranger_is_attributed_only_when_unambiguous() {
        let mut a = Assembler::new(0, 50);
        a.speaking(1, A);
        a.tick(0, vec![pkt(1, 0, 0), pkt(7, 0, 0), pkt(8, 0, 0)]);
        assert!(a.attribute_sole_stranger(B).is_empty(), "two strangers");
        let mut a = Assembler::new(0, 50);
        a.tick(0, vec![pkt(7, 0, 0)]);
        assert!(a.attribute_sole_stranger(B).len() == 1);
        assert_eq!(a.user(7), Some(B));
    }

    #[test]
    fn a_reconnecting_user_keeps_one_stream_and_leaving_forgets() {
        let mut a = Assembler::new(0, 50);
        a.speaking(1, A);
        a.tick(0, vec![pkt(1, 0, 0)]);
        a.speaking(5, A);
        assert_eq!(a.user(1), None);
        assert_eq!(a.tick(50, vec![pkt(5, 777, 0)])[0].user, A);
        a.disconnect(A);
        // What the jitter buffer still holds is hers; the first tick without her forgets her.
        assert_eq!(a.tick(51, vec![pkt(5, 777 + 960, 0)])[0].user, A);
        assert_eq!(a.user(5), Some(A));
        assert!(a.tick(52, vec![]).is_empty());
        assert_eq!(a.user(5), None);
    }

    #[test]
    fn held_audio_is_bounded_in_ssrcs_and_pruned() {
        let mut a = Assembler::new(0, 10);
        for t in 0..200u64 {
            let pk = (0..20u32).map(|k| pkt(t as u32 * 20 + k, 0, 0)).collect();
            a.tick(t, pk);
            assert!(a.unattributed_ssrcs() <= MAX_UNATTRIBUTED_SSRCS);
        }
        for t in 200..211u64 {
            a.tick(t, vec![]);
        }
        assert_eq!(a.unattributed_ssrcs(), 0);
    }

    proptest! {
        /// Whatever order, loss and duplication the network produces, each user's frames come
        /// out strictly increasing and decoded frames are exactly one frame long.
        #[test]
        fn frames_strictly_increase(events in proptest::collection::vec((0u32..3, 0u32..400, any::<bool>(), 0usize..2000), 1..200)) {
            let mut a = Assembler::new(320, 20);
            a.speaking(0, A);
            a.speaking(1, B);
            let mut last: HashMap<UserId, u64> = HashMap::new();
            for (i, (ssrc, ts, is_lost, len)) in events.into_iter().enumerate() {
                let p = TickPacket {
                    ssrc,
                    rtp: (!is_lost).then_some(RtpInfo { timestamp: ts * 960, sequence: i as u16 }),
                    opus: None,
                    pcm: Some(vec![1; len]),
                    received: None,
                    e2ee: false,
                };
                for f in a.tick(i as u64, vec![p]) {
                    prop_assert_eq!(f.pcm.as_ref().map(Vec::len), Some(320));
                    if let Some(l) = last.insert(f.user, f.frame) {
                        prop_assert!(f.frame > l);
                    }
                }
            }
        }
    }
}
