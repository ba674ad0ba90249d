//! songbird's receive events -> [`CaptureEvent`]s.
//!
//! songbird only removes the transport encryption; Nina decodes the Opus itself, per user, after
//! placing packets on the session clock. songbird 0.6's own decoder runs loss concealment for
//! `new_seq - next_seq` packets with a saturating subtraction, so when a stream's 16-bit RTP
//! sequence number wraps (every 65 536 packets: about 22 minutes of one person speaking; at a
//! random point for streams that start at a random sequence number, as Discord's do) it conceals
//! some 65 000 frames in its receive task and stops reading the socket for seconds: every
//! speaker's packets are dropped meanwhile (measured with the load benchmark: 14–50% of 50
//! speakers' packets lost in 30 s runs; none once decoding moved here).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU8;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use songbird::driver::DecodeMode;
use songbird::events::context_data::VoiceData;
use songbird::events::{Event, EventContext, EventHandler};
use tokio::sync::mpsc;

use crate::{
    Assembler, CaptureEvent, CaptureStats, FRAME_MS, RtpInfo, TickPacket, UserFrame, UserId,
};

/// Whether and how received voice is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decode {
    /// Keep the Opus packets only (archival tracks; decode later with `reprocess`).
    Off,
    /// Decode to 16 kHz mono: what voice activity detection and Whisper consume (the default;
    /// see docs/collector.md for the measurement behind it).
    #[default]
    Mono16k,
    /// Decode to 48 kHz stereo, as Discord sends it.
    Stereo48k,
}

impl Decode {
    /// `(sample rate, channels)` of decoded frames, if decoding.
    pub fn format(self) -> Option<(u32, u16)> {
        match self {
            Decode::Off => None,
            Decode::Mono16k => Some((16_000, 1)),
            Decode::Stereo48k => Some((48_000, 2)),
        }
    }

    /// Interleaved samples in one 20 ms frame (0 when not decoding).
    pub fn frame_samples(self) -> usize {
        self.format()
            .map_or(0, |(rate, ch)| rate as usize / 50 * usize::from(ch))
    }
}

/// How voice is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceConfig {
    /// Decoding.
    pub decode: Decode,
    /// songbird's jitter buffer, in 20 ms packets.
    pub playout_frames: u8,
    /// Events buffered for a slow consumer before they are dropped (and counted).
    pub queue: usize,
    /// Frames held for an SSRC before its user is known.
    pub hold_frames: usize,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            decode: Decode::default(),
            playout_frames: 5,
            queue: 1 << 16,
            hold_frames: 100,
        }
    }
}

impl VoiceConfig {
    /// The songbird configuration for receiving: decryption only (decoding is Nina's).
    pub fn songbird(&self) -> songbird::Config {
        songbird::Config::default()
            .decode_mode(DecodeMode::Decrypt)
            .playout_buffer_length(
                NonZeroU8::new(self.playout_frames.max(1)).unwrap_or(NonZeroU8::MIN),
            )
    }
}

/// One user's Opus decoder.
struct UserDecoder {
    decoder: opus2::Decoder,
    buf: Vec<i16>,
}

/// Decodes users' frames in order, one decoder per user.
struct Decoders {
    rate: u32,
    channels: u16,
    users: HashMap<UserId, UserDecoder>,
}

impl std::fmt::Debug for Decoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoders")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("users", &self.users.len())
            .finish()
    }
}

