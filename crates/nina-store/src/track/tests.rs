use std::process::Command;

use proptest::prelude::*;

use super::*;

/// A valid packet of `ms` (10, 20, 40, 60) milliseconds with `payload` bytes of CELT data.
fn packet(ms: u32, payload: usize, fill: u8) -> Vec<u8> {
    match ms {
        10 => [vec![0xF0], vec![fill; payload]].concat(), // config 30: CELT FB 10 ms
        20 => [vec![0xF8], vec![fill; payload]].concat(),
        // code 3, CBR, 2 or 3 frames of 20 ms
        40 => [vec![0xFB, 2], vec![fill; payload * 2]].concat(),
        _ => [vec![0xFB, 3], vec![fill; payload * 3]].concat(),
    }
}

#[test]
fn packet_durations_come_from_the_toc() {
    assert_eq!(opus_packet_samples(&OPUS_SILENCE), Some(960));
    assert_eq!(opus_packet_samples(&[0xF8]), Some(960));
    assert_eq!(opus_packet_samples(&[0x00, 1, 2]), Some(480)); // SILK NB 10 ms
    assert_eq!(opus_packet_samples(&[0x18, 1]), Some(2880)); // SILK NB 60 ms
    assert_eq!(opus_packet_samples(&[0x60, 1]), Some(480)); // hybrid SWB 10 ms
    assert_eq!(opus_packet_samples(&[0xE0]), Some(120)); // CELT 2.5 ms
    assert_eq!(opus_packet_samples(&[0xF9, 1, 2]), Some(1920)); // code 1: two equal frames
    assert_eq!(opus_packet_samples(&[0xF9, 1]), None); // code 1: odd payload
    assert_eq!(opus_packet_samples(&[0xFA, 1, 9, 9]), Some(1920)); // code 2: 1 + 2 bytes
    assert_eq!(opus_packet_samples(&[0xFA, 5, 9]), None); // code 2: first frame too long
    assert_eq!(
        opus_packet_samples(&[0xFB, 6, 0, 0, 0, 0, 0, 0]),
        Some(5760)
    ); // 6 x 20 ms
    assert_eq!(opus_packet_samples(&[0xFB, 7]), None); // 140 ms
    assert_eq!(opus_packet_samples(&[0xFB, 0]), None); // no frames
    assert_eq!(opus_packet_samples(&[0xFB, 0x42, 1, 7, 7, 0]), Some(1920)); // padding 1
    assert_eq!(opus_packet_samples(&[0xFB, 0x42, 9, 7, 7]), None); // padding past the end
    assert_eq!(opus_packet_samples(&[0xFB, 0x82, 1, 7, 7]), Some(1920)); // VBR 1 + 1
    assert_eq!(opus_packet_samples(&[0xFB, 0x83, 3, 7]), None); // VBR lengths past the end
    assert_eq!(opus_packet_samples(&[0xF8; 1277]), None); // frame longer than 1275 bytes
    assert_eq!(opus_packet_samples(&[]), None);
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn gaps_are_filled_with_silence_and_late_packets_dropped() {
    let dir = tmp();
    let path = dir.path().join("tracks/7.opus");
    let comments = vec![("user_id".to_string(), "7".to_string())];
    let mut w = OpusTrackWriter::create(&path, 99, 2, &comments).unwrap();
    assert!(
        OpusTrackWriter::create(&path, 99, 2, &[]).is_err(),
        "existing"
    );
    let p = packet(20, 40, 1);
    // The user starts talking 1.01 s into the session: 50 silence frames, 480 absorbed.
    assert!(w.push(48_480, &p).unwrap());
    assert_eq!(w.position(), 48_000 + 960);
    assert!(!w.push(48_000, &p).unwrap(), "duplicate");
    assert!(w.push(48_960, &[0xFB, 0]).unwrap(), "malformed: silence");
    assert!(w.push(49_920, &packet(60, 30, 2)).unwrap());
    w.flush().unwrap();
    w.pad_to(100_000).unwrap();
    assert_eq!(w.position(), 52_800 + 960 * 49);
    let s = w.finish(144_000).unwrap();
    assert_eq!(s.samples, 144_000);
    let t = read_opus_track(&path).unwrap();
    assert!(t.ended && t.damage.is_none());
    assert_eq!((t.channels, t.pre_skip, t.serial), (2, 312, 99));
    assert_eq!(t.comments, comments);
    assert_eq!(t.summary(), s);
    assert_eq!(t.samples(), 144_000);
    assert_eq!(t.packets[50].start, 48_000);
    assert_eq!(t.packets[50].data, p);
    assert_eq!(t.packets[51].data, OPUS_SILENCE);
    assert_eq!(t.packets[52].start, 49_920);
    assert_eq!(t.packets[52].samples, 2880);
    assert_eq!(s.packets, 50 + 3 + (144_000 - 52_800) / 960);
    assert_eq!(s.silence_packets, s.packets - 2);
    // Already finished: repairing changes nothing.
    let before = std::fs::read(&path).unwrap();
    assert_eq!(repair_opus_track(&path).unwrap(), s);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Ogg pages of a file: (header type flags, granule, number of segments).
fn pages(bytes: &[u8]) -> Vec<(u8, u64, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 27 <= bytes.len() {
        assert_eq!(&bytes[i..i + 4], b"OggS");
        let n = usize::from(bytes[i + 26]);
        let body: usize = bytes[i + 27..i + 27 + n]
            .iter()
            .map(|&b| usize::from(b))
            .sum();
        let granule = u64::from_le_bytes(bytes[i + 6..i + 14].try_into().unwrap());
        out.push((bytes[i + 5], granule, n));
        i += 27 + n + body;
    }
    assert_eq!(i, bytes.len());
    out
}

#[test]
fn pages_are_short_and_the_last_one_ends_the_stream() {
    let dir = tmp();
    let path = dir.path().join("a.opus");
    let mut w = OpusTrackWriter::create(&path, 1, 1, &[]).unwrap();
    // Big packets (3 segments each) force pages to end on the 255-segment limit.
    for i in 0..300u64 {
        w.push(i * 960, &packet(20, 600, 3)).unwrap();
    }
    w.flush().unwrap(); // nothing pending at finish: the EOS flag is set on the flushed page
    let s = w.finish(0).unwrap();
    assert_eq!(s.samples, 300 * 960);
    let bytes = std::fs::read(&path).unwrap();
    let pages = pages(&bytes);
    assert!(pages.iter().all(|&(_, _, n)| n <= 255));
    let audio = &pages[2..];
    let mut last = 0;
    for &(_, granule, _) in audio {
        assert!(granule - last <= 48_000, "page longer than a second");
        last = granule;
    }
    assert_eq!(pages.last().unwrap().0 & 4, 4, "end of stream");
    assert!(pages[..pages.len() - 1].iter().all(|p| p.0 & 4 == 0));
    let t = read_opus_track(&path).unwrap();
    assert!(t.ended && t.damage.is_none(), "{:?}", t.damage);
    assert_eq!(t.summary(), s);
    opus_tools_accept(&path, s.samples);
}

#[test]
fn an_empty_track_still_holds_one_frame() {
    let dir = tmp();
    let path = dir.path().join("e.opus");
    let s = OpusTrackWriter::create(&path, 1, 2, &[])
        .unwrap()
        .finish(0)
        .unwrap();
    assert_eq!((s.samples, s.packets, s.silence_packets), (960, 1, 1));
    assert!(read_opus_track(&path).unwrap().ended);
}

#[test]
fn a_crash_loses_only_what_was_not_flushed_and_repair_ends_the_stream() {
    let dir = tmp();
    let path = dir.path().join("c.opus");
    let mut w = OpusTrackWriter::create(&path, 5, 2, &[]).unwrap();
    for i in 0..120u64 {
        w.push(i * 960, &packet(20, 80, 4)).unwrap();
    }
    w.flush().unwrap();
    let flushed = std::fs::read(&path).unwrap();
    for i in 120..130u64 {
        w.push(i * 960, &packet(20, 80, 4)).unwrap();
    }
    std::mem::forget(w); // killed: nothing after the flush reaches the file
    assert_eq!(std::fs::read(&path).unwrap(), flushed);
    // Torn in the middle of the last page, as a crash during a write leaves it.
    std::fs::write(&path, &flushed[..flushed.len() - 30]).unwrap();
    let t = read_opus_track(&path).unwrap();
    assert!(!t.ended && t.damage.is_some());
    let whole = t.samples();
    assert!((48_000..120 * 960).contains(&whole), "{whole}");
    let s = repair_opus_track(&path).unwrap();
    assert_eq!(s.samples, whole);
    let t = read_opus_track(&path).unwrap();
    assert!(t.ended && t.damage.is_none());
    let repaired = std::fs::read(&path).unwrap();
    assert_eq!(repair_opus_track(&path).unwrap(), s, "idempotent");
    assert_eq!(std::fs::read(&path).unwrap(), repaired);
    opus_tools_accept(&path, s.samples);
    // A track that was flushed but never finished is whole, only without its end.
    std::fs::write(&path, &flushed).unwrap();
    let s = repair_opus_track(&path).unwrap();
    assert_eq!(s.samples, 120 * 960);
}

#[test]
fn damaged_headers_are_errors_not_panics() {
    let dir = tmp();
    let path = dir.path().join("x.opus");
    for bytes in [
        &b""[..],
        b"OggS",
        b"not ogg at all, but long enough to look at",
    ] {
        std::fs::write(&path, bytes).unwrap();
        assert!(read_opus_track(&path).is_err());
        assert!(repair_opus_track(&path).is_err());
    }
    assert!(matches!(
        read_opus_track(&dir.path().join("missing.opus")),
        Err(StoreError::Io { .. })
    ));
}

/// `opusinfo` accepts the file and `opusdec` decodes it to `samples` minus the pre-skip,
/// within 20 ms. Fails (does not skip) without opus-tools.
fn opus_tools_accept(path: &Path, samples: u64) {
    let info = Command::new("opusinfo")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("opusinfo cannot run ({e}): install opus-tools: run scripts/setup.sh")
        });
    let text =
        String::from_utf8_lossy(&info.stdout).into_owned() + &String::from_utf8_lossy(&info.stderr);
    assert!(info.status.success(), "{text}");
    assert!(
        !text.contains("WARNING") && !text.contains("ERROR"),
        "opusinfo: {text}"
    );
    let wav = path.with_extension("wav");
    let dec = Command::new("opusdec")
        .args(["--quiet", "--rate", "48000"])
        .arg(path)
        .arg(&wav)
        .output()
        .expect("opusdec cannot run: install opus-tools: run scripts/setup.sh");
    assert!(dec.status.success(), "{dec:?}");
    let r = hound::WavReader::open(&wav).unwrap();
    let decoded = u64::from(r.duration());
    let expected = samples - u64::from(PRE_SKIP);
    assert!(
        decoded.abs_diff(expected) <= 960,
        "opusdec gave {decoded} samples, the track holds {expected} after pre-skip"
    );
}

