//! Scoring for Nina's tests and benchmarks.
//!
//! - [`wer`]: word error rate after [`normalize`] (lower-case, punctuation stripped).
//! - [`frame_f1`]: agreement of two sets of speech regions at a fixed frame size.
//! - [`der`]: diarization error rate with optimal speaker mapping and a collar; [`rttm`]
//!   reads and writes the turns it scores; [`conversation`] synthesizes conversations with an
//!   exact reference from the test voices.
//! - [`testdata`]: the reference speech that `scripts/setup.sh` puts in `testdata/`.
//! - [`memory`]: peak memory for benchmark tables.

pub mod conversation;
pub mod der;
pub mod memory;
pub mod rttm;
pub mod testdata;

/// Spells out a whole number below 10,000 the way references write it ("ten", "twenty one").
fn spell_number(n: u32) -> Option<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let below_100 = |n: u32| -> String {
        let (tens, ones) = ((n / 10) as usize, (n % 10) as usize);
        match (n, ones) {
            (0..=19, _) => ONES[n as usize].to_string(),
            (_, 0) => TENS[tens].to_string(),
            _ => format!("{} {}", TENS[tens], ONES[ones]),
        }
    };
    let with_rest = |head: String, rest: u32, spell: &dyn Fn(u32) -> String| {
        if rest == 0 {
            head
        } else {
            format!("{head} {}", spell(rest))
        }
    };
    let below_1000 = |n: u32| -> String {
        if n < 100 {
            below_100(n)
        } else {
            with_rest(
                format!("{} hundred", below_100(n / 100)),
                n % 100,
                &below_100,
            )
        }
    };
    match n {
        0..=999 => Some(below_1000(n)),
        // "nineteen hundred", as years are read.
        1_100..=9_999 if n.is_multiple_of(100) && !n.is_multiple_of(1_000) => {
            Some(format!("{} hundred", below_100(n / 100)))
        }
        1_000..=9_999 => Some(with_rest(
            format!("{} thousand", below_100(n / 1000)),
            n % 1000,
            &below_1000,
        )),
        _ => None,
    }
}

/// Lower-cases, turns punctuation into spaces (keeping apostrophes inside words), spells out
/// whole numbers ("10" -> "ten") and splits into words.
pub fn normalize(text: &str) -> Vec<String> {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .flat_map(|w| match w.parse::<u32>().ok().and_then(spell_number) {
            Some(spelled) => spelled.split(' ').map(str::to_string).collect::<Vec<_>>(),
            None => vec![w.to_string()],
        })
        .collect()
}

/// Edit counts of a hypothesis against a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordErrors {
    /// Words of the reference.
    pub reference_words: usize,
    /// Substituted words.
    pub substitutions: usize,
    /// Reference words missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis words not in the reference.
    pub insertions: usize,
}

impl WordErrors {
    /// Total edits.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Word error rate; 0 for an empty reference and empty hypothesis, 1 per inserted word otherwise.
    pub fn rate(&self) -> f64 {
        if self.reference_words == 0 {
            return if self.errors() == 0 {
                0.0
            } else {
                self.errors() as f64
            };
        }
        self.errors() as f64 / self.reference_words as f64
    }
}

impl std::ops::Add for WordErrors {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            reference_words: self.reference_words + o.reference_words,
            substitutions: self.substitutions + o.substitutions,
            deletions: self.deletions + o.deletions,
            insertions: self.insertions + o.insertions,
        }
    }
}

impl std::iter::Sum for WordErrors {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// Aligns normalised hypothesis words against normalised reference words (Levenshtein).
pub fn word_errors(reference: &str, hypothesis: &str) -> WordErrors {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    // dp[j] = (cost, subs, dels, ins) for r[..i] vs h[..j]
    let mut prev: Vec<(usize, usize, usize, usize)> = (0..=h.len()).map(|j| (j, 0, 0, j)).collect();
    for i in 1..=r.len() {
        let mut cur = vec![(i, 0, i, 0); h.len() + 1];
        for j in 1..=h.len() {
            let same = r[i - 1] == h[j - 1];
            let diag = prev[j - 1];
            let sub = if same {
                diag
            } else {
                (diag.0 + 1, diag.1 + 1, diag.2, diag.3)
            };
            let del = (prev[j].0 + 1, prev[j].1, prev[j].2 + 1, prev[j].3);
            let ins = (
                cur[j - 1].0 + 1,
                cur[j - 1].1,
                cur[j - 1].2,
                cur[j - 1].3 + 1,
            );
            cur[j] = [sub, del, ins]
                .into_iter()
                .min_by_key(|c| c.0)
                .unwrap_or(sub);
        }
        prev = cur;
    }
    let (_, substitutions, deletions, insertions) = prev[h.len()];
    WordErrors {
        reference_words: r.len(),
        substitutions,
        deletions,
        insertions,
    }
}

/// Word error rate of `hypothesis` against `reference`.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    word_errors(reference, hypothesis).rate()
}

