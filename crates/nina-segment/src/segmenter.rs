//! The per-stream segmenter: a push-based state machine, PCM frames in, [`Utterance`]s out.
//!
//! Audio of any rate and channel count is converted to 16 kHz mono for analysis
//! ([`crate::resample::To16kMono`]); a [`VoiceDetector`] gives one speech probability per 32 ms
//! frame and hysteresis turns probabilities into utterances: speech starts when the probability
//! reaches `threshold`, is suspected to end when it falls below `neg_threshold`, and ends after
//! `min_silence` of that; bursts shorter than `min_speech` are dropped and `padding` is kept
//! around speech. An utterance that reaches `max_utterance` is cut at its quietest frame in its
//! second half, so memory per stream is bounded whatever the input. The emitted audio keeps the
//! source rate, channels and sample format; its 16 kHz mono version comes along for transcription.

use std::collections::VecDeque;

use crate::resample::{RATE_16K, To16kMono};
use crate::vad::{FRAME, VoiceDetector};
use crate::{SampleFormat, SegmentError};

/// Hysteresis and limits of the segmenter. Times are in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterConfig {
    /// Probability at or above which a frame is speech.
    pub threshold: f32,
    /// Probability below which a frame counts towards the end of speech (below `threshold`).
    pub neg_threshold: f32,
    /// Shorter bursts of speech are dropped.
    pub min_speech: f64,
    /// Silence that ends an utterance.
    pub min_silence: f64,
    /// Audio kept before and after speech (at most `min_silence` after it).
    pub padding: f64,
    /// Longest utterance; longer speech is cut at its quietest point.
    pub max_utterance: f64,
    /// A jump forward in the timestamps larger than this ends the current utterance (the stream
    /// had no packets: the speaker was silent).
    pub gap_tolerance: f64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            neg_threshold: 0.35,
            min_speech: 0.25,
            min_silence: 0.5,
            padding: 0.2,
            max_utterance: 30.0,
            gap_tolerance: 0.25,
        }
    }
}

impl SegmenterConfig {
    /// Checks that the values are usable together.
    pub fn validate(&self) -> Result<(), SegmentError> {
        let bad = |m: String| Err(SegmentError::Config(m));
        if !(0.0..=1.0).contains(&self.threshold)
            || !(0.0..=self.threshold).contains(&self.neg_threshold)
        {
            return bad(format!(
                "thresholds must satisfy 0 <= neg_threshold ({}) <= threshold ({}) <= 1",
                self.neg_threshold, self.threshold
            ));
        }
        for (name, v) in [
            ("min_speech", self.min_speech),
            ("min_silence", self.min_silence),
            ("padding", self.padding),
            ("gap_tolerance", self.gap_tolerance),
        ] {
            if !v.is_finite() || !(0.0..=600.0).contains(&v) {
                return bad(format!("{name} must be between 0 and 600 s, got {v}"));
            }
        }
        if !self.max_utterance.is_finite() || !(2.0..=600.0).contains(&self.max_utterance) {
            return bad(format!(
                "max_utterance must be between 2 and 600 s, got {}",
                self.max_utterance
            ));
        }
        if self.max_utterance <= 2.0 * self.padding + self.min_speech {
            return bad("max_utterance must exceed twice the padding plus min_speech".into());
        }
        Ok(())
    }
}

/// The format of one stream's PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFormat {
    /// Frames per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample type of the source, kept in the stored audio.
    pub format: SampleFormat,
}

/// Interleaved samples of one push.
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    /// 16-bit integers.
    I16(&'a [i16]),
    /// Floats in `[-1, 1]`.
    F32(&'a [f32]),
}

impl Samples<'_> {
    fn len(&self) -> usize {
        match self {
            Samples::I16(s) => s.len(),
            Samples::F32(s) => s.len(),
        }
    }
}

