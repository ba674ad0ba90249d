//! Kaldi-compatible log mel filter-bank features (`compute-fbank-feats`, as
//! `torchaudio.compliance.kaldi.fbank` computes them), the input of CAM++ and of most speaker
//! embedders exported to ONNX (WeSpeaker, 3D-Speaker, many ECAPA exports).
//!
//! Per frame of `frame_length` samples every `frame_shift` (snip edges: only whole frames):
//! remove the DC offset, pre-emphasis, Povey window (`hann^0.85`), zero-pad to the next power of
//! two, power spectrum, triangular filters equally spaced on the Kaldi mel scale
//! (`1127 ln(1 + f/700)`) from `low_freq` to `high_freq`, natural log floored at f32 epsilon.
//! No dither, no energy term.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::DiarizeError;

/// Settings of [`KaldiFbank`]; the defaults are CAM++'s (and Kaldi's, with dither 0).
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    /// Number of mel bins.
    pub num_mel_bins: usize,
    /// Sample rate in Hz.
    pub sample_rate: f32,
    /// Samples per frame (25 ms).
    pub frame_length: usize,
    /// Samples between frame starts (10 ms).
    pub frame_shift: usize,
    /// Lowest filter edge in Hz.
    pub low_freq: f32,
    /// Highest filter edge in Hz; zero or negative counts from the Nyquist frequency (Kaldi's
    /// convention).
    pub high_freq: f32,
    /// Pre-emphasis coefficient.
    pub preemphasis: f32,
    /// Factor applied to samples first: 1 for `[-1, 1]` audio as CAM++ takes it, 32768 for
    /// models trained on int16-range input (WeSpeaker).
    pub input_scale: f32,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            num_mel_bins: 80,
            sample_rate: 16_000.0,
            frame_length: 400,
            frame_shift: 160,
            low_freq: 20.0,
            high_freq: 0.0,
            preemphasis: 0.97,
            input_scale: 1.0,
        }
    }
}

/// Log mel energies: `frames` rows of `bins` values, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    /// Number of frames.
    pub frames: usize,
    /// Values per frame.
    pub bins: usize,
    /// `frames * bins` values.
    pub data: Vec<f32>,
}

impl Features {
    /// Frame `t`, if there is one.
    pub fn frame(&self, t: usize) -> Option<&[f32]> {
        self.data.get(t * self.bins..(t + 1) * self.bins)
    }

    /// The mean of each bin over all frames.
    pub fn means(&self) -> Vec<f32> {
        let mut sum = vec![0.0f64; self.bins];
        for row in self.data.chunks_exact(self.bins.max(1)) {
            sum.iter_mut()
                .zip(row)
                .for_each(|(s, &v)| *s += f64::from(v));
        }
        let n = self.frames.max(1) as f64;
        sum.iter().map(|s| (s / n) as f32).collect()
    }

    /// Subtracts each bin's mean over the frames (per-segment mean normalisation).
    pub fn subtract_means(&mut self) {
        let means = self.means();
        for row in self.data.chunks_exact_mut(self.bins.max(1)) {
            row.iter_mut().zip(&means).for_each(|(v, m)| *v -= m);
        }
    }
}

/// One triangular filter: weights for FFT bins `start..start + weights.len()`.
#[derive(Debug, Clone)]
struct Filter {
    start: usize,
    weights: Vec<f32>,
}