/// Precision, recall and F1 of speech regions, compared frame by frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameScore {
    /// Fraction of hypothesis speech frames that are reference speech.
    pub precision: f64,
    /// Fraction of reference speech frames that the hypothesis marks as speech.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

/// Compares speech regions `(start, end)` in seconds over `[0, duration)` at `frame` seconds.
pub fn frame_f1(
    reference: &[(f64, f64)],
    hypothesis: &[(f64, f64)],
    duration: f64,
    frame: f64,
) -> FrameScore {
    let n = (duration / frame).ceil().max(0.0) as usize;
    let mark = |regions: &[(f64, f64)]| {
        let mut v = vec![false; n];
        for &(s, e) in regions {
            let a = ((s / frame).round().max(0.0) as usize).min(n);
            let b = ((e / frame).round().max(0.0) as usize).min(n);
            v[a..b.max(a)].iter_mut().for_each(|x| *x = true);
        }
        v
    };
    let (r, h) = (mark(reference), mark(hypothesis));
    let tp = r.iter().zip(&h).filter(|(a, b)| **a && **b).count() as f64;
    let hp = h.iter().filter(|x| **x).count() as f64;
    let rp = r.iter().filter(|x| **x).count() as f64;
    let precision = if hp > 0.0 { tp / hp } else { 0.0 };
    let recall = if rp > 0.0 { tp / rp } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    FrameScore {
        precision,
        recall,
        f1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalisation_strips_case_and_punctuation() {
        assert_eq!(
            normalize("Hello, World! It's   ten-of-clubs."),
            ["hello", "world", "it's", "ten", "of", "clubs"]
        );
    }

    #[test]
    fn known_error_counts() {
        let e = word_errors("the cat sat on the mat", "the cat sat on mat today");
        assert_eq!(e.errors(), 2);
        assert!((e.rate() - 2.0 / 6.0).abs() < 1e-12);
        let e = word_errors("a b c", "a c");
        assert_eq!((e.substitutions, e.deletions, e.insertions), (0, 1, 0));
        let e = word_errors("a c", "a b c");
        assert_eq!((e.substitutions, e.deletions, e.insertions), (0, 0, 1));
        assert_eq!(wer("Ten of clubs.", "ten of clubs"), 0.0);
        assert_eq!(wer("a b c", "x y z"), 1.0);
        assert_eq!(wer("", ""), 0.0);
    }

    #[test]
    fn frame_scores() {
        let s = frame_f1(&[(0.0, 1.0)], &[(0.0, 1.0)], 2.0, 0.01);
        assert!((s.f1 - 1.0).abs() < 1e-9);
        let s = frame_f1(&[(0.0, 1.0)], &[(0.5, 1.5)], 2.0, 0.01);
        assert!((s.precision - 0.5).abs() < 1e-9 && (s.recall - 0.5).abs() < 1e-9);
        assert_eq!(frame_f1(&[(0.0, 1.0)], &[], 2.0, 0.01).f1, 0.0);
    }

    proptest! {
        #[test]
        fn wer_is_zero_on_itself_and_bounded_by_lengths(a in "[a-c ]{0,40}", b in "[a-c ]{0,40}") {
            prop_assert_eq!(word_errors(&a, &a).errors(), 0);
            let e = word_errors(&a, &b);
            let (r, h) = (normalize(&a).len(), normalize(&b).len());
            prop_assert!(e.errors() <= r.max(h));
            prop_assert!(e.errors() >= r.abs_diff(h));
            prop_assert!(e.substitutions + e.deletions <= r);
            prop_assert!(e.substitutions + e.insertions <= h);
        }
    }
}
