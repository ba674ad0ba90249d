//! Who spoke when: speech regions cut into overlapping windows, embedded a few regions at a time
//! ([`SpeakerEmbedder::embed_windows`]: CAM++ pools every window from one pass over each stretch
//! of a region), clustered into speakers ([`crate::cluster`]), then every 10 ms frame of speech given the
//! speaker whose centroid the windows covering it resemble most (weighted towards each window's
//! centre), smoothed, so turn changes fall between window centres rather than on window edges.
//! Frames where a second speaker scores almost as high as the first are marked as overlap.
//!
//! [`Diarizer`] is streaming: speech regions are pushed one at a time (their audio is dropped
//! once embedded), and only the windows' vectors (192 floats each) are kept until
//! [`Diarizer::finish`], so a long file never has to be held in memory.

use crate::cluster::{ClusterConfig, cluster};
use crate::{DiarizeError, RegionWindows, SpeakerEmbedder};

/// Sample rate of the audio given.
pub const RATE: usize = 16_000;
/// Resolution of the re-segmentation, seconds.
pub const FRAME: f64 = 0.01;

/// Settings of diarization.
#[derive(Debug, Clone, PartialEq)]
pub struct DiarizeConfig {
    /// Window length, seconds.
    pub window: f64,
    /// Window step, seconds.
    pub step: f64,
    /// Regions shorter than this are not embedded; they take the speaker of the nearest
    /// embedded speech (seconds).
    pub min_region: f64,
    /// Turns (runs of one speaker inside a region) shorter than this are merged into a
    /// neighbour, seconds.
    pub min_turn: f64,
    /// A frame is overlapped speech when the second speaker's score is within this much of the
    /// first's and above the clustering threshold (`None`: no overlap detection).
    pub overlap_margin: Option<f32>,
    /// Overlaps shorter than this are dropped, seconds.
    pub min_overlap: f64,
    /// Clustering.
    pub cluster: ClusterConfig,
}

impl Default for DiarizeConfig {
    fn default() -> Self {
        Self {
            window: 1.5,
            step: 0.5,
            min_region: 0.3,
            min_turn: 0.3,
            overlap_margin: Some(0.03),
            min_overlap: 0.3,
            cluster: ClusterConfig::default(),
        }
    }
}

impl DiarizeConfig {
    /// Checks that the values are usable together.
    pub fn validate(&self) -> Result<(), DiarizeError> {
        let ok = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        if !ok(self.window, 0.2, 30.0) || !ok(self.step, 0.05, self.window) {
            return Err(DiarizeError::Config(format!(
                "window {} s and step {} s: need 0.2 <= window <= 30 and 0.05 <= step <= window",
                self.window, self.step
            )));
        }
        if !ok(self.min_region, 0.0, 10.0)
            || !ok(self.min_turn, 0.0, 10.0)
            || !ok(self.min_overlap, 0.0, 10.0)
        {
            return Err(DiarizeError::Config(
                "min_region, min_turn and min_overlap must be in [0, 10] s".into(),
            ));
        }
        if self
            .overlap_margin
            .is_some_and(|m| !(m.is_finite() && (0.0..=2.0).contains(&m)))
        {
            return Err(DiarizeError::Config(
                "overlap_margin must be in [0, 2]".into(),
            ));
        }
        self.cluster.validate()
    }
}

/// One speaker turn.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerTurn {
    /// Speaker index, `0..Diarization::speakers`, numbered by first appearance.
    pub speaker: usize,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

/// Stretch where a second speaker is detected over the main one.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The main speaker (the one in [`Diarization::turns`]).
    pub main: usize,
    /// The second speaker.
    pub second: usize,
}

/// The result of diarization.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diarization {
    /// Number of speakers found.
    pub speakers: usize,
    /// One speaker at a time, in time order, not overlapping each other.
    pub turns: Vec<SpeakerTurn>,
    /// Overlapped speech detected (its second speaker is not in `turns`).
    pub overlaps: Vec<Overlap>,
    /// Windows embedded.
    pub windows: usize,
    /// Each speaker's centroid (unit length, the mean of its windows), by speaker index: what
    /// a voiceprint is compared with.
    pub centroids: Vec<Vec<f32>>,
}

