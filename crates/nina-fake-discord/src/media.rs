//! Voice UDP: IP discovery, and RTP from the fake users, Opus in `*_rtpsize` AEAD encryption,
//! paced by a 20 ms clock, with fault injection on the way out.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use crate::audio::SILENCE_FRAME;
use crate::config::CryptoMode;
use crate::dave::Outgoing;
use crate::state::{Shared, State};

/// Length of Discord's IP discovery packet.
const DISCOVERY_LEN: usize = 74;
/// Dynamic payload type Discord uses for Opus.
const OPUS_PT: u8 = 120;
/// Trailing silence frames after speech, as Discord clients send.
pub(crate) const TRAILING_SILENCE: u8 = 5;

/// Builds an IP discovery response for `ssrc`, telling the client its address as seen here.
pub(crate) fn discovery_response(ssrc: u32, seen: SocketAddr) -> [u8; DISCOVERY_LEN] {
    let mut out = [0u8; DISCOVERY_LEN];
    out[0..2].copy_from_slice(&2u16.to_be_bytes());
    out[2..4].copy_from_slice(&70u16.to_be_bytes());
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    let ip = seen.ip().to_string();
    let n = ip.len().min(63);
    out[8..8 + n].copy_from_slice(&ip.as_bytes()[..n]);
    out[72..74].copy_from_slice(&seen.port().to_be_bytes());
    out
}

/// Answers IP discovery and counts the bot's own packets.
pub(crate) async fn udp_receiver(udp: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    let mut sd = shared.shutdown_rx();
    loop {
        let (len, from) = tokio::select! {
            _ = sd.wait_for(|v| *v) => break,
            r = udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => { debug!("voice UDP receive error: {e}"); continue; }
            },
        };
        if len == DISCOVERY_LEN && buf[0..2] == [0, 1] {
            let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let known = shared.update(|st| {
                st.stats.ip_discoveries += 1;
                st.voice.values().any(|v| v.ssrc == ssrc)
            });
            if !known {
                warn!(
                    ssrc,
                    "IP discovery for an SSRC no voice session owns; answering anyway"
                );
            }
            let _ = udp.send_to(&discovery_response(ssrc, from), from).await;
        } else {
            shared.update(|st| st.stats.bot_udp_packets += 1);
        }
    }
}

/// Builds an encrypted RTP packet the way Discord relays a user's audio: 12-byte header with
/// the extension bit, a one-word `0xBEDE` extension whose body is encrypted with the payload,
/// then the AEAD tag and the 4-byte big-endian nonce counter.
pub(crate) fn rtp_packet(
    mode: CryptoMode,
    key: &[u8; 32],
    nonce: u32,
    seq: u16,
    ts: u32,
    ssrc: u32,
    opus: &[u8],
) -> Option<Vec<u8>> {
    let mut pkt = Vec::with_capacity(16 + 4 + opus.len() + 20);
    pkt.push(0x90); // V=2, P=0, X=1, CC=0
    pkt.push(OPUS_PT & 0x7f);
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(&ts.to_be_bytes());
    pkt.extend_from_slice(&ssrc.to_be_bytes());
    pkt.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01]); // one-byte header extensions, 1 word
    let aad_len = pkt.len();
    // Extension body: id 1 (audio level), 1 byte, then padding.
    let mut body = Vec::with_capacity(4 + opus.len() + 16);
    body.extend_from_slice(&[0x10, 0x7f, 0x00, 0x00]);
    body.extend_from_slice(opus);
    let tag = match mode {
        CryptoMode::Aes256GcmRtpSize => {
            let cipher = Aes256Gcm::new_from_slice(key).ok()?;
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&nonce.to_be_bytes());
            cipher
                .encrypt_in_place_detached(&n.into(), &pkt[..aad_len], &mut body)
                .ok()?
                .to_vec()
        }
        CryptoMode::XChaCha20Poly1305RtpSize => {
            let cipher = XChaCha20Poly1305::new_from_slice(key).ok()?;
            let mut n = [0u8; 24];
            n[..4].copy_from_slice(&nonce.to_be_bytes());
            cipher
                .encrypt_in_place_detached(&n.into(), &pkt[..aad_len], &mut body)
                .ok()?
                .to_vec()
        }
    };
    pkt.extend_from_slice(&body);
    pkt.extend_from_slice(&tag);
    pkt.extend_from_slice(&nonce.to_be_bytes());
    Some(pkt)
}

