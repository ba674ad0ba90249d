//! What a diarization is written as: RTTM lines, and a speaker for each transcript segment and
//! word (by the largest overlap in time).

use crate::diarize::{Diarization, SpeakerTurn};

/// Label of speaker `i` in outputs: `SPEAKER_00`, `SPEAKER_01`, ...
pub fn speaker_label(i: usize) -> String {
    format!("SPEAKER_{i:02}")
}

/// `d` as RTTM for file `file_id` (whitespace in it becomes `_`): one `SPEAKER` line per turn;
/// with `overlaps`, one more line per detected overlap for its second speaker.
pub fn rttm(file_id: &str, d: &Diarization, overlaps: bool) -> String {
    let file: String = file_id
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    let file = if file.is_empty() { "_".into() } else { file };
    let mut lines: Vec<(f64, f64, usize)> = d
        .turns
        .iter()
        .map(|t| (t.start, t.end, t.speaker))
        .collect();
    if overlaps {
        lines.extend(d.overlaps.iter().map(|o| (o.start, o.end, o.second)));
    }
    lines.retain(|l| l.1 > l.0);
    lines.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
    lines
        .iter()
        .map(|(s, e, sp)| {
            format!(
                "SPEAKER {file} 1 {s:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                e - s,
                speaker_label(*sp)
            )
        })
        .collect()
}

/// The speaker talking most within `start..end` (`None` when no turn touches it; a span of
/// zero length takes the turn containing or nearest to it within 0.5 s).
pub fn speaker_of(turns: &[SpeakerTurn], start: f64, end: f64) -> Option<usize> {
    let mut talk: Vec<(usize, f64)> = Vec::new();
    for t in turns {
        let o = t.end.min(end) - t.start.max(start);
        if o > 0.0 {
            match talk.iter_mut().find(|x| x.0 == t.speaker) {
                Some(x) => x.1 += o,
                None => talk.push((t.speaker, o)),
            }
        }
    }
    if let Some(best) = talk.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        return Some(best.0);
    }
    let mid = (start + end) / 2.0;
    turns
        .iter()
        .map(|t| (t.speaker, (t.start - mid).max(mid - t.end).max(0.0)))
        .filter(|x| x.1 <= 0.5)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|x| x.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diarize::Overlap;

    #[test]
    fn rttm_and_segment_speakers() {
        let d = Diarization {
            speakers: 2,
            centroids: Vec::new(),
            turns: vec![
                SpeakerTurn {
                    speaker: 0,
                    start: 0.0,
                    end: 2.0,
                },
                SpeakerTurn {
                    speaker: 1,
                    start: 2.0,
                    end: 3.5,
                },
            ],
            overlaps: vec![Overlap {
                start: 1.5,
                end: 2.0,
                main: 0,
                second: 1,
            }],
            windows: 4,
        };
        let r = rttm("my file", &d, true);
        assert_eq!(r.lines().count(), 3);
        assert!(r.starts_with("SPEAKER my_file 1 0.000 2.000 <NA> <NA> SPEAKER_00"));
        assert_eq!(rttm("f", &d, false).lines().count(), 2);
        assert_eq!(speaker_of(&d.turns, 1.0, 2.6), Some(0));
        assert_eq!(speaker_of(&d.turns, 1.8, 3.0), Some(1));
        assert_eq!(speaker_of(&d.turns, 3.7, 3.8), Some(1));
        assert_eq!(speaker_of(&d.turns, 9.0, 9.5), None);
    }
}
