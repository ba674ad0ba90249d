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
    /// The segment repeats one just before it, or (five words or more) earlier text of its
    /// utterance: a loop across segments. The earlier copy is kept.
    RepeatedSegment,
    /// Every word of the segment is timed at or past the end of the audio.
    PastEnd,
    /// The text is one phrase said back to back (`"no no"`, a sentence twice), and the audio
    /// has syllables for about one copy only: a loop too short for the n-gram guard.
    Doubled {
        /// Syllables in the text as decoded.
        text_syllables: usize,
        /// Syllables in its first copy.
        copy_syllables: usize,
        /// Syllable nuclei heard in the audio under the segment.
        heard: usize,
    },
    /// No syllable of the input is voiced (white noise, hiss, a fan): the text is Whisper's
    /// invention, whatever its confidence.
    Unvoiced,
}

impl DropReason {
    /// The reason's name, as in JSON (`repetition`, `low_confidence`...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Silence { .. } => "silence",
            Self::NoSpeech { .. } => "no_speech",
            Self::Repetition { .. } => "repetition",
            Self::Boilerplate { .. } => "boilerplate",
            Self::NonSpeechMarker => "non_speech_marker",
            Self::LowConfidence { .. } => "low_confidence",
            Self::RepeatedSegment => "repeated_segment",
            Self::PastEnd => "past_end",
            Self::Doubled { .. } => "doubled",
            Self::Unvoiced => "unvoiced",
        }
    }

    /// Whether another decode may fix it (a loop, an unsure or misplaced text), rather than it
    /// being evidence that there is no speech (silence, Whisper's no-speech verdict, a
    /// non-speech annotation).
    pub fn retry_may_fix(&self) -> bool {
        matches!(
            self,
            Self::Repetition { .. }
                | Self::RepeatedSegment
                | Self::LowConfidence { .. }
                | Self::Boilerplate { .. }
                | Self::PastEnd
                | Self::Doubled { .. }
        )
    }
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
    /// Drop every segment of an input in which no syllable nucleus is voiced (docs/transcribe.md).
    /// Whispered speech is unvoiced too: turn this off to keep what Whisper makes of it.
    pub drop_unvoiced: bool,
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
            drop_unvoiced: true,
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

