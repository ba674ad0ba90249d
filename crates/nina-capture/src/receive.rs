//! songbird's receive events -> [`CaptureEvent`]s.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU8;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use songbird::driver::{Channels, DecodeConfig, DecodeMode, SampleRate};
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
    /// The songbird configuration for receiving.
    pub fn songbird(&self) -> songbird::Config {
        let mode = match self.decode {
            Decode::Off => DecodeMode::Decrypt,
            Decode::Mono16k => {
                DecodeMode::Decode(DecodeConfig::new(Channels::Mono, SampleRate::Hz16000))
            }
            Decode::Stereo48k => {
                DecodeMode::Decode(DecodeConfig::new(Channels::Stereo, SampleRate::Hz48000))
            }
        };
        songbird::Config::default()
            .decode_mode(mode)
            .playout_buffer_length(
                NonZeroU8::new(self.playout_frames.max(1)).unwrap_or(NonZeroU8::MIN),
            )
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

    pub(crate) fn left(&self, user: UserId) {
        self.asm().disconnect(user);
    }

    fn frames(&self, frames: Vec<UserFrame>) {
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

/// The Opus payload of a received packet: after Discord's encrypted header extension, before
/// the AEAD tag and nonce. songbird 0.6 gives `payload_offset` (the cipher's prefix) and, despite
/// its name, `payload_end_pad` as the index where the payload ends.
fn opus_payload(rtp_payload: &[u8], offset: usize, end: usize, extension: bool) -> Option<&[u8]> {
    let mut start = offset;
    if extension {
        let pre = rtp_payload.get(start..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([pre[2], pre[3]]));
    }
    let end = end.min(rtp_payload.len());
    rtp_payload.get(start..end).filter(|p| !p.is_empty())
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
            .map(<[u8]>::to_vec);
            (Some(info), opus)
        }
        None => (None, None),
    };
    TickPacket {
        ssrc,
        rtp,
        opus,
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
                let reconnect = s.connected_once.swap(true, Ordering::Relaxed);
                s.send(CaptureEvent::Connected {
                    frame: s.now(),
                    reconnect,
                });
            }
            EventContext::DriverReconnect(_) => {
                s.connected_once.store(true, Ordering::Relaxed);
                s.send(CaptureEvent::Connected {
                    frame: s.now(),
                    reconnect: true,
                });
            }
            EventContext::DriverDisconnect(d) => {
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
        assert_eq!(opus_payload(&p, 0, end, true), Some(&[1u8, 2, 3][..]));
        assert_eq!(
            opus_payload(&p[..3], 0, 3, true),
            None,
            "truncated preamble"
        );
        assert_eq!(opus_payload(&p, 0, 2, false), Some(&[0xBE, 0xDE][..]));
        assert_eq!(opus_payload(&p, 0, 10_000, true).map(<[u8]>::len), Some(23));
    }

    #[test]
    fn decode_formats() {
        assert_eq!(Decode::Mono16k.frame_samples(), 320);
        assert_eq!(Decode::Stereo48k.frame_samples(), 1920);
        assert_eq!(Decode::Off.frame_samples(), 0);
    }
}
