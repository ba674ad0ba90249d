//! Guards against Whisper's known failure modes.

use serde::{Deserialize, Serialize};

use crate::Segment;

/// Why a segment was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DropReason {
    /// The input was digital silence (RMS below the floor): nothing was decoded.
    Silence {
        /// RMS level of the input in dBFS.
        rms_dbfs: f32,
    },
    /// Whisper itself judged the window to hold no speech, and the text is unlikely.
    NoSpeech {
        /// Whisper's no-speech probability.
        no_speech_prob: f32,
        /// Mean log-probability of the text.
        avg_logprob: f32,
    },
    /// The text repeats itself (a decoding loop).
    Repetition {
        /// Share of word n-grams that are repeats.
        repeated_ngram_share: f32,
    },
    /// Known hallucinated boilerplate ("thanks for watching") on very short or unsure input.
    Boilerplate {
        /// The phrase matched.
        phrase: String,
    },
    /// A non-speech annotation such as `[BLANK_AUDIO]` or `(music)`.
    NonSpeechMarker,
    /// The decoder was too unsure of the text (typical of noise).
    LowConfidence {
        /// Mean log-probability of the text.
        avg_logprob: f32,
    },
    /// The segment repeats one just before it (a loop across segments).
    RepeatedSegment,
}

/// Thresholds of the guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// Inputs quieter than this (RMS, dBFS) are not decoded at all.
    pub silence_floor_dbfs: f32,
    /// A segment is dropped when its no-speech probability exceeds this...
    pub no_speech_threshold: f32,
    /// ... and its mean log-probability is below this.
    pub logprob_threshold: f32,
    /// Segments whose share of repeated word 3-grams exceeds this are loops.
    pub max_repeated_ngram_share: f32,
    /// Inputs up to this long (seconds) are checked for boilerplate.
    pub short_input_seconds: f64,
    /// Segments whose mean log-probability is below this are dropped whatever Whisper's
    /// no-speech probability says (whisper.cpp reports it after the task prompt, where it is
    /// nearly always 0).
    pub min_avg_logprob: f32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            silence_floor_dbfs: -60.0,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            max_repeated_ngram_share: 0.5,
            short_input_seconds: 2.0,
            min_avg_logprob: -1.5,
        }
    }
}

/// Phrases Whisper is known to produce on silence, noise or music (from its subtitle training data).
const BOILERPLATE: &[&str] = &[
    "thank you for watching",
    "thanks for watching",
    "please subscribe",
    "subscribe to my channel",
    "like and subscribe",
    "subtitles by",
    "subtitled by",
    "amara org",
    "transcribed by",
    "see you next time",
    "see you in the next video",
    "bye bye",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Share of word 3-grams (or of words, for texts under 6 words) that repeat an earlier one.
pub(crate) fn repeated_ngram_share(text: &str) -> f32 {
    let w = words(text);
    let n = if w.len() >= 6 { 3 } else { 1 };
    if w.len() < 4 {
        return 0.0;
    }
    let grams: Vec<&[String]> = w.windows(n).collect();
    let mut seen = std::collections::HashSet::new();
    let repeats = grams.iter().filter(|g| !seen.insert(**g)).count();
    repeats as f32 / grams.len() as f32
}

/// RMS level of `audio` in dBFS (-inf for all zeros).
pub fn rms_dbfs(audio: &[f32]) -> f32 {
    if audio.is_empty() {
        return f32::NEG_INFINITY;
    }
    let mean_sq = audio
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / audio.len() as f64;
    (10.0 * mean_sq.log10()) as f32
}

/// Whether the text is only bracketed annotations: `[BLANK_AUDIO]`, `(music)`, `*laughs*`.
fn is_marker(text: &str) -> bool {
    let t = text.trim();
    let mut depth = 0i32;
    let mut outside = String::new();
    for c in t.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            _ if depth <= 0 && c != '*' && c != '♪' => outside.push(c),
            _ => {}
        }
    }
    let starred = t.len() > 2 && t.starts_with('*') && t.ends_with('*');
    !t.is_empty()
        && (starred
            || t.chars().all(|c| c == '♪' || c.is_whitespace())
            || outside.chars().all(|c| !c.is_alphanumeric()))
}

impl GuardConfig {
    /// Like [`GuardConfig::check`], also dropping a segment whose words repeat one of the
    /// `previous` kept segments (Whisper sometimes loops across segments).
    pub fn check_in_context(
        &self,
        segment: &Segment,
        audio_seconds: f64,
        previous: &[Segment],
    ) -> Option<DropReason> {
        self.check(segment, audio_seconds).or_else(|| {
            let w = words(&segment.text);
            previous
                .iter()
                .rev()
                .take(2)
                .any(|p| !w.is_empty() && words(&p.text) == w)
                .then_some(DropReason::RepeatedSegment)
        })
    }