/// One utterance of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Position within the stream (0, 1, 2, ...).
    pub seq: u64,
    /// Start of the audio on the session clock, seconds (speech start minus padding).
    pub start: f64,
    /// End of the audio, seconds.
    pub end: f64,
    /// Where the detector heard speech start.
    pub speech_start: f64,
    /// Where the detector heard speech end.
    pub speech_end: f64,
    /// Whether the utterance was cut at `max_utterance` rather than ended by silence.
    pub cut: bool,
    /// Format of `samples` (the source's).
    pub format: StreamFormat,
    /// Interleaved samples at the source rate, in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// The same audio at 16 kHz mono, for transcription.
    pub audio_16k: Vec<f32>,
}

impl Utterance {
    /// Duration of the audio in seconds.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    /// Indices are 16 kHz samples since the start of the run.
    Speech {
        start: u64,
        bound: u64,
        silent_since: Option<u64>,
    },
}

/// Cuts one stream into utterances. Feed it with [`Segmenter::push`] and end it with
/// [`Segmenter::finish`]; it never holds more than about `max_utterance` of audio.
pub struct Segmenter {
    cfg: SegmenterConfig,
    fmt: StreamFormat,
    vad: Box<dyn VoiceDetector>,
    rs: To16kMono,
    origin: Option<f64>,
    src_frames_in: u64,
    src: VecDeque<f32>,
    src_base: u64,
    mono: VecDeque<f32>,
    mono_base: u64,
    next_frame: u64,
    stats: VecDeque<(u64, f32, f32)>,
    state: State,
    last_end: u64,
    seq: u64,
    scratch: Vec<f32>,
    scratch16: Vec<f32>,
    frame: Vec<f32>,
    real_end: Option<u64>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("format", &self.fmt)
            .field("detector", &self.vad.name())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn secs(v: f64) -> u64 {
    (v * f64::from(RATE_16K)).round() as u64
}

impl Segmenter {
    /// A segmenter for one stream of `format`, deciding with `vad`.
    pub fn new(
        cfg: SegmenterConfig,
        format: StreamFormat,
        vad: Box<dyn VoiceDetector>,
    ) -> Result<Self, SegmentError> {
        cfg.validate()?;
        let rs = To16kMono::new(format.sample_rate, format.channels)?;
        Ok(Self {
            cfg,
            fmt: format,
            vad,
            rs,
            origin: None,
            src_frames_in: 0,
            src: VecDeque::new(),
            src_base: 0,
            mono: VecDeque::new(),
            mono_base: 0,
            next_frame: 0,
            stats: VecDeque::new(),
            state: State::Idle,
            last_end: 0,
            seq: 0,
            scratch: Vec::new(),
            scratch16: Vec::new(),
            frame: vec![0.0; FRAME],
            real_end: None,
        })
    }

    /// The name of the voice activity detector in use.
    pub fn detector_name(&self) -> &'static str {
        self.vad.name()
    }

    /// The configuration in use.
    pub fn config(&self) -> &SegmenterConfig {
        &self.cfg
    }

    /// Samples (source and 16 kHz) currently buffered: bounded by about `max_utterance`.
    pub fn buffered_samples(&self) -> usize {
        self.src.len() + self.mono.len()
    }