/// A speech region's windows, embedded: what [`Diarizer::embed_regions`] returns and
/// [`Diarizer::add`] takes, so a caller can save embeddings and resume without the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedRegion {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// `(start, end, unit-length vector)` of each window (none for a region shorter than
    /// [`DiarizeConfig::min_region`]).
    pub windows: Vec<(f64, f64, Vec<f32>)>,
}

#[derive(Debug, Clone)]
struct Region {
    start: f64,
    end: f64,
    /// Windows of this region: index range into the window list.
    windows: std::ops::Range<usize>,
}

/// A region's span of windows waiting to be embedded.
#[derive(Debug)]
struct PendingRegion {
    audio: Vec<f32>,
    /// Sample ranges of `audio`.
    windows: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: f64,
    end: f64,
}

/// Streaming diarization: [`Diarizer::push`] speech regions, then [`Diarizer::finish`].
pub struct Diarizer<'e> {
    embedder: &'e mut dyn SpeakerEmbedder,
    cfg: DiarizeConfig,
    regions: Vec<Region>,
    windows: Vec<Window>,
    vectors: Vec<Vec<f32>>,
    /// Regions waiting to be embedded: audio and window sample ranges.
    pending: Vec<PendingRegion>,
    /// Windows in `pending`.
    pending_windows: usize,
    batch: usize,
}

