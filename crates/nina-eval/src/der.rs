//! Diarization error rate (DER), as NIST md-eval and pyannote.metrics compute it.
//!
//! Time is cut at every boundary of either side. In each piece, with `R` reference speakers
//! and `H` hypothesis speakers talking, `max(0, R − H)` is missed speech, `max(0, H − R)` false
//! alarm and `min(R, H) − C` confusion, where `C` counts the reference speakers whose mapped
//! hypothesis speaker is talking too; each is weighted by the piece's length. The mapping is
//! the one-to-one pairing of speakers that maximises their total overlap (Hungarian
//! algorithm). DER is the sum of the three over the total reference speech (overlapped speech
//! counts once per speaker). A collar removes `collar` seconds on each side of every
//! reference boundary from scoring, forgiving imprecise turn edges.

use std::collections::HashMap;

use pathfinding::prelude::{Matrix, kuhn_munkres};
use serde::Serialize;

use crate::testdata::Turn;

/// The score, in seconds of speech and as a rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Der {
    /// Reference speech scored (seconds, once per speaker talking).
    pub total: f64,
    /// Reference speech with nobody (or too few) in the hypothesis.
    pub missed: f64,
    /// Hypothesis speech where the reference has nobody (or fewer).
    pub false_alarm: f64,
    /// Speech given to the wrong speaker.
    pub confusion: f64,
    /// `(missed + false_alarm + confusion) / total` (0 when there is no reference speech).
    pub der: f64,
    /// The collar used (seconds on each side of every reference boundary).
    pub collar: f64,
    /// Reference speaker -> hypothesis speaker, by the optimal mapping (unmapped ones absent).
    pub mapping: Vec<(String, String)>,
}

/// One piece of time with who talks in it.
struct Piece {
    len: f64,
    refs: Vec<usize>,
    hyps: Vec<usize>,
}

