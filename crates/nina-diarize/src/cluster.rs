//! Agglomerative clustering of unit-length speaker vectors: average linkage on cosine distance
//! (`kodama`), cut at a calibrated distance or at a given number of clusters, over at most
//! [`ClusterConfig::max_joint`] vectors at once; the rest are assigned to the nearest centroid,
//! so memory stays bounded on any length of input.

use crate::DiarizeError;

/// How vectors are clustered into speakers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Cosine *similarity* under which two clusters are not merged (average linkage). Calibrated
    /// on the synthesized conversations and the pyannote sample (docs/diarize.md).
    pub threshold: f32,
    /// Exactly this many speakers (overrides the threshold).
    pub speakers: Option<usize>,
    /// At least this many speakers.
    pub min_speakers: usize,
    /// At most this many speakers.
    pub max_speakers: usize,
    /// Most vectors clustered jointly: the condensed distance matrix holds
    /// `max_joint * (max_joint - 1) / 2` `f32`s (2,000: 8 MB). Longer inputs are subsampled
    /// evenly for the joint clustering, then every vector goes to its nearest centroid.
    pub max_joint: usize,
    /// With the number of speakers unknown, a cluster holding fewer than this share of the
    /// jointly clustered vectors (or fewer than 3: about 2.5 s of speech) is folded into its nearest: stray windows
    /// (laughter, noise, a cough) are not speakers.
    pub min_cluster_share: f32,
    /// ... and one holding fewer than this share is folded into its nearest when their centroids'
    /// cosine is at least [`ClusterConfig::small_cluster_merge`]: windows straddling two
    /// speakers, or a voice split in two, gather in small clusters close to a large one.
    pub small_cluster_share: f32,
    /// See [`ClusterConfig::small_cluster_share`].
    pub small_cluster_merge: f32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            threshold: 0.62,
            speakers: None,
            min_speakers: 1,
            max_speakers: 20,
            max_joint: 2000,
            min_cluster_share: 0.03,
            small_cluster_share: 0.1,
            small_cluster_merge: 0.65,
        }
    }
}

impl ClusterConfig {
    /// Checks that the values are usable together.
    pub fn validate(&self) -> Result<(), DiarizeError> {
        let bad = |m: String| Err(DiarizeError::Config(m));
        if !(self.threshold.is_finite() && (-1.0..=1.0).contains(&self.threshold)) {
            return bad(format!(
                "threshold {} is not a cosine in [-1, 1]",
                self.threshold
            ));
        }
        if self.speakers == Some(0) {
            return bad("speakers must be at least 1".into());
        }
        if self.min_speakers == 0 || self.min_speakers > self.max_speakers {
            return bad(format!(
                "min_speakers {} and max_speakers {}: need 1 <= min <= max",
                self.min_speakers, self.max_speakers
            ));
        }
        if self.max_joint < 2 {
            return bad("max_joint must be at least 2".into());
        }
        if !(0.0..1.0).contains(&self.small_cluster_share)
            || !(-1.0..=1.0).contains(&self.small_cluster_merge)
        {
            return bad("small_cluster_share in [0, 1) and small_cluster_merge in [-1, 1]".into());
        }
        if !(0.0..1.0).contains(&self.min_cluster_share) {
            return bad(format!(
                "min_cluster_share {} not in [0, 1)",
                self.min_cluster_share
            ));
        }
        Ok(())
    }
}

