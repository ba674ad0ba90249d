//! Archival tracks: one user's Opus packets, as Discord sent them, in an Ogg Opus file on the
//! session clock.
//!
//! Every track of a session starts at the session start (sample 0 of the session clock, 48 kHz)
//! so all tracks line up. Silence and losses are filled with [`OPUS_SILENCE`] frames (20 ms),
//! never with granule jumps, so any Ogg Opus player plays a track in real time and decoding the
//! packets one after another gives the session clock. A packet's start on the session clock is
//! the sum of the durations of the packets before it; the granule position of a page is the
//! session-clock end of its last packet. `OpusHead` declares the usual 312-sample pre-skip:
//! players that honour it (`opusdec`) drop those first 6.5 ms, so their output is 312 samples
//! shorter than [`TrackSummary::samples`]; Nina's readers ([`read_opus_track`]) place every packet
//! at its session-clock start and drop nothing.
//!
//! Pages are short (at most about one second of packets, never more than 255 segments, a packet
//! never split across pages) and [`OpusTrackWriter::flush`] ends the current page and fsyncs, so
//! a crash loses at most what was pushed since the last flush. [`repair_opus_track`] turns a
//! track torn by a crash into a proper stream (whole pages kept, end-of-stream set).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};

use crate::StoreError;

/// The Opus packet of 20 ms of silence (CELT, fullband, 20 ms, one frame, no payload).
pub const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];
/// Samples per second of the session clock and of every track.
pub const TRACK_RATE: u32 = 48_000;
/// Pre-skip written into `OpusHead` (libopus' encoder delay at 48 kHz).
pub const PRE_SKIP: u16 = 312;
/// Samples of one [`OPUS_SILENCE`] frame.
pub const SILENCE_SAMPLES: u64 = 960;
/// Longest packet accepted (48 frames of the largest Opus frame, 1275 bytes, plus headers):
/// a packet always fits in one page.
pub const MAX_PACKET_BYTES: usize = 61_440;
/// A page is ended once it holds this many samples (one second).
const PAGE_SAMPLES: u64 = TRACK_RATE as u64;
/// The longest an Opus packet can be, in samples (120 ms).
const MAX_PACKET_SAMPLES: u32 = 5_760;
/// The largest Opus frame, in bytes (RFC 6716 §3.4, R2).
const MAX_FRAME_BYTES: usize = 1_275;
/// Vendor string written into `OpusTags`.
const VENDOR: &str = "nina";

/// Samples (at 48 kHz) an Opus packet holds, from its TOC byte and, for codes 1 to 3, its frame
/// lengths (RFC 6716 §3.1-3.2, rules R1-R7 of §3.4); `None` if the packet is malformed.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let (&toc, rest) = packet.split_first()?;
    let config = toc >> 3;
    let frame: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames: u32 = match toc & 3 {
        0 => {
            (rest.len() <= MAX_FRAME_BYTES).then_some(())?;
            1
        }
        1 => {
            (rest.len() % 2 == 0 && rest.len() / 2 <= MAX_FRAME_BYTES).then_some(())?;
            2
        }
        2 => {
            let (n1, used) = frame_length(rest)?;
            let n2 = rest.len().checked_sub(used + n1)?;
            (n1 <= MAX_FRAME_BYTES && n2 <= MAX_FRAME_BYTES).then_some(())?;
            2
        }
        _ => {
            let (&fc, mut rest) = rest.split_first()?;
            let m = usize::from(fc & 0x3F);
            if m == 0 || m as u32 * frame > MAX_PACKET_SAMPLES {
                return None;
            }
            if fc & 0x40 != 0 {
                // Padding: each 255 adds 254 and is followed by another length byte.
                let mut padding = 0usize;
                loop {
                    let (&b, r) = rest.split_first()?;
                    rest = r;
                    if b == 255 {
                        padding += 254;
                    } else {
                        padding += usize::from(b);
                        break;
                    }
                }
                rest = &rest[..rest.len().checked_sub(padding)?];
            }
            if fc & 0x80 != 0 {
                let mut total = 0usize;
                for _ in 0..m - 1 {
                    let (n, used) = frame_length(rest)?;
                    rest = &rest[used..];
                    (n <= MAX_FRAME_BYTES).then_some(())?;
                    total += n;
                }
                let last = rest.len().checked_sub(total)?;
                (last <= MAX_FRAME_BYTES).then_some(())?;
            } else {
                (rest.len() % m == 0 && rest.len() / m <= MAX_FRAME_BYTES).then_some(())?;
            }
            m as u32
        }
    };
    let samples = frames * frame;
    (samples <= MAX_PACKET_SAMPLES).then_some(samples)
}

