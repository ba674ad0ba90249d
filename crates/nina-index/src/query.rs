//! What a person types into a search, made safe for SQLite's FTS5, and the times of the
//! `--since`/`--until` filters.
//!
//! Query syntax: words (all must occur, in any order), `"a phrase"` (these words in this
//! order), `word*` (a prefix), `-word` or `-"a phrase"` (must not occur; needs something that
//! must), and `OR` between two terms. Case and accents do not matter (`sao paulo` finds
//! "São Paulo"). Every other character separates words; nothing typed reaches FTS5 as syntax.

use std::fmt::Write as _;

/// Why a query or a time cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Nothing to search for.
    #[error("the query has no words to search for")]
    Empty,
    /// Only exclusions (`-word`): FTS5 needs a term that must occur.
    #[error("the query only excludes words; give at least one word that must occur")]
    OnlyExcluded,
    /// A quote was opened and not closed.
    #[error("a quote (\") is not closed")]
    UnclosedQuote,
    /// Longer than [`MAX_QUERY`] bytes or [`MAX_TERMS`] terms.
    #[error("the query is too long")]
    TooLong,
    /// A time that is not `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]`.
    #[error("{0:?} is not a time (give YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], UTC)")]
    BadTime(String),
}

/// Longest query accepted, in bytes.
pub const MAX_QUERY: usize = 4096;
/// Most terms accepted.
pub const MAX_TERMS: usize = 64;

/// One term of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Its words (one for a word, several for a phrase), lower case as typed.
    pub words: Vec<String>,
    /// `word*`: any word starting so.
    pub prefix: bool,
    /// `-word`: must not occur.
    pub excluded: bool,
    /// Joined to the term before by `OR` rather than AND.
    pub or: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

/// Whether `c` is part of a word (FTS5's `unicode61` splits on everything else, so do we).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