/// The Kaldi fbank computer: window, filters and FFT plan made once.
pub struct KaldiFbank {
    config: FbankConfig,
    padded: usize,
    window: Vec<f32>,
    filters: Vec<Filter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for KaldiFbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KaldiFbank")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl KaldiFbank {
    /// Prepares the window, the filters and the FFT for `config`; a configuration that cannot
    /// work (no bins, frames under 2 samples, a filter range outside `0..=Nyquist`) is an error.
    pub fn new(config: FbankConfig) -> Result<Self, DiarizeError> {
        let len = config.frame_length;
        let window = (0..len)
            .map(|n| {
                let hann =
                    0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (len - 1) as f64).cos();
                hann.powf(0.85) as f32
            })
            .collect();
        let nyquist = f64::from(config.sample_rate) / 2.0;
        let high = if config.high_freq <= 0.0 {
            nyquist + f64::from(config.high_freq)
        } else {
            f64::from(config.high_freq)
        };
        let low = f64::from(config.low_freq);
        let finite = [config.preemphasis, config.input_scale, config.sample_rate]
            .iter()
            .all(|v| v.is_finite());
        if config.num_mel_bins == 0
            || !(2..=1 << 20).contains(&len)
            || config.frame_shift == 0
            || !finite
            || !(0.0 <= low && low < high && high <= nyquist)
        {
            return Err(DiarizeError::Config(format!(
                "unusable fbank settings: {config:?}"
            )));
        }
        let padded = len.next_power_of_two();
        let (lo, hi) = (mel(low), mel(high));
        let delta = (hi - lo) / (config.num_mel_bins + 1) as f64;
        let bin_hz = f64::from(config.sample_rate) / padded as f64;
        // Kaldi uses the first padded/2 FFT bins (the Nyquist bin gets no weight).
        let fft_mels: Vec<f64> = (0..padded / 2).map(|k| mel(bin_hz * k as f64)).collect();
        let filters = (0..config.num_mel_bins)
            .map(|m| {
                let (left, centre, right) = (
                    lo + m as f64 * delta,
                    lo + (m + 1) as f64 * delta,
                    lo + (m + 2) as f64 * delta,
                );
                let w: Vec<f32> = fft_mels
                    .iter()
                    .map(|&x| {
                        let up = (x - left) / (centre - left);
                        let down = (right - x) / (right - centre);
                        up.min(down).max(0.0) as f32
                    })
                    .collect();
                let start = w.iter().position(|&v| v > 0.0).unwrap_or(0);
                let end = w.iter().rposition(|&v| v > 0.0).map_or(start, |e| e + 1);
                Filter {
                    start,
                    weights: w[start..end].to_vec(),
                }
            })
            .collect();
        Ok(Self {
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(padded),
            config,
            padded,
            window,
            filters,
        })
    }

    /// The settings.
    pub fn config(&self) -> &FbankConfig {
        &self.config
    }

    /// Number of whole frames in `samples` samples.
    pub fn frames_for(&self, samples: usize) -> usize {
        let c = &self.config;
        if samples < c.frame_length || c.frame_shift == 0 {
            0
        } else {
            1 + (samples - c.frame_length) / c.frame_shift
        }
    }

    /// Log mel energies of `audio` (mono, at the configured sample rate).
    pub fn compute(&self, audio: &[f32]) -> Features {
        let c = &self.config;
        let frames = self.frames_for(audio.len());
        let bins = c.num_mel_bins;
        let mut data = Vec::with_capacity(frames * bins);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; self.padded / 2 + 1];
        let mut frame = vec![0.0f32; c.frame_length];
        for t in 0..frames {
            let chunk = &audio[t * c.frame_shift..t * c.frame_shift + c.frame_length];
            let mut sum = 0.0f32;
            for (f, &s) in frame.iter_mut().zip(chunk) {
                *f = s * c.input_scale;
                sum += *f;
            }
            let mean = sum / c.frame_length as f32;
            frame.iter_mut().for_each(|f| *f -= mean);
            // Pre-emphasis, back to front; the first sample is scaled by (1 - k).
            for i in (1..frame.len()).rev() {
                frame[i] -= c.preemphasis * frame[i - 1];
            }
            frame[0] -= c.preemphasis * frame[0];
            input.fill(0.0);
            for ((i, f), w) in input.iter_mut().zip(&frame).zip(&self.window) {
                *i = f * w;
            }
            // Lengths match by construction; a failure would leave the spectrum at zero.
            let _ = self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch);
            for (p, z) in power.iter_mut().zip(&spectrum) {
                *p = z.norm_sqr();
            }
            for f in &self.filters {
                let e: f32 = f
                    .weights
                    .iter()
                    .zip(&power[f.start..])
                    .map(|(w, p)| w * p)
                    .sum();
                data.push(e.max(f32::EPSILON).ln());
            }
        }
        Features { frames, bins, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_snips_edges() {
        let f = KaldiFbank::new(FbankConfig::default()).unwrap();
        assert_eq!(f.frames_for(399), 0);
        assert_eq!(f.frames_for(400), 1);
        assert_eq!(f.frames_for(48_000), 298);
        assert_eq!(f.compute(&[0.0; 100]).frames, 0);
    }

    #[test]
    fn silence_is_the_log_floor_and_a_tone_peaks_in_its_bin() {
        let f = KaldiFbank::new(FbankConfig::default()).unwrap();
        let silence = f.compute(&[0.0; 1_600]);
        assert_eq!(silence.frames, 8);
        assert!(
            silence
                .data
                .iter()
                .all(|&v| (v - f32::EPSILON.ln()).abs() < 1e-6)
        );
        let tone: Vec<f32> = (0..16_000)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * 1_000.0 * n as f32 / 16_000.0).sin())
            .collect();
        let feats = f.compute(&tone);
        let row = feats.frame(10).unwrap();
        let peak = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap();
        // 1 kHz on the Kaldi mel scale between 20 Hz and 8 kHz: bin 23 of 80.
        let m = |f: f64| 1127.0 * (1.0 + f / 700.0).ln();
        let expect = ((m(1000.0) - m(20.0)) / ((m(8000.0) - m(20.0)) / 81.0) - 1.0).round();
        assert!(
            (peak as f64 - expect).abs() <= 1.0,
            "peak {peak}, expected {expect}"
        );
    }

    #[test]
    fn unusable_settings_are_errors() {
        let bad = [
            FbankConfig {
                num_mel_bins: 0,
                ..FbankConfig::default()
            },
            FbankConfig {
                frame_length: 1,
                ..FbankConfig::default()
            },
            FbankConfig {
                frame_shift: 0,
                ..FbankConfig::default()
            },
            FbankConfig {
                high_freq: 9_000.0,
                ..FbankConfig::default()
            },
            FbankConfig {
                low_freq: f32::NAN,
                ..FbankConfig::default()
            },
        ];
        for c in bad {
            assert!(KaldiFbank::new(c.clone()).is_err(), "{c:?}");
        }
        let f = KaldiFbank::new(FbankConfig::default()).unwrap();
        assert!(f.compute(&[0.0; 400]).frame(1).is_none());
    }

    #[test]
    fn mean_subtraction_zeroes_the_means() {
        let mut feats = Features {
            frames: 2,
            bins: 2,
            data: vec![1.0, 2.0, 3.0, 6.0],
        };
        assert_eq!(feats.means(), [2.0, 4.0]);
        feats.subtract_means();
        assert_eq!(feats.data, [-1.0, -2.0, 1.0, 2.0]);
    }
}
