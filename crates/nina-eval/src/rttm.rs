//! RTTM, the NIST "rich transcription time marked" format diarization is exchanged in: one
//! `SPEAKER <file> <channel> <start> <duration> <NA> <NA> <speaker> <NA> <NA>` line per turn.
//! Lines of other types and `;;` comments are skipped.

use crate::testdata::Turn;

/// A line that is not a valid `SPEAKER` record.
#[derive(Debug, thiserror::Error)]
#[error("RTTM line {line}: {reason}")]
pub struct RttmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The `SPEAKER` turns of an RTTM text, in file order. Starts and durations must be finite
/// and not negative.
pub fn parse(text: &str) -> Result<Vec<Turn>, RttmError> {
    let mut turns = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"SPEAKER") {
            continue;
        }
        let err = |reason: &str| RttmError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let num = |k: usize, what: &str| -> Result<f64, RttmError> {
            f.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| err(&format!("{what} is not a number of seconds >= 0")))
        };
        let start = num(3, "start")?;
        let duration = num(4, "duration")?;
        let speaker = f.get(7).ok_or_else(|| err("no speaker name"))?;
        turns.push(Turn {
            speaker: (*speaker).to_string(),
            start,
            end: start + duration,
            text: String::new(),
        });
    }
    Ok(turns)
}

/// `turns` as RTTM lines for file `file_id` (spaces in names become `_`), in time order.
pub fn write(file_id: &str, turns: &[Turn]) -> String {
    let clean = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        if s.is_empty() { "_".into() } else { s }
    };
    let mut sorted: Vec<&Turn> = turns.iter().filter(|t| t.end > t.start).collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.end.total_cmp(&b.end)));
    let file = clean(file_id);
    sorted
        .iter()
        .map(|t| {
            format!(
                "SPEAKER {file} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>\n",
                t.start,
                t.end - t.start,
                clean(&t.speaker)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_round_trip_and_other_lines_are_skipped() {
        let text = ";; a comment\nSPKR-INFO x 1 <NA> <NA> <NA> unknown A <NA> <NA>\n\
                    SPEAKER call 1 0.50 1.25 <NA> <NA> A <NA> <NA>\n\
                    SPEAKER call 1 2.000 0.5 <NA> <NA> B <NA> <NA>\n";
        let t = parse(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].speaker.as_str(), t[0].start, t[0].end),
            ("A", 0.5, 1.75)
        );
        let again = parse(&write("my call", &t)).unwrap();
        assert_eq!(again, t);
        assert!(write("my call", &t).starts_with("SPEAKER my_call 1 0.500 1.250"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for bad in [
            "SPEAKER f 1 x 1 <NA> <NA> A",
            "SPEAKER f 1 0 -1 <NA> <NA> A",
            "SPEAKER f 1 NaN 1 <NA> <NA> A",
            "SPEAKER f 1 0 1",
        ] {
            let e = parse(&format!("\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
        }
    }

    proptest::proptest! {
        /// Any text: no panic; every turn parsed is well formed.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "(SPEAKER|;;|[ a-z0-9.<>\\-]){0,12}( [ -~]{0,12}){0,10}\n?") {
            if let Ok(turns) = parse(&text) {
                for t in turns {
                    proptest::prop_assert!(t.start.is_finite() && t.end >= t.start);
                }
            }
        }
    }
}
