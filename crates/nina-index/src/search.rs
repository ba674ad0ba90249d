//! Reading the index: ranked full-text search with filters, and the utterances a dataset
//! export takes.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params_from_iter};
use serde::Serialize;

use crate::{Index, IndexError, ModelRow, Query, format_time};

/// Marks around a hit in FTS5's `highlight()`: private-use characters, replaced afterwards.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';
/// Matches ranked at most (the newest): see [`Index::search`].
pub const CANDIDATES: usize = 10_000;
/// Hits fetched beyond the limit, to order equal scores the same way whatever the row ids.
const TIES: usize = 20;

/// What to keep, beside the words searched for. Every field set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Guild id.
    pub guild: Option<u64>,
    /// Voice channel id.
    pub channel: Option<u64>,
    /// The user whose stream it is.
    pub user: Option<u64>,
    /// Speaker name (the diarized speaker, else the stream's label: display name or user id),
    /// compared without regard to case.
    pub speaker: Option<String>,
    /// At or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Language code.
    pub language: Option<String>,
}

impl Filter {
    /// SQL conditions on `s` (sessions) and `g` (segments, or `time` for the clock column)
    /// with their values, appended to `values`.
    fn segment_sql(&self, values: &mut Vec<Value>) -> String {
        let mut c = self.place_sql("g.user_id", "s.started_at_ms + g.start * 1000", values);
        if let Some(sp) = &self.speaker {
            values.push(Value::Text(sp.clone()));
            let i = values.len();
            c.push_str(&format!(
                " AND (g.speaker = ?{i} COLLATE NOCASE OR g.stream = ?{i} COLLATE NOCASE)"
            ));
        }
        if let Some(l) = &self.language {
            values.push(Value::Text(l.clone()));
            c.push_str(&format!(
                " AND g.language = ?{} COLLATE NOCASE",
                values.len()
            ));
        }
        c
    }

    fn place_sql(&self, user_col: &str, time_expr: &str, values: &mut Vec<Value>) -> String {
        let mut c = String::from("1");
        let mut add = |sql: String, v: Value, values: &mut Vec<Value>| {
            values.push(v);
            c.push_str(&sql.replace("?#", &format!("?{}", values.len())));
        };
        if let Some(g) = self.guild {
            add(" AND s.guild = ?#".into(), Value::Integer(g as i64), values);
        }
        if let Some(ch) = self.channel {
            add(
                " AND s.channel = ?#".into(),
                Value::Integer(ch as i64),
                values,
            );
        }
        if let Some(u) = self.user {
            add(
                format!(" AND {user_col} = ?#"),
                Value::Integer(u as i64),
                values,
            );
        }
        if let Some(t) = self.since_ms {
            add(format!(" AND {time_expr} >= ?#"), Value::Integer(t), values);
        }
        if let Some(t) = self.until_ms {
            add(format!(" AND {time_expr} < ?#"), Value::Integer(t), values);
        }
        c
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The session of a hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HitSession {
    /// Its directory, relative to the data directory.
    pub path: String,
    /// Its id.
    pub id: String,
    /// Guild id.
    pub guild: u64,
    /// Channel id.
    pub channel: u64,
    /// When it started (UTC).
    pub started_at: String,
}

/// Where a hit is heard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioRef {
    /// The utterance's WAV file.
    pub path: String,
    /// Seconds into that file where the segment starts.
    pub offset: f64,
    /// Seconds of the segment.
    pub duration: f64,
}

/// One search result: a transcript segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// 1 for the best.
    pub rank: usize,
    /// Relevance (BM25; higher is better).
    pub score: f64,
    /// The session.
    pub session: HitSession,
    /// When the segment was said (UTC).
    pub at: String,
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Speaker: the diarized name, else the stream's label.
    pub speaker: String,
    /// The user whose stream it is, when known.
    pub user_id: Option<u64>,
    /// Language, when known.
    pub language: Option<String>,
    /// The segment's text.
    pub text: String,
    /// The text with each match in `[` `]`.
    pub marked: String,
    /// Each match as `[start, end)` in characters (Unicode scalar values) of `text`.
    pub marks: Vec<[usize; 2]>,
    /// The utterance audio, when the segment is tied to one.
    pub audio: Option<AudioRef>,
}