/// Scores `hypothesis` against `reference` with `collar` seconds (0 and 0.25 are usual).
/// Turns with `end <= start` are ignored.
pub fn der(reference: &[Turn], hypothesis: &[Turn], collar: f64) -> Der {
    let collar = if collar.is_finite() {
        collar.max(0.0)
    } else {
        0.0
    };
    let mut names = [Vec::<String>::new(), Vec::new()];
    let mut index = [HashMap::<&str, usize>::new(), HashMap::new()];
    // Events: (time, kind, delta), kind 0 = reference speaker i, 1 = hypothesis speaker i,
    // 2 = collar.
    let mut events: Vec<(f64, u8, usize, i32)> = Vec::new();
    for (side, turns) in [reference, hypothesis].into_iter().enumerate() {
        for t in turns
            .iter()
            .filter(|t| t.start.is_finite() && t.end.is_finite() && t.end > t.start)
        {
            let n = names[side].len();
            let i = *index[side].entry(t.speaker.as_str()).or_insert(n);
            if i == n {
                names[side].push(t.speaker.clone());
            }
            events.push((t.start, side as u8, i, 1));
            events.push((t.end, side as u8, i, -1));
            if side == 0 && collar > 0.0 {
                for b in [t.start, t.end] {
                    events.push(((b - collar).max(0.0), 2, 0, 1));
                    events.push((b + collar, 2, 0, -1));
                }
            }
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (nr, nh) = (names[0].len(), names[1].len());
    let mut active = [vec![0i32; nr], vec![0i32; nh]];
    let mut in_collar = 0i32;
    let mut pieces = Vec::new();
    let mut overlap = vec![vec![0.0f64; nh]; nr];
    let mut k = 0;
    while k < events.len() {
        let t = events[k].0;
        while k < events.len() && events[k].0 == t {
            let (_, kind, i, d) = events[k];
            match kind {
                2 => in_collar += d,
                side => active[side as usize][i] += d,
            }
            k += 1;
        }
        let Some(next) = events.get(k).map(|e| e.0) else {
            break;
        };
        if in_collar > 0 || next <= t {
            continue;
        }
        let on = |v: &[i32]| -> Vec<usize> { (0..v.len()).filter(|i| v[*i] > 0).collect() };
        let piece = Piece {
            len: next - t,
            refs: on(&active[0]),
            hyps: on(&active[1]),
        };
        for r in &piece.refs {
            for h in &piece.hyps {
                overlap[*r][*h] += piece.len;
            }
        }
        if !piece.refs.is_empty() || !piece.hyps.is_empty() {
            pieces.push(piece);
        }
    }
    let map = best_mapping(&overlap, nr, nh);
    let (mut total, mut missed, mut fa, mut conf) = (0.0, 0.0, 0.0, 0.0);
    for p in &pieces {
        let (r, h) = (p.refs.len() as f64, p.hyps.len() as f64);
        let correct = p
            .refs
            .iter()
            .filter(|i| map[**i].is_some_and(|j| p.hyps.contains(&j)))
            .count() as f64;
        total += p.len * r;
        missed += p.len * (r - h).max(0.0);
        fa += p.len * (h - r).max(0.0);
        conf += p.len * (r.min(h) - correct);
    }
    let mapping = map
        .iter()
        .enumerate()
        .filter_map(|(i, j)| j.map(|j| (names[0][i].clone(), names[1][j].clone())))
        .collect();
    Der {
        total,
        missed,
        false_alarm: fa,
        confusion: conf,
        der: if total > 0.0 {
            (missed + fa + conf) / total
        } else {
            0.0
        },
        collar,
        mapping,
    }
}

/// For each reference speaker, the hypothesis speaker of the one-to-one mapping with the most
/// overlap in total (pairs that never overlap are left unmapped).
fn best_mapping(overlap: &[Vec<f64>], nr: usize, nh: usize) -> Vec<Option<usize>> {
    let mut map = vec![None; nr];
    if nr == 0 || nh == 0 {
        return map;
    }
    // Microseconds as integers; kuhn_munkres wants rows <= columns.
    let w = |r: usize, h: usize| (overlap[r][h] * 1e6).round() as i64;
    if nr <= nh {
        let m = Matrix::from_fn(nr, nh, |(r, h)| w(r, h));
        let (_, cols) = kuhn_munkres(&m);
        for (r, h) in cols.into_iter().enumerate() {
            map[r] = Some(h);
        }
    } else {
        let m = Matrix::from_fn(nh, nr, |(h, r)| w(r, h));
        let (_, cols) = kuhn_munkres(&m);
        for (h, r) in cols.into_iter().enumerate() {
            map[r] = Some(h);
        }
    }
    for (r, h) in map.iter_mut().enumerate() {
        if h.is_some_and(|j| overlap[r][j] <= 0.0) {
            *h = None;
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(speaker: &str, start: f64, end: f64) -> Turn {
        Turn {
            speaker: speaker.into(),
            start,
            end,
            text: String::new(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_perfect_hypothesis_with_other_names_scores_zero() {
        let r = [t("A", 0.0, 5.0), t("B", 5.0, 9.0), t("A", 9.0, 10.0)];
        let h = [t("s1", 0.0, 5.0), t("s0", 5.0, 9.0), t("s1", 9.0, 10.0)];
        let d = der(&r, &h, 0.0);
        assert!(close(d.der, 0.0) && close(d.total, 10.0), "{d:?}");
        assert_eq!(
            d.mapping,
            vec![("A".into(), "s1".into()), ("B".into(), "s0".into())]
        );
    }

    #[test]
    fn missed_false_alarm_and_confusion_are_told_apart() {
        // A talks 0-10, B 10-20. The hypothesis: X 0-8 (2 s of A missed), X 10-12 (confusion:
        // X is A's), Y 12-20, and Y 20-23 (false alarm).
        let r = [t("A", 0.0, 10.0), t("B", 10.0, 20.0)];
        let h = [t("X", 0.0, 8.0), t("X", 10.0, 12.0), t("Y", 12.0, 23.0)];
        let d = der(&r, &h, 0.0);
        assert!(close(d.total, 20.0));
        assert!(close(d.missed, 2.0), "{d:?}");
        assert!(close(d.confusion, 2.0), "{d:?}");
        assert!(close(d.false_alarm, 3.0), "{d:?}");
        assert!(close(d.der, 7.0 / 20.0));
    }

    #[test]
    fn overlapped_speech_counts_per_speaker() {
        // A 0-10 and B 5-10 overlap; the hypothesis hears only A.
        let r = [t("A", 0.0, 10.0), t("B", 5.0, 10.0)];
        let h = [t("X", 0.0, 10.0)];
        let d = der(&r, &h, 0.0);
        assert!(close(d.total, 15.0));
        assert!(close(d.missed, 5.0) && close(d.confusion, 0.0), "{d:?}");
        // Two hypothesis speakers where there is one: a false alarm, not confusion.
        let d = der(
            &[t("A", 0.0, 4.0)],
            &[t("X", 0.0, 4.0), t("Y", 0.0, 4.0)],
            0.0,
        );
        assert!(
            close(d.false_alarm, 4.0) && close(d.confusion, 0.0),
            "{d:?}"
        );
    }

    #[test]
    fn the_collar_forgives_edges_only() {
        // Boundary at 5 s, the hypothesis puts it at 5.2 s.
        let r = [t("A", 0.0, 5.0), t("B", 5.0, 10.0)];
        let h = [t("X", 0.0, 5.2), t("Y", 5.2, 10.0)];
        let strict = der(&r, &h, 0.0);
        assert!(close(strict.confusion, 0.2), "{strict:?}");
        let lenient = der(&r, &h, 0.25);
        assert!(close(lenient.der, 0.0), "{lenient:?}");
        // Total shrinks by the collars: 0.25 at 0 s, 0.5 around 5 s, 0.25 before 10 s.
        assert!(close(lenient.total, 9.0), "{lenient:?}");
    }

    #[test]
    fn the_mapping_is_optimal_not_greedy() {
        // Greedy on the largest overlap would pair A-X (6 s) and leave B-Y (1 s): total 7 s.
        // The best is A-Y (5 s) and B-X (5 s): 10 s.
        let r = [t("A", 0.0, 6.0), t("A", 10.0, 15.0), t("B", 20.0, 25.0)];
        let h = [t("X", 0.0, 6.0), t("Y", 10.0, 15.0), t("X", 20.0, 25.0)];
        let d = der(&r, &h, 0.0);
        assert!(close(d.confusion, 6.0), "{d:?}");
        let with_b = d.mapping.iter().find(|(r, _)| r == "B").unwrap();
        assert_eq!(with_b.1, "X");
    }

    #[test]
    fn empty_sides_and_bad_turns() {
        let d = der(&[], &[t("X", 0.0, 1.0)], 0.25);
        assert_eq!((d.total, d.der), (0.0, 0.0));
        assert!(close(d.false_alarm, 1.0));
        let d = der(&[t("A", 0.0, 2.0), t("A", 3.0, f64::NAN)], &[], 0.0);
        assert!(close(d.missed, 2.0) && close(d.der, 1.0), "{d:?}");
    }

    proptest::proptest! {
        /// Any turns: the parts add up, nothing is negative, and a hypothesis equal to the
        /// reference scores 0.
        #[test]
        fn parts_add_up(turns in proptest::collection::vec((0u8..4, 0u32..600, 1u32..100, proptest::bool::ANY), 0..40)) {
            let (r, h): (Vec<_>, Vec<_>) = turns.iter().partition(|x| x.3);
            let mk = |v: &[&(u8, u32, u32, bool)], p: &str| -> Vec<Turn> {
                v.iter().map(|(s, a, l, _)| t(&format!("{p}{s}"), f64::from(*a) / 10.0, f64::from(a + l) / 10.0)).collect()
            };
            let (r, h) = (mk(&r, "r"), mk(&h, "h"));
            let d = der(&r, &h, 0.25);
            proptest::prop_assert!(d.missed >= -1e-9 && d.false_alarm >= -1e-9 && d.confusion >= -1e-9);
            proptest::prop_assert!(d.missed + d.confusion <= d.total + 1e-6);
            let same = der(&r, &r, 0.0);
            proptest::prop_assert!(same.der.abs() < 1e-9, "{:?}", same);
        }
    }
}
