//! Waveform peaks: minimum and maximum per 10 ms of one user's audio, in the audiowaveform
//! version 2 `.dat` format (24-byte little-endian header, then `int8` min/max pairs), stored as
//! `peaks/<user_id>.dat` in the session directory.
//!
//! The collector feeds [`PeaksBuilder`] the PCM it already has while recording; `reprocess peaks`
//! computes them from the utterance WAVs for sessions that lack them ([`compute_session`]).

use std::collections::BTreeMap;

use crate::{Session, SessionDir};

/// The folder of peaks files in a session directory.
pub const PEAKS_DIR: &str = "peaks";
/// Format version written (audiowaveform's `.dat` version 2).
pub const VERSION: i32 = 2;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Pixels (min/max pairs) per second: one per 10 ms.
pub const PIXELS_PER_SECOND: u32 = 100;
/// Largest peaks file read (about 80 hours at 10 ms).
pub const MAX_PAIRS: usize = 30_000_000;

/// The relative path of a user's peaks file.
pub fn peaks_file(user_id: u64) -> String {
    format!("{PEAKS_DIR}/{user_id}.dat")
}

/// A malformed peaks file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeaksError {
    /// Shorter than its header or its declared length.
    #[error("peaks file truncated: {0} bytes")]
    Truncated(usize),
    /// A version, flag, rate or channel count this reader does not take.
    #[error("unsupported peaks header: {0}")]
    Unsupported(String),
}

/// Peaks of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peaks {
    /// Audio samples per second of the source.
    pub sample_rate: u32,
    /// Source samples per pair.
    pub samples_per_pixel: u32,
    /// `(min, max)` per pixel, scaled to `-128..=127`.
    pub pairs: Vec<(i8, i8)>,
}

impl Peaks {
    /// Seconds covered.
    pub fn duration(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.pairs.len() as f64 * f64::from(self.samples_per_pixel) / f64::from(self.sample_rate)
    }

    /// The `.dat` bytes (version 2, 8-bit, one channel).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + 2 * self.pairs.len());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes()); // flags: bit 0 = 8-bit samples
        b.extend_from_slice(&(self.sample_rate as i32).to_le_bytes());
        b.extend_from_slice(&(self.samples_per_pixel as i32).to_le_bytes());
        b.extend_from_slice(&(self.pairs.len() as u32).to_le_bytes());
        b.extend_from_slice(&1i32.to_le_bytes()); // channels
        for (lo, hi) in &self.pairs {
            b.push(*lo as u8);
            b.push(*hi as u8);
        }
        b
    }

    /// Parses `.dat` bytes as written by [`Peaks::to_bytes`] (8-bit, one channel).
    pub fn from_bytes(b: &[u8]) -> Result<Self, PeaksError> {
        if b.len() < HEADER_LEN {
            return Err(PeaksError::Truncated(b.len()));
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (version, flags, rate, spp, len, channels) =
            (word(0), word(4), word(8), word(12), word(16), word(20));
        if version != VERSION as u32 || flags != 1 || channels != 1 {
            return Err(PeaksError::Unsupported(format!(
                "version {version}, flags {flags}, channels {channels}"
            )));
        }
        if rate == 0 || rate > 768_000 || spp == 0 || spp > rate {
            return Err(PeaksError::Unsupported(format!(
                "rate {rate}, samples per pixel {spp}"
            )));
        }
        let len = len as usize;
        if len > MAX_PAIRS {
            return Err(PeaksError::Unsupported(format!("{len} pairs")));
        }
        let body = &b[HEADER_LEN..];
        if body.len() < 2 * len {
            return Err(PeaksError::Truncated(b.len()));
        }
        let pairs = body[..2 * len]
            .chunks_exact(2)
            .map(|c| (c[0] as i8, c[1] as i8))
            .collect();
        Ok(Self {
            sample_rate: rate,
            samples_per_pixel: spp,
            pairs,
        })
    }
}

fn scale(x: f32) -> i8 {
    (x.clamp(-1.0, 1.0) * 127.0).round() as i8
}

/// Builds peaks from mono samples pushed in order (any chunk sizes): what the collector keeps per
/// user while recording (about 720 KB an hour).
#[derive(Debug, Clone)]
pub struct PeaksBuilder {
    sample_rate: u32,
    spp: u32,
    filled: u32,
    lo: f32,
    hi: f32,
    pairs: Vec<(i8, i8)>,
}

