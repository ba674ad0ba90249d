//! Conversations synthesized from single-speaker clips, with an exact reference: who speaks
//! when is known because we placed it. Turns are pieces of each voice's clips, cut to a length
//! range and trimmed to their voiced span (so the reference holds no edge silence), levelled
//! to one loudness, and laid out one after another with pauses, or overlapping the previous
//! turn with some probability. Deterministic for a seed.

use crate::testdata::{self, Turn};

/// Sample rate of everything here.
pub const RATE: u32 = 16_000;

/// One speaker and their clips (16 kHz mono, in `[-1, 1]`).
#[derive(Debug, Clone)]
pub struct Voice {
    /// Speaker name in the reference.
    pub name: String,
    /// Speech clips.
    pub clips: Vec<Vec<f32>>,
}

/// How to lay out a conversation.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Length to reach, seconds (the last turn may end a little later).
    pub seconds: f64,
    /// Turn length range, seconds (before trimming to the voiced span).
    pub turn: (f64, f64),
    /// Pause between turns, seconds.
    pub pause: (f64, f64),
    /// Chance that a turn starts before the previous one ends.
    pub overlap_chance: f64,
    /// How far into the previous turn an overlapping one starts, seconds.
    pub overlap: (f64, f64),
    /// Random seed.
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            seconds: 120.0,
            turn: (1.0, 2.0),
            pause: (0.2, 0.8),
            overlap_chance: 0.0,
            overlap: (0.3, 0.8),
            seed: 1,
        }
    }
}

/// A synthesized conversation and its reference.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The mix, 16 kHz mono.
    pub audio: Vec<f32>,
    /// Who speaks when (turns may overlap).
    pub turns: Vec<Turn>,
    /// Seconds where two or more speak at once.
    pub overlapped: f64,
}

/// The test voices `scripts/setup.sh` provides: the LibriVox reader, the cards speaker and
/// the four flite voices (six speakers).
pub fn test_voices() -> Result<Vec<Voice>, testdata::TestDataError> {
    let read = |clips: Vec<testdata::Clip>| -> Result<Vec<Vec<f32>>, testdata::TestDataError> {
        clips
            .iter()
            .map(|c| testdata::read_wav_16k_mono(&c.path))
            .collect()
    };
    let mut voices = vec![
        Voice {
            name: "reader".into(),
            clips: read(testdata::librivox()?)?,
        },
        Voice {
            name: "cards".into(),
            clips: read(testdata::cards()?)?,
        },
    ];
    for v in ["slt", "rms", "awb", "kal16"] {
        voices.push(Voice {
            name: v.into(),
            clips: read(testdata::flite(v)?)?,
        });
    }
    Ok(voices)
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, (lo, hi): (f64, f64)) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// 10 ms frames louder than 30 dB below the clip's loudest: `(first, last + 1)` voiced sample.
fn voiced_span(x: &[f32]) -> Option<(usize, usize)> {
    let frame = RATE as usize / 100;
    let energy: Vec<f32> = x
        .chunks(frame)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let peak = energy.iter().copied().fold(0.0f32, f32::max);
    if peak <= 0.0 {
        return None;
    }
    let on = |e: &f32| *e > peak * 1e-3;
    let first = energy.iter().position(on)?;
    let last = energy.iter().rposition(on)?;
    Some((first * frame, ((last + 1) * frame).min(x.len())))
}

/// RMS of the voiced part.
fn level(x: &[f32]) -> f32 {
    let frame = RATE as usize / 100;
    let energies: Vec<f32> = x
        .chunks(frame)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let peak = energies.iter().copied().fold(0.0f32, f32::max);
    let voiced: Vec<f32> = energies.into_iter().filter(|e| *e > peak * 1e-3).collect();
    if voiced.is_empty() {
        return 0.0;
    }
    (voiced.iter().sum::<f32>() / voiced.len() as f32).sqrt()
}