    /// Whether `segment`, decoded from `audio_seconds` of input, should be dropped, and why.
    pub fn check(&self, segment: &Segment, audio_seconds: f64) -> Option<DropReason> {
        if is_marker(&segment.text) {
            return Some(DropReason::NonSpeechMarker);
        }
        if segment.no_speech_prob > self.no_speech_threshold
            && segment.avg_logprob < self.logprob_threshold
        {
            return Some(DropReason::NoSpeech {
                no_speech_prob: segment.no_speech_prob,
                avg_logprob: segment.avg_logprob,
            });
        }
        if segment.avg_logprob < self.min_avg_logprob {
            return Some(DropReason::LowConfidence {
                avg_logprob: segment.avg_logprob,
            });
        }
        let share = repeated_ngram_share(&segment.text);
        if share > self.max_repeated_ngram_share {
            return Some(DropReason::Repetition {
                repeated_ngram_share: share,
            });
        }
        let unsure = segment.no_speech_prob > self.no_speech_threshold / 2.0
            || segment.avg_logprob < self.logprob_threshold;
        if audio_seconds <= self.short_input_seconds || unsure {
            let joined = words(&segment.text).join(" ");
            if let Some(p) = BOILERPLATE.iter().find(|p| joined.contains(*p)) {
                return Some(DropReason::Boilerplate {
                    phrase: (*p).to_string(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(text: &str, no_speech_prob: f32, avg_logprob: f32) -> Segment {
        Segment {
            start: 0.0,
            end: 1.0,
            text: text.into(),
            avg_logprob,
            no_speech_prob,
            words: vec![],
        }
    }

    #[test]
    fn no_speech_needs_both_signals() {
        let g = GuardConfig::default();
        assert!(matches!(
            g.check(&seg(" hello there", 0.9, -1.5), 5.0),
            Some(DropReason::NoSpeech { .. })
        ));
        assert_eq!(g.check(&seg(" hello there", 0.9, -0.2), 5.0), None);
        assert_eq!(g.check(&seg(" hello there", 0.1, -1.5), 5.0), None);
    }

    #[test]
    fn loops_are_caught() {
        let g = GuardConfig::default();
        let looped = " I'm going to go to the store. I'm going to go to the store. I'm going to go to the store. I'm going to go to the store.";
        assert!(matches!(
            g.check(&seg(looped, 0.0, -0.3), 10.0),
            Some(DropReason::Repetition { .. })
        ));
        assert!(matches!(
            g.check(&seg(" no no no no no no", 0.0, -0.3), 3.0),
            Some(DropReason::Repetition { .. })
        ));
        let fine = " He was not an ill disposed young man, and he might even have been made amiable himself.";
        assert_eq!(g.check(&seg(fine, 0.0, -0.3), 10.0), None);
    }

    #[test]
    fn boilerplate_on_short_or_unsure_input() {
        let g = GuardConfig::default();
        assert!(matches!(
            g.check(&seg(" Thank you for watching!", 0.1, -0.4), 1.0),
            Some(DropReason::Boilerplate { .. })
        ));
        assert!(matches!(
            g.check(&seg(" Thanks for watching.", 0.4, -0.4), 20.0),
            Some(DropReason::Boilerplate { .. })
        ));
        // Said clearly in a long, confident utterance, it is kept.
        assert_eq!(
            g.check(
                &seg(" and thanks for watching the kids yesterday", 0.01, -0.2),
                20.0
            ),
            None
        );
    }

    #[test]
    fn markers_low_confidence_and_repeated_segments() {
        let g = GuardConfig::default();
        for m in [
            " [BLANK_AUDIO]",
            " (music)",
            " [ Silence ]",
            " *laughs*",
            " ♪ ♪",
            "[Music] (applause)",
        ] {
            assert_eq!(
                g.check(&seg(m, 0.0, -0.2), 5.0),
                Some(DropReason::NonSpeechMarker),
                "{m}"
            );
        }
        assert_eq!(
            g.check(&seg(" he said (quietly) hello", 0.0, -0.2), 5.0),
            None
        );
        assert!(matches!(
            g.check(&seg(" 1,5 1,4 1,2", 0.0, -2.4), 5.0),
            Some(DropReason::LowConfidence { .. })
        ));
        let prev = [seg(" Unless to be rather cold-hearted.", 0.0, -0.2)];
        let again = seg(" \"unless to be rather cold hearted\"", 0.0, -0.1);
        assert_eq!(
            g.check_in_context(&again, 5.0, &prev),
            Some(DropReason::RepeatedSegment)
        );
        assert_eq!(
            g.check_in_context(&seg(" and then more", 0.0, -0.1), 5.0, &prev),
            None
        );
    }

    #[test]
    fn rms_levels() {
        assert_eq!(rms_dbfs(&[0.0; 10]), f32::NEG_INFINITY);
        assert!((rms_dbfs(&[1.0; 10])).abs() < 1e-6);
        assert!((rms_dbfs(&[0.1; 10]) + 20.0).abs() < 1e-4);
    }
}
