//! Naming diarized speakers after enrolled voiceprints: each speaker's centroid is compared
//! with every print (cosine), pairs are taken best first, one print per speaker and one speaker
//! per print, and only when the similarity clears a threshold; the rest stay unknown.
//!
//! The default threshold, [`IDENTIFY_THRESHOLD`], comes from the same-speaker and
//! cross-speaker distributions measured by `cargo bench -p nina-diarize --bench voiceprints`
//! (docs/diarize.md, "Voiceprints").

use crate::embed::cosine;

/// Cosine similarity a speaker's centroid must reach to a CAM++ voiceprint to take its name.
/// Measured on 20 speakers (the test voices, their 10 % speed variants and the pyannote call),
/// with windows pooled as diarization pools them: no different voice reached it with 2 s of
/// speech (0 of 977 pairs) and 1 of 342 did with 5 s (false-accept rate 0.29 %); a speaker's
/// own print scored at least 0.864 with 5 s (no false reject) and under it for 8 of 57 pieces of
/// 2 s (unknown rather than misnamed).
pub const IDENTIFY_THRESHOLD: f32 = 0.75;

/// A speaker named after a print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// The print's owner (a Discord user id).
    pub user: u64,
    /// Cosine similarity of the speaker's centroid to the print.
    pub similarity: f32,
}

/// For each of `centroids` (a stream's speakers), the print of `prints` (`(user, unit-length
/// embedding)`) it is given, if any. Prints of another size than a centroid are never matched.
pub fn identify(
    centroids: &[Vec<f32>],
    prints: &[(u64, Vec<f32>)],
    threshold: f32,
) -> Vec<Option<Match>> {
    let mut pairs = Vec::new();
    for (i, c) in centroids.iter().enumerate() {
        for (j, (_, p)) in prints.iter().enumerate() {
            if p.len() != c.len() || c.is_empty() {
                continue;
            }
            let s = cosine(c, p);
            if s.is_finite() && s >= threshold {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = vec![None; centroids.len()];
    let mut taken = vec![false; prints.len()];
    for (s, i, j) in pairs {
        if out[i].is_none() && !taken[j] {
            taken[j] = true;
            out[i] = Some(Match {
                user: prints[j].0,
                similarity: s,
            });
        }
    }
    out
}

/// The speaker holding at least `share` of the stream's speech in `seconds` (per speaker), if
/// any: the stream's one clean voice, fit to enrol its owner with.
pub fn dominant(seconds: &[f64], share: f64) -> Option<usize> {
    let total: f64 = seconds.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let (i, best) = seconds
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    (*best / total >= share).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_pairs_first_one_to_one_above_the_threshold() {
        let c = vec![
            vec![1.0, 0.0],
            vec![0.8, 0.6],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
        ];
        let p = vec![(10, vec![1.0, 0.0]), (20, vec![0.0, 1.0])];
        let m = identify(&c, &p, 0.5);
        assert_eq!(m[0].map(|m| m.user), Some(10));
        // Speaker 1 clears the threshold for both prints (0.8 and 0.6), but each went first to
        // a closer speaker: no print is given twice.
        assert_eq!(m[1], None);
        assert_eq!(m[2].map(|m| m.user), Some(20));
        assert_eq!(m[3], None, "far from every print: unknown");
        assert!((m[0].unwrap().similarity - 1.0).abs() < 1e-6);
    }

    #[test]
    fn nothing_is_named_without_prints_or_with_mismatched_sizes() {
        assert_eq!(identify(&[vec![1.0, 0.0]], &[], 0.0), vec![None]);
        assert_eq!(
            identify(&[vec![1.0, 0.0]], &[(1, vec![1.0])], 0.0),
            vec![None]
        );
        assert_eq!(identify(&[vec![]], &[(1, vec![])], 0.0), vec![None]);
        assert!(identify(&[], &[(1, vec![1.0])], 0.0).is_empty());
    }

    #[test]
    fn a_dominant_speaker_needs_the_share() {
        assert_eq!(dominant(&[9.5, 0.5], 0.9), Some(0));
        assert_eq!(dominant(&[5.0, 5.0], 0.9), None);
        assert_eq!(dominant(&[0.0, 3.0], 0.9), Some(1));
        assert_eq!(dominant(&[], 0.9), None);
        assert_eq!(dominant(&[0.0], 0.9), None);
    }
}