/// One utterance for a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UtteranceItem {
    /// The session directory, relative to the data directory.
    pub session_path: String,
    /// Session id.
    pub session_id: String,
    /// Guild id.
    pub guild: u64,
    /// Channel id.
    pub channel: u64,
    /// Session start (Unix ms).
    pub started_at_ms: i64,
    /// The stream's user.
    pub user_id: u64,
    /// Position in the stream.
    pub seq: u64,
    /// The WAV file, relative to the session directory.
    pub file: String,
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Its segments' text, joined by spaces.
    pub text: String,
    /// Language of its segments (the first known).
    pub language: Option<String>,
    /// Confidence: its segments' confidence weighted by their length.
    pub confidence: Option<f64>,
    /// Its segments' speakers (distinct, in order).
    pub speakers: Vec<String>,
}

impl UtteranceItem {
    /// Seconds of audio.
    pub fn duration(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// Splits FTS5 `highlight()` output into the plain text, a `[`/`]`-marked text and the marks.
fn marks_of(h: &str) -> (String, String, Vec<[usize; 2]>) {
    let (mut text, mut marked, mut marks) = (String::new(), String::new(), Vec::new());
    let mut n = 0;
    let mut open = None;
    for c in h.chars() {
        match c {
            OPEN => {
                open = Some(n);
                marked.push('[');
            }
            CLOSE => {
                if let Some(s) = open.take() {
                    marks.push([s, n]);
                }
                marked.push(']');
            }
            c => {
                text.push(c);
                marked.push(c);
                n += 1;
            }
        }
    }
    (text, marked, marks)
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

impl Index {
    /// The `limit` segments that best match `query` and `filter`, best first (BM25). When more
    /// than [`CANDIDATES`] segments match (a very common word), the newest of them are ranked,
    /// which bounds the time a query takes whatever the size of the index.
    pub fn search(
        &self,
        query: &Query,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let fts = query.to_fts();
        let mut values = vec![Value::Text(fts.clone())];
        // Ranked among the newest CANDIDATES matches: FTS5 walks a term's rows newest first
        // and stops there, so a word found in most segments costs what a rarer one does.
        let sql = if filter.is_empty() {
            format!(
                "SELECT id, r FROM (SELECT rowid AS id, rank AS r FROM segments_fts
                   WHERE segments_fts MATCH ?1 ORDER BY rowid DESC LIMIT {CANDIDATES})
                 ORDER BY r LIMIT ?2"
            )
        } else {
            values.push(Value::Null); // the limit, set below
            let cond = filter.segment_sql(&mut values);
            format!(
                "SELECT id, r FROM (SELECT segments_fts.rowid AS id, segments_fts.rank AS r
                   FROM segments_fts
                   JOIN segments g ON g.id = segments_fts.rowid
                   JOIN sessions s ON s.id = g.session
                   WHERE segments_fts MATCH ?1 AND {cond}
                   ORDER BY segments_fts.rowid DESC LIMIT {CANDIDATES})
                 ORDER BY r LIMIT ?2"
            )
        };
        // A few more than asked, so that equal scores are ordered by place and time below
        // (row ids depend on the order sessions were indexed in).
        let fetch = Value::Integer(limit.saturating_add(TIES) as i64);
        if values.len() > 1 {
            values[1] = fetch;
        } else {
            values.push(fetch);
        }
        let ids: Vec<(i64, f64)> = {
            let mut st = self.conn.prepare(&sql)?;
            st.query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut hl = self.conn.prepare(
            "SELECT highlight(segments_fts, 0, char(57344), char(57345)) FROM segments_fts
             WHERE segments_fts MATCH ?1 AND rowid = ?2",
        )?;
        let mut detail = self.conn.prepare(
            "SELECT g.start, g.end, g.speaker, g.user_id, g.language, g.text,
                    s.path, s.session_id, s.guild, s.channel, s.started_at_ms,
                    u.file, u.start
             FROM segments g JOIN sessions s ON s.id = g.session
             LEFT JOIN utterances u ON u.id = g.utterance WHERE g.id = ?1",
        )?;
        let mut hits = Vec::with_capacity(ids.len());
        for (i, (id, rank)) in ids.into_iter().enumerate() {
            let h: Option<String> = hl
                .query_row(rusqlite::params![fts, id], |r| r.get(0))
                .optional()?;
            let hit = detail.query_row([id], |r| {
                let start: f64 = r.get(0)?;
                let end: f64 = r.get(1)?;
                let text: String = r.get(5)?;
                let path: String = r.get(6)?;
                let started: i64 = r.get(10)?;
                let file: Option<String> = r.get(11)?;
                let u_start: Option<f64> = r.get(12)?;
                let (plain, marked, marks) = marks_of(h.as_deref().unwrap_or(&text));
                let audio = file.zip(u_start).map(|(f, us)| AudioRef {
                    path: self.data.join(&path).join(f).to_string_lossy().into_owned(),
                    offset: round((start - us).max(0.0), 3),
                    duration: round((end - start).max(0.0), 3),
                });
                Ok(Hit {
                    rank: i + 1,
                    score: round(-rank, 4),
                    session: HitSession {
                        path,
                        id: r.get(7)?,
                        guild: r.get::<_, i64>(8)? as u64,
                        channel: r.get::<_, i64>(9)? as u64,
                        started_at: format_time(started),
                    },
                    at: format_time(started + (start * 1000.0).round() as i64),
                    start: round(start, 3),
                    end: round(end, 3),
                    speaker: r.get(2)?,
                    user_id: r.get::<_, Option<i64>>(3)?.map(|u| u as u64),
                    language: r.get(4)?,
                    text: plain,
                    marked,
                    marks,
                    audio,
                })
            })?;
            hits.push(hit);
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.session.path.cmp(&b.session.path))
                .then_with(|| a.start.total_cmp(&b.start))
                .then_with(|| a.speaker.cmp(&b.speaker))
        });
        hits.truncate(limit);
        for (i, h) in hits.iter_mut().enumerate() {
            h.rank = i + 1;
        }
        Ok(hits)
    }