/// A frame length (RFC 6716 §3.2.1) at the start of `b`: the length and the bytes it took.
fn frame_length(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        n @ 0..=251 => Some((usize::from(n), 1)),
        n => Some((usize::from(*b.get(1)?) * 4 + usize::from(n), 2)),
    }
}

/// What a track holds once written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSummary {
    /// Samples (48 kHz) on the session clock the track covers; pre-skip not subtracted.
    pub samples: u64,
    /// Audio packets in the track, silence included.
    pub packets: u64,
    /// Of them, [`OPUS_SILENCE`] frames (filled gaps, replaced malformed packets, and silence
    /// frames Discord sent).
    pub silence_packets: u64,
}

impl TrackSummary {
    /// The duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples as f64 / f64::from(TRACK_RATE)
    }
}

/// A file writer that counts bytes, so the offset of the last page is known.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The paging logic, over any writer: one packet is held back so that the page it ends can be
/// decided when the next one arrives (or on flush).
struct Mux<W: Write> {
    ogg: PacketWriter<'static, Counting<W>>,
    serial: u32,
    /// The packet not handed to the Ogg writer yet, with its end on the session clock.
    pending: Option<(Vec<u8>, u64)>,
    position: u64,
    page_start: u64,
    page_segments: usize,
    /// Byte offset of the last page written and whether it ended the stream.
    last_page: Option<u64>,
    ended: bool,
    packets: u64,
    silence_packets: u64,
}

fn segments(len: usize) -> usize {
    len / 255 + 1
}

impl<W: Write> Mux<W> {
    fn new(out: W, serial: u32, channels: u8, comments: &[(String, String)]) -> io::Result<Self> {
        let mut ogg = PacketWriter::new(Counting {
            inner: out,
            written: 0,
        });
        ogg.write_packet(opus_head(channels), serial, PacketWriteEndInfo::EndPage, 0)?;
        ogg.write_packet(opus_tags(comments), serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self {
            ogg,
            serial,
            pending: None,
            position: 0,
            page_start: 0,
            page_segments: 0,
            last_page: None,
            ended: false,
            packets: 0,
            silence_packets: 0,
        })
    }

