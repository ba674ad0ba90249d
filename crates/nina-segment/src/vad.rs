//! Voice activity detection on 16 kHz mono audio, in frames of [`FRAME`] samples (32 ms).
//!
//! [`EnergyVad`] is always built; `SileroVad` needs the cargo feature `silero` (on by default),
//! which brings in ONNX Runtime.

#[cfg(feature = "silero")]
use std::path::Path;
#[cfg(feature = "silero")]
use std::sync::{Arc, Mutex};

#[cfg(feature = "silero")]
use ndarray::{Array1, Array3, ArrayView2};
#[cfg(feature = "silero")]
use ort::session::Session;
#[cfg(feature = "silero")]
use ort::value::TensorRef;

use crate::SegmentError;
#[cfg(feature = "silero")]
use nina_models::{ModelDir, ModelError, catalog, onnx};

/// Samples per decision at 16 kHz (32 ms), as Silero takes them.
pub const FRAME: usize = 512;
/// Samples of the previous frame Silero sees before each frame.
#[cfg(feature = "silero")]
const CONTEXT: usize = 64;

/// A voice activity detector: one speech probability per [`FRAME`] of 16 kHz audio.
pub trait VoiceDetector: Send {
    /// Probability that `frame` (exactly [`FRAME`] samples following the previous call's) is speech.
    fn speech_probability(&mut self, frame: &[f32]) -> Result<f32, SegmentError>;
    /// Forgets the stream so far (a new stream starts).
    fn reset(&mut self);
    /// A detector for another stream: fresh state, the same settings and model (shared, not
    /// loaded again). Streams of one model take turns on it, so give each thread its own.
    fn new_stream(&self) -> Box<dyn VoiceDetector>;
    /// A short name recorded with results.
    fn name(&self) -> &'static str;
}

/// Silero VAD v6 through ONNX Runtime, streaming: recurrent state and 64 samples of context are
/// carried from one frame to the next. [`VoiceDetector::new_stream`] gives detectors for other
/// streams that share the loaded model (about 10 MiB) and keep their own state.
#[cfg(feature = "silero")]
pub struct SileroVad {
    session: Arc<Mutex<Session>>,
    state: Array3<f32>,
    context: [f32; CONTEXT],
    input: Vec<f32>,
}

#[cfg(feature = "silero")]
impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").finish_non_exhaustive()
    }
}

#[cfg(feature = "silero")]
impl SileroVad {
    /// Loads the pinned Silero model and ONNX Runtime from `models`.
    pub fn from_models(models: &ModelDir) -> Result<Self, SegmentError> {
        let env = onnx::environment(&onnx::library_path(models)?)?;
        let model = models.require(&catalog::SILERO_VAD)?;
        Self::load(&env, &model)
    }

    /// Loads a Silero ONNX file into `env`, with one intra-op thread (frames are tiny).
    pub fn load(env: &ort::environment::Environment, model: &Path) -> Result<Self, SegmentError> {
        let session = onnx::session(env, model, 1)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !["input", "state", "sr"].iter().all(|n| names.contains(n)) {
            return Err(ModelError::Invalid {
                path: model.to_path_buf(),
                reason: format!("not a Silero VAD model: inputs are {names:?}"),
            }
            .into());
        }
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            state: Array3::zeros((2, 1, 128)),
            context: [0.0; CONTEXT],
            input: vec![0.0; CONTEXT + FRAME],
        })
    }
}

#[cfg(feature = "silero")]
fn run_err(e: impl std::fmt::Display) -> SegmentError {
    SegmentError::Model(ModelError::Onnx {
        context: "running Silero VAD".into(),
        reason: e.to_string(),
    })
}

