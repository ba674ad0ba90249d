//! Transcript files shared by both binaries: JSON (our schema, with the model and options so
//! re-runs are comparable), SRT, WebVTT and plain text, all with speaker labels.

use serde::{Deserialize, Serialize};

use crate::{DropReason, Segment, TranscribeOptions};

/// Schema identifier written into every JSON transcript.
pub const SCHEMA: &str = "nina.transcript/1";

/// The model a transcript was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Human-readable name (`whisper-base (ggml-base)`).
    pub name: String,
    /// sha256 of the model file.
    pub sha256: String,
}

/// A kept segment with its speaker, times on the session clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerSegment {
    /// Speaker label: a display name, a user id, or a diarization label.
    pub speaker: String,
    /// Language of its utterance (detected by Whisper, or the one forced), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The segment.
    #[serde(flatten)]
    pub segment: Segment,
}

/// A dropped segment with its speaker and reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerDropped {
    /// Speaker label.
    pub speaker: String,
    /// The segment as decoded.
    pub segment: Segment,
    /// Why it was dropped.
    pub reason: DropReason,
}

/// Why a JSON transcript cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// Not JSON of the transcript's shape.
    #[error("not a transcript: {0}")]
    Json(#[source] serde_json::Error),
    /// Another document type or version.
    #[error("schema is `{0}`, expected `{SCHEMA}`")]
    Schema(String),
}

/// Everything written to a session's transcript files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptDocument {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The model used.
    pub model: ModelInfo,
    /// The options that decided the result ([`TranscribeOptions::result_options`]: execution
    /// settings such as threads are left out).
    pub options: serde_json::Value,
    /// Kept segments, sorted by start time.
    pub segments: Vec<SpeakerSegment>,
    /// Dropped segments, with reasons.
    pub dropped: Vec<SpeakerDropped>,
}

impl TranscriptDocument {
    /// A document from segments in any order (they are sorted by start, then speaker).
    pub fn new(
        model: ModelInfo,
        options: &TranscribeOptions,
        mut segments: Vec<SpeakerSegment>,
        dropped: Vec<SpeakerDropped>,
    ) -> Self {
        segments.sort_by(|a, b| {
            a.segment
                .start
                .total_cmp(&b.segment.start)
                .then_with(|| a.speaker.cmp(&b.speaker))
        });
        Self {
            schema: SCHEMA.to_string(),
            model,
            options: options.result_options(),
            segments,
            dropped,
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a JSON transcript, checking its schema.
    pub fn from_json(text: &str) -> Result<Self, TranscriptError> {
        let doc: Self = serde_json::from_str(text).map_err(TranscriptError::Json)?;
        if doc.schema != SCHEMA {
            return Err(TranscriptError::Schema(doc.schema));
        }
        Ok(doc)
    }

    /// The main language: the one of the most seconds of kept segments (ties: the first in
    /// alphabetical order), if any segment has one.
    pub fn language(&self) -> Option<&str> {
        let mut seconds: std::collections::BTreeMap<&str, f64> = Default::default();
        for s in &self.segments {
            if let Some(l) = &s.language {
                *seconds.entry(l).or_default() += (s.segment.end - s.segment.start).max(0.0);
            }
        }
        seconds
            .into_iter()
            .fold(None, |best: Option<(&str, f64)>, (l, t)| match best {
                Some((_, b)) if b >= t => best,
                _ => Some((l, t)),
            })
            .map(|(l, _)| l)
    }

    /// The language of `s` when it is not the main one.
    fn other_language<'a>(&self, main: Option<&str>, s: &'a SpeakerSegment) -> Option<&'a str> {
        s.language.as_deref().filter(|l| Some(*l) != main)
    }

    fn lines(&self) -> impl Iterator<Item = (&SpeakerSegment, String)> {
        self.segments
            .iter()
            .map(|s| (s, s.segment.text.trim().replace("-->", "->")))
            .filter(|(_, t)| !t.is_empty())
    }

    /// SubRip subtitles: `Speaker: text` cues.
    pub fn to_srt(&self) -> String {
        let mut out = String::new();
        for (i, (s, text)) in self.lines().enumerate() {
            out.push_str(&format!(
                "{}\n{} --> {}\n{}: {}\n\n",
                i + 1,
                timestamp(s.segment.start, ','),
                timestamp(s.segment.end, ','),
                s.speaker,
                text
            ));
        }
        out
    }

    /// WebVTT with voice spans (`<v Speaker>`), the main language in a `Language:` header and
    /// a `<lang xx>` span around the text of a segment in another language.
    pub fn to_vtt(&self) -> String {
        let main = self.language();
        let mut out = String::from("WEBVTT\n");
        if let Some(l) = main {
            out.push_str(&format!("Language: {}\n", clean_tag(l)));
        }
        out.push('\n');
        for (s, text) in self.lines() {
            let speaker = s.speaker.replace(['<', '>', '&'], "_");
            let mut text = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            if let Some(l) = self.other_language(main, s) {
                text = format!("<lang {}>{text}</lang>", clean_tag(l));
            }
            out.push_str(&format!(
                "{} --> {}\n<v {speaker}>{text}\n\n",
                timestamp(s.segment.start, '.'),
                timestamp(s.segment.end, '.')
            ));
        }
        out
    }