impl Decoders {
    /// Exactly one frame (20 ms) of `user`'s audio: the packet decoded, or the decoder's
    /// concealment when it was lost; silence if libopus refuses the packet.
    fn decode(&mut self, user: UserId, opus: Option<&[u8]>) -> Vec<i16> {
        let ch = usize::from(self.channels);
        let frame = self.rate as usize / 50 * ch;
        let d = match self.users.entry(user) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let channels = if self.channels == 1 {
                    opus2::Channels::Mono
                } else {
                    opus2::Channels::Stereo
                };
                match opus2::Decoder::new(self.rate, channels) {
                    Ok(decoder) => v.insert(UserDecoder {
                        decoder,
                        // The longest Opus packet: 120 ms.
                        buf: vec![0; self.rate as usize / 1000 * 120 * ch],
                    }),
                    Err(e) => {
                        tracing::warn!("cannot create an Opus decoder: {e}");
                        return vec![0; frame];
                    }
                }
            }
        };
        let n = match d.decoder.decode(opus.unwrap_or(&[]), &mut d.buf, false) {
            Ok(n) => n * ch,
            Err(e) => {
                tracing::debug!(user = user.0, "undecodable Opus packet: {e}");
                0
            }
        };
        let mut out = d.buf[..n.min(frame)].to_vec();
        out.resize(frame, 0);
        out
    }

    fn forget(&mut self, user: UserId) {
        self.users.remove(&user);
    }
}

/// State shared by songbird's event handler and the gateway loop for one recording.
#[derive(Debug)]
pub(crate) struct Shared {
    start: Instant,
    delay: u64,
    asm: Mutex<Assembler>,
    tx: mpsc::Sender<CaptureEvent>,
    overflowed: AtomicU64,
    connected_once: AtomicBool,
    /// People in the channel (not the bot), for the unannounced-SSRC fallback.
    pub(crate) members: Mutex<HashSet<UserId>>,
    /// Per SSRC: a reference RTP timestamp and the earliest session time (ms) at which it could
    /// have been sent, judging by every packet's receipt (the least-delayed packet wins).
    receipts: Mutex<HashMap<u32, (u32, u64)>>,
    /// When each stream began, to see audio lost before the recorder could read it.
    starts: Mutex<StreamStarts>,
    /// Decoding, when configured.
    decoders: Option<Mutex<Decoders>>,
}

impl Shared {
    pub(crate) fn new(cfg: &VoiceConfig, tx: mpsc::Sender<CaptureEvent>) -> Self {
        Self {
            start: Instant::now(),
            delay: u64::from(cfg.playout_frames),
            asm: Mutex::new(Assembler::new(cfg.decode.frame_samples(), cfg.hold_frames)),
            tx,
            overflowed: AtomicU64::new(0),
            connected_once: AtomicBool::new(false),
            members: Mutex::new(HashSet::new()),
            receipts: Mutex::new(HashMap::new()),
            starts: Mutex::new(StreamStarts::default()),
            decoders: cfg.decode.format().map(|(rate, channels)| {
                Mutex::new(Decoders {
                    rate,
                    channels,
                    users: HashMap::new(),
                })
            }),
        }
    }

    /// The current frame on the session clock.
    pub(crate) fn now(&self) -> u64 {
        (self.start.elapsed().as_millis() / u128::from(FRAME_MS)) as u64
    }