/// The result: a label per vector (`0..centroids.len()`), and unit-length centroids.
#[derive(Debug, Clone)]
pub struct Clusters {
    /// Cluster of each input vector.
    pub labels: Vec<usize>,
    /// Unit-length mean of each cluster's vectors.
    pub centroids: Vec<Vec<f32>>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Unit-length means of the vectors of each label (`k` labels; an empty one gets zeros).
fn centroids(vectors: &[&[f32]], labels: &[usize], k: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut c = vec![vec![0.0f32; dim]; k];
    for (v, &l) in vectors.iter().zip(labels) {
        c[l].iter_mut().zip(v.iter()).for_each(|(a, b)| *a += b);
    }
    c.iter_mut().for_each(|v| normalize(v));
    c
}

/// The index of the centroid most similar to `v`, and that similarity.
pub fn nearest(v: &[f32], centroids: &[Vec<f32>]) -> (usize, f32) {
    centroids
        .iter()
        .enumerate()
        .map(|(i, c)| (i, dot(v, c)))
        .fold((0, f32::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b })
}

/// Clusters unit-length `vectors` (all of one length) by `cfg`.
pub fn cluster(vectors: &[&[f32]], cfg: &ClusterConfig) -> Result<Clusters, DiarizeError> {
    cfg.validate()?;
    let n = vectors.len();
    let dim = vectors.first().map_or(0, |v| v.len());
    if vectors
        .iter()
        .any(|v| v.len() != dim || v.iter().any(|x| !x.is_finite()))
    {
        return Err(DiarizeError::Audio(
            "speaker vectors of unequal length or not finite".into(),
        ));
    }
    if n == 0 {
        return Ok(Clusters {
            labels: vec![],
            centroids: vec![],
        });
    }
    // The joint set: every vector, or an even subsample of max_joint.
    let joint: Vec<usize> = if n <= cfg.max_joint {
        (0..n).collect()
    } else {
        (0..cfg.max_joint).map(|i| i * n / cfg.max_joint).collect()
    };
    let m = joint.len();
    let (min_k, max_k) = match cfg.speakers {
        Some(s) => (s.min(m), s.min(m)),
        None => (cfg.min_speakers.min(m), cfg.max_speakers.min(m)),
    };
    let mut parent: Vec<usize> = (0..2 * m).collect();
    if m > 1 {
        let mut condensed = Vec::with_capacity(m * (m - 1) / 2);
        for i in 0..m {
            for j in i + 1..m {
                condensed.push((1.0 - dot(vectors[joint[i]], vectors[joint[j]])).max(0.0));
            }
        }
        let dendrogram = kodama::linkage(&mut condensed, m, kodama::Method::Average);
        drop(condensed);
        let below = dendrogram
            .steps()
            .iter()
            .take_while(|s| s.dissimilarity <= 1.0 - cfg.threshold)
            .count();
        let steps = match cfg.speakers {
            Some(_) => m - max_k,
            None => below.clamp(m - max_k, m - min_k),
        };
        for (i, s) in dendrogram.steps().iter().take(steps).enumerate() {
            parent[s.cluster1] = m + i;
            parent[s.cluster2] = m + i;
        }
    }
    let root = |mut i: usize| {
        while parent[i] != i {
            i = parent[i];
        }
        i
    };
    let mut ids = std::collections::HashMap::new();
    let mut joint_labels: Vec<usize> = (0..m)
        .map(|i| {
            let r = root(i);
            let next = ids.len();
            *ids.entry(r).or_insert(next)
        })
        .collect();
    let mut k = ids.len();
    // Fold stray clusters into their nearest other cluster (number of speakers unknown only):
    // the smallest first, while it is tiny, or small and close to another.
    let jv: Vec<&[f32]> = joint.iter().map(|&i| vectors[i]).collect();
    if cfg.speakers.is_none() {
        let hard = ((m as f32 * cfg.min_cluster_share).ceil() as usize).max(3);
        let soft = (m as f32 * cfg.small_cluster_share).ceil() as usize;
        loop {
            let live: Vec<usize> = {
                let mut seen = vec![false; k];
                joint_labels.iter().for_each(|&l| seen[l] = true);
                (0..k).filter(|&c| seen[c]).collect()
            };
            if live.len() <= min_k.max(1) {
                break;
            }
            let mut sizes = vec![0usize; k];
            joint_labels.iter().for_each(|&l| sizes[l] += 1);
            let cents = centroids(&jv, &joint_labels, k, dim);
            let mut by_size = live.clone();
            by_size.sort_by_key(|&c| sizes[c]);
            let candidate = by_size.iter().find_map(|&small| {
                let (near, cos) = live
                    .iter()
                    .filter(|&&c| c != small)
                    .map(|&c| (c, dot(&cents[small], &cents[c])))
                    .fold(
                        (small, f32::NEG_INFINITY),
                        |b, x| if x.1 > b.1 { x } else { b },
                    );
                let fold =
                    sizes[small] < hard || (sizes[small] < soft && cos >= cfg.small_cluster_merge);
                fold.then_some((small, near, cos))
            });
            let Some((small, near, cos)) = candidate else {
                break;
            };
            tracing::debug!(size = sizes[small], cos, "folded a stray cluster");
            let others: Vec<usize> = live.iter().copied().filter(|&c| c != small).collect();
            let oc: Vec<Vec<f32>> = others.iter().map(|&c| cents[c].clone()).collect();
            for (l, v) in joint_labels.iter_mut().zip(&jv) {
                if *l == small {
                    *l = if sizes[small] < hard {
                        others[nearest(v, &oc).0]
                    } else {
                        near
                    };
                }
            }
        }
        // Renumber densely.
        let mut ids = vec![usize::MAX; k];
        let mut next = 0;
        for l in &mut joint_labels {
            if ids[*l] == usize::MAX {
                ids[*l] = next;
                next += 1;
            }
            *l = ids[*l];
        }
        k = next;
    }
    let mut cents = centroids(&jv, &joint_labels, k, dim);
    if tracing::enabled!(tracing::Level::TRACE) {
        let mut sizes = vec![0usize; k];
        joint_labels.iter().for_each(|&l| sizes[l] += 1);
        for a in 0..k {
            let best = (0..k)
                .filter(|&b| b != a)
                .map(|b| dot(&cents[a], &cents[b]))
                .fold(f32::NEG_INFINITY, f32::max);
            tracing::trace!(cluster = a, size = sizes[a], nearest_centroid_cosine = best);
        }
    }
    // Every vector to its nearest centroid; centroids recomputed over all of them once.
    let mut labels: Vec<usize> = vectors.iter().map(|v| nearest(v, &cents).0).collect();
    if n > m {
        cents = centroids(vectors, &labels, k, dim);
        labels = vectors.iter().map(|v| nearest(v, &cents).0).collect();
    }
    // Renumber by first appearance, dropping clusters left empty.
    let mut order = vec![usize::MAX; k];
    let mut next = 0;
    for &l in &labels {
        if order[l] == usize::MAX {
            order[l] = next;
            next += 1;
        }
    }
    let mut final_cents = vec![Vec::new(); next];
    for (old, &new) in order.iter().enumerate() {
        if new != usize::MAX {
            final_cents[new] = std::mem::take(&mut cents[old]);
        }
    }
    let labels = labels.into_iter().map(|l| order[l]).collect();
    tracing::debug!(vectors = n, joint = m, speakers = next, "clustered");
    Ok(Clusters {
        labels,
        centroids: final_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        normalize(&mut v);
        v
    }

    #[test]
    fn separates_three_directions_and_honours_counts() {
        let mut vs = Vec::new();
        for i in 0..30 {
            let e = (i % 5) as f32 * 0.02;
            vs.push(unit(&[1.0, e, 0.0, 0.0]));
            vs.push(unit(&[0.0, 1.0, e, 0.0]));
            vs.push(unit(&[e, 0.0, 1.0, 0.0]));
        }
        let r: Vec<&[f32]> = vs.iter().map(|v| v.as_slice()).collect();
        let c = cluster(&r, &ClusterConfig::default()).unwrap();
        assert_eq!(c.centroids.len(), 3);
        assert_eq!(&c.labels[..3], &[0, 1, 2]);
        assert!(c.labels.chunks(3).all(|w| w == [0, 1, 2]));
        let two = ClusterConfig {
            speakers: Some(2),
            ..ClusterConfig::default()
        };
        assert_eq!(cluster(&r, &two).unwrap().centroids.len(), 2);
        let min4 = ClusterConfig {
            min_speakers: 4,
            min_cluster_share: 0.0,
            ..ClusterConfig::default()
        };
        assert_eq!(cluster(&r, &min4).unwrap().centroids.len(), 4);
        // Subsampled joint clustering finds the same three.
        let small = ClusterConfig {
            max_joint: 25,
            ..ClusterConfig::default()
        };
        let s = cluster(&r, &small).unwrap();
        assert_eq!(s.centroids.len(), 3);
        assert!(
            s.labels
                .chunks(3)
                .all(|w| w[0] != w[1] && w[1] != w[2] && w[0] != w[2])
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let one = [1.0f32, 0.0];
        let nan = [f32::NAN, 0.0];
        let short = [1.0f32];
        assert!(cluster(&[&one, &nan], &ClusterConfig::default()).is_err());
        assert!(cluster(&[&one, &short], &ClusterConfig::default()).is_err());
        assert!(
            cluster(&[], &ClusterConfig::default())
                .unwrap()
                .labels
                .is_empty()
        );
        assert_eq!(
            cluster(&[&one], &ClusterConfig::default()).unwrap().labels,
            vec![0]
        );
        let bad = ClusterConfig {
            min_speakers: 3,
            max_speakers: 2,
            ..ClusterConfig::default()
        };
        assert!(cluster(&[&one], &bad).is_err());
        let zero = ClusterConfig {
            speakers: Some(0),
            ..ClusterConfig::default()
        };
        assert!(cluster(&[&one], &zero).is_err());
    }
}