/// Speaking (op 5) for `uid`'s stream, to the bot's connection carrying `channel`.
fn send_speaking(
    voice: &mut std::collections::BTreeMap<u64, crate::state::VoiceConn>,
    channel: Option<u64>,
    uid: u64,
    ssrc: u32,
) {
    if let Some(v) = channel.and_then(|c| voice.values_mut().find(|v| v.channel_id == c)) {
        v.send(
            5,
            json!({"user_id": uid.to_string(), "ssrc": ssrc, "speaking": 1, "delay": 0}),
        );
    }
}

/// Decrypts a packet built by [`rtp_packet`], returning `(seq, ts, ssrc, opus)`.
#[cfg(test)]
pub(crate) fn open_rtp(
    mode: CryptoMode,
    key: &[u8; 32],
    pkt: &[u8],
) -> Option<(u16, u32, u32, Vec<u8>)> {
    if pkt.len() < 16 + 16 + 4 {
        return None;
    }
    let (head, rest) = pkt.split_at(16);
    let (ct_tag, nonce) = rest.split_at(rest.len() - 4);
    let (ct, tag) = ct_tag.split_at(ct_tag.len() - 16);
    let mut body = ct.to_vec();
    match mode {
        CryptoMode::Aes256GcmRtpSize => {
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(nonce);
            Aes256Gcm::new_from_slice(key)
                .ok()?
                .decrypt_in_place_detached(&n.into(), head, &mut body, tag.into())
                .ok()?;
        }
        CryptoMode::XChaCha20Poly1305RtpSize => {
            let mut n = [0u8; 24];
            n[..4].copy_from_slice(nonce);
            XChaCha20Poly1305::new_from_slice(key)
                .ok()?
                .decrypt_in_place_detached(&n.into(), head, &mut body, tag.into())
                .ok()?;
        }
    }
    let seq = u16::from_be_bytes([head[2], head[3]]);
    let ts = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let ssrc = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    Some((seq, ts, ssrc, body[4..].to_vec()))
}

/// A packet waiting for its (jittered) send time.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Wire {
    due: Instant,
    order: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The 20 ms media clock: each tick every speaking user emits one frame.
pub(crate) async fn ticker(udp: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut speed = shared.lock().speed;
    let mut interval = make_interval(speed);
    let mut wire: BinaryHeap<Reverse<Wire>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut sd = shared.shutdown_rx();
    loop {
        let next_due = wire.peek().map(|Reverse(w)| w.due);
        tokio::select! {
            _ = sd.wait_for(|v| *v) => break,
            _ = interval.tick() => {
                let now = Instant::now();
                let out = {
                    let mut st = shared.lock();
                    if (st.speed - speed).abs() > f64::EPSILON {
                        speed = st.speed;
                        interval = make_interval(speed);
                    }
                    tick(&mut st, now)
                };
                for (due, to, bytes) in out {
                    order += 1;
                    wire.push(Reverse(Wire { due, order, to, bytes }));
                }
                shared.bump();
            }
            _ = async { if let Some(d) = next_due { tokio::time::sleep_until(d).await } }, if next_due.is_some() => {}
        }
        let now = Instant::now();
        while wire.peek().is_some_and(|Reverse(w)| w.due <= now) {
            if let Some(Reverse(w)) = wire.pop()
                && let Err(e) = udp.send_to(&w.bytes, w.to).await
            {
                debug!("RTP send failed: {e}");
            }
        }
    }
}

fn make_interval(speed: f64) -> tokio::time::Interval {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed.min(50.0)
    } else {
        1.0
    };
    let mut i = tokio::time::interval(Duration::from_secs_f64(0.020 / speed));
    i.set_missed_tick_behavior(MissedTickBehavior::Burst);
    i
}

