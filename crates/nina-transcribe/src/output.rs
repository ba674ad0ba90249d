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
    /// Language of each transcribed utterance (detected or given), by utterance file: what
    /// the search index files segments under.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub languages: std::collections::BTreeMap<String, String>,
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
            languages: Default::default(),
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

    /// WebVTT with voice spans (`<v Speaker>`).
    pub fn to_vtt(&self) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for (s, text) in self.lines() {
            let speaker = s.speaker.replace(['<', '>', '&'], "_");
            let text = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            out.push_str(&format!(
                "{} --> {}\n<v {speaker}>{text}\n\n",
                timestamp(s.segment.start, '.'),
                timestamp(s.segment.end, '.')
            ));
        }
        out
    }

    /// Plain text, one `[HH:MM:SS] Speaker: text` line per segment.
    pub fn to_text(&self) -> String {
        self.lines()
            .map(|(s, text)| {
                let t = s.segment.start.max(0.0) as u64;
                format!(
                    "[{:02}:{:02}:{:02}] {}: {}\n",
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
            words: vec![],
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
                    segment: seg(3723.5, 3725.25, " And I'm Sheila --> in Texas."),
                },
                SpeakerSegment {
                    speaker: "Diane <3".into(),
                    segment: seg(1.0, 2.0, " Hello?"),
                },
                SpeakerSegment {
                    speaker: "Diane <3".into(),
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
    fn json_round_trips_and_checks_schema() {
        let d = doc();
        let back = TranscriptDocument::from_json(&d.to_json()).unwrap();
        assert_eq!(back, d);
        let other = d.to_json().replace(SCHEMA, "something/9");
        assert!(TranscriptDocument::from_json(&other).is_err());
        assert!(TranscriptDocument::from_json("{").is_err());
    }
}