    /// Appends a packet of `samples` at the current position.
    fn append(&mut self, data: Vec<u8>, samples: u64) -> io::Result<()> {
        if let Some((prev, end)) = self.pending.take() {
            let full = self.page_segments + segments(prev.len()) + segments(data.len()) > 255
                || end - self.page_start >= PAGE_SAMPLES;
            let info = if full {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            self.write_out(prev, end, info)?;
        }
        if data == OPUS_SILENCE {
            self.silence_packets += 1;
        }
        self.packets += 1;
        self.position += samples;
        self.pending = Some((data, self.position));
        Ok(())
    }

    fn write_out(&mut self, data: Vec<u8>, end: u64, info: PacketWriteEndInfo) -> io::Result<()> {
        let offset = self.ogg.inner().written;
        let segs = segments(data.len());
        self.ogg.write_packet(data, self.serial, info, end)?;
        if info == PacketWriteEndInfo::NormalPacket {
            self.page_segments += segs;
        } else {
            self.last_page = Some(offset);
            self.page_start = end;
            self.page_segments = 0;
            self.ended = info == PacketWriteEndInfo::EndStream;
        }
        Ok(())
    }

    /// Fills with silence frames while a whole one fits before `at`.
    fn fill_to(&mut self, at: u64) -> io::Result<()> {
        while at.saturating_sub(self.position) >= SILENCE_SAMPLES {
            self.append(OPUS_SILENCE.to_vec(), SILENCE_SAMPLES)?;
        }
        Ok(())
    }

    /// Ends the current page (the held-back packet), `last` ending the stream too.
    fn end_page(&mut self, last: bool) -> io::Result<bool> {
        let info = if last {
            PacketWriteEndInfo::EndStream
        } else {
            PacketWriteEndInfo::EndPage
        };
        match self.pending.take() {
            Some((data, end)) => {
                self.write_out(data, end, info)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Ends the stream with a minimum of one frame (a stream shorter than its pre-skip is
    /// invalid). Returns false when the last page was already written and needs its
    /// end-of-stream flag set.
    fn finish(&mut self, end: u64) -> io::Result<bool> {
        self.fill_to(end.max(SILENCE_SAMPLES))?;
        self.end_page(true)
    }

    fn summary(&self) -> TrackSummary {
        TrackSummary {
            samples: self.position,
            packets: self.packets,
            silence_packets: self.silence_packets,
        }
    }
}

fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&PRE_SKIP.to_le_bytes());
    h.extend_from_slice(&TRACK_RATE.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family 0: mono or stereo
    h
}

fn opus_tags(comments: &[(String, String)]) -> Vec<u8> {
    let mut t = b"OpusTags".to_vec();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    t.extend_from_slice(&len(VENDOR.len()));
    t.extend_from_slice(VENDOR.as_bytes());
    t.extend_from_slice(&len(comments.len()));
    for (k, v) in comments {
        let c = format!("{k}={v}");
        t.extend_from_slice(&len(c.len()));
        t.extend_from_slice(c.as_bytes());
    }
    t
}

/// Writes one user's archival track (see the module documentation).
pub struct OpusTrackWriter {
    path: PathBuf,
    mux: Mux<BufWriter<File>>,
}

impl std::fmt::Debug for OpusTrackWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusTrackWriter")
            .field("path", &self.path)
            .field("position", &self.mux.position)
            .finish_non_exhaustive()
    }
}

impl OpusTrackWriter {
    /// Creates the file (parent directories too) and writes `OpusHead` (`channels`, pre-skip
    /// 312, 48 kHz) and `OpusTags` (vendor `nina`, the given comments), synced to disk. Refuses
    /// an existing file, and a channel count other than 1 or 2.
    pub fn create(
        path: &Path,
        serial: u32,
        channels: u8,
        comments: &[(String, String)],
    ) -> Result<Self, StoreError> {
        if !(1..=2).contains(&channels) {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                field: "channels".into(),
                reason: format!("{channels}: a track is mono or stereo"),
            });
        }
        let io = |e| StoreError::io(path, e);
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let mux = Mux::new(BufWriter::new(file), serial, channels, comments).map_err(io)?;
        let mut w = Self {
            path: path.to_path_buf(),
            mux,
        };
        w.sync()?;
        if let Some(dir) = parent {
            nina_fs::sync_dir(dir)?;
        }
        tracing::debug!(path = %path.display(), serial, channels, "track created");
        Ok(w)
    }

    fn io(&self, e: io::Error) -> StoreError {
        StoreError::io(&self.path, e)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let out = &mut self.mux.ogg.inner_mut().inner;
        out.flush()
            .and_then(|()| out.get_ref().sync_data())
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// Appends one Opus packet starting at `at` (48 kHz samples on the session clock).
    ///
    /// A gap since the end of the track is filled with [`OPUS_SILENCE`] frames (a remainder
    /// shorter than 20 ms is absorbed: the packet then starts up to 20 ms earlier than `at`,
    /// never with a granule jump). A packet that starts before the end of the track (late,
    /// duplicate) is dropped and `false` returned. A malformed packet (or one longer than
    /// [`MAX_PACKET_BYTES`]) is replaced by 20 ms of silence.
    pub fn push(&mut self, at: u64, packet: &[u8]) -> Result<bool, StoreError> {
        if at < self.mux.position {
            tracing::debug!(at, position = self.mux.position, "late packet dropped");
            return Ok(false);
        }
        self.mux.fill_to(at).map_err(|e| self.io(e))?;
        let samples = opus_packet_samples(packet).filter(|_| packet.len() <= MAX_PACKET_BYTES);
        let r = match samples {
            Some(n) => self.mux.append(packet.to_vec(), u64::from(n)),
            None => {
                tracing::warn!(
                    path = %self.path.display(),
                    at,
                    len = packet.len(),
                    "malformed Opus packet replaced by 20 ms of silence"
                );
                self.mux.append(OPUS_SILENCE.to_vec(), SILENCE_SAMPLES)
            }
        };
        r.map_err(|e| self.io(e))?;
        Ok(true)
    }

    /// Fills with silence up to `at` (a remainder shorter than 20 ms is left unfilled).
    pub fn pad_to(&mut self, at: u64) -> Result<(), StoreError> {
        self.mux.fill_to(at).map_err(|e| self.io(e))
    }

    /// Samples on the session clock covered so far.
    pub fn position(&self) -> u64 {
        self.mux.position
    }

    /// Ends the current page, writes it and fsyncs: everything pushed so far survives a crash.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.mux.end_page(false).map_err(|e| self.io(e))?;
        self.sync()
    }