    /// Plain text, one `[HH:MM:SS] Speaker: text` line per segment (`Speaker [xx]:` for a
    /// segment in another language than the main one).
    pub fn to_text(&self) -> String {
        let main = self.language();
        self.lines()
            .map(|(s, text)| {
                let t = s.segment.start.max(0.0) as u64;
                let language = self
                    .other_language(main, s)
                    .map_or(String::new(), |l| format!(" [{}]", clean_tag(l)));
                format!(
                    "[{:02}:{:02}:{:02}] {}{language}: {}\n",
                    t / 3600,
                    t / 60 % 60,
                    t % 60,
                    s.speaker,
                    text
                )
            })
            .collect()
    }
}

/// A language code fit for a header or tag: letters, digits and `-` only.
fn clean_tag(l: &str) -> String {
    l.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect()
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> TranscriptDocument {
        let seg = |start: f64, end: f64, text: &str| Segment {
            start,
            end,
            text: text.into(),
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            ..Segment::default()
        };
        TranscriptDocument::new(
            ModelInfo {
                name: "whisper-base".into(),
                sha256: "ab".repeat(32),
            },
            &TranscribeOptions::default(),
            vec![
                SpeakerSegment {
                    speaker: "Sheila".into(),
                    language: None,
                    segment: seg(3723.5, 3725.25, " And I'm Sheila --> in Texas."),
                },
                SpeakerSegment {
                    speaker: "Diane <3".into(),
                    language: None,
                    segment: seg(1.0, 2.0, " Hello?"),
                },
                SpeakerSegment {
                    speaker: "Diane <3".into(),
                    language: None,
                    segment: seg(2.5, 2.6, "   "),
                },
            ],
            vec![],
        )
    }

    #[test]
    fn srt_vtt_and_text() {
        let d = doc();
        assert_eq!(
            d.to_srt(),
            "1\n00:00:01,000 --> 00:00:02,000\nDiane <3: Hello?\n\n2\n01:02:03,500 --> 01:02:05,250\nSheila: And I'm Sheila -> in Texas.\n\n"
        );
        let vtt = d.to_vtt();
        assert!(
            vtt.starts_with("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Diane _3>Hello?\n"),
            "{vtt}"
        );
        assert_eq!(
            d.to_text(),
            "[00:00:01] Diane <3: Hello?\n[01:02:03] Sheila: And I'm Sheila -> in Texas.\n"
        );
    }

    #[test]
    fn languages_name_the_main_one_and_mark_the_others() {
        let mut d = doc();
        assert_eq!(d.language(), None);
        // Sheila speaks Portuguese for 1.75 s, Diane English for 1.1 s: Portuguese is the main
        // language, Diane's line is marked.
        d.segments[0].language = Some("en".into());
        d.segments[1].language = Some("en".into());
        d.segments[2].language = Some("pt".into());
        assert_eq!(d.language(), Some("pt"));
        let vtt = d.to_vtt();
        assert!(vtt.starts_with("WEBVTT\nLanguage: pt\n\n"), "{vtt}");
        assert!(
            vtt.contains("<v Diane _3><lang en>Hello?</lang>\n"),
            "{vtt}"
        );
        assert!(vtt.contains("<v Sheila>And I'm"), "{vtt}");
        assert_eq!(
            d.to_text(),
            "[00:00:01] Diane <3 [en]: Hello?\n[01:02:03] Sheila: And I'm Sheila -> in Texas.\n"
        );
        // The language goes through JSON, and a transcript without it still reads.
        let back = TranscriptDocument::from_json(&d.to_json()).unwrap();
        assert_eq!(back, d);
        let old = doc().to_json();
        let v: serde_json::Value = serde_json::from_str(&old).unwrap();
        let segments = v["segments"].as_array().unwrap();
        assert!(segments.iter().all(|s| s.get("language").is_none()));
        assert_eq!(
            TranscriptDocument::from_json(&old).unwrap().language(),
            None
        );
        // A hostile code cannot break the header or a tag.
        d.segments[0].language = Some("en>\n\nx".into());
        d.segments[1].language = Some("en>\n\nx".into());
        assert!(d.to_vtt().contains("<lang enx>"));
    }

    #[test]
    fn json_round_trips_and_checks_schema() {
        let d = doc();
        let back = TranscriptDocument::from_json(&d.to_json()).unwrap();
        assert_eq!(back, d);
        let other = d.to_json().replace(SCHEMA, "something/9");
        assert!(TranscriptDocument::from_json(&other).is_err());
        assert!(TranscriptDocument::from_json("{").is_err());
    }
}