/// One media tick: returns packets to put on the wire (`due`, destination, bytes).
fn tick(st: &mut State, now: Instant) -> Vec<(Instant, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    st.dave_pump(now);
    let faults = st.faults;
    // Channels the bot is connected to with media flowing: a user is heard by the voice
    // connection (one per guild) carrying the user's channel, and only by it.
    let ready: Vec<u64> = st
        .voice
        .values()
        .filter(|v| v.media_ready())
        .map(|v| v.channel_id)
        .collect();
    let user_ids: Vec<u64> = st.users.keys().copied().collect();
    for uid in user_ids {
        // Split borrows: take what we need from the user, then touch voice/rng.
        let Some(u) = st.users.get_mut(&uid) else {
            continue;
        };
        u.rtp.ts = u.rtp.ts.wrapping_add(960);
        if u.speaking.is_none() {
            u.speaking = u.pending.pop_front();
        }
        let Some(sp) = u.speaking.as_mut() else {
            continue;
        };
        let heard = u.voice_channel.is_some_and(|c| ready.contains(&c));
        if heard && !sp.started {
            if !u.voice_channel.is_some_and(|c| st.dave.may_start(c, uid)) {
                // Under DAVE a speech starts once the bot can decrypt it.
                continue;
            }
            // Speaking (op 5) goes out one tick before the audio, as a client announces it
            // before it sends: a DAVE receiver can only decrypt an SSRC it can map to a user.
            sp.started = true;
            sp.announced = true;
            send_speaking(&mut st.voice, u.voice_channel, uid, u.ssrc);
            continue;
        }
        if !heard {
            sp.announced = false;
        } else if !sp.announced {
            // The bot connected while this user was talking: like a joining client, it is told
            // who is speaking (it could not map, nor under DAVE decrypt, the stream otherwise),
            // and the audio goes on without waiting for its keys.
            sp.announced = true;
            send_speaking(&mut st.voice, u.voice_channel, uid, u.ssrc);
        }
        sp.started = true;
        // The shared frames are borrowed, never copied: an `Arc` clone per user and tick.
        let shared = sp.frames.clone();
        let (frame, is_silence): (&[u8], bool) = if sp.left > 0 && !shared.is_empty() {
            let i = sp.next % shared.len();
            sp.next = i + 1;
            sp.left -= 1;
            (&shared[i], false)
        } else if sp.silence_left > 0 {
            sp.silence_left -= 1;
            (&SILENCE_FRAME, true)
        } else {
            // Finished: flush a held-back packet, report, and free the slot.
            let mut done = u.speaking.take();
            let channel = u.voice_channel;
            if let Some(held) = u.rtp.held.take()
                && let Some(peer) = channel
                    .and_then(|c| st.voice.values().find(|v| v.channel_id == c))
                    .and_then(|v| v.peer)
            {
                out.push((now, peer, held));
                st.stats.rtp_sent += 1;
            }
            if let Some(sp) = done.as_mut()
                && let Some(tx) = sp.done.take()
            {
                let _ = tx.send(sp.report.clone());
            }
            continue;
        };
        let (ssrc, seq, ts) = (u.ssrc, u.rtp.seq, u.rtp.ts);
        u.rtp.seq = u.rtp.seq.wrapping_add(1);
        if is_silence {
            sp.report.silence_frames += 1;
        } else if heard {
            if sp.report.sent == 0 {
                sp.report.first_sent_unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            }
            sp.report.sent += 1;
        } else {
            sp.report.unheard += 1;
        }
        sp.report.ssrc = ssrc;
        if !heard {
            continue;
        }
        let Some(v) = u
            .voice_channel
            .and_then(|c| st.voice.values_mut().find(|v| v.channel_id == c))
        else {
            continue;
        };
        let (Some(mode), Some(key), Some(peer)) = (v.mode, v.key, v.peer) else {
            continue;
        };
        // DAVE frame encryption first (by the user's own client), then the transport's.
        let (payload, epoch) = match st.dave.encrypt(v.channel_id, uid, frame) {
            Outgoing::Plain => (Cow::Borrowed(frame), 0),
            Outgoing::Encrypted(b, epoch) => (Cow::Owned(b), epoch),
            Outgoing::NoKeys => {
                if let Some(sp) = st.users.get_mut(&uid).and_then(|u| u.speaking.as_mut())
                    && !is_silence
                {
                    sp.report.sent -= 1;
                    sp.report.dave_unready += 1;
                }
                continue;
            }
        };
        let nonce = v.nonce;
        v.nonce = v.nonce.wrapping_add(1);
        let Some(pkt) = rtp_packet(mode, &key, nonce, seq, ts, ssrc, &payload) else {
            warn!("RTP encryption failed");
            continue;
        };
        let rng = &mut st.fault_rng;
        let u = st
            .users
            .get_mut(&uid)
            .expect("user present: looked up above");
        let sp = u
            .speaking
            .as_mut()
            .expect("speech present: looked up above");
        if !is_silence {
            *sp.report.epochs.entry(epoch).or_default() += 1;
        }
        if rng.chance(faults.loss) {
            if is_silence {
                sp.report.silence_lost += 1;
            } else {
                sp.report.lost += 1;
                sp.report.lost_seqs.push(seq);
            }
            continue;
        }
        let jitter = |rng: &mut crate::rng::Rng| {
            if faults.jitter.is_zero() {
                Duration::ZERO
            } else {
                faults.jitter.mul_f64(rng.unit())
            }
        };
        let due = now + jitter(rng);
        if rng.chance(faults.duplicate) {
            sp.report.duplicated += 1;
            out.push((
                due + Duration::from_micros(500) + jitter(rng),
                peer,
                pkt.clone(),
            ));
            st.stats.rtp_sent += 1;
        }
        if u.rtp.held.is_none() && rng.chance(faults.reorder) {
            sp.report.reordered += 1;
            u.rtp.held = Some(pkt);
            continue;
        }
        out.push((due, peer, pkt));
        st.stats.rtp_sent += 1;
        if let Some(held) = u.rtp.held.take() {
            out.push((due + Duration::from_micros(200), peer, held));
            st.stats.rtp_sent += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_round_trip_both_modes_and_tamper_detected() {
        let key = [7u8; 32];
        for mode in [
            CryptoMode::Aes256GcmRtpSize,
            CryptoMode::XChaCha20Poly1305RtpSize,
        ] {
            let opus = vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9];
            let pkt = rtp_packet(mode, &key, 41, 1000, 96_000, 0xdead_beef, &opus).expect("seal");
            assert_eq!(pkt[0], 0x90);
            assert_eq!(pkt[1], 120);
            assert_eq!(&pkt[12..16], &[0xBE, 0xDE, 0, 1]);
            assert_eq!(&pkt[pkt.len() - 4..], &41u32.to_be_bytes());
            assert_eq!(pkt.len(), 12 + 4 + 4 + opus.len() + 16 + 4);
            let (seq, ts, ssrc, body) = open_rtp(mode, &key, &pkt).expect("open");
            assert_eq!((seq, ts, ssrc), (1000, 96_000, 0xdead_beef));
            assert_eq!(body, opus);
            let mut bad = pkt.clone();
            bad[20] ^= 1;
            assert!(open_rtp(mode, &key, &bad).is_none());
            let mut bad_header = pkt.clone();
            bad_header[3] ^= 1; // header is authenticated
            assert!(open_rtp(mode, &key, &bad_header).is_none());
        }
    }

    #[test]
    fn discovery_response_layout() {
        let r = discovery_response(0x0102_0304, "127.0.0.1:50123".parse().expect("addr"));
        assert_eq!(&r[0..8], &[0, 2, 0, 70, 1, 2, 3, 4]);
        assert_eq!(&r[8..17], b"127.0.0.1");
        assert_eq!(r[17], 0);
        assert_eq!(u16::from_be_bytes([r[72], r[73]]), 50123);
    }

    #[test]
    fn shared_replay_reuses_one_encoding_and_keeps_pacing_counts() {
        use crate::config::Config;
        use crate::control::Control;
        use crate::state::{Shared, VoiceConn};

        // Transport encryption only: this test opens the packets itself.
        let cfg = Config {
            dave: false,
            ..Config::default()
        };
        let channel = cfg.voice_channels[0].0;
        let cfg_guild = cfg.guild_id;
        let shared = Arc::new(Shared::new(cfg, String::new(), String::new()));
        let control = Control::new(shared.clone());
        let key = [3u8; 32];
        let mode = CryptoMode::Aes256GcmRtpSize;
        let guild = cfg_guild;
        shared.lock().voice.insert(
            guild,
            VoiceConn {
                session_id: "s".into(),
                token: "t".into(),
                channel_id: channel,
                ssrc: 1,
                version: 4,
                seq: 0,
                mode: Some(mode),
                key: Some(key),
                peer: Some("127.0.0.1:9".parse().expect("addr")),
                nonce: 0,
                ws: None,
                backlog: Vec::new(),
            },
        );
        // Three distinct 1-byte "frames", replayed by two users: 7 frames from index 2, so the
        // encoding wraps around twice.
        let frames: Arc<[Vec<u8>]> = vec![vec![10u8], vec![11], vec![12]].into();
        let users: Vec<u64> = (0..2).map(|i| control.add_user(&format!("u{i}"))).collect();
        let mut handles = Vec::new();
        for u in &users {
            control.join_voice(*u, channel).expect("join");
            handles.push(
                control
                    .speak_opus_shared(*u, frames.clone(), 2, 7)
                    .expect("queued"),
            );
        }
        // Nothing was copied: the queue holds the caller's encoding.
        assert_eq!(Arc::strong_count(&frames), 1 + users.len());
        assert!(
            handles
                .iter()
                .all(|h| h.frames == 7 && h.opus_frames.is_empty())
        );
        let mut got: std::collections::HashMap<u32, Vec<(u16, u32, Vec<u8>)>> = Default::default();
        let now = Instant::now();
        let mut ticks = 0;
        // One tick announcing the speech (op 5), 7 speech + 5 silence frames, then one tick to
        // report: 14 ticks.
        for _ in 0..14 {
            ticks += 1;
            let mut st = shared.lock();
            for (_, _, pkt) in tick(&mut st, now) {
                let (seq, ts, ssrc, body) = open_rtp(mode, &key, &pkt).expect("open");
                got.entry(ssrc).or_default().push((seq, ts, body));
            }
        }
        assert_eq!(ticks, 14);
        assert_eq!(
            Arc::strong_count(&frames),
            1,
            "finished speeches release the frames"
        );
        assert_eq!(got.len(), users.len());
        for pkts in got.values() {
            assert_eq!(pkts.len(), 7 + usize::from(TRAILING_SILENCE));
            let bodies: Vec<u8> = pkts.iter().take(7).map(|p| p.2[0]).collect();
            assert_eq!(bodies, vec![12, 10, 11, 12, 10, 11, 12]);
            assert!(pkts[7..].iter().all(|p| p.2 == SILENCE_FRAME));
            for w in pkts.windows(2) {
                assert_eq!(w[1].0, w[0].0.wrapping_add(1), "fresh sequence numbers");
                assert_eq!(w[1].1, w[0].1.wrapping_add(960), "timestamps advance 20 ms");
            }
        }
        for mut h in handles {
            let r = h.try_report().expect("reported");
            assert_eq!(
                (r.frames, r.sent, r.silence_frames, r.unheard),
                (7, 7, 5, 0)
            );
        }
        assert_eq!(shared.lock().stats.rtp_sent, 2 * 12);
        // A replay of nothing is refused rather than sending silence only.
        assert!(
            control
                .speak_opus_shared(users[0], Arc::from(Vec::new()), 0, 1)
                .is_err()
        );
    }
}