    /// Pads to `end` (at least one 20 ms frame in all), writes the last page with
    /// end-of-stream and fsyncs.
    pub fn finish(mut self, end: u64) -> Result<TrackSummary, StoreError> {
        let written = self.mux.finish(end).map_err(|e| self.io(e))?;
        self.sync()?;
        if !written && !self.mux.ended {
            // Everything was flushed already: mark the last page written as the end.
            let offset = self.mux.last_page.unwrap_or(0);
            let file = self.mux.ogg.inner_mut().inner.get_mut();
            set_end_of_stream(file, offset).map_err(|e| StoreError::io(&self.path, e))?;
            self.sync()?;
        }
        let summary = self.mux.summary();
        tracing::debug!(path = %self.path.display(), ?summary, "track finished");
        Ok(summary)
    }
}

/// The Ogg CRC-32 (polynomial 0x04C11DB7, no reflection, initial value 0).
fn ogg_crc(bytes: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in bytes {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Sets the end-of-stream flag of the page at `offset`, the last of the file, and its CRC.
fn set_end_of_stream(file: &mut File, offset: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    let mut page = Vec::new();
    file.read_to_end(&mut page)?;
    if page.len() < 27 || &page[..4] != b"OggS" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the last page is not where it was written",
        ));
    }
    page[5] |= 0x04;
    page[22..26].fill(0);
    let crc = ogg_crc(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&page)?;
    file.flush()
}

/// One packet of a track, placed on the session clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackPacket {
    /// First sample (48 kHz) on the session clock.
    pub start: u64,
    /// Samples it holds.
    pub samples: u32,
    /// The Opus packet.
    pub data: Vec<u8>,
}

/// A track as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct OpusTrack {
    /// Ogg stream serial number.
    pub serial: u32,
    /// Channels declared in `OpusHead`.
    pub channels: u8,
    /// Pre-skip declared in `OpusHead`.
    pub pre_skip: u16,
    /// `OpusTags` comments, `(key, value)`.
    pub comments: Vec<(String, String)>,
    /// Audio packets, in order, each with its start on the session clock.
    pub packets: Vec<TrackPacket>,
    /// Whether the stream ended properly (end-of-stream flag).
    pub ended: bool,
    /// Why reading stopped before the end of the stream, if it did (a torn or damaged page):
    /// `packets` holds every whole page before that point.
    pub damage: Option<String>,
}

impl OpusTrack {
    /// Samples on the session clock the packets cover.
    pub fn samples(&self) -> u64 {
        self.packets
            .last()
            .map_or(0, |p| p.start + u64::from(p.samples))
    }

    /// What the track holds, in the terms of [`OpusTrackWriter::finish`].
    pub fn summary(&self) -> TrackSummary {
        TrackSummary {
            samples: self.samples(),
            packets: self.packets.len() as u64,
            silence_packets: self
                .packets
                .iter()
                .filter(|p| p.data == OPUS_SILENCE)
                .count() as u64,
        }
    }
}