/// A segment of at least this many words found word for word in the earlier text of its
/// utterance is a loop, however far back the earlier copy is (people rarely say the same five
/// words twice in 30 s; Whisper does when its timestamps run ahead of the audio).
const LONG_REPEAT_WORDS: usize = 5;

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
    /// Like [`GuardConfig::check`], also dropping a segment that repeats the `previous` kept
    /// segments (Whisper sometimes loops across segments): its words equal one of the two
    /// segments just before it, or, in an input of one 30 s window, from five words on, they
    /// appear word for word anywhere in the earlier text (a loop that goes back to the start
    /// of the utterance; longer inputs may say things twice for real, minutes apart).
    pub fn check_in_context(
        &self,
        segment: &Segment,
        audio_seconds: f64,
        previous: &[Segment],
    ) -> Option<DropReason> {
        self.check(segment, audio_seconds).or_else(|| {
            let w = words(&segment.text);
            let recent = previous
                .iter()
                .rev()
                .take(2)
                .any(|p| !w.is_empty() && words(&p.text) == w);
            let earlier = || {
                let before: Vec<String> = previous.iter().flat_map(|p| words(&p.text)).collect();
                audio_seconds <= 30.0
                    && w.len() >= LONG_REPEAT_WORDS
                    && before.windows(w.len()).any(|x| x == w.as_slice())
            };
            (recent || earlier()).then_some(DropReason::RepeatedSegment)
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
        // Boilerplate is hallucinated on silence and noise, where the decoder is unsure; said
        // with confidence it is speech, however short ("bye bye").
        let unsure = segment.no_speech_prob > self.no_speech_threshold / 2.0
            || segment.avg_logprob < self.logprob_threshold
            || (audio_seconds <= self.short_input_seconds
                && segment.avg_logprob < self.logprob_threshold / 2.0);
        if unsure {
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

/// Syllables of `text`, counted as groups of vowels per word (a final silent `e` of English
/// aside), at least one a word: good enough to tell one copy of a phrase from two.
pub(crate) fn syllables(text: &str) -> usize {
    words(text)
        .iter()
        .map(|w| {
            let vowel = |c: char| "aeiouyáàâãäéèêëíìîïóòôõöúùûüýœæ".contains(c);
            let chars: Vec<char> = w.chars().collect();
            let mut groups = 0;
            let mut prev = false;
            for &c in &chars {
                let v = vowel(c);
                if v && !prev {
                    groups += 1;
                }
                prev = v;
            }
            // "five", "made": a final e after a consonant is silent ("the", "be" keep theirs).
            let n = chars.len();
            if groups > 1
                && n > 2
                && chars[n - 1] == 'e'
                && !vowel(chars[n - 2])
                && chars[n - 2] != 'l'
            {
                groups -= 1;
            }
            groups.max(1)
        })
        .sum()
}

/// Times (seconds) of the syllable nuclei of `audio` (16 kHz mono): peaks of its smoothed
/// 10 ms energy that stand out from the dips around them and are voiced, in the manner of de
/// Jong and Wempe's speech-rate measure. Voicing is judged by the zero-crossing rate instead of
/// their pitch track: the hiss of a final "s" ("yes") is a peak of its own, but no nucleus.
pub(crate) fn syllable_nuclei(audio: &[f32]) -> Vec<f64> {
    const FRAME: usize = 160;
    const SMOOTH: usize = 5;
    /// Peaks must stand this far (dB) above the dip between them and the one before.
    const DIP_DB: f32 = 3.0;
    /// ... and lie within this of the loudest frame.
    const RANGE_DB: f32 = 25.0;
    const FLOOR_DBFS: f32 = -50.0;
    /// Share of samples changing sign above which a frame is unvoiced: vowels stay below 0.1
    /// at 16 kHz, fricatives such as "s" lie near 0.5-0.9.
    const MAX_VOICED_ZCR: f32 = 0.3;
    let energy: Vec<f32> = audio
        .chunks(FRAME)
        .map(|f| {
            let ms = f.iter().map(|s| s * s).sum::<f32>() / f.len() as f32;
            10.0 * (ms + 1e-10).log10()
        })
        .collect();
    if energy.len() < 3 {
        return Vec::new();
    }
    let db: Vec<f32> = (0..energy.len())
        .map(|i| {
            let lo = i.saturating_sub(SMOOTH / 2);
            let hi = (i + SMOOTH / 2 + 1).min(energy.len());
            energy[lo..hi].iter().sum::<f32>() / (hi - lo) as f32
        })
        .collect();
    let top = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let floor = (top - RANGE_DB).max(FLOOR_DBFS);
    let mut peaks: Vec<usize> = Vec::new();
    for i in 1..db.len() - 1 {
        let frame = &audio[i * FRAME..((i + 1) * FRAME).min(audio.len())];
        if !(db[i] >= db[i - 1]
            && db[i] > db[i + 1]
            && db[i] > floor
            && zero_crossing_rate(frame) < MAX_VOICED_ZCR)
        {
            continue;
        }
        match peaks.last().copied() {
            Some(last) => {
                let dip = db[last..=i].iter().copied().fold(f32::INFINITY, f32::min);
                if db[last].min(db[i]) - dip >= DIP_DB {
                    peaks.push(i);
                } else if db[i] > db[last] {
                    // One nucleus with a ripple: keep its higher peak.
                    *peaks.last_mut().expect("a peak") = i;
                }
            }
            None => peaks.push(i),
        }
    }
    peaks
        .into_iter()
        .map(|i| (i * FRAME + FRAME / 2) as f64 / f64::from(crate::SAMPLE_RATE))
        .collect()
}

/// Share of the sample pairs of `frame` that change sign.
fn zero_crossing_rate(frame: &[f32]) -> f32 {
    let changes = frame
        .windows(2)
        .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
        .count();
    changes as f32 / frame.len().saturating_sub(1).max(1) as f32
}

/// Whether `segment`'s whole text is one phrase said back to back (a partial copy may end it)
/// while the syllable `nuclei` heard under it (times in seconds, as `syllable_nuclei` gives them)
/// are closer to one copy's syllables than to the whole text's. [`deloop`] cuts such a text to
/// its first copy.
pub(crate) fn doubled(segment: &Segment, nuclei: &[f64]) -> Option<DropReason> {
    let w = words(&segment.text);
    let n = w.len();
    let period = (1..=n / 2).find(|&p| (p..n).all(|k| w[k] == w[k % p]))?;
    // The segment's times are rough: a quarter second of slack on each side.
    let heard = nuclei
        .iter()
        .filter(|t| **t >= segment.start - 0.25 && **t <= segment.end + 0.25)
        .count();
    let text_syllables = syllables(&segment.text);
    let copy_syllables = syllables(&w[..period].join(" "));
    (2 * heard < text_syllables + copy_syllables).then_some(DropReason::Doubled {
        text_syllables,
        copy_syllables,
        heard,
    })
}

/// A token of a segment's text: its normalised form and where it came from.
struct Token {
    norm: String,
    /// Index into the segment's words, or the whitespace piece of its text.
    piece: usize,
}

/// `segment` with a decoding loop cut: the first occurrence of a run of words repeated back to
/// back is kept, its repeats (and a partial repeat at the end) dropped, with the words and
/// text they came from. `None` when there is no back-to-back repeat.
pub(crate) fn deloop(segment: &Segment) -> Option<Segment> {
    let pieces: Vec<String> = if segment.words.is_empty() {
        segment
            .text
            .split_inclusive(char::is_whitespace)
            .map(str::to_string)
            .collect()
    } else {
        segment.words.iter().map(|w| w.text.clone()).collect()
    };
    let tokens: Vec<Token> = pieces
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            words(p)
                .into_iter()
                .map(move |norm| Token { norm, piece: i })
        })
        .collect();
    let n = tokens.len();
    let same = |a: usize, b: usize| tokens[a].norm == tokens[b].norm;
    // The earliest start `i` and shortest unit `p` repeated back to back.
    let (i, p) = (0..n).find_map(|i| {
        (1..=(n - i) / 2).find_map(|p| (0..p).all(|k| same(i + k, i + p + k)).then_some((i, p)))
    })?;
    // Whole repeats, then a partial one (the decoder stopped mid-repeat).
    let mut j = i + p;
    while j + p <= n && (0..p).all(|k| same(i + k, j + k)) {
        j += p;
    }
    let partial = (0..p.min(n - j))
        .take_while(|&k| same(i + k, j + k))
        .count();
    if j + partial == n {
        j = n;
    }
    // Keep the pieces of tokens before `i + p` and from `j` on.
    let keep_until = tokens[i + p - 1].piece;
    let resume = tokens.get(j).map(|t| t.piece);
    let kept = |piece: usize| piece <= keep_until || resume.is_some_and(|r| piece >= r);
    let mut out = segment.clone();
    if segment.words.is_empty() {
        out.text = pieces
            .iter()
            .enumerate()
            .filter(|(k, _)| kept(*k))
            .map(|(_, p)| p.as_str())
            .collect::<String>()
            .trim_end()
            .to_string();
        if segment.text.starts_with(' ') && !out.text.starts_with(' ') {
            out.text.insert(0, ' ');
        }
    } else {
        out.words = segment
            .words
            .iter()
            .enumerate()
            .filter(|(k, _)| kept(*k))
            .map(|(_, w)| w.clone())
            .collect();
        out.text = out.words.iter().map(|w| w.text.as_str()).collect();
        if let Some(last) = out.words.last() {
            out.end = out.end.min(last.end.max(out.start));
        }
    }
    Some(out)
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
            ..Segment::default()
        }
    }

    fn timed(words: &[&str]) -> Segment {
        let words: Vec<crate::Word> = words
            .iter()
            .enumerate()
            .map(|(i, w)| crate::Word {
                start: i as f64 * 0.5,
                end: i as f64 * 0.5 + 0.4,
                text: (*w).to_string(),
                probability: 0.9,
            })
            .collect();
        Segment {
            start: 0.0,
            end: words.len() as f64 * 0.5,
            text: words.iter().map(|w| w.text.as_str()).collect(),
            words,
            ..Segment::default()
        }
    }

    #[test]
    fn syllables_are_counted_from_vowel_groups() {
        assert_eq!(syllables("No."), 1);
        assert_eq!(syllables("Bye bye."), 2);
        assert_eq!(syllables("Thank you."), 2);
        assert_eq!(syllables("okay"), 2);
        assert_eq!(syllables("five, made, the, little"), 5);
        assert_eq!(syllables("cold-hearted"), 3);
        assert_eq!(syllables("Reunião amanhã"), 5);
        assert_eq!(syllables(""), 0);
    }

    /// `bursts` tones of `on` seconds with `off` seconds of silence after each, at 16 kHz.
    fn bursts(n: usize, on: f64, off: f64) -> Vec<f32> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.extend((0..(on * 16_000.0) as usize).map(|i| {
                let t = i as f32 / 16_000.0;
                // A syllable's rise and fall over its length.
                let env = (std::f32::consts::PI * t / on as f32).sin();
                0.3 * env * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
            }));
            out.extend(std::iter::repeat_n(0.0, (off * 16_000.0) as usize));
        }
        out
    }

    #[test]
    fn syllable_nuclei_are_the_energy_peaks() {
        assert_eq!(syllable_nuclei(&bursts(1, 0.3, 0.2)).len(), 1);
        assert_eq!(syllable_nuclei(&bursts(2, 0.2, 0.15)).len(), 2);
        let five = syllable_nuclei(&bursts(5, 0.18, 0.08));
        assert_eq!(five.len(), 5, "{five:?}");
        // In order, each in its burst.
        for (k, t) in five.iter().enumerate() {
            let start = k as f64 * 0.26;
            assert!(*t > start && *t < start + 0.18, "{k}: {t}");
        }
        // A syllable-rate modulation inside one sound: four nuclei in a second.
        let am: Vec<f32> = (0..16_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let env = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).cos();
                0.3 * env * (2.0 * std::f32::consts::PI * 180.0 * t).sin()
            })
            .collect();
        assert_eq!(syllable_nuclei(&am).len(), 4);
        // The same envelope on white noise: four peaks, none voiced (the `unvoiced` guard).
        let mut seed = 11u32;
        let hiss: Vec<f32> = (0..16_000)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / 16_000.0;
                let env = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * 4.0 * t).cos();
                0.6 * env * ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect();
        assert!(syllable_nuclei(&hiss).is_empty());
        // A vowel and then a hiss ("yes"): the hiss is a peak of its own but unvoiced.
        let mut yes = bursts(1, 0.25, 0.03);
        let mut seed = 7u32;
        yes.extend((0..2_400).map(|i| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let env = (std::f32::consts::PI * i as f32 / 2_400.0).sin();
            0.05 * env * ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        }));
        yes.extend(std::iter::repeat_n(0.0, 3_200));
        let heard = syllable_nuclei(&yes);
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(heard[0] < 0.25, "{heard:?}");
        assert!(syllable_nuclei(&vec![0.0; 16_000]).is_empty());
        assert!(syllable_nuclei(&[]).is_empty());
        assert!(syllable_nuclei(&[0.5; 100]).is_empty());
    }

    /// `n` syllable nuclei inside the segments `timed` makes.
    fn nuclei(n: usize) -> Vec<f64> {
        (0..n).map(|k| 0.1 + k as f64 * 0.05).collect()
    }

    #[test]
    fn a_phrase_said_twice_where_the_audio_holds_one_is_cut_to_one() {
        // "No." twice over one nucleus: one "No."
        let no = timed(&[" No.", " No."]);
        let why = doubled(&no, &nuclei(1)).expect("doubled");
        let cut = deloop(&no).expect("a loop");
        assert_eq!(cut.text, " No.");
        assert_eq!(cut.words.len(), 1);
        assert_eq!(why.name(), "doubled");
        assert!(why.retry_may_fix());
        // Nuclei outside the segment do not count.
        assert!(doubled(&no, &[5.0, 6.0, 7.0]).is_some());
        // "Bye bye" with two nuclei is what was said.
        assert!(doubled(&timed(&[" Bye", " bye."]), &nuclei(2)).is_none());
        // A sentence twice (18 syllables, 9 a copy) over 9 heard nuclei.
        let copy = [" He", " was", " not", " an", " ill-disposed", " man."];
        let twice = timed(&[copy, copy].concat());
        assert!(doubled(&twice, &nuclei(9)).is_some());
        assert_eq!(
            deloop(&twice).expect("a loop").text,
            " He was not an ill-disposed man."
        );
        // ... but said twice (16 heard) it stays.
        assert!(doubled(&twice, &nuclei(16)).is_none());
        // Only a whole text made of the repeats: a repeat inside speech is left to the n-gram
        // guard ("I I think so" is a speaker's stammer).
        assert!(doubled(&timed(&[" I", " I", " think", " so."]), &nuclei(1)).is_none());
        assert!(doubled(&timed(&[" Thank", " you."]), &[]).is_none());
        // A partial last copy is part of the loop.
        let thanks = timed(&[" Thank", " you.", " Thank", " you.", " Thank"]);
        assert!(doubled(&thanks, &nuclei(2)).is_some());
        assert_eq!(deloop(&thanks).expect("a loop").text, " Thank you.");
    }

    #[test]
    fn a_loop_keeps_its_first_occurrence() {
        // The reported case: a short phrase decoded three times over.
        let s = deloop(&seg(
            " Let me see the cards. Let me see the cards. Let me see the cards.",
            0.0,
            -0.2,
        ))
        .unwrap();
        assert_eq!(s.text, " Let me see the cards.");
        // With words: times follow the kept words; a partial repeat at the end goes too, and
        // text after the loop stays.
        let s = deloop(&timed(&[
            " I", " said", " yes.", " I", " said", " yes.", " I", " said",
        ]))
        .unwrap();
        assert_eq!(s.text, " I said yes.");
        assert_eq!(s.words.len(), 3);
        assert!((s.end - 1.4).abs() < 1e-9, "{}", s.end);
        let s = deloop(&timed(&[" go", " go", " go", " now"])).unwrap();
        assert_eq!(s.text, " go now");
        // Words said twice apart are not a loop; nothing to cut without a back-to-back repeat.
        assert_eq!(deloop(&seg(" the cat saw the dog", 0.0, -0.2)), None);
        assert_eq!(deloop(&seg("", 0.0, -0.2)), None);
    }

    #[test]
    fn only_repairable_reasons_are_retried() {
        assert!(
            DropReason::Repetition {
                repeated_ngram_share: 0.9
            }
            .retry_may_fix()
        );
        assert!(DropReason::PastEnd.retry_may_fix());
        assert!(!DropReason::NonSpeechMarker.retry_may_fix());
        assert!(!DropReason::Silence { rms_dbfs: -90.0 }.retry_may_fix());
        assert!(
            !DropReason::NoSpeech {
                no_speech_prob: 0.9,
                avg_logprob: -2.0
            }
            .retry_may_fix()
        );
        assert_eq!(DropReason::RepeatedSegment.name(), "repeated_segment");
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
    fn boilerplate_on_unsure_input() {
        let g = GuardConfig::default();
        assert!(matches!(
            g.check(&seg(" Thank you for watching!", 0.1, -0.6), 1.0),
            Some(DropReason::Boilerplate { .. })
        ));
        // A short reply said with confidence is speech.
        assert_eq!(g.check(&seg(" Bye bye.", 0.05, -0.2), 1.0), None);
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
        // A loop back to the start of the utterance: five words or more found word for word
        // in the earlier text, however far back; shorter phrases are said twice for real.
        let said = [
            seg(" I'm Sheila in Texas, originally from Chicago.", 0.0, -0.2),
            seg(" Oh, I'm originally from Chicago also.", 0.0, -0.2),
            seg(" Well, not much difference.", 0.0, -0.2),
            seg(" They call me a Yankee.", 0.0, -0.2),
        ];
        for (text, expected) in [
            (
                " originally from Chicago. Oh, I'm",
                Some(DropReason::RepeatedSegment),
            ),
            (" I'm Sheila in Texas", None),
            (" Originally from Chicago also, yes.", None),
            (" Yeah.", None),
        ] {
            assert_eq!(
                g.check_in_context(&seg(text, 0.0, -0.1), 30.0, &said),
                expected,
                "{text}"
            );
        }
        // Past one window, only a repeat of the two segments before is a loop.
        let far = seg(" originally from Chicago. Oh, I'm", 0.0, -0.1);
        assert_eq!(g.check_in_context(&far, 30.1, &said), None);
    }

    #[test]
    fn rms_levels() {
        assert_eq!(rms_dbfs(&[0.0; 10]), f32::NEG_INFINITY);
        assert!((rms_dbfs(&[1.0; 10])).abs() < 1e-6);
        assert!((rms_dbfs(&[0.1; 10]) + 20.0).abs() < 1e-4);
    }
}