    pub(crate) fn send(&self, ev: CaptureEvent) {
        if self.tx.try_send(ev).is_err() {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn asm(&self) -> std::sync::MutexGuard<'_, Assembler> {
        self.asm.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats(&self) -> CaptureStats {
        let mut s = *self.asm().stats();
        s.overflowed = self.overflowed.load(Ordering::Relaxed);
        s
    }

    /// A packet was received from the network (before the jitter buffer).
    fn received(&self, ssrc: u32, timestamp: u32) {
        let now = self.start.elapsed().as_millis() as u64;
        let missed = self
            .starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heard(ssrc, now);
        if missed > 0 {
            tracing::debug!(ssrc, missed, "packets missed before the first readable one");
            self.asm().missed_at_start(ssrc, missed);
        }
        let mut r = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() > 4096 {
            r.clear(); // SSRCs churn; keep it bounded
        }
        let e = r.entry(ssrc).or_insert_with(|| {
            tracing::debug!(ssrc, at_ms = now, "first packet received");
            (timestamp, now)
        });
        let offset_ms = i64::from(timestamp.wrapping_sub(e.0) as i32) / 48;
        let implied = now as i64 - offset_ms;
        if implied >= 0 && (implied as u64) < e.1 {
            e.1 = implied as u64;
        }
    }

    /// The session frame of a packet by the receipt estimate.
    fn received_frame(&self, ssrc: u32, timestamp: u32) -> Option<u64> {
        let r = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        let (ts0, ms0) = *r.get(&ssrc)?;
        let ms = ms0 as i64 + i64::from(timestamp.wrapping_sub(ts0) as i32) / 48;
        u64::try_from((ms + FRAME_MS as i64 / 2) / FRAME_MS as i64).ok()
    }

    /// The voice connection changed: streams start over.
    fn connection_changed(&self) {
        self.asm().forget_sequences();
        let mut st = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        *st = StreamStarts::default();
    }

    /// Audio lost per user so far.
    pub(crate) fn losses(&self) -> HashMap<UserId, crate::UserLoss> {
        self.asm().losses().clone()
    }

    pub(crate) fn left(&self, user: UserId) {
        self.asm().disconnect(user);
        if let Some(d) = &self.decoders {
            d.lock().unwrap_or_else(|p| p.into_inner()).forget(user);
        }
    }

    /// Decodes (when configured) and hands on frames, each user's in order.
    fn frames(&self, mut frames: Vec<UserFrame>) {
        if let Some(d) = &self.decoders {
            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
            for f in &mut frames {
                f.pcm = Some(d.decode(f.user, f.opus.as_deref()));
            }
        }
        for f in frames {
            self.send(CaptureEvent::Audio(f));
        }
    }

    fn tick(&self, speaking: &HashMap<u32, VoiceData>) {
        let packets: Vec<TickPacket> = speaking
            .iter()
            .map(|(ssrc, d)| {
                let mut p = tick_packet(*ssrc, d);
                p.received = p.rtp.and_then(|r| self.received_frame(*ssrc, r.timestamp));
                p
            })
            .collect();
        let arrival = self.now().saturating_sub(self.delay);
        let mut asm = self.asm();
        let mut out = asm.tick(arrival, packets);
        if asm.unattributed_ssrcs() == 1 {
            let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            let without: Vec<UserId> = members
                .iter()
                .filter(|u| !speaking.keys().any(|s| asm.user(*s) == Some(**u)))
                .copied()
                .collect();
            // Only when exactly one person present has no stream, and has none at all.
            if let [u] = without.as_slice() {
                out.extend(asm.attribute_sole_stranger(*u));
            }
        }
        drop(asm);
        self.frames(out);
    }
}

/// A stream announced (Speaking) whose first packet comes later than it should was not
/// readable meanwhile, unless the wait is this long (ms): then the sender was silent.
const START_WAIT_MS: u64 = 10_000;
/// Packets of delay between a Speaking and the first packet that are normal (the client
/// announces a tick ahead; the signalling and media paths differ).
const START_SLACK: u64 = 2;
/// Most streams tracked at once (SSRCs churn; past this the tracking starts over).
const MAX_TRACKED_STREAMS: usize = 4096;

/// Streams announced but not heard yet, and streams heard, since the voice connection began.
/// songbird drops packets it cannot decrypt without a trace, and the first packet of a
/// stream has no sequence number before it to show a hole, so audio sent before the
/// recorder's DAVE keys were ready shows only as the first packet coming late after the
/// sender's Speaking.
#[derive(Debug, Default)]
struct StreamStarts {
    /// SSRC -> session time (ms) of its first Speaking.
    announced: HashMap<u32, u64>,
    heard: HashSet<u32>,
}

impl StreamStarts {
    fn announced(&mut self, ssrc: u32, now_ms: u64) {
        if self.heard.contains(&ssrc) {
            return;
        }
        if self.announced.len() >= MAX_TRACKED_STREAMS {
            self.announced.clear();
        }
        self.announced.entry(ssrc).or_insert(now_ms);
    }

    /// A readable packet of `ssrc` came; returns the packets estimated missed before it.
    fn heard(&mut self, ssrc: u32, now_ms: u64) -> u64 {
        if self.heard.contains(&ssrc) {
            return 0;
        }
        if self.heard.len() >= MAX_TRACKED_STREAMS {
            self.heard.clear();
        }
        self.heard.insert(ssrc);
        match self.announced.remove(&ssrc) {
            Some(t) => {
                let wait = now_ms.saturating_sub(t);
                if wait >= START_WAIT_MS {
                    0
                } else {
                    (wait / FRAME_MS).saturating_sub(START_SLACK)
                }
            }
            None => 0,
        }
    }
}

/// The Opus payload of a received packet: after Discord's encrypted header extension, before
/// the AEAD tag and nonce. songbird 0.6 gives `payload_offset` (the cipher's prefix) and, despite
/// its name, `payload_end_pad` as the index where the payload ends.
/// Also says whether the frame came end-to-end encrypted (it carried a DAVE trailer).
fn opus_payload(
    rtp_payload: &[u8],
    offset: usize,
    end: usize,
    extension: bool,
) -> Option<(&[u8], bool)> {
    let mut start = offset;
    if extension {
        let pre = rtp_payload.get(start..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([pre[2], pre[3]]));
    }
    let end = end.min(rtp_payload.len());
    let body = rtp_payload.get(start..end)?;
    let opus = dave_plaintext(body);
    (!opus.is_empty()).then_some((opus, opus.len() < body.len()))
}

/// Marker ending every DAVE (end-to-end encrypted) media frame.
const DAVE_MAGIC: [u8; 2] = [0xFA, 0xFA];
/// Smallest DAVE trailer: 8-byte tag, size byte, magic.
const DAVE_MIN_TRAILER: usize = 11;

/// The Opus frame in a body songbird has DAVE-decrypted. songbird 0.6.1 writes the plaintext
/// over the start of the body but leaves the DAVE trailer (`tag ‖ nonce ‖ ranges ‖ size ‖
/// FA FA`) in place and does not count it in `payload_end_pad`, so the trailer is cut here by
/// its size byte. Frames without the marker (transport encryption only, silence) are returned
/// as they are; songbird drops DAVE frames it cannot decrypt, so a marked frame that reaches
/// us holds plaintext.
fn dave_plaintext(body: &[u8]) -> &[u8] {
    let n = body.len();
    if n < DAVE_MIN_TRAILER || body[n - 2..] != DAVE_MAGIC {
        return body;
    }
    let size = usize::from(body[n - 3]);
    if (DAVE_MIN_TRAILER..=n).contains(&size) {
        &body[..n - size]
    } else {
        body
    }
}

fn tick_packet(ssrc: u32, d: &VoiceData) -> TickPacket {
    let (rtp, opus) = match &d.packet {
        Some(p) => {
            use songbird::packet::Packet as _;
            let r = p.rtp();
            let info = RtpInfo {
                timestamp: r.get_timestamp().0.0,
                sequence: r.get_sequence().0.0,
            };
            let opus = opus_payload(
                r.payload(),
                p.payload_offset,
                p.payload_end_pad,
                r.get_extension() != 0,
            )
            .map(|(o, e2ee)| (o.to_vec(), e2ee));
            (Some(info), opus)
        }
        None => (None, None),
    };
    TickPacket {
        ssrc,
        rtp,
        e2ee: opus.as_ref().is_some_and(|(_, e)| *e),
        opus: opus.map(|(o, _)| o),
        pcm: d.decoded_voice.clone(),
        received: None,
    }
}

/// songbird event handler feeding a [`Shared`].
pub(crate) struct Receiver(pub(crate) Arc<Shared>);

#[async_trait::async_trait]
impl EventHandler for Receiver {
    async fn act(&self, ctx: &EventContext<'_>) -> Option<Event> {
        let s = &self.0;
        match ctx {
            EventContext::VoiceTick(t) => s.tick(&t.speaking),
            EventContext::RtpPacket(p) => {
                let r = p.rtp();
                s.received(r.get_ssrc(), r.get_timestamp().0.0);
            }
            EventContext::SpeakingStateUpdate(sp) => {
                let now = s.start.elapsed().as_millis() as u64;
                s.starts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .announced(sp.ssrc, now);
                if let Some(u) = sp.user_id {
                    let frames = s.asm().speaking(sp.ssrc, UserId(u.0));
                    s.frames(frames);
                }
            }
            EventContext::ClientDisconnect(d) => {
                let user = UserId(d.user_id.0);
                s.left(user);
                s.send(CaptureEvent::Left {
                    frame: s.now(),
                    user,
                });
            }
            EventContext::DriverConnect(_) => {
                s.connection_changed();
                let reconnect = s.connected_once.swap(true, Ordering::Relaxed);
                s.send(CaptureEvent::Connected {
                    frame: s.now(),
                    reconnect,
                });
            }
            EventContext::DriverReconnect(_) => {
                s.connection_changed();
                s.connected_once.store(true, Ordering::Relaxed);
                s.send(CaptureEvent::Connected {
                    frame: s.now(),
                    reconnect: true,
                });
            }
            EventContext::DriverDisconnect(d) => {
                s.connection_changed();
                s.send(CaptureEvent::Disconnected {
                    frame: s.now(),
                    reason: format!("{:?} {:?}", d.kind, d.reason),
                });
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_is_cut_out_of_the_payload() {
        // Extension preamble BE DE 00 01, one word of extension, Opus 1 2 3, 20 bytes of tag+nonce.
        let mut p = vec![0xBE, 0xDE, 0, 1, 9, 9, 9, 9, 1, 2, 3];
        p.extend([0u8; 20]);
        let end = p.len() - 20;
        assert_eq!(
            opus_payload(&p, 0, end, true),
            Some((&[1u8, 2, 3][..], false))
        );
        assert_eq!(
            opus_payload(&p[..3], 0, 3, true),
            None,
            "truncated preamble"
        );
        assert_eq!(
            opus_payload(&p, 0, 2, false),
            Some((&[0xBE, 0xDE][..], false))
        );
        assert_eq!(
            opus_payload(&p, 0, 10_000, true).map(|(o, _)| o.len()),
            Some(23)
        );
    }

    #[test]
    fn the_dave_trailer_is_cut_by_its_size_byte() {
        // Plaintext 1 2 3 4, then an 8-byte tag, a 1-byte nonce, no ranges, size 12, magic.
        let mut body = vec![1u8, 2, 3, 4];
        body.extend([7u8; 8]);
        body.extend([5, 12, 0xFA, 0xFA]);
        assert_eq!(dave_plaintext(&body), &[1, 2, 3, 4]);
        // Through the whole payload cut: extension, body, transport tag and nonce.
        let mut p = vec![0xBE, 0xDE, 0, 1, 9, 9, 9, 9];
        p.extend(&body);
        p.extend([0u8; 20]);
        let end = p.len() - 20;
        assert_eq!(
            opus_payload(&p, 0, end, true),
            Some((&[1u8, 2, 3, 4][..], true))
        );
        // No marker, a size that does not fit, or too short: left alone.
        assert_eq!(dave_plaintext(&[1, 2, 3]), &[1, 2, 3]);
        let mut big = body.clone();
        let n = big.len();
        big[n - 3] = 200;
        assert_eq!(dave_plaintext(&big), &big[..]);
        let mut small = body.clone();
        small[n - 3] = 3;
        assert_eq!(dave_plaintext(&small), &small[..]);
        assert_eq!(dave_plaintext(&[0xF8, 0xFF, 0xFE]), &[0xF8, 0xFF, 0xFE]);
    }

    #[test]
    fn a_stream_that_starts_late_after_its_speaking_counts_the_missed_packets() {
        let mut st = StreamStarts::default();
        // Announced a tick ahead, first packet on time: nothing missed.
        st.announced(1, 1000);
        assert_eq!(st.heard(1, 1030), 0);
        // Announced, first readable packet 400 ms later: 20 packets, less the slack.
        st.announced(2, 1000);
        assert_eq!(st.heard(2, 1400), 20 - START_SLACK);
        // Only the first packet of a stream counts, and a later Speaking changes nothing.
        st.announced(2, 5000);
        assert_eq!(st.heard(2, 9000), 0);
        // Announced, then silent for longer than the wait: the sender was quiet, not lost.
        st.announced(3, 0);
        assert_eq!(st.heard(3, START_WAIT_MS + 20), 0);
        // A packet never announced: nothing to measure against.
        assert_eq!(st.heard(4, 50), 0);
        // The first Speaking is the start: a repeat does not move it.
        st.announced(5, 100);
        st.announced(5, 300);
        assert_eq!(st.heard(5, 300), 10 - START_SLACK);
    }

    proptest::proptest! {
        /// Any bytes: no panic, and the result is a prefix that is only shorter for a marked
        /// frame whose size byte fits.
        #[test]
        fn dave_plaintext_is_a_prefix(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let out = dave_plaintext(&body);
            proptest::prop_assert!(body.starts_with(out));
            if out.len() < body.len() {
                proptest::prop_assert!(body.ends_with(&DAVE_MAGIC));
                proptest::prop_assert_eq!(body.len() - out.len(), usize::from(body[body.len() - 3]));
            }
        }
    }

    /// 20 ms Opus packets of a 440 Hz tone, as Discord sends them (48 kHz stereo).
    fn tone_packets(n: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
        (0..n)
            .map(|k| {
                let pcm: Vec<i16> = (0..960 * 2)
                    .map(|i| {
                        let t = (k * 960 + i / 2) as f32 / 48_000.0;
                        ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
                    })
                    .collect();
                enc.encode_vec(&pcm, 4000).unwrap()
            })
            .collect()
    }

    #[test]
    fn frames_are_decoded_per_user_and_losses_concealed() {
        let packets = tone_packets(20);
        let mut d = Decoders {
            rate: 16_000,
            channels: 1,
            users: HashMap::new(),
        };
        let (ann, bob) = (UserId(1), UserId(2));
        let rms = |x: &[i16]| {
            (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        let mut last = Vec::new();
        for p in &packets {
            last = d.decode(ann, Some(p));
            assert_eq!(last.len(), 320);
        }
        assert!(rms(&last) > 2000.0, "tone decoded: rms {}", rms(&last));
        // A lost packet: concealment continues the tone rather than silence.
        let hidden = d.decode(ann, None);
        assert_eq!(hidden.len(), 320);
        assert!(rms(&hidden) > 500.0, "concealed: rms {}", rms(&hidden));
        // Another user has a decoder of their own: a lost first packet is quiet.
        assert!(rms(&d.decode(bob, None)) < 1.0);
        // Garbage is a frame of silence, not a panic.
        assert_eq!(d.decode(bob, Some(&[0xFF, 0xFF, 0xFF])).len(), 320);
        assert_eq!(d.users.len(), 2);
        d.forget(ann);
        assert_eq!(d.users.len(), 1);
        let mut stereo = Decoders {
            rate: 48_000,
            channels: 2,
            users: HashMap::new(),
        };
        assert_eq!(stereo.decode(ann, Some(&packets[0])).len(), 1920);
    }

    #[test]
    fn decode_formats() {
        assert_eq!(Decode::Mono16k.frame_samples(), 320);
        assert_eq!(Decode::Stereo48k.frame_samples(), 1920);
        assert_eq!(Decode::Off.frame_samples(), 0);
    }
}