/// Lays out a conversation among `voices` (at least two with speech) by `spec`.
pub fn synthesize(voices: &[Voice], spec: &Spec) -> Conversation {
    // Each voice's clips trimmed and levelled to -23 dBFS RMS over their voiced part.
    let target = 10f32.powf(-23.0 / 20.0);
    let pools: Vec<Vec<Vec<f32>>> = voices
        .iter()
        .map(|v| {
            v.clips
                .iter()
                .filter_map(|c| {
                    let (a, b) = voiced_span(c)?;
                    let c = &c[a..b];
                    let l = level(c);
                    (l > 0.0).then(|| c.iter().map(|s| s * target / l).collect())
                })
                .collect()
        })
        .collect();
    let speakers: Vec<usize> = (0..voices.len())
        .filter(|i| !pools[*i].is_empty())
        .collect();
    let mut rng = Rng(spec.seed);
    let mut audio: Vec<f32> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut last: Option<usize> = None;
    let mut cursor = 0.0f64;
    if speakers.len() < 2 {
        return Conversation {
            audio,
            turns,
            overlapped: 0.0,
        };
    }
    while cursor < spec.seconds {
        // Another speaker than the last.
        let who = loop {
            let s = speakers[rng.below(speakers.len())];
            if Some(s) != last {
                break s;
            }
        };
        let pool = &pools[who];
        let clip = &pool[rng.below(pool.len())];
        let want = (rng.range(spec.turn) * f64::from(RATE)) as usize;
        let len = want.min(clip.len());
        let from = rng.below(clip.len() - len + 1);
        let piece = &clip[from..from + len];
        let Some((a, b)) = voiced_span(piece) else {
            continue;
        };
        let piece = &piece[a..b];
        let start = match turns.last() {
            Some(prev) if rng.range((0.0, 1.0)) < spec.overlap_chance => {
                let into = rng.range(spec.overlap).min((prev.end - prev.start) * 0.8);
                prev.end - into
            }
            Some(_) => cursor + rng.range(spec.pause),
            None => rng.range(spec.pause),
        };
        let at = (start * f64::from(RATE)).round() as usize;
        if audio.len() < at + piece.len() {
            audio.resize(at + piece.len(), 0.0);
        }
        for (o, s) in audio[at..at + piece.len()].iter_mut().zip(piece) {
            *o += s;
        }
        let start = at as f64 / f64::from(RATE);
        let end = (at + piece.len()) as f64 / f64::from(RATE);
        turns.push(Turn {
            speaker: voices[who].name.clone(),
            start,
            end,
            text: String::new(),
        });
        cursor = cursor.max(end);
        last = Some(who);
    }
    for s in &mut audio {
        *s = s.clamp(-1.0, 1.0);
    }
    let overlapped = overlap_seconds(&turns);
    Conversation {
        audio,
        turns,
        overlapped,
    }
}

/// Seconds where two or more turns overlap.
pub fn overlap_seconds(turns: &[Turn]) -> f64 {
    let mut ev: Vec<(f64, i32)> = turns
        .iter()
        .flat_map(|t| [(t.start, 1), (t.end, -1)])
        .collect();
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut depth, mut at, mut total) = (0, 0.0, 0.0);
    for (t, d) in ev {
        if depth >= 2 {
            total += t - at;
        }
        depth += d;
        at = t;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "voice" of tone bursts: 1 s of tone, 0.2 s of silence around it.
    fn tone_voice(name: &str, hz: f32) -> Voice {
        let mut clip = vec![0.0f32; 3200];
        clip.extend(
            (0..16_000).map(|i| 0.3 * (i as f32 * hz * std::f32::consts::TAU / 16_000.0).sin()),
        );
        clip.extend(vec![0.0f32; 3200]);
        Voice {
            name: name.into(),
            clips: vec![clip],
        }
    }

    #[test]
    fn turns_alternate_fit_the_spec_and_match_the_audio() {
        let voices = [
            tone_voice("a", 200.0),
            tone_voice("b", 300.0),
            tone_voice("c", 450.0),
        ];
        let spec = Spec {
            seconds: 60.0,
            turn: (0.5, 2.0),
            ..Spec::default()
        };
        let c = synthesize(&voices, &spec);
        assert!(c.turns.len() > 30, "{}", c.turns.len());
        assert!(c.turns.last().unwrap().end >= 60.0);
        for w in c.turns.windows(2) {
            assert_ne!(w[0].speaker, w[1].speaker);
            let pause = w[1].start - w[0].end;
            assert!((0.19..=0.81).contains(&pause), "{pause}");
        }
        for t in &c.turns {
            // Trimmed to the tone: at most 1 s, every 10 ms of it loud.
            assert!(t.end - t.start <= 1.0 + 1e-9, "{t:?}");
            let a = (t.start * 16_000.0) as usize;
            let b = (t.end * 16_000.0) as usize;
            for ch in c.audio[a..b].chunks(160) {
                let rms = (ch.iter().map(|s| s * s).sum::<f32>() / ch.len() as f32).sqrt();
                assert!(rms > 0.01, "{t:?}");
            }
        }
        // Outside the turns: silence.
        let mut covered = vec![false; c.audio.len()];
        for t in &c.turns {
            covered[(t.start * 16_000.0) as usize..(t.end * 16_000.0) as usize].fill(true);
        }
        assert!(c.audio.iter().zip(&covered).all(|(s, v)| *v || *s == 0.0));
        assert_eq!(c.overlapped, 0.0);
        // Deterministic.
        assert_eq!(synthesize(&voices, &spec).turns, c.turns);
    }

    #[test]
    fn overlaps_are_made_and_measured() {
        let voices = [tone_voice("a", 200.0), tone_voice("b", 300.0)];
        let spec = Spec {
            seconds: 60.0,
            overlap_chance: 0.5,
            ..Spec::default()
        };
        let c = synthesize(&voices, &spec);
        assert!(c.overlapped > 3.0, "{}", c.overlapped);
        let by_hand: f64 = c
            .turns
            .windows(2)
            .map(|w| (w[0].end - w[1].start).max(0.0))
            .sum();
        // Adjacent turns account for nearly all of it (a turn can reach back two).
        assert!(
            (by_hand - c.overlapped).abs() < 0.2 * c.overlapped,
            "{by_hand}"
        );
        // Fewer than two voices with speech: nothing.
        assert!(synthesize(&voices[..1], &spec).turns.is_empty());
    }
}
