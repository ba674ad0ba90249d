//! What the index holds of one session, read from its directory: `session.json`, then
//! `transcript.json` (or, while a live recording runs, the transcripts it keeps under
//! `.work/transcribe-live/`) and `diarization.json`. Documents are read leniently (fields the
//! index does not use are ignored), so newer writers do not break the index.

use std::collections::BTreeMap;
use std::path::Path;

use nina_store::{Session, SessionDir, TRANSCRIPT_JSON, UtteranceRecord, WORK_DIR};
use serde::Deserialize;

use crate::IndexError;

/// `diarization.json`.
pub const DIARIZATION_JSON: &str = "diarization.json";
/// The `.work/` folder where a live recording keeps each utterance's transcript.
pub const LIVE_WORK: &str = "transcribe-live";
/// Largest transcript or diarization document read (a bound against damaged files).
const MAX_DOC_BYTES: u64 = 256 << 20;

/// A word as the transcript holds it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawWord {
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default)]
    pub probability: Option<f32>,
}

/// A segment as the transcript holds it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawSegment {
    #[serde(default)]
    pub speaker: String,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub avg_logprob: Option<f32>,
    #[serde(default)]
    pub words: Vec<RawWord>,
    /// Language of the segment's utterance, when the writer recorded it.
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawModel {
    name: String,
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawTranscript {
    schema: String,
    model: RawModel,
    #[serde(default)]
    options: serde_json::Value,
    #[serde(default)]
    segments: Vec<RawSegment>,
}

#[derive(Debug, Deserialize)]
struct RawLiveTranscript {
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    segments: Vec<RawSegment>,
}

#[derive(Debug, Deserialize)]
struct RawLiveEntry {
    model_sha256: String,
    transcript: RawLiveTranscript,
}

#[derive(Debug, Deserialize)]
struct RawIdentity {
    user_id: u64,
    #[serde(default)]
    similarity: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawSpeaker {
    name: String,
    user_id: u64,
    #[serde(default)]
    seconds: f64,
    #[serde(default)]
    identity: Option<RawIdentity>,
}

#[derive(Debug, Deserialize)]
struct RawDiarSegment {
    index: usize,
    #[serde(default)]
    speaker: Option<String>,
    #[serde(default)]
    words: Vec<RawDiarWord>,
}

#[derive(Debug, Deserialize)]
struct RawDiarWord {
    #[serde(default)]
    speaker: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawDiarization {
    #[serde(default)]
    speakers: Vec<RawSpeaker>,
    #[serde(default)]
    segments: Vec<RawDiarSegment>,
}

/// A word of an indexed segment.
#[derive(Debug, Clone, PartialEq)]
pub struct WordRow {
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// The word as written (with its leading space, if any).
    pub text: String,
    /// Its probability.
    pub probability: Option<f32>,
    /// Its diarized speaker, where the segment straddles a turn change.
    pub speaker: Option<String>,
}

/// A transcript segment as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    /// Position in `transcript.json`'s segments (or in the live transcripts' order).
    pub position: usize,
    /// The utterance it was transcribed from (index into the session's utterances).
    pub utterance: Option<usize>,
    /// The stream's user, when known.
    pub user_id: Option<u64>,
    /// The stream's label in the transcript (display name or user id).
    pub stream: String,
    /// The speaker: the diarized name when diarized, else the stream's label.
    pub speaker: String,
    /// Start, seconds on the session clock.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Text, trimmed.
    pub text: String,
    /// Language code, when known.
    pub language: Option<String>,
    /// Confidence in 0..=1: the mean probability of its words, else `exp(avg_logprob)`.
    pub confidence: Option<f64>,
    /// Words.
    pub words: Vec<WordRow>,
}

/// A diarized speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerRow {
    /// Its name in the outputs (a voiceprint's display name, `unknown_N`, `SPEAKER_00`, ...).
    pub name: String,
    /// The stream (user) it was found in.
    pub stream_user: u64,
    /// The user whose voiceprint it matched.
    pub identity: Option<u64>,
    /// Cosine similarity to that print.
    pub similarity: Option<f64>,
    /// Seconds of speech.
    pub seconds: f64,
}

/// A model that processed the session.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// The step (`segment`, `transcribe`, `diarize`, `transcribe-live`).
    pub step: String,
    /// Its name.
    pub name: String,
    /// Its sha256, if known.
    pub sha256: Option<String>,
}