impl PeaksBuilder {
    /// A builder for audio at `sample_rate` (at least 100 Hz; lower rates are taken as 100).
    pub fn new(sample_rate: u32) -> Self {
        let sample_rate = sample_rate.max(PIXELS_PER_SECOND);
        Self {
            sample_rate,
            spp: sample_rate / PIXELS_PER_SECOND,
            filled: 0,
            lo: 0.0,
            hi: 0.0,
            pairs: Vec::new(),
        }
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> u64 {
        self.pairs.len() as u64 * u64::from(self.spp) + u64::from(self.filled)
    }

    /// Adds mono samples in `[-1, 1]`.
    pub fn push(&mut self, samples: &[f32]) {
        for &s in samples {
            let s = if s.is_finite() { s } else { 0.0 };
            if self.filled == 0 {
                self.lo = s;
                self.hi = s;
            } else {
                self.lo = self.lo.min(s);
                self.hi = self.hi.max(s);
            }
            self.filled += 1;
            if self.filled == self.spp {
                self.pairs.push((scale(self.lo), scale(self.hi)));
                self.filled = 0;
            }
        }
    }

    /// Adds interleaved samples of `channels` channels, mixed down to mono.
    pub fn push_interleaved(&mut self, samples: &[f32], channels: u16) {
        let c = usize::from(channels.max(1));
        if c == 1 {
            return self.push(samples);
        }
        let mono: Vec<f32> = samples
            .chunks(c)
            .map(|f| f.iter().sum::<f32>() / f.len() as f32)
            .collect();
        self.push(&mono);
    }

    /// Adds `n` samples of silence.
    pub fn push_silence(&mut self, n: u64) {
        let mut n = n;
        while n > 0 && self.filled != 0 {
            self.push(&[0.0]);
            n -= 1;
        }
        let whole = n / u64::from(self.spp);
        let whole = whole.min(MAX_PAIRS as u64) as usize;
        self.pairs.resize(self.pairs.len() + whole, (0, 0));
        for _ in 0..(n % u64::from(self.spp)) {
            self.push(&[0.0]);
        }
    }

    /// Pads with silence up to `total` samples (if not there yet).
    pub fn pad_to(&mut self, total: u64) {
        let have = self.samples();
        if total > have {
            self.push_silence(total - have);
        }
    }

    /// The peaks so far (a partial last pixel included).
    pub fn snapshot(&self) -> Peaks {
        let mut pairs = self.pairs.clone();
        if self.filled > 0 {
            pairs.push((scale(self.lo), scale(self.hi)));
        }
        Peaks {
            sample_rate: self.sample_rate,
            samples_per_pixel: self.spp,
            pairs,
        }
    }

    /// The peaks (a partial last pixel included).
    pub fn finish(self) -> Peaks {
        self.snapshot()
    }
}

/// Why the peaks of a session could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// Reading an utterance or writing a file.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

/// The end of the session on its clock, in seconds: the later of its recorded length and its
/// last utterance.
pub fn session_seconds(s: &Session) -> f64 {
    let recorded = s
        .ended_at_ms
        .map(|e| (e - s.started_at_ms).max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    s.utterances
        .iter()
        .map(|u| u.end)
        .fold(recorded, f64::max)
        .min(24.0 * 3600.0)
}

/// Peaks of every user of a session, from its utterance WAVs laid on the session clock
/// (silence between them), each at its utterance's sample rate. Users none of whose audio is
/// left get none.
pub fn compute_session(
    dir: &SessionDir,
    s: &Session,
) -> Result<BTreeMap<u64, Peaks>, ComputeError> {
    let total = session_seconds(s);
    let mut by_user: BTreeMap<u64, Vec<&crate::UtteranceRecord>> = BTreeMap::new();
    for u in &s.utterances {
        by_user.entry(u.user_id).or_default().push(u);
    }
    let mut out = BTreeMap::new();
    for (user, mut list) in by_user {
        list.sort_by(|a, b| a.start.total_cmp(&b.start));
        let rate = list.first().map(|u| u.sample_rate).unwrap_or(48_000);
        let mut b = PeaksBuilder::new(rate);
        let mut heard = false;
        for u in list {
            let path = dir.file(&u.file)?;
            let wav = match crate::read_wav(&path, (rate as usize) * 3600 * 2) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(file = %u.file, error = %e, "utterance skipped in peaks");
                    continue;
                }
            };
            heard = true;
            let at = (u.start.max(0.0) * f64::from(rate)).round() as u64;
            b.pad_to(at);
            if wav.sample_rate == rate {
                b.push_interleaved(&wav.samples, wav.channels);
            } else {
                // Another rate: place it by time, resampled by nearest sample.
                let frames = wav.samples.len() / usize::from(wav.channels.max(1));
                let n = (frames as f64 * f64::from(rate) / f64::from(wav.sample_rate)) as usize;
                let c = usize::from(wav.channels.max(1));
                let mono: Vec<f32> = (0..n)
                    .map(|i| {
                        let j = (i as f64 * f64::from(wav.sample_rate) / f64::from(rate)) as usize;
                        let f = &wav.samples[(j.min(frames.saturating_sub(1))) * c..][..c];
                        f.iter().sum::<f32>() / c as f32
                    })
                    .collect();
                b.push(&mono);
            }
        }
        if !heard {
            // No audio left (pruned, forgotten): no waveform rather than a flat one.
            continue;
        }
        b.pad_to((total * f64::from(rate)).round() as u64);
        out.insert(user, b.finish());
    }
    Ok(out)
}