    /// Pushes interleaved samples whose first frame is at `at` seconds on the session clock.
    /// Returns the utterances completed by this audio. A jump forward in `at` beyond
    /// `gap_tolerance` closes the current utterance first; small jitter is ignored.
    pub fn push(&mut self, samples: Samples<'_>, at: f64) -> Result<Vec<Utterance>, SegmentError> {
        let ch = usize::from(self.fmt.channels);
        if !samples.len().is_multiple_of(ch) {
            return Err(SegmentError::Audio(format!(
                "{} samples is not a whole number of {ch}-channel frames",
                samples.len()
            )));
        }
        let mut out = Vec::new();
        if !at.is_finite() {
            return Err(SegmentError::Audio(format!("timestamp {at} is not finite")));
        }
        match self.origin {
            None => self.origin = Some(at),
            Some(o) => {
                let expected = o + self.src_frames_in as f64 / f64::from(self.fmt.sample_rate);
                if at > expected + self.cfg.gap_tolerance {
                    tracing::debug!(gap = at - expected, "gap in stream, closing utterance");
                    out = self.finish()?;
                    self.origin = Some(at);
                }
            }
        }
        if samples.len() == 0 {
            return Ok(out);
        }
        self.scratch.clear();
        match samples {
            Samples::I16(s) => self
                .scratch
                .extend(s.iter().map(|&v| f32::from(v) / 32768.0)),
            Samples::F32(s) => self.scratch.extend(s.iter().map(|&v| {
                if v.is_finite() {
                    v.clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            })),
        }
        self.src_frames_in += (samples.len() / ch) as u64;
        self.src.extend(self.scratch.iter().copied());
        self.scratch16.clear();
        self.rs.push(&self.scratch, &mut self.scratch16)?;
        self.mono.extend(self.scratch16.iter().copied());
        self.run_frames(&mut out)?;
        Ok(out)
    }

    /// Ends the stream (or a run of it before a gap): flushes the resampler, closes any open
    /// utterance and returns what was completed. The segmenter can be pushed to again afterwards.
    pub fn finish(&mut self) -> Result<Vec<Utterance>, SegmentError> {
        let mut out = Vec::new();
        if self.origin.is_none() {
            return Ok(out);
        }
        self.scratch16.clear();
        self.rs.finish(&mut self.scratch16)?;
        self.mono.extend(self.scratch16.iter().copied());
        self.run_frames(&mut out)?;
        let real = self.mono_base + self.mono.len() as u64;
        self.real_end = Some(real);
        if real > self.next_frame {
            let missing = (self.next_frame + FRAME as u64 - real) as usize;
            self.mono.extend(std::iter::repeat_n(0.0, missing));
        }
        self.run_frames(&mut out)?;
        if let State::Speech {
            start,
            bound,
            silent_since,
        } = self.state
        {
            let end = silent_since.unwrap_or(real).min(real);
            if end.saturating_sub(start) >= secs(self.cfg.min_speech) {
                let end_bound = (end + secs(self.cfg.padding)).min(real);
                out.push(self.emit(bound, start, end, end_bound, false));
            }
        }
        // Start afresh: the next push opens a new run on its own timestamp.
        self.vad.reset();
        self.origin = None;
        self.src_frames_in = 0;
        self.src.clear();
        self.src_base = 0;
        self.mono.clear();
        self.mono_base = 0;
        self.next_frame = 0;
        self.stats.clear();
        self.state = State::Idle;
        self.last_end = 0;
        self.real_end = None;
        Ok(out)
    }

    fn run_frames(&mut self, out: &mut Vec<Utterance>) -> Result<(), SegmentError> {
        let frame = FRAME as u64;
        while self.mono_base + self.mono.len() as u64 >= self.next_frame + frame {
            let off = (self.next_frame - self.mono_base) as usize;
            for (d, s) in self.frame.iter_mut().zip(self.mono.range(off..off + FRAME)) {
                *d = *s;
            }
            let p = self.vad.speech_probability(&self.frame)?;
            let energy = self.frame.iter().map(|s| s * s).sum::<f32>() / FRAME as f32;
            let f = self.next_frame;
            self.step(f, p, energy, out);
            self.next_frame += frame;
            self.trim();
        }
        Ok(())
    }

    fn step(&mut self, f: u64, p: f32, energy: f32, out: &mut Vec<Utterance>) {
        let fe = f + FRAME as u64;
        let fe_real = self.real_end.map_or(fe, |r| fe.min(r));
        let pad = secs(self.cfg.padding);
        match self.state {
            State::Idle => {
                if p >= self.cfg.threshold {
                    let bound = f.saturating_sub(pad).max(self.last_end);
                    self.state = State::Speech {
                        start: f,
                        bound,
                        silent_since: None,
                    };
                    self.stats.clear();
                    self.stats.push_back((f, p, energy));
                }
            }
            State::Speech {
                start,
                bound,
                mut silent_since,
            } => {
                self.stats.push_back((f, p, energy));
                if p >= self.cfg.threshold {
                    silent_since = None;
                } else if p < self.cfg.neg_threshold && silent_since.is_none() {
                    silent_since = Some(f);
                }
                if let Some(s) = silent_since.filter(|s| fe - s >= secs(self.cfg.min_silence)) {
                    if s - start >= secs(self.cfg.min_speech) {
                        let end_bound = (s + pad).min(fe_real);
                        out.push(self.emit(bound, start, s, end_bound, false));
                        self.last_end = end_bound;
                    }
                    self.state = State::Idle;
                    self.stats.clear();
                } else if fe - bound >= secs(self.cfg.max_utterance) {
                    let lo = bound + secs(self.cfg.max_utterance) / 2;
                    let cut = self
                        .stats
                        .iter()
                        .filter(|(i, ..)| *i >= lo && *i > start)
                        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
                        .map_or(f, |(i, ..)| *i);
                    out.push(self.emit(bound, start, cut, cut, true));
                    self.last_end = cut;
                    self.stats.retain(|(i, ..)| *i >= cut);
                    self.state = State::Speech {
                        start: cut,
                        bound: cut,
                        silent_since: silent_since.map(|s| s.max(cut)),
                    };
                } else {
                    self.state = State::Speech {
                        start,
                        bound,
                        silent_since,
                    };
                }
            }
        }
    }

    /// Drops audio no future utterance can include.
    fn trim(&mut self) {
        let keep = match self.state {
            State::Idle => self
                .next_frame
                .saturating_sub(secs(self.cfg.padding))
                .max(self.last_end),
            State::Speech { bound, .. } => bound,
        };
        let drop = keep
            .saturating_sub(self.mono_base)
            .min(self.mono.len() as u64);
        self.mono.drain(..drop as usize);
        self.mono_base += drop;
        let ch = u64::from(self.fmt.channels);
        let keep_src = keep * u64::from(self.fmt.sample_rate) / u64::from(RATE_16K);
        let drop = keep_src
            .saturating_sub(self.src_base)
            .min(self.src.len() as u64 / ch);
        self.src.drain(..(drop * ch) as usize);
        self.src_base += drop;
    }

    fn emit(&mut self, a: u64, speech_a: u64, speech_b: u64, b: u64, cut: bool) -> Utterance {
        let origin = self.origin.unwrap_or(0.0);
        let rate = f64::from(RATE_16K);
        let real = self.real_end.unwrap_or(u64::MAX);
        let b = b.min(real).max(a);
        let m0 = a.saturating_sub(self.mono_base) as usize;
        let m1 = (b.saturating_sub(self.mono_base) as usize).min(self.mono.len());
        let audio_16k: Vec<f32> = self.mono.range(m0.min(m1)..m1).copied().collect();
        let sr = u64::from(self.fmt.sample_rate);
        let ch = usize::from(self.fmt.channels);
        let to_src = |k: u64| (k * sr + u64::from(RATE_16K) / 2) / u64::from(RATE_16K);
        let s0 = to_src(a).saturating_sub(self.src_base) as usize * ch;
        let s1 = (to_src(b).saturating_sub(self.src_base) as usize * ch).min(self.src.len());
        let samples: Vec<f32> = self.src.range(s0.min(s1)..s1).copied().collect();
        let u = Utterance {
            seq: self.seq,
            start: origin + a as f64 / rate,
            end: origin + b as f64 / rate,
            speech_start: origin + speech_a as f64 / rate,
            speech_end: origin + speech_b.min(b) as f64 / rate,
            cut,
            format: self.fmt,
            samples,
            audio_16k,
        };
        self.seq += 1;
        tracing::debug!(seq = u.seq, start = u.start, end = u.end, cut, "utterance");
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::EnergyVad;

    /// Speech wherever the frame's level is above -40 dBFS: a detector without adaptation.
    struct Level;

    impl VoiceDetector for Level {
        fn speech_probability(&mut self, frame: &[f32]) -> Result<f32, SegmentError> {
            let rms = (frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32).sqrt();
            Ok(if rms > 0.01 { 0.6 + rms.min(0.39) } else { 0.0 })
        }
        fn reset(&mut self) {}
        fn new_stream(&self) -> Box<dyn VoiceDetector> {
            Box::new(Level)
        }
        fn name(&self) -> &'static str {
            "level"
        }
    }

    fn fmt(rate: u32, channels: u16) -> StreamFormat {
        StreamFormat {
            sample_rate: rate,
            channels,
            format: SampleFormat::F32,
        }
    }

    /// Tone bursts at `rate`: (start, end) seconds of "speech" in `total` seconds.
    fn bursts(rate: u32, channels: u16, total: f64, on: &[(f64, f64)]) -> Vec<f32> {
        let n = (total * f64::from(rate)) as usize;
        (0..n)
            .flat_map(|i| {
                let t = i as f64 / f64::from(rate);
                let v = if on.iter().any(|&(a, b)| t >= a && t < b) {
                    0.3 * (std::f64::consts::TAU * 220.0 * t).sin() as f32
                } else {
                    0.0
                };
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect()
    }

    fn run(seg: &mut Segmenter, audio: &[f32], piece: usize, at: f64) -> Vec<Utterance> {
        let ch = usize::from(seg.fmt.channels);
        let mut out = Vec::new();
        let mut t = at;
        for c in audio.chunks(piece * ch) {
            out.extend(seg.push(Samples::F32(c), t).unwrap());
            t += (c.len() / ch) as f64 / f64::from(seg.fmt.sample_rate);
        }
        out.extend(seg.finish().unwrap());
        out
    }

    #[test]
    fn bursts_become_padded_utterances_at_source_rate() {
        let on = [(1.0, 2.5), (4.0, 4.1), (5.0, 7.0)];
        let audio = bursts(48_000, 2, 9.0, &on);
        let mut seg = Segmenter::new(
            SegmenterConfig::default(),
            fmt(48_000, 2),
            Box::new(EnergyVad::default()),
        )
        .unwrap();
        let u = run(&mut seg, &audio, 960, 100.0);
        // The 0.1 s burst is shorter than min_speech and dropped.
        assert_eq!(
            u.len(),
            2,
            "{:?}",
            u.iter().map(|u| (u.start, u.end)).collect::<Vec<_>>()
        );
        for (u, &(a, b)) in u.iter().zip([&on[0], &on[2]]) {
            assert!(
                (u.speech_start - 100.0 - a).abs() < 0.07,
                "{} vs {a}",
                u.speech_start
            );
            assert!(
                (u.speech_end - 100.0 - b).abs() < 0.1,
                "{} vs {b}",
                u.speech_end
            );
            assert!((u.start - (u.speech_start - 0.2)).abs() < 1e-9);
            let frames = u.samples.len() / 2;
            assert!(((frames as f64 / 48_000.0) - u.duration()).abs() < 1e-3);
            assert!(((u.audio_16k.len() as f64 / 16_000.0) - u.duration()).abs() < 1e-3);
        }
        assert_eq!((u[0].seq, u[1].seq), (0, 1));
    }

    #[test]
    fn endless_speech_is_cut_and_memory_stays_bounded() {
        let cfg = SegmenterConfig {
            max_utterance: 4.0,
            ..SegmenterConfig::default()
        };
        // 20 s of tone with a slightly quieter stretch every 3 s.
        let rate = 16_000;
        let audio: Vec<f32> = (0..rate * 20)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                let amp = if (t % 3.0) > 2.8 { 0.1 } else { 0.3 };
                amp * (std::f64::consts::TAU * 220.0 * t).sin() as f32
            })
            .collect();
        let mut seg = Segmenter::new(cfg, fmt(rate, 1), Box::new(Level)).unwrap();
        let mut out = Vec::new();
        let mut max_buf = 0;
        for (k, c) in audio.chunks(320).enumerate() {
            out.extend(seg.push(Samples::F32(c), k as f64 * 0.02).unwrap());
            max_buf = max_buf.max(seg.buffered_samples());
        }
        out.extend(seg.finish().unwrap());
        assert!(max_buf <= 2 * (4 * 16_000 + 2 * 16_000), "{max_buf}");
        assert!(out.len() >= 5, "{}", out.len());
        for w in out.windows(2) {
            assert!(w[0].duration() <= 4.0 + 1e-9);
            assert!(
                (w[0].end - w[1].start).abs() < 1e-9,
                "cut utterances are contiguous"
            );
        }
        assert!(out.iter().filter(|u| u.cut).count() >= 4);
        // Cuts land on the quieter stretches.
        for u in out.iter().filter(|u| u.cut) {
            assert!(u.end % 3.0 > 2.7, "cut at {}", u.end);
        }
    }

    #[test]
    fn a_gap_in_timestamps_closes_the_utterance() {
        let audio = bursts(16_000, 1, 1.0, &[(0.0, 1.0)]);
        let mut seg = Segmenter::new(
            SegmenterConfig::default(),
            fmt(16_000, 1),
            Box::new(EnergyVad::default()),
        )
        .unwrap();
        let mut out = seg.push(Samples::F32(&audio), 10.0).unwrap();
        assert!(out.is_empty());
        out.extend(seg.push(Samples::F32(&audio), 20.0).unwrap());
        assert_eq!(out.len(), 1);
        assert!(out[0].end <= 11.0 + 1e-9);
        out.extend(seg.finish().unwrap());
        assert_eq!(out.len(), 2);
        assert!(out[1].start >= 20.0 - 1e-9);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut seg = Segmenter::new(
            SegmenterConfig::default(),
            fmt(16_000, 2),
            Box::new(EnergyVad::default()),
        )
        .unwrap();
        assert!(seg.push(Samples::F32(&[0.0; 3]), 0.0).is_err());
        assert!(seg.push(Samples::F32(&[0.0; 4]), f64::NAN).is_err());
        assert!(
            seg.push(Samples::F32(&[f32::NAN, f32::INFINITY]), 0.0)
                .is_ok()
        );
        let bad = SegmenterConfig {
            neg_threshold: 0.9,
            ..SegmenterConfig::default()
        };
        assert!(Segmenter::new(bad, fmt(16_000, 1), Box::new(EnergyVad::default())).is_err());
        assert!(seg.finish().is_ok());
    }

    proptest::proptest! {
        #[test]
        fn any_input_gives_ordered_bounded_utterances(
            samples in proptest::collection::vec(-32768i16..=32767, 0..40_000),
            piece in 1usize..5000,
            rate in proptest::sample::select(vec![8_000u32, 16_000, 44_100, 48_000]),
        ) {
            let f = StreamFormat { sample_rate: rate, channels: 1, format: SampleFormat::I16 };
            let cfg = SegmenterConfig { max_utterance: 2.5, min_speech: 0.05, ..SegmenterConfig::default() };
            let mut seg = Segmenter::new(cfg, f, Box::new(EnergyVad::default())).unwrap();
            let mut out = Vec::new();
            let mut t = 0.0;
            for c in samples.chunks(piece) {
                out.extend(seg.push(Samples::I16(c), t).unwrap());
                t += c.len() as f64 / f64::from(rate);
            }
            out.extend(seg.finish().unwrap());
            let total = samples.len() as f64 / f64::from(rate);
            let mut prev_end = 0.0;
            for u in &out {
                proptest::prop_assert!(u.start >= prev_end - 1e-9);
                proptest::prop_assert!(u.end <= total + 1e-3);
                proptest::prop_assert!(u.duration() <= 2.5 + 1e-9);
                proptest::prop_assert!(u.start <= u.speech_start && u.speech_end <= u.end + 1e-9);
                prev_end = u.end;
            }
        }
    }
}