fn invalid(path: &Path, field: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        path: path.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn parse_head(path: &Path, h: &[u8]) -> Result<(u8, u16), StoreError> {
    if h.len() < 19 || &h[..8] != b"OpusHead" {
        return Err(invalid(path, "OpusHead", "not an Ogg Opus file"));
    }
    if h[8] & 0xF0 != 0 {
        return Err(invalid(path, "OpusHead", format!("version {}", h[8])));
    }
    let channels = h[9];
    if !(1..=2).contains(&channels) || h[18] != 0 {
        return Err(invalid(
            path,
            "OpusHead",
            format!("{channels} channels, mapping family {}", h[18]),
        ));
    }
    Ok((channels, u16::from_le_bytes([h[10], h[11]])))
}

/// Reads little-endian lengths and byte strings from a header, never past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn len(&mut self) -> Option<usize> {
        let b = self.take(4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
}

fn parse_tags(path: &Path, t: &[u8]) -> Result<Vec<(String, String)>, StoreError> {
    let bad = || invalid(path, "OpusTags", "damaged comment header");
    let mut c = Cursor(t);
    if c.take(8) != Some(b"OpusTags".as_slice()) {
        return Err(bad());
    }
    c.string().ok_or_else(bad)?; // vendor
    let n = c.len().ok_or_else(bad)?;
    let mut out = Vec::new();
    for _ in 0..n {
        let s = String::from_utf8_lossy(c.string().ok_or_else(bad)?).into_owned();
        let (k, v) = s.split_once('=').unwrap_or((&s, ""));
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Reads a track: channels, pre-skip, comments, and each packet with its start on the session
/// clock. A torn tail or a damaged page ends the reading there (see [`OpusTrack::damage`]);
/// only a file that cannot be opened or whose headers are damaged is an error.
pub fn read_opus_track(path: &Path) -> Result<OpusTrack, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut reader = PacketReader::new(BufReader::new(file));
    let mut next = || -> Result<Option<ogg::Packet>, String> {
        // The Ogg reader is not ours: a panic on hostile bytes is a damaged file.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.read_packet()))
            .map_err(|_| "the Ogg reader failed on malformed data".to_string())?
            .map_err(|e| e.to_string())
    };
    let header = |r: Result<Option<ogg::Packet>, String>, what: &str| match r {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(invalid(path, what, "missing")),
        Err(e) => Err(invalid(path, what, e)),
    };
    let head = header(next(), "OpusHead")?;
    let serial = head.stream_serial();
    let (channels, pre_skip) = parse_head(path, &head.data)?;
    let tags = header(next(), "OpusTags")?;
    let comments = parse_tags(path, &tags.data)?;
    let mut track = OpusTrack {
        serial,
        channels,
        pre_skip,
        comments,
        packets: Vec::new(),
        ended: tags.last_in_stream(),
        damage: None,
    };
    let mut position = 0u64;
    while !track.ended {
        let p = match next() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                track.damage = Some(e);
                break;
            }
        };
        if p.stream_serial() != serial {
            track.damage = Some(format!("a page of another stream ({})", p.stream_serial()));
            break;
        }
        let Some(samples) =
            opus_packet_samples(&p.data).filter(|_| p.data.len() <= MAX_PACKET_BYTES)
        else {
            track.damage = Some(format!("a malformed Opus packet at sample {position}"));
            break;
        };
        track.packets.push(TrackPacket {
            start: position,
            samples,
            data: p.data.clone(),
        });
        position += u64::from(samples);
        if p.last_in_page() && p.absgp_page() != position {
            tracing::warn!(
                path = %path.display(),
                granule = p.absgp_page(),
                position,
                "page granule position differs from the packets' durations"
            );
        }
        track.ended = p.last_in_stream();
    }
    if let Some(d) = &track.damage {
        tracing::warn!(path = %path.display(), "track read up to sample {position}: {d}");
    }
    Ok(track)
}

/// After a crash: keeps every whole page (CRC checked), drops a torn tail, ends the stream
/// properly (end-of-stream flag) and returns the summary. The file is replaced atomically
/// ([`nina_fs::write_with`]); a track that ended properly is left untouched.
pub fn repair_opus_track(path: &Path) -> Result<TrackSummary, StoreError> {
    let track = read_opus_track(path)?;
    if track.ended && track.damage.is_none() {
        return Ok(track.summary());
    }
    let mut mux = Mux::new(Vec::new(), track.serial, track.channels, &track.comments)
        .map_err(|e| StoreError::io(path, e))?;
    for p in &track.packets {
        mux.append(p.data.clone(), u64::from(p.samples))
            .map_err(|e| StoreError::io(path, e))?;
    }
    mux.finish(track.samples())
        .map_err(|e| StoreError::io(path, e))?;
    let summary = mux.summary();
    let bytes = mux.ogg.into_inner().inner;
    nina_fs::write(path, &bytes)?;
    tracing::warn!(
        path = %path.display(),
        samples = summary.samples,
        damage = track.damage.as_deref().unwrap_or("no end-of-stream"),
        "track repaired"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests;