/// Users of the session with utterance audio on disk whose peaks file is missing.
pub fn missing(dir: &SessionDir, s: &Session) -> Vec<u64> {
    let mut users: Vec<u64> = s
        .utterances
        .iter()
        .filter(|u| dir.file(&u.file).is_ok_and(|p| p.is_file()))
        .map(|u| u.user_id)
        .collect();
    users.sort_unstable();
    users.dedup();
    users
        .into_iter()
        .filter(|u| !dir.root().join(peaks_file(*u)).is_file())
        .collect()
}

/// Computes and writes the peaks of the users that lack them (the caller holds the session's
/// lock). Returns the users written.
pub fn write_missing(dir: &SessionDir, s: &Session) -> Result<Vec<u64>, ComputeError> {
    let want = missing(dir, s);
    if want.is_empty() {
        return Ok(want);
    }
    let all = compute_session(dir, s)?;
    let mut written = Vec::new();
    for (user, p) in all {
        if want.contains(&user) {
            dir.write(&peaks_file(user), &p.to_bytes())?;
            written.push(user);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_is_audiowaveform_v2() {
        let mut b = PeaksBuilder::new(48_000);
        b.push(&vec![0.5; 480]);
        b.push(&vec![-1.0; 480]);
        b.push(&[0.25; 10]);
        let p = b.finish();
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), 24 + 6);
        assert_eq!(&bytes[0..4], &2i32.to_le_bytes());
        assert_eq!(&bytes[8..12], &48_000i32.to_le_bytes());
        assert_eq!(&bytes[12..16], &480i32.to_le_bytes());
        assert_eq!(&bytes[16..20], &3u32.to_le_bytes());
        assert_eq!(p.pairs, vec![(64, 64), (-127, -127), (32, 32)]);
        assert_eq!(Peaks::from_bytes(&bytes).unwrap(), p);
    }

    #[test]
    fn silence_and_padding_count_samples() {
        let mut b = PeaksBuilder::new(16_000);
        b.push(&[0.1; 7]);
        b.push_silence(16_000 * 2);
        assert_eq!(b.samples(), 32_007);
        b.pad_to(48_000);
        assert_eq!(b.samples(), 48_000);
        assert_eq!(b.finish().pairs.len(), 300);
    }

    #[test]
    fn stereo_is_mixed_down() {
        let mut b = PeaksBuilder::new(100);
        b.push_interleaved(&[1.0, -1.0, 1.0, 1.0], 2);
        assert_eq!(b.finish().pairs, vec![(0, 0), (127, 127)]);
    }

    #[test]
    fn bad_headers_are_errors() {
        assert_eq!(Peaks::from_bytes(&[0; 5]), Err(PeaksError::Truncated(5)));
        let mut p = Peaks {
            sample_rate: 100,
            samples_per_pixel: 1,
            pairs: vec![(0, 1); 4],
        }
        .to_bytes();
        p.truncate(26);
        assert!(matches!(
            Peaks::from_bytes(&p),
            Err(PeaksError::Truncated(_))
        ));
        let mut q = p.clone();
        q[0] = 3;
        assert!(matches!(
            Peaks::from_bytes(&q),
            Err(PeaksError::Unsupported(_))
        ));
    }

    proptest! {
        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Peaks::from_bytes(&b);
        }

        #[test]
        fn roundtrip(pairs in proptest::collection::vec(any::<(i8, i8)>(), 0..50), rate in 100u32..96_000) {
            let p = Peaks { sample_rate: rate, samples_per_pixel: rate / 100, pairs };
            prop_assert_eq!(Peaks::from_bytes(&p.to_bytes()).unwrap(), p);
        }
    }
}