impl std::fmt::Debug for Diarizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diarizer")
            .field("regions", &self.regions.len())
            .field("windows", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl<'e> Diarizer<'e> {
    /// A diarizer embedding with `embedder` (16 kHz) by `cfg`.
    pub fn new(
        embedder: &'e mut dyn SpeakerEmbedder,
        cfg: DiarizeConfig,
    ) -> Result<Self, DiarizeError> {
        cfg.validate()?;
        Ok(Self {
            embedder,
            cfg,
            regions: Vec::new(),
            windows: Vec::new(),
            vectors: Vec::new(),
            pending: Vec::new(),
            pending_windows: 0,
            batch: 64,
        })
    }

    /// Adds one speech region: `audio` (16 kHz mono) starting at `start` seconds. Regions may
    /// come in any order but should not overlap. Windows are embedded in batches as they fill.
    pub fn push(&mut self, start: f64, audio: &[f32]) -> Result<(), DiarizeError> {
        if !start.is_finite() || start < 0.0 {
            return Err(DiarizeError::Audio(format!("region start {start} s")));
        }
        if audio.iter().any(|x| !x.is_finite()) {
            return Err(DiarizeError::Audio("samples that are not finite".into()));
        }
        let len = audio.len() as f64 / RATE as f64;
        let first = self.windows.len();
        let layout = self.layout(audio.len());
        for &(a, b) in &layout {
            self.windows.push(Window {
                start: start + a as f64 / RATE as f64,
                end: start + b as f64 / RATE as f64,
            });
        }
        self.regions.push(Region {
            start,
            end: start + len,
            windows: first..self.windows.len(),
        });
        // The region's windows wait (with their span of audio) to be embedded with the next
        // few regions'; a long region goes in parts of at most `batch` windows, so what waits
        // stays bounded however long the region.
        for part in layout.chunks(self.batch) {
            let (a, b) = (part[0].0, part[part.len() - 1].1);
            self.pending_windows += part.len();
            self.pending.push(PendingRegion {
                audio: audio[a..b].to_vec(),
                windows: part.iter().map(|&(s, e)| (s - a, e - a)).collect(),
            });
            if self.pending_windows >= self.batch {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Embeds the windows of several speech regions (`(start seconds, 16 kHz audio)`) in one
    /// batched pass and returns them without adding them: give them to [`Diarizer::add`].
    pub fn embed_regions(
        &mut self,
        regions: &[(f64, &[f32])],
    ) -> Result<Vec<EmbeddedRegion>, DiarizeError> {
        let mut out = Vec::with_capacity(regions.len());
        let mut layouts = Vec::with_capacity(regions.len());
        for &(start, a) in regions {
            if !start.is_finite() || start < 0.0 {
                return Err(DiarizeError::Audio(format!("region start {start} s")));
            }
            if a.iter().any(|x| !x.is_finite()) {
                return Err(DiarizeError::Audio("samples that are not finite".into()));
            }
            let layout = self.layout(a.len());
            let windows = layout
                .iter()
                .map(|&(s, e)| {
                    (
                        start + s as f64 / RATE as f64,
                        start + e as f64 / RATE as f64,
                        Vec::new(),
                    )
                })
                .collect();
            layouts.push((a, layout));
            out.push(EmbeddedRegion {
                start,
                end: start + a.len() as f64 / RATE as f64,
                windows,
            });
        }
        let refs: Vec<RegionWindows<'_>> =
            layouts.iter().map(|(a, l)| (*a, l.as_slice())).collect();
        let mut vectors = self.embedder.embed_windows(&refs)?.into_iter();
        for r in &mut out {
            for w in &mut r.windows {
                w.2 = vectors.next().ok_or_else(|| {
                    DiarizeError::Config("the embedder returned too few vectors".into())
                })?;
            }
        }
        Ok(out)
    }

    /// Adds a region embedded earlier (by [`Diarizer::embed_regions`], possibly in another run).
    pub fn add(&mut self, region: EmbeddedRegion) -> Result<(), DiarizeError> {
        let dim = self.embedder.dim();
        if region
            .windows
            .iter()
            .any(|w| w.2.len() != dim || !(w.0.is_finite() && w.1.is_finite() && w.1 >= w.0))
            || !(region.start.is_finite() && region.end >= region.start)
        {
            return Err(DiarizeError::Audio(
                "an embedded region with bad times or vectors of the wrong size".into(),
            ));
        }
        self.flush()?;
        let first = self.windows.len();
        for (s, e, v) in region.windows {
            self.windows.push(Window { start: s, end: e });
            self.vectors.push(v);
        }
        self.regions.push(Region {
            start: region.start,
            end: region.end,
            windows: first..self.windows.len(),
        });
        Ok(())
    }

    /// Windows of a region of `len` samples: `(first, last + 1)` sample.
    fn layout(&self, len: usize) -> Vec<(usize, usize)> {
        let secs = len as f64 / RATE as f64;
        if secs < self.cfg.min_region || len == 0 {
            return Vec::new();
        }
        let (w, step) = (self.cfg.window, self.cfg.step);
        let starts: Vec<f64> = if secs <= w {
            vec![0.0]
        } else {
            let n = ((secs - w) / step).ceil() as usize + 1;
            (0..n)
                .map(|i| i as f64 * (secs - w) / (n - 1) as f64)
                .collect()
        };
        starts
            .into_iter()
            .map(|s| {
                let a = ((s * RATE as f64) as usize).min(len);
                let b = (((s + w) * RATE as f64) as usize).min(len);
                (a, b)
            })
            .filter(|(a, b)| b > a)
            .collect()
    }

    fn flush(&mut self) -> Result<(), DiarizeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let refs: Vec<RegionWindows<'_>> = self
            .pending
            .iter()
            .map(|p| (p.audio.as_slice(), p.windows.as_slice()))
            .collect();
        let v = self.embedder.embed_windows(&refs)?;
        if v.len() != self.pending_windows {
            return Err(DiarizeError::Config(
                "the embedder returned a wrong number of vectors".into(),
            ));
        }
        self.vectors.extend(v);
        self.pending.clear();
        self.pending_windows = 0;
        Ok(())
    }

    /// Clusters the windows and re-segments every region.
    pub fn finish(mut self) -> Result<Diarization, DiarizeError> {
        self.flush()?;
        let started = std::time::Instant::now();
        let refs: Vec<&[f32]> = self.vectors.iter().map(|v| v.as_slice()).collect();
        let clusters = cluster(&refs, &self.cfg.cluster)?;
        let clustered = started.elapsed();
        let k = clusters.centroids.len();
        // Similarity of every window to every centroid.
        let sims: Vec<Vec<f32>> = self
            .vectors
            .iter()
            .map(|v| {
                clusters
                    .centroids
                    .iter()
                    .map(|c| c.iter().zip(v).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect();
        let mut regions = std::mem::take(&mut self.regions);
        regions.sort_by(|a, b| a.start.total_cmp(&b.start));
        let mut turns = Vec::new();
        let mut overlaps = Vec::new();
        let mut unassigned = Vec::new();
        for r in &regions {
            if r.windows.is_empty() || k == 0 {
                unassigned.push((r.start, r.end));
                continue;
            }
            self.resegment(r, &sims, k, &mut turns, &mut overlaps);
        }
        // Regions too short to embed: the speaker of the nearest turn in time.
        for (s, e) in unassigned {
            let nearest = turns
                .iter()
                .min_by(|a: &&SpeakerTurn, b: &&SpeakerTurn| {
                    let d = |t: &SpeakerTurn| (t.start - e).max(s - t.end).max(0.0);
                    d(a).total_cmp(&d(b))
                })
                .map(|t| t.speaker);
            if let Some(speaker) = nearest {
                turns.push(SpeakerTurn {
                    speaker,
                    start: s,
                    end: e,
                });
            }
        }
        turns.sort_by(|a, b| a.start.total_cmp(&b.start));
        // Number speakers by first appearance.
        let mut order = vec![usize::MAX; k];
        let mut next = 0;
        for t in &turns {
            if order[t.speaker] == usize::MAX {
                order[t.speaker] = next;
                next += 1;
            }
        }
        for t in &mut turns {
            t.speaker = order[t.speaker];
        }
        overlaps.retain(|o: &Overlap| order[o.second] != usize::MAX);
        for o in &mut overlaps {
            o.main = order[o.main];
            o.second = order[o.second];
        }
        // Adjacent turns of one speaker (across a short pause) stay separate: RTTM keeps the
        // silence between them.
        tracing::info!(
            speakers = next,
            windows = self.windows.len(),
            turns = turns.len(),
            overlaps = overlaps.len(),
            cluster_seconds = clustered.as_secs_f64(),
            resegment_seconds = (started.elapsed() - clustered).as_secs_f64(),
            "diarized"
        );
        let mut centroids = vec![Vec::new(); next];
        for (old, &new) in order.iter().enumerate() {
            if new != usize::MAX {
                centroids[new] = clusters.centroids[old].clone();
            }
        }
        Ok(Diarization {
            speakers: next,
            turns,
            overlaps,
            windows: self.windows.len(),
            centroids,
        })
    }

    /// Frame-level assignment inside one region.
    fn resegment(
        &self,
        r: &Region,
        sims: &[Vec<f32>],
        k: usize,
        turns: &mut Vec<SpeakerTurn>,
        overlaps: &mut Vec<Overlap>,
    ) {
        let frames = (((r.end - r.start) / FRAME).round() as usize).max(1);
        let mut score = vec![0.0f32; frames * k];
        let mut weight = vec![0.0f32; frames];
        for wi in r.windows.clone() {
            let w = self.windows[wi];
            let (c, half) = ((w.start + w.end) / 2.0, (w.end - w.start) / 2.0);
            let a = (((w.start - r.start) / FRAME).floor().max(0.0) as usize).min(frames);
            let b = (((w.end - r.start) / FRAME).ceil().max(0.0) as usize).min(frames);
            for f in a..b {
                let t = r.start + (f as f64 + 0.5) * FRAME;
                let g = (1.0 - (t - c).abs() / (half + FRAME)).max(0.02) as f32;
                weight[f] += g;
                for s in 0..k {
                    score[f * k + s] += g * sims[wi][s];
                }
            }
        }
        // Best and second best per frame (mean similarity).
        let mut best = vec![0usize; frames];
        let mut second: Vec<Option<usize>> = vec![None; frames];
        for f in 0..frames {
            let wsum = weight[f].max(1e-6);
            let row = &score[f * k..f * k + k];
            let mut idx: Vec<usize> = (0..k).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            best[f] = idx[0];
            if let (Some(m), Some(&j)) = (self.cfg.overlap_margin, idx.get(1)) {
                let (s1, s2) = (row[idx[0]] / wsum, row[j] / wsum);
                if s1 - s2 <= m && s2 >= self.cfg.cluster.threshold {
                    second[f] = Some(j);
                }
            }
        }
        // Smoothing: the shortest run under min_turn joins its longer neighbour, repeatedly.
        let min_frames = (self.cfg.min_turn / FRAME).round() as usize;
        let mut runs = runs_of(&best);
        while runs.len() > 1 {
            let (i, len) = runs
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r.2 - r.1))
                .min_by_key(|x| x.1)
                .unwrap_or((0, usize::MAX));
            if len >= min_frames {
                break;
            }
            let left = i.checked_sub(1).map(|j| runs[j].2 - runs[j].1);
            let right = runs.get(i + 1).map(|r| r.2 - r.1);
            let into = match (left, right) {
                (Some(l), Some(rr)) if rr > l => i + 1,
                (Some(_), _) => i - 1,
                _ => i + 1,
            };
            let sp = runs[into].0;
            runs[i].0 = sp;
            // Merge equal neighbours.
            let mut merged: Vec<(usize, usize, usize)> = Vec::with_capacity(runs.len());
            for r in runs {
                match merged.last_mut() {
                    Some(m) if m.0 == r.0 => m.2 = r.2,
                    _ => merged.push(r),
                }
            }
            runs = merged;
        }
        for (sp, a, b) in &runs {
            turns.push(SpeakerTurn {
                speaker: *sp,
                start: r.start + *a as f64 * FRAME,
                end: (r.start + *b as f64 * FRAME).min(r.end),
            });
        }
        // Overlap: frames whose second speaker differs from the (smoothed) main one.
        let mut main = vec![0usize; frames];
        for (sp, a, b) in &runs {
            main[*a..*b].iter_mut().for_each(|m| *m = *sp);
        }
        let marks: Vec<usize> = (0..frames)
            .map(|f| match second[f] {
                Some(s) if s != main[f] => s,
                Some(_) => best[f],
                None => usize::MAX,
            })
            .map(|s| if s == usize::MAX { k } else { s })
            .collect();
        let min_ov = (self.cfg.min_overlap / FRAME).round() as usize;
        for (s, a, b) in runs_of(&marks) {
            if s < k && s != main[a] && b - a >= min_ov.max(1) {
                overlaps.push(Overlap {
                    start: r.start + a as f64 * FRAME,
                    end: (r.start + b as f64 * FRAME).min(r.end),
                    main: main[a],
                    second: s,
                });
            }
        }
    }
}

/// Runs of equal values: `(value, first, last + 1)`.
fn runs_of(x: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (i, &v) in x.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.0 == v => r.2 = i + 1,
            _ => out.push((v, i, i + 1)),
        }
    }
    out
}

/// Diarizes `audio` (16 kHz mono) whose speech is `regions` (`(start, end)` seconds, from the
/// voice-activity step).
pub fn diarize(
    embedder: &mut dyn SpeakerEmbedder,
    audio: &[f32],
    regions: &[(f64, f64)],
    cfg: &DiarizeConfig,
) -> Result<Diarization, DiarizeError> {
    let mut d = Diarizer::new(embedder, cfg.clone())?;
    for &(s, e) in regions {
        if !(s.is_finite() && e.is_finite() && s >= 0.0 && e >= s) {
            return Err(DiarizeError::Audio(format!("speech region {s}..{e} s")));
        }
        let a = ((s * RATE as f64) as usize).min(audio.len());
        let b = ((e * RATE as f64) as usize).min(audio.len());
        d.push(a as f64 / RATE as f64, &audio[a..b])?;
    }
    d.finish()
}

/// Speech regions from voice-activity probabilities (one per `frame` seconds): frames at or
/// above `threshold` are speech, gaps shorter than `min_silence` are bridged, regions shorter
/// than `min_speech` dropped, each region padded by `pad` on both sides (without overlapping
/// its neighbours).
pub fn regions_from_probabilities(
    probabilities: &[f32],
    frame: f64,
    threshold: f32,
    min_silence: f64,
    min_speech: f64,
    pad: f64,
) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut start = None;
    for (i, &p) in probabilities
        .iter()
        .chain(std::iter::once(&0.0))
        .enumerate()
    {
        let t = i as f64 * frame;
        match (p >= threshold && i < probabilities.len(), start) {
            (true, None) => start = Some(t),
            (false, Some(s)) => {
                match out.last_mut() {
                    Some(last) if s - last.1 < min_silence => last.1 = t,
                    _ => out.push((s, t)),
                }
                start = None;
            }
            _ => {}
        }
    }
    out.retain(|(s, e)| e - s >= min_speech);
    let end = probabilities.len() as f64 * frame;
    let padded: Vec<(f64, f64)> = out
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| {
            let lo = if i > 0 { (out[i - 1].1 + s) / 2.0 } else { 0.0 };
            let hi = out.get(i + 1).map_or(end, |n| (e + n.0) / 2.0);
            ((s - pad).max(lo), (e + pad).min(hi))
        })
        .collect();
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_bridge_short_gaps_and_drop_blips() {
        let mut p = vec![0.0f32; 100];
        p[10..30].iter_mut().for_each(|x| *x = 0.9);
        p[32..50].iter_mut().for_each(|x| *x = 0.9);
        p[70..71].iter_mut().for_each(|x| *x = 0.9);
        let r = regions_from_probabilities(&p, 0.01, 0.5, 0.05, 0.05, 0.0);
        assert_eq!(r.len(), 1);
        assert!(
            (r[0].0 - 0.10).abs() < 1e-9 && (r[0].1 - 0.50).abs() < 1e-9,
            "{r:?}"
        );
    }

    /// Records what it is given; every vector is the same.
    struct Recorder {
        calls: Vec<(usize, usize)>,
    }

    impl SpeakerEmbedder for Recorder {
        fn dim(&self) -> usize {
            2
        }

        fn embed_batch(&mut self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>, DiarizeError> {
            Ok(vec![vec![1.0, 0.0]; windows.len()])
        }

        fn embed_windows(
            &mut self,
            regions: &[RegionWindows<'_>],
        ) -> Result<Vec<Vec<f32>>, DiarizeError> {
            let windows: usize = regions.iter().map(|r| r.1.len()).sum();
            let samples: usize = regions.iter().map(|r| r.0.len()).sum();
            self.calls.push((windows, samples));
            for (audio, w) in regions {
                assert!(w.iter().all(|&(a, b)| a < b && b <= audio.len()));
            }
            Ok(vec![vec![1.0, 0.0]; windows])
        }
    }

    #[test]
    fn a_long_region_waits_in_bounded_parts() {
        let mut e = Recorder { calls: Vec::new() };
        let mut d = Diarizer::new(&mut e, DiarizeConfig::default()).unwrap();
        // 10 minutes of one region, then a short one.
        d.push(0.0, &vec![0.1f32; 600 * RATE]).unwrap();
        d.push(700.0, &vec![0.1f32; RATE]).unwrap();
        let out = d.finish().unwrap();
        assert_eq!(out.speakers, 1);
        let windows = out.windows;
        assert!(windows > 790, "{windows}");
        assert_eq!(e.calls.iter().map(|c| c.0).sum::<usize>(), windows);
        // At most 64 windows (33 s of audio at 0.5 s steps) per call.
        assert!(
            e.calls.iter().all(|&(w, s)| w <= 64 && s <= 50 * RATE),
            "{:?}",
            e.calls
        );
    }

    #[test]
    fn runs() {
        assert_eq!(
            runs_of(&[1, 1, 2, 1]),
            vec![(1, 0, 2), (2, 2, 3), (1, 3, 4)]
        );
        assert!(runs_of(&[]).is_empty());
    }
}