fn words_of(s: &str) -> Vec<String> {
    s.split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Query {
    /// Parses what a person typed.
    pub fn parse(input: &str) -> Result<Self, QueryError> {
        if input.len() > MAX_QUERY {
            return Err(QueryError::TooLong);
        }
        let mut terms: Vec<Term> = Vec::new();
        let mut pending_or = false;
        let mut chars = input.char_indices().peekable();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let excluded = c == '-';
            let start = if excluded {
                chars.next();
                match chars.peek() {
                    Some(&(j, _)) => j,
                    None => break,
                }
            } else {
                i
            };
            let quoted = chars.peek().is_some_and(|&(_, c)| c == '"');
            let (body, prefix) = if quoted {
                chars.next();
                let from = start + 1;
                let mut end = None;
                for (j, c) in chars.by_ref() {
                    if c == '"' {
                        end = Some(j);
                        break;
                    }
                }
                let end = end.ok_or(QueryError::UnclosedQuote)?;
                let prefix = chars.peek().is_some_and(|&(_, c)| c == '*');
                if prefix {
                    chars.next();
                }
                (&input[from..end], prefix)
            } else {
                let mut end = input.len();
                while let Some(&(j, c)) = chars.peek() {
                    if c.is_whitespace() || c == '"' {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                let body = &input[start..end];
                let prefix = body.ends_with('*');
                (body.trim_end_matches('*'), prefix)
            };
            if !quoted && !excluded && body == "OR" {
                pending_or = !terms.is_empty();
                continue;
            }
            let words = words_of(body);
            if words.is_empty() {
                continue;
            }
            // A word typed with inner punctuation ("don't", "e-mail") is a phrase of its parts.
            terms.push(Term {
                words,
                prefix,
                excluded,
                or: std::mem::take(&mut pending_or) && !excluded,
            });
            if terms.len() > MAX_TERMS {
                return Err(QueryError::TooLong);
            }
        }
        if terms.is_empty() {
            return Err(QueryError::Empty);
        }
        if terms.iter().all(|t| t.excluded) {
            return Err(QueryError::OnlyExcluded);
        }
        Ok(Self { terms })
    }

    /// The terms.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The FTS5 expression: every term a quoted string (so no input is FTS5 syntax), `AND`,
    /// `OR` and `NOT` between them.
    pub fn to_fts(&self) -> String {
        let quoted = |t: &Term| {
            let mut s = format!("\"{}\"", t.words.join(" "));
            if t.prefix {
                s.push('*');
            }
            s
        };
        // Positive terms, grouped by OR; then exclusions, each `NOT`.
        let mut out = String::new();
        let positives: Vec<&Term> = self.terms.iter().filter(|t| !t.excluded).collect();
        out.push('(');
        for (i, t) in positives.iter().enumerate() {
            if i > 0 {
                out.push_str(if t.or { " OR " } else { " AND " });
            }
            out.push_str(&quoted(t));
        }
        out.push(')');
        for t in self.terms.iter().filter(|t| t.excluded) {
            let _ = write!(out, " NOT {}", quoted(t));
        }
        out
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A time given as `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (a space for `T`, an optional
/// trailing `Z`; always UTC), as Unix milliseconds, and whether only a date was given.
pub fn parse_time(s: &str) -> Result<(i64, bool), QueryError> {
    let bad = || QueryError::BadTime(s.chars().take(64).collect());
    let t = s.trim();
    let t = t.strip_suffix('Z').unwrap_or(t);
    if !t.is_ascii() {
        return Err(bad());
    }
    let num = |a: usize, b: usize| -> Result<i64, QueryError> {
        let part = t.get(a..b).ok_or_else(bad)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let sep = |i: usize, c: &[u8]| t.as_bytes().get(i).is_some_and(|b| c.contains(b));
    if !(t.len() == 10 || t.len() == 16 || t.len() == 19) || !sep(4, b"-") || !sep(7, b"-") {
        return Err(bad());
    }
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if t.len() == 10 {
        return Ok((ms, true));
    }
    if !sep(10, b"T ") || !sep(13, b":") {
        return Err(bad());
    }
    let (h, min) = (num(11, 13)?, num(14, 16)?);
    let sec = if t.len() == 19 {
        if !sep(16, b":") {
            return Err(bad());
        }
        num(17, 19)?
    } else {
        0
    };
    if h > 23 || min > 59 || sec > 59 {
        return Err(bad());
    }
    ms += (h * 3600 + min * 60 + sec) * 1000;
    Ok((ms, false))
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time(ms: i64) -> String {
    let date = nina_store::date_of_unix_ms(ms);
    let day_ms = ms.rem_euclid(86_400_000);
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_phrases_prefixes_and_exclusions() {
        let q = Query::parse(r#"São  "the quick fox" jump* -lazy OR"#).unwrap();
        assert_eq!(
            q.to_fts(),
            r#"("são" AND "the quick fox" AND "jump"*) NOT "lazy""#
        );
        let q = Query::parse("cats OR dogs birds").unwrap();
        assert_eq!(q.to_fts(), r#"("cats" OR "dogs" AND "birds")"#);
        let q = Query::parse(r#"don't NEAR( "a""b" ^x:y"#).unwrap();
        assert_eq!(
            q.to_fts(),
            r#"("don t" AND "near" AND "a" AND "b" AND "x y")"#
        );
        assert_eq!(Query::parse("  "), Err(QueryError::Empty));
        assert_eq!(Query::parse("!!! ..."), Err(QueryError::Empty));
        assert_eq!(Query::parse("-a -b"), Err(QueryError::OnlyExcluded));
        assert_eq!(Query::parse("\"open"), Err(QueryError::UnclosedQuote));
        assert_eq!(
            Query::parse(&"a ".repeat(MAX_TERMS + 1)),
            Err(QueryError::TooLong)
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01").unwrap(), (0, true));
        assert_eq!(
            parse_time("2024-05-01T12:00").unwrap(),
            (1_714_564_800_000, false)
        );
        assert_eq!(
            parse_time("2024-05-01 12:00:01Z").unwrap(),
            (1_714_564_801_000, false)
        );
        assert_eq!(parse_time("2000-02-29").unwrap().0, 951_782_400_000);
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-5-1",
            "yesterday",
            "2024-05-01T25:00",
            "",
            "2024-05-01T12",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(1_714_564_801_250), "2024-05-01T12:00:01.250Z");
    }

    proptest::proptest! {
        #[test]
        fn times_round_trip(ms in 0i64..253_402_300_799_000) {
            let s = format_time(ms - ms % 1000);
            let (back, _) = parse_time(&s[..19]).unwrap();
            proptest::prop_assert_eq!(back, ms - ms % 1000);
        }

        #[test]
        fn any_text_is_a_time_or_an_error(s in "\\PC{0,24}") {
            let _ = parse_time(&s);
        }
    }
}