/// Everything the index holds of one session.
#[derive(Debug, Clone)]
pub struct SessionData {
    /// `session.json`.
    pub session: Session,
    /// Transcript segments, in order.
    pub segments: Vec<SegmentRow>,
    /// Diarized speakers.
    pub speakers: Vec<SpeakerRow>,
    /// Models used.
    pub models: Vec<ModelRow>,
}

fn read_doc<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, IndexError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IndexError::io(path, e)),
    };
    if meta.len() > MAX_DOC_BYTES {
        return Err(IndexError::Damaged {
            path: path.to_path_buf(),
            reason: format!("{} bytes is more than {MAX_DOC_BYTES}", meta.len()),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| IndexError::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The name of an utterance's transcript under `.work/<step>/`: its file made an id (as
/// `nina-pipeline` names it).
fn work_name_of(file: &str) -> String {
    let stem = file.strip_suffix(".wav").unwrap_or(file);
    stem.strip_prefix("audio/")
        .unwrap_or(stem)
        .replace('/', "_")
}

/// Confidence of a segment: mean word probability, else `exp(avg_logprob)`.
fn confidence(s: &RawSegment) -> Option<f64> {
    let probs: Vec<f64> = s
        .words
        .iter()
        .filter_map(|w| w.probability)
        .map(f64::from)
        .filter(|p| p.is_finite())
        .collect();
    if !probs.is_empty() {
        return Some((probs.iter().sum::<f64>() / probs.len() as f64).clamp(0.0, 1.0));
    }
    s.avg_logprob
        .map(f64::from)
        .filter(|l| l.is_finite())
        .map(|l| l.exp().clamp(0.0, 1.0))
}

/// The utterance (index into `session.utterances`) a segment on the session clock, of the
/// stream labelled `label` in the transcript, was transcribed from; `labels` from
/// [`stream_labels`].
pub fn utterance_of(
    session: &Session,
    labels: &BTreeMap<String, Vec<u64>>,
    label: &str,
    start: f64,
    end: f64,
) -> Option<usize> {
    let users = labels.get(label)?;
    let mid = (start + end) / 2.0;
    session
        .utterances
        .iter()
        .enumerate()
        .filter(|(_, u)| users.contains(&u.user_id))
        .map(|(i, u)| {
            // Distance of the segment's start, then of its middle, from the utterance.
            let d = |t: f64| (u.start - t).max(t - u.end).max(0.0);
            (i, d(start) + d(mid) * 1e-3)
        })
        .filter(|(_, d)| *d <= 1.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Labels of the session's streams in its transcript (display name, else user id) and the
/// users carrying each (several when display names collide).
pub fn stream_labels(session: &Session) -> BTreeMap<String, Vec<u64>> {
    let mut labels: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut users: Vec<u64> = session.participants.iter().map(|p| p.user_id).collect();
    users.extend(session.utterances.iter().map(|u| u.user_id));
    users.sort_unstable();
    users.dedup();
    for u in users {
        labels.entry(session.speaker_label(u)).or_default().push(u);
    }
    labels
}

impl SessionData {
    /// Reads the session in `dir`.
    pub fn read(dir: &SessionDir) -> Result<Self, IndexError> {
        let session = dir.load()?;
        let root = dir.root();
        let labels = stream_labels(&session);
        let mut models: Vec<ModelRow> = session
            .processing
            .iter()
            .map(|p| ModelRow {
                step: p.step.clone(),
                name: p.name.clone(),
                sha256: p.sha256.clone(),
            })
            .collect();
        let mut segments = Vec::new();
        let transcript: Option<RawTranscript> = read_doc(&root.join(TRANSCRIPT_JSON))?;
        match transcript {
            Some(t) if t.schema.starts_with("nina.transcript/") => {
                let forced = t
                    .options
                    .get("language")
                    .and_then(|l| l.as_str())
                    .map(str::to_string);
                if !models.iter().any(|m| m.step == "transcribe") {
                    models.push(ModelRow {
                        step: "transcribe".into(),
                        name: t.model.name.clone(),
                        sha256: t.model.sha256.clone(),
                    });
                }
                for (position, s) in t.segments.into_iter().enumerate() {
                    let utterance = utterance_of(&session, &labels, &s.speaker, s.start, s.end);
                    let language = s.language.clone().or_else(|| forced.clone());
                    segments.push(segment_row(
                        position, &session, &labels, utterance, s, language,
                    ));
                }
            }
            Some(t) => {
                return Err(IndexError::Damaged {
                    path: root.join(TRANSCRIPT_JSON),
                    reason: format!("schema {:?} is not a Nina transcript", t.schema),
                });
            }
            None => segments = live_segments(dir, &session, &labels, &mut models)?,
        }
        let mut speakers = Vec::new();
        if let Some(d) = read_doc::<RawDiarization>(&root.join(DIARIZATION_JSON))? {
            speakers = d
                .speakers
                .into_iter()
                .map(|s| SpeakerRow {
                    name: s.name,
                    stream_user: s.user_id,
                    identity: s.identity.as_ref().map(|i| i.user_id),
                    similarity: s.identity.and_then(|i| i.similarity),
                    seconds: s.seconds,
                })
                .collect();
            for e in d.segments {
                let Some(seg) = segments.iter_mut().find(|s| s.position == e.index) else {
                    continue;
                };
                if let Some(sp) = e.speaker {
                    seg.speaker = sp;
                }
                if e.words.len() == seg.words.len() {
                    for (w, dw) in seg.words.iter_mut().zip(e.words) {
                        w.speaker = dw.speaker;
                    }
                }
            }
        }
        Ok(Self {
            session,
            segments,
            speakers,
            models,
        })
    }
}

fn segment_row(
    position: usize,
    session: &Session,
    labels: &BTreeMap<String, Vec<u64>>,
    utterance: Option<usize>,
    s: RawSegment,
    language: Option<String>,
) -> SegmentRow {
    let user_id = utterance
        .map(|i| session.utterances[i].user_id)
        .or_else(|| labels.get(&s.speaker).and_then(|u| u.first().copied()));
    SegmentRow {
        position,
        utterance,
        user_id,
        stream: s.speaker.clone(),
        speaker: s.speaker.clone(),
        start: s.start,
        end: s.end,
        text: s.text.trim().to_string(),
        language,
        confidence: confidence(&s),
        words: s
            .words
            .into_iter()
            .map(|w| WordRow {
                start: w.start,
                end: w.end,
                text: w.text,
                probability: w.probability,
                speaker: None,
            })
            .collect(),
    }
}

/// Segments of a live recording not transcribed as a whole yet: each utterance's transcript
/// kept under `.work/transcribe-live/` (times relative to the utterance).
fn live_segments(
    dir: &SessionDir,
    session: &Session,
    labels: &BTreeMap<String, Vec<u64>>,
    models: &mut Vec<ModelRow>,
) -> Result<Vec<SegmentRow>, IndexError> {
    let work = dir.root().join(WORK_DIR).join(LIVE_WORK);
    if !work.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut shas = std::collections::BTreeSet::new();
    for (i, u) in session.utterances.iter().enumerate() {
        let path = work.join(format!("{}.json", work_name_of(&u.file)));
        // A live transcript being replaced, or damaged, is skipped: the next update reads it.
        let entry = match read_doc::<RawLiveEntry>(&path) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("skipping a live transcript: {e}");
                continue;
            }
        };
        shas.insert(entry.model_sha256.clone());
        let label = session.speaker_label(u.user_id);
        for s in entry.transcript.segments {
            let s = shifted(s, u, &label);
            out.push(segment_row(
                out.len(),
                session,
                labels,
                Some(i),
                s,
                entry.transcript.language.clone(),
            ));
        }
    }
    for sha in shas {
        models.push(ModelRow {
            step: LIVE_WORK.into(),
            name: "whisper (live)".into(),
            sha256: Some(sha),
        });
    }
    Ok(out)
}

fn shifted(mut s: RawSegment, u: &UtteranceRecord, label: &str) -> RawSegment {
    s.start += u.start;
    s.end += u.start;
    for w in &mut s.words {
        w.start += u.start;
        w.end += u.start;
    }
    s.speaker = label.to_string();
    s
}