/// Real speech, encoded as Discord does (48 kHz stereo, 20 ms), placed with a late start, a
/// pause and a lost packet, is accepted and decoded by opus-tools at its full length.
#[test]
fn opus_tools_accept_real_speech() {
    let clip =
        nina_eval::testdata::require("librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
            .unwrap();
    let mono = nina_eval::testdata::read_wav_16k_mono(&clip).unwrap();
    let mut enc =
        opus2::Encoder::new(48_000, opus2::Channels::Stereo, opus2::Application::Voip).unwrap();
    let dir = tmp();
    let path = dir.path().join("tracks/42.opus");
    let mut w = OpusTrackWriter::create(&path, 42, 2, &[]).unwrap();
    let mut at = 24_000u64; // starts 0.5 s into the session
    let frames = mono.len() / 320;
    for f in 0..frames {
        let mut pcm = Vec::with_capacity(1920);
        for i in 0..960 {
            let v = mono[(f * 320 + i / 3).min(mono.len() - 1)];
            pcm.extend([v, v]);
        }
        let p = enc.encode_vec_float(&pcm, 4000).unwrap();
        if f == 40 {
            at += 61_234; // a pause of 1.28 s (not a whole number of frames)
        }
        if f != 70 {
            w.push(at, &p).unwrap(); // packet 70 is lost
        }
        at += 960;
        if f % 50 == 0 {
            w.flush().unwrap();
        }
    }
    let s = w.finish(at + 48_000).unwrap();
    assert!(s.samples.abs_diff(at + 48_000) < 960);
    opus_tools_accept(&path, s.samples);
}

#[derive(Debug, Clone)]
enum Op {
    Push { gap: u64, ms: u32, len: usize },
    Late,
    Malformed,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..3000, prop::sample::select(vec![10u32, 20, 40, 60]), 1usize..300)
            .prop_map(|(gap, ms, len)| Op::Push { gap, ms, len }),
        1 => Just(Op::Late),
        1 => Just(Op::Malformed),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn toc_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Some(n) = opus_packet_samples(&bytes) {
            prop_assert!(n % 120 == 0 && n <= 5760);
        }
    }

    #[test]
    fn packets_come_back_where_they_were_placed(ops in prop::collection::vec(op(), 0..200), tail in 0u64..5000) {
        let dir = tmp();
        let path = dir.path().join("t.opus");
        let mut w = OpusTrackWriter::create(&path, 3, 2, &[]).unwrap();
        // The model: (start, data) of every packet the track should hold.
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut pos = 0u64;
        let fill = |pos: &mut u64, model: &mut Vec<(u64, Vec<u8>)>, to: u64| {
            while to.saturating_sub(*pos) >= 960 {
                model.push((*pos, OPUS_SILENCE.to_vec()));
                *pos += 960;
            }
        };
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Push { gap, ms, len } => {
                    let p = packet(ms, len, i as u8);
                    let at = pos + gap;
                    prop_assert!(w.push(at, &p).unwrap());
                    fill(&mut pos, &mut model, at);
                    model.push((pos, p));
                    pos += u64::from(ms) * 48;
                }
                Op::Late => {
                    if pos > 0 {
                        prop_assert!(!w.push(pos - 1, &OPUS_SILENCE).unwrap());
                    }
                }
                Op::Malformed => {
                    prop_assert!(w.push(pos, &[0xFB, 0]).unwrap());
                    model.push((pos, OPUS_SILENCE.to_vec()));
                    pos += 960;
                }
                Op::Flush => w.flush().unwrap(),
            }
            prop_assert_eq!(w.position(), pos);
        }
        let s = w.finish(pos + tail).unwrap();
        let end = (pos + tail).max(960);
        fill(&mut pos, &mut model, end);
        let t = read_opus_track(&path).unwrap();
        prop_assert!(t.ended && t.damage.is_none());
        let got: Vec<(u64, Vec<u8>)> = t.packets.iter().map(|p| (p.start, p.data.clone())).collect();
        prop_assert_eq!(got, model);
        prop_assert_eq!(t.summary(), s);
        prop_assert_eq!(s.samples, pos);
    }

    #[test]
    fn damaged_tracks_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let dir = tmp();
        let path = dir.path().join("d.opus");
        let mut w = OpusTrackWriter::create(&path, 8, 2, &[("k".into(), "v".into())]).unwrap();
        for i in 0..150u64 {
            w.push(i * 960 + (i % 7) * 500, &packet(20, 50 + (i % 5) as usize, i as u8)).unwrap();
        }
        w.finish(0).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(bytes.len() - cut.index(bytes.len() / 2));
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(t) = read_opus_track(&path) {
            let s = repair_opus_track(&path).unwrap();
            prop_assert!(s.samples >= t.samples());
            prop_assert!(read_opus_track(&path).unwrap().ended);
        }
    }

    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let dir = tmp();
        let path = dir.path().join("r.opus");
        let mut b = b"OggS".to_vec();
        b.extend(bytes);
        std::fs::write(&path, &b).unwrap();
        let _ = read_opus_track(&path);
        let _ = repair_opus_track(&path);
    }
}