    /// The utterances `filter` (and `query`, when given) select, for a dataset, in session and
    /// time order: an utterance is taken when it has transcribed text, the user, place and time
    /// match, every one of its segments matches the speaker and language asked for, and (with
    /// a query) one of its segments matches the query.
    pub fn utterances(
        &self,
        query: Option<&Query>,
        filter: &Filter,
    ) -> Result<Vec<UtteranceItem>, IndexError> {
        let matching: Option<BTreeSet<i64>> = match query {
            Some(q) => {
                let mut st = self
                    .conn
                    .prepare("SELECT rowid FROM segments_fts WHERE segments_fts MATCH ?1")?;
                Some(
                    st.query_map([q.to_fts()], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                )
            }
            None => None,
        };
        let mut values = Vec::new();
        let cond = filter.place_sql("u.user_id", "s.started_at_ms + u.start * 1000", &mut values);
        let sql = format!(
            "SELECT u.id, s.path, s.session_id, s.guild, s.channel, s.started_at_ms, u.user_id,
                    u.seq, u.file, u.start, u.end,
                    g.id, g.text, g.speaker, g.stream, g.language, g.confidence, g.start, g.end
             FROM utterances u JOIN sessions s ON s.id = u.session
             JOIN segments g ON g.utterance = u.id
             WHERE {cond} ORDER BY s.path, u.start, u.id, g.position"
        );
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query(params_from_iter(values))?;
        struct Acc {
            item: UtteranceItem,
            texts: Vec<String>,
            ok: bool,
            hit: bool,
            conf: (f64, f64),
            conf_known: bool,
        }
        let mut out: Vec<UtteranceItem> = Vec::new();
        let mut cur: Option<(i64, Acc)> = None;
        let finish = |acc: Acc, out: &mut Vec<UtteranceItem>| {
            let mut item = acc.item;
            item.text = acc.texts.join(" ");
            item.confidence = acc.conf_known.then(|| {
                if acc.conf.1 > 0.0 {
                    acc.conf.0 / acc.conf.1
                } else {
                    0.0
                }
            });
            if acc.ok && acc.hit && !item.text.is_empty() {
                out.push(item);
            }
        };
        while let Some(r) = rows.next()? {
            let uid: i64 = r.get(0)?;
            if cur.as_ref().is_none_or(|c| c.0 != uid) {
                if let Some((_, acc)) = cur.take() {
                    finish(acc, &mut out);
                }
                cur = Some((
                    uid,
                    Acc {
                        item: UtteranceItem {
                            session_path: r.get(1)?,
                            session_id: r.get(2)?,
                            guild: r.get::<_, i64>(3)? as u64,
                            channel: r.get::<_, i64>(4)? as u64,
                            started_at_ms: r.get(5)?,
                            user_id: r.get::<_, i64>(6)? as u64,
                            seq: r.get::<_, i64>(7)? as u64,
                            file: r.get(8)?,
                            start: r.get(9)?,
                            end: r.get(10)?,
                            text: String::new(),
                            language: None,
                            confidence: None,
                            speakers: Vec::new(),
                        },
                        texts: Vec::new(),
                        ok: true,
                        hit: matching.is_none(),
                        conf: (0.0, 0.0),
                        conf_known: false,
                    },
                ));
            }
            let Some((_, acc)) = cur.as_mut() else {
                continue;
            };
            let gid: i64 = r.get(11)?;
            let text: String = r.get(12)?;
            let speaker: String = r.get(13)?;
            let stream: String = r.get(14)?;
            let language: Option<String> = r.get(15)?;
            let confidence: Option<f64> = r.get(16)?;
            let (gs, ge): (f64, f64) = (r.get(17)?, r.get(18)?);
            if let Some(want) = &filter.speaker
                && !speaker.eq_ignore_ascii_case(want)
                && !stream.eq_ignore_ascii_case(want)
            {
                acc.ok = false;
            }
            if let Some(want) = &filter.language
                && !language
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(want))
            {
                acc.ok = false;
            }
            if matching.as_ref().is_some_and(|m| m.contains(&gid)) {
                acc.hit = true;
            }
            if acc.item.language.is_none() {
                acc.item.language = language;
            }
            if !acc.item.speakers.contains(&speaker) {
                acc.item.speakers.push(speaker);
            }
            if let Some(c) = confidence {
                let w = (ge - gs).max(0.01);
                acc.conf.0 += c * w;
                acc.conf.1 += w;
                acc.conf_known = true;
            }
            if !text.is_empty() {
                acc.texts.push(text);
            }
        }
        if let Some((_, acc)) = cur.take() {
            finish(acc, &mut out);
        }
        Ok(out)
    }

    /// The models recorded for the sessions at `paths` (relative to the data directory),
    /// distinct, by step.
    pub fn models_of(&self, paths: &BTreeSet<String>) -> Result<Vec<ModelRow>, IndexError> {
        let mut st = self.conn.prepare(
            "SELECT m.step, m.name, m.sha256 FROM models m JOIN sessions s ON s.id = m.session
             WHERE s.path = ?1",
        )?;
        let mut seen: BTreeMap<(String, String, Option<String>), ()> = BTreeMap::new();
        for p in paths {
            let rows = st.query_map([p], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                seen.insert(row?, ());
            }
        }
        Ok(seen
            .into_keys()
            .map(|(step, name, sha256)| ModelRow { step, name, sha256 })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlight_marks_become_offsets() {
        let (t, m, k) = marks_of("in \u{E000}São\u{E001} Paulo \u{E000}é\u{E001}");
        assert_eq!(t, "in São Paulo é");
        assert_eq!(m, "in [São] Paulo [é]");
        assert_eq!(k, vec![[3, 6], [13, 14]]);
    }
}