#[cfg(feature = "silero")]
impl VoiceDetector for SileroVad {
    fn speech_probability(&mut self, frame: &[f32]) -> Result<f32, SegmentError> {
        if frame.len() != FRAME {
            return Err(SegmentError::Audio(format!(
                "Silero takes {FRAME} samples, got {}",
                frame.len()
            )));
        }
        self.input[..CONTEXT].copy_from_slice(&self.context);
        self.input[CONTEXT..].copy_from_slice(frame);
        let input =
            ArrayView2::from_shape((1, CONTEXT + FRAME), self.input.as_slice()).map_err(run_err)?;
        let sr = Array1::from_vec(vec![16_000i64]);
        // A poisoned lock only means another stream panicked mid-run; the session is stateless.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![
                "input" => TensorRef::from_array_view(input.view()).map_err(run_err)?,
                "state" => TensorRef::from_array_view(self.state.view()).map_err(run_err)?,
                "sr" => TensorRef::from_array_view(sr.view()).map_err(run_err)?,
            ])
            .map_err(run_err)?;
        let p = outputs[0]
            .try_extract_array::<f32>()
            .map_err(run_err)?
            .iter()
            .next()
            .copied()
            .unwrap_or(0.0);
        let state = outputs[1].try_extract_array::<f32>().map_err(run_err)?;
        if state.len() == self.state.len() {
            self.state
                .iter_mut()
                .zip(state.iter())
                .for_each(|(d, s)| *d = *s);
        }
        self.context.copy_from_slice(&frame[FRAME - CONTEXT..]);
        Ok(p)
    }

    fn reset(&mut self) {
        self.state.fill(0.0);
        self.context = [0.0; CONTEXT];
    }

    fn new_stream(&self) -> Box<dyn VoiceDetector> {
        Box::new(Self {
            session: Arc::clone(&self.session),
            state: Array3::zeros((2, 1, 128)),
            context: [0.0; CONTEXT],
            input: vec![0.0; CONTEXT + FRAME],
        })
    }

    fn name(&self) -> &'static str {
        "silero-vad-6.2.3"
    }
}

/// A cheap detector on frame energy: a logistic of the level above an adaptive noise floor.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    /// Level (dB) above the noise floor that counts as even odds of speech.
    pub margin_db: f32,
    /// Absolute floor (dBFS) below which a frame is never speech.
    pub floor_dbfs: f32,
    noise_db: f32,
}

impl Default for EnergyVad {
    fn default() -> Self {
        Self {
            margin_db: 12.0,
            floor_dbfs: -55.0,
            noise_db: -70.0,
        }
    }
}

impl VoiceDetector for EnergyVad {
    fn speech_probability(&mut self, frame: &[f32]) -> Result<f32, SegmentError> {
        if frame.is_empty() {
            return Err(SegmentError::Audio("empty frame".into()));
        }
        let energy = frame.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / frame.len() as f64;
        let db = (10.0 * (energy + 1e-12).log10()) as f32;
        // Track the noise floor: fall fast, rise slowly.
        self.noise_db = if db < self.noise_db {
            db
        } else {
            self.noise_db + 0.05 * (db - self.noise_db).min(3.0)
        };
        if db < self.floor_dbfs {
            return Ok(0.0);
        }
        let x = (db - self.noise_db.max(-70.0) - self.margin_db) / 3.0;
        Ok(1.0 / (1.0 + (-x).exp()))
    }

    fn reset(&mut self) {
        self.noise_db = -70.0;
    }

    fn new_stream(&self) -> Box<dyn VoiceDetector> {
        Box::new(Self {
            noise_db: -70.0,
            ..self.clone()
        })
    }

    fn name(&self) -> &'static str {
        "energy"
    }
}

/// Runs `vad` over a whole 16 kHz clip (the tail padded with zeros), one probability per frame.
pub fn probabilities(vad: &mut dyn VoiceDetector, audio: &[f32]) -> Result<Vec<f32>, SegmentError> {
    let mut frame = [0.0f32; FRAME];
    audio
        .chunks(FRAME)
        .map(|c| {
            frame[..c.len()].copy_from_slice(c);
            frame[c.len()..].fill(0.0);
            vad.speech_probability(&frame)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_vad_separates_tone_from_silence() {
        let mut v = EnergyVad::default();
        let silence = vec![0.0f32; FRAME * 20];
        let p = probabilities(&mut v, &silence).unwrap();
        assert!(p.iter().all(|&x| x < 0.01));
        let tone: Vec<f32> = (0..FRAME * 10)
            .map(|i| 0.3 * (i as f32 * 0.05).sin())
            .collect();
        let p = probabilities(&mut v, &tone).unwrap();
        assert!(p[0] > 0.9, "{p:?}");
        assert!(v.speech_probability(&[]).is_err());
    }
}
