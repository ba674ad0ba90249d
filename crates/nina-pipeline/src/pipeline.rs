//! The offline pipeline: a file into a session, a session through transcription.
//!
//! Both steps hold the session's lock while they work, and change a session only by whole files
//! with `session.json` as the commit point: re-segmenting writes its utterances under new names
//! beside the old ones, commits the new `session.json`, and only then removes what the old one
//! named. A kill at any point leaves the old complete set or the new one.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nina_models::{ModelDir, ModelError, catalog};
use nina_segment::vad::{EnergyVad, SileroVad, VoiceDetector};
use nina_segment::{Samples, SegmentError, Segmenter, SegmenterConfig};
use nina_store::{
    CURRENT_VERSION, Failure, Participant, Place, Processing, SCHEMA, Session, SessionDir, Store,
    StoreError, TRANSCRIPT_JSON, TRANSCRIPT_SRT, TRANSCRIPT_TXT, TRANSCRIPT_VTT, UtteranceRecord,
};
use nina_transcribe::{
    GuardTally, JobResult, ModelInfo, SpeakerDropped, SpeakerSegment, TranscribeError,
    TranscribeOptions, Transcript, TranscriptDocument, TranscriptionPool, WhisperModel,
};
use serde_json::json;

use crate::decode::{self, audio_err};
use crate::{PipelineError, Progress, SessionWriter};

/// The user id of the single stream of a session built from a file.
pub const FILE_USER: u64 = 0;
/// Name of the segmentation step in `session.json`.
pub const STEP_SEGMENT: &str = "segment";
/// Name of the transcription step in `session.json`.
pub const STEP_TRANSCRIBE: &str = "transcribe";
pub(crate) const WORK_PREFIX: &str = "transcribe-";
const TRANSCRIPTS: [&str; 4] = [
    TRANSCRIPT_JSON,
    TRANSCRIPT_SRT,
    TRANSCRIPT_VTT,
    TRANSCRIPT_TXT,
];

/// Which voice activity detector segments audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VadChoice {
    /// Silero when its model is present, else the energy detector (with a warning).
    #[default]
    Auto,
    /// Silero; a missing model is an error.
    Silero,
    /// The energy detector.
    Energy,
}

/// Everything the pipeline needs to know, in one place.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Where models are looked for ([`ModelDir::discover`] by default: `$NINA_MODELS`, else the
    /// per-user directory, then `./models`).
    pub models: ModelDir,
    /// Whisper model: a pinned id (`whisper-base`, `whisper-tiny-en`) or a ggml file. (A model
    /// given by URL is downloaded by the binary first, and given here as its file.)
    pub whisper: String,
    /// Voice activity detector.
    pub vad: VadChoice,
    /// Hysteresis and limits of segmentation.
    pub segmenter: SegmenterConfig,
    /// Transcription options (those that decide the result are recorded with it).
    pub transcribe: TranscribeOptions,
    /// Transcription workers running at once (an execution setting: not part of any key).
    pub workers: usize,
    /// Utterances waiting for a worker before submitting blocks.
    pub queue: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            models: ModelDir::discover(),
            whisper: catalog::DEFAULT_WHISPER.id.to_string(),
            vad: VadChoice::Auto,
            segmenter: SegmenterConfig::default(),
            transcribe: TranscribeOptions::default(),
            workers: 1,
            queue: 4,
        }
    }
}

impl PipelineConfig {
    /// Checks every setting without loading anything, so a bad option is reported before a
    /// model loads.
    pub fn validate(&self) -> Result<(), PipelineError> {
        self.segmenter.validate()?;
        if self.workers == 0 || self.workers > 64 {
            return Err(PipelineError::Config(format!(
                "workers must be between 1 and 64, got {}",
                self.workers
            )));
        }
        if self.queue == 0 {
            return Err(PipelineError::Config("queue must be at least 1".into()));
        }
        nina_transcribe::check_options(&self.transcribe).map_err(|e| match e {
            TranscribeError::Options(m) => PipelineError::Config(m),
            other => PipelineError::Transcribe(other),
        })
    }
}

/// What [`Pipeline::transcribe_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Transcribed (possibly with some utterances failed: see `failed`).
    Done {
        /// Utterances in the session.
        utterances: usize,
        /// Of them, found already done by an interrupted or partly failed run.
        resumed: usize,
        /// Seconds of utterance audio.
        audio_seconds: f64,
        /// Utterances that could not be transcribed, with why; recorded in `session.json`,
        /// and a rerun retries only these.
        failed: Vec<Failure>,
        /// What the transcription guards did, over every utterance of the transcript.
        guards: GuardTally,
    },
    /// Already done with the same model, options and utterances.
    Skipped,
}

/// The pipeline: configuration plus models loaded on first use and shared.
pub struct Pipeline {
    cfg: PipelineConfig,
    models: ModelDir,
    whisper: Mutex<Option<WhisperModel>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// First 16 hex digits of the sha256 of `parts`, separated.
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut joined = Vec::new();
    for p in parts {
        joined.extend_from_slice(p.as_bytes());
        joined.push(0);
    }
    nina_fs::sha256_bytes(&joined)[..16].to_string()
}

fn sha256_of_file(path: &Path) -> Result<String, PipelineError> {
    nina_fs::sha256_file(path).map_err(|e| audio_err(path, e.source))
}

fn mtime_ms(path: &Path) -> i64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn file_session_id(source_sha: &str) -> String {
    format!("file-{}", &source_sha[..16])
}

/// The session of a file before segmentation: id from its contents, guild and channel 0, one
/// participant named after the file, starting at `started_at_ms`.
fn file_session(audio: &Path, source_sha: &str, started_at_ms: i64) -> Session {
    Session {
        schema: SCHEMA.into(),
        schema_version: CURRENT_VERSION,
        id: file_session_id(source_sha),
        guild: Place { id: 0, name: None },
        channel: Place { id: 0, name: None },
        started_at_ms,
        ended_at_ms: None,
        participants: vec![Participant {
            user_id: FILE_USER,
            display_name: audio.file_stem().map(|s| s.to_string_lossy().into_owned()),
            presence: Vec::new(),
        }],
        utterances: Vec::new(),
        processing: Vec::new(),
        source: audio.file_name().map(|s| s.to_string_lossy().into_owned()),
        tracks: Vec::new(),
        gaps: Vec::new(),
        recorder: None,
        dave: None,
    }
}

/// Where a file's session goes in a data directory: the session already there for the same
/// content (`<data>/0/0/<any date>/file-<sha>/`), else a new one dated by the file's
/// modification time. Identity is the content: a copy of a file (new name, new time) finds the
/// session, and the partial run, of the original.
pub fn file_session_dir(store: &Store, audio: &Path) -> Result<SessionDir, PipelineError> {
    let sha = sha256_of_file(audio)?;
    if let Some(found) = store.find(0, 0, &file_session_id(&sha))? {
        return Ok(found);
    }
    Ok(store.session_dir(&file_session(audio, &sha, mtime_ms(audio)))?)
}

pub(crate) fn segmenter_options(c: &SegmenterConfig) -> serde_json::Value {
    json!({
        "threshold": c.threshold,
        "neg_threshold": c.neg_threshold,
        "min_speech": c.min_speech,
        "min_silence": c.min_silence,
        "padding": c.padding,
        "max_utterance": c.max_utterance,
        "gap_tolerance": c.gap_tolerance,
    })
}

/// The name of an utterance's saved result in `.work/`: its file's name, made an id.
pub(crate) fn work_name(u: &UtteranceRecord) -> String {
    work_name_of(&u.file)
}

/// [`work_name`] of an utterance file.
pub(crate) fn work_name_of(file: &str) -> String {
    let stem = file.strip_suffix(".wav").unwrap_or(file);
    stem.strip_prefix("audio/")
        .unwrap_or(stem)
        .replace('/', "_")
}

/// Removes what a session's `session.json` does not vouch for: transcripts when no
/// transcription is recorded (a kill between committing a new segmentation and removing them).
pub(crate) fn remove_unclaimed_outputs(
    dir: &SessionDir,
    session: &Session,
) -> Result<(), PipelineError> {
    if session.processing_of(STEP_TRANSCRIBE).is_none() {
        for f in TRANSCRIPTS {
            let p = dir.root().join(f);
            match fs::remove_file(&p) {
                Ok(()) => tracing::info!(file = %p.display(), "removed a stale transcript"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io { path: p, source: e }.into()),
            }
        }
    }
    Ok(())
}

/// Removes utterance WAVs of `user` that `session` does not name (the previous segmentation's).
pub(crate) fn remove_unnamed_audio(
    dir: &SessionDir,
    session: &Session,
    user: u64,
) -> Result<(), PipelineError> {
    let keep: BTreeSet<PathBuf> = session
        .utterances
        .iter()
        .map(|u| dir.root().join(&u.file))
        .collect();
    let folder = dir.root().join("audio").join(user.to_string());
    let Ok(entries) = fs::read_dir(&folder) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let ours =
            e.file_type().is_ok_and(|t| t.is_file()) && p.extension().is_some_and(|x| x == "wav");
        if ours && !keep.contains(&p) {
            fs::remove_file(&p).map_err(|source| StoreError::Io {
                path: p.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// What one transcription run has to do and has done.
struct TranscriptionRun<'a> {
    dir: &'a SessionDir,
    session: &'a Session,
    work: String,
    results: Vec<Option<Transcript>>,
    failed: Vec<Failure>,
}

impl TranscriptionRun<'_> {
    fn fail(&mut self, i: usize, reason: String) {
        let file = self.session.utterances[i].file.clone();
        tracing::error!(file = %file, "utterance not transcribed: {reason}");
        self.failed.push(Failure { file, reason });
    }

    fn take(
        &mut self,
        i: usize,
        r: JobResult<usize>,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        match r.transcript {
            Ok(t) => {
                let u = &self.session.utterances[i];
                self.dir.put_work(&self.work, &work_name(u), &t)?;
                self.results[i] = Some(t);
                progress.utterance_done(u.end - u.start);
            }
            Err(e @ TranscribeError::Model(_)) => return Err(e.into()),
            Err(e) => self.fail(i, e.to_string()),
        }
        Ok(())
    }
}

impl Pipeline {
    /// A pipeline with `cfg` (validated); nothing is loaded until it is needed.
    pub fn new(cfg: PipelineConfig) -> Result<Self, PipelineError> {
        cfg.validate()?;
        Ok(Self {
            models: cfg.models.clone(),
            cfg,
            whisper: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The Whisper model, loaded on first use.
    pub fn whisper(&self) -> Result<WhisperModel, PipelineError> {
        // A panic while loading leaves the slot empty, so a poisoned lock is still usable.
        let mut slot = self.whisper.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let path = nina_models::resolve_whisper(&self.models, &self.cfg.whisper)?;
        let model = WhisperModel::load(&path)?;
        tracing::info!(model = model.name(), path = %path.display(), "loaded Whisper");
        *slot = Some(model.clone());
        Ok(model)
    }

    /// A fresh voice activity detector, and the sha256 of its model if it has one.
    pub fn detector(
        &self,
    ) -> Result<(Box<dyn VoiceDetector>, Option<&'static str>), PipelineError> {
        let silero = || SileroVad::from_models(&self.models);
        Ok(match self.cfg.vad {
            VadChoice::Energy => (Box::new(EnergyVad::default()), None),
            VadChoice::Silero => (Box::new(silero()?), Some(catalog::SILERO_VAD.sha256)),
            VadChoice::Auto => match silero() {
                Ok(v) => (Box::new(v), Some(catalog::SILERO_VAD.sha256)),
                Err(SegmentError::Model(e @ ModelError::Missing { .. })) => {
                    tracing::warn!("no Silero model ({e}); using the energy detector");
                    (Box::new(EnergyVad::default()), None)
                }
                Err(e) => return Err(e.into()),
            },
        })
    }

    /// Decodes `audio` and cuts it into utterances stored in `dest` (one stream, user
    /// [`FILE_USER`]). Skipped when `dest` already holds this file segmented the same way,
    /// unless `force`. `dest` must be new, empty or a Nina session ([`SessionDir::claim`]).
    ///
    /// Re-segmenting is crash-safe: new utterances get names of their own (tagged with the
    /// step's key), the new `session.json` is the commit point, and the old audio and the stale
    /// transcripts are removed only after it.
    pub fn segment_file(
        &self,
        audio: &Path,
        dest: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Session, PipelineError> {
        let (lock, existing) = dest.claim()?;
        let source_sha = sha256_of_file(audio)?;
        let (detector, vad_sha) = self.detector()?;
        let options = segmenter_options(&self.cfg.segmenter);
        let name = detector.name();
        let key = digest(&[
            STEP_SEGMENT,
            name,
            vad_sha.unwrap_or(""),
            &source_sha,
            &options.to_string(),
        ]);
        if let Some(s) = &existing
            && !force
            && s.processing_of(STEP_SEGMENT).is_some_and(|p| p.key == key)
        {
            // Finish what a run killed after its commit left undone.
            remove_unnamed_audio(dest, s, FILE_USER)?;
            remove_unclaimed_outputs(dest, s)?;
            return Ok(s.clone());
        }
        // The session's identity and start stay those it was created with.
        let started_at_ms = existing
            .as_ref()
            .map_or_else(|| mtime_ms(audio), |s| s.started_at_ms);
        let skeleton = file_session(audio, &source_sha, started_at_ms);
        if existing.is_none() {
            dest.save(&skeleton)?; // identity on disk before any audio
        }
        let mut writer = SessionWriter::new(dest.clone(), skeleton, lock).tagged(&key[..8]);
        let duration = self.segment_into(audio, &mut writer, progress)?;
        let (mut session, _lock) = writer.into_parts();
        session.ended_at_ms = Some(session.started_at_ms + (duration * 1000.0).round() as i64);
        session.processing = vec![Processing {
            step: STEP_SEGMENT.into(),
            name: name.into(),
            sha256: vad_sha.map(str::to_owned),
            options,
            key,
            failed: vec![],
        }];
        dest.save(&session)?; // the commit point
        remove_unnamed_audio(dest, &session, FILE_USER)?;
        remove_unclaimed_outputs(dest, &session)?;
        self.clear_transcription_work(dest)?;
        Ok(session)
    }

    /// Decodes `audio` through one segmenter into `writer`; returns the duration in seconds.
    fn segment_into(
        &self,
        audio: &Path,
        writer: &mut SessionWriter,
        progress: &dyn Progress,
    ) -> Result<f64, PipelineError> {
        let (detector, _) = self.detector()?;
        let mut detector = Some(detector);
        let mut seg: Option<Segmenter> = None;
        let (format, duration) = decode::decode_file(audio, |samples, at, format| {
            if seg.is_none() {
                let d = detector
                    .take()
                    .ok_or_else(|| audio_err(audio, "format changed"))?;
                seg = Some(
                    Segmenter::new(self.cfg.segmenter.clone(), format, d)
                        .map_err(|e| audio_err(audio, e))?,
                );
            }
            if let Some(s) = seg.as_mut() {
                for u in s.push(Samples::F32(samples), at)? {
                    writer.utterance(FILE_USER, &u)?;
                }
            }
            progress.decoded(at);
            Ok(())
        })?;
        if let Some(s) = seg.as_mut() {
            for u in s.finish()? {
                writer.utterance(FILE_USER, &u)?;
            }
        }
        progress.decoded(duration);
        tracing::info!(
            rate = format.sample_rate,
            channels = format.channels,
            duration,
            utterances = writer.session().utterances.len(),
            "segmented"
        );
        Ok(duration)
    }

    /// Loads an utterance's audio as 16 kHz mono.
    pub(crate) fn utterance_audio(
        &self,
        dir: &SessionDir,
        u: &UtteranceRecord,
    ) -> Result<Vec<f32>, PipelineError> {
        let path = dir.file(&u.file)?;
        let damaged = |reason: String| StoreError::Invalid {
            path: path.clone(),
            field: "(audio)".into(),
            reason,
        };
        let seconds = (u.end - u.start).max(0.0) + 1.0;
        let max = (seconds * f64::from(u.sample_rate) * f64::from(u.channels)) as usize;
        let a = nina_store::read_wav(&path, max)?;
        if a.sample_rate != u.sample_rate || a.channels != u.channels {
            return Err(damaged(format!(
                "{} Hz x {} channels, session.json says {} Hz x {}",
                a.sample_rate, a.channels, u.sample_rate, u.channels
            ))
            .into());
        }
        if a.samples.is_empty() {
            return Err(damaged("no samples".into()).into());
        }
        Ok(nina_segment::resample::to_16k_mono(
            &a.samples,
            a.sample_rate,
            a.channels,
        )?)
    }

    /// The key of transcribing `session` with `model`: the model's sha256, the options that
    /// decide the result, the segmentation it rests on and the utterances.
    fn transcription_key(&self, session: &Session, model_sha: &str) -> String {
        let segmentation = session
            .processing_of(STEP_SEGMENT)
            .map_or("live", |p| p.key.as_str());
        let mut utterances = String::new();
        for u in &session.utterances {
            utterances.push_str(&format!(
                "{}|{}|{}|{};",
                u.file, u.start, u.end, u.sample_rate
            ));
        }
        digest(&[
            STEP_TRANSCRIBE,
            model_sha,
            &self.cfg.transcribe.result_options().to_string(),
            segmentation,
            &utterances,
        ])
    }

    /// Transcribes every utterance of the session in `dir` and writes
    /// `transcript.{json,srt,vtt,txt}`, then records the step in `session.json`.
    ///
    /// Each finished utterance is saved under `.work/` at once, so an interrupted run resumes.
    /// An utterance that cannot be transcribed (damaged audio, an engine error, a panic) is
    /// recorded in `session.json` with its reason and the rest completes; a rerun retries only
    /// those. A session already transcribed with the same model, options and utterances, with
    /// nothing failed, is skipped unless `force`.
    pub fn transcribe_session(
        &self,
        dir: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Outcome, PipelineError> {
        let (_lock, mut session) = dir.open()?;
        remove_unclaimed_outputs(dir, &session)?;
        let model = self.whisper()?;
        let sha = model.sha256()?;
        let key = self.transcription_key(&session, &sha);
        let done = session
            .processing_of(STEP_TRANSCRIBE)
            .is_some_and(|p| p.key == key && p.failed.is_empty());
        if done && !force && dir.root().join(TRANSCRIPT_JSON).is_file() {
            return Ok(Outcome::Skipped);
        }
        let work = format!("{WORK_PREFIX}{key}");
        let options = self.cfg.transcribe.result_options();
        if force {
            dir.clear_work(&work)?;
        }
        let mut run = TranscriptionRun {
            dir,
            session: &session,
            results: session
                .utterances
                .iter()
                .map(|u| {
                    dir.get_work::<Transcript>(&work, &work_name(u))
                        .or_else(|| crate::live::adopt_live(dir, &u.file, &sha, &options))
                })
                .collect(),
            work,
            failed: Vec::new(),
        };
        let resumed = run.results.iter().filter(|r| r.is_some()).count();
        let audio_seconds = session.audio_seconds();
        progress.transcription_started(
            dir.root(),
            session.utterances.len(),
            resumed,
            audio_seconds,
        );
        for (u, r) in session.utterances.iter().zip(&run.results) {
            if r.is_some() {
                progress.utterance_done(u.end - u.start);
            }
        }
        self.run_pool(&model, &mut run, progress)?;
        let TranscriptionRun {
            results, failed, ..
        } = run;
        let mut guards = GuardTally::default();
        for t in results.iter().flatten() {
            guards += GuardTally::of(t);
        }
        self.write_transcripts(dir, &session, &model, &sha, results)?;
        session.set_processing(Processing {
            step: STEP_TRANSCRIBE.into(),
            name: model.name().to_string(),
            sha256: Some(sha),
            options: self.cfg.transcribe.result_options(),
            key,
            failed: failed.clone(),
        });
        dir.save(&session)?;
        if failed.is_empty() {
            self.clear_transcription_work(dir)?;
        }
        Ok(Outcome::Done {
            utterances: session.utterances.len(),
            resumed,
            audio_seconds,
            failed,
            guards,
        })
    }

    /// Transcribes every utterance of `run` without a result, through a pool that is joined
    /// before this returns (on error too).
    fn run_pool(
        &self,
        model: &WhisperModel,
        run: &mut TranscriptionRun<'_>,
        progress: &dyn Progress,
    ) -> Result<(), PipelineError> {
        let todo: Vec<usize> = (0..run.results.len())
            .filter(|&i| run.results[i].is_none())
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let workers = self.cfg.workers.min(todo.len());
        let mut pool = TranscriptionPool::<usize>::new(
            workers,
            self.cfg.queue,
            self.cfg.transcribe.clone(),
            || model.transcriber(),
        )?;
        for i in todo {
            // Each utterance is its own stream, so results come back as soon as they are done.
            match self.utterance_audio(run.dir, &run.session.utterances[i]) {
                Ok(audio) => {
                    pool.submit(i, run.session.utterances[i].start, audio)?;
                }
                Err(e) => run.fail(i, e.to_string()),
            }
            while let Some(r) = pool.recv_timeout(Duration::ZERO)? {
                run.take(r.stream, r, progress)?;
            }
        }
        for r in pool.finish()? {
            run.take(r.stream, r, progress)?;
        }
        Ok(())
    }

    /// Writes the transcript files from the results there are.
    fn write_transcripts(
        &self,
        dir: &SessionDir,
        session: &Session,
        model: &WhisperModel,
        sha: &str,
        results: Vec<Option<Transcript>>,
    ) -> Result<(), PipelineError> {
        let mut segments = Vec::new();
        let mut dropped = Vec::new();
        for (u, t) in session.utterances.iter().zip(results) {
            let Some(t) = t else { continue };
            let speaker = session.speaker_label(u.user_id);
            let t = t.shifted(u.start);
            let language = t.language.clone();
            segments.extend(t.segments.into_iter().map(|segment| SpeakerSegment {
                speaker: speaker.clone(),
                language: language.clone(),
                segment,
            }));
            dropped.extend(t.dropped.into_iter().map(|d| SpeakerDropped {
                speaker: speaker.clone(),
                segment: d.segment,
                reason: d.reason,
            }));
        }
        let doc = TranscriptDocument::new(
            ModelInfo {
                name: model.name().to_string(),
                sha256: sha.to_string(),
            },
            &self.cfg.transcribe,
            segments,
            dropped,
        );
        dir.write(TRANSCRIPT_JSON, doc.to_json().as_bytes())?;
        dir.write(TRANSCRIPT_SRT, doc.to_srt().as_bytes())?;
        dir.write(TRANSCRIPT_VTT, doc.to_vtt().as_bytes())?;
        dir.write(TRANSCRIPT_TXT, doc.to_text().as_bytes())?;
        Ok(())
    }

    /// Removes every transcription work directory of the session (of any model).
    pub(crate) fn clear_transcription_work(&self, dir: &SessionDir) -> Result<(), PipelineError> {
        let root = dir.root().join(nina_store::WORK_DIR);
        let Ok(entries) = fs::read_dir(&root) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(WORK_PREFIX) {
                dir.clear_work(&name)?;
            }
        }
        Ok(())
    }

    /// [`Pipeline::segment_file`] then [`Pipeline::transcribe_session`].
    pub fn process_file(
        &self,
        audio: &Path,
        dest: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<(Session, Outcome), PipelineError> {
        self.segment_file(audio, dest, force, progress)?;
        let outcome = self.transcribe_session(dest, force, progress)?;
        Ok((dest.load()?, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_wav(path: &Path, rate: u32, bursts: &[(f64, f64)], total: f64) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..(total * f64::from(rate)) as usize {
            let t = i as f64 / f64::from(rate);
            let on = bursts.iter().any(|&(a, b)| t >= a && t < b);
            let v = if on {
                0.3 * (std::f64::consts::TAU * 220.0 * t).sin()
            } else {
                0.0
            };
            w.write_sample((v * 32767.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    fn energy() -> Pipeline {
        Pipeline::new(PipelineConfig {
            vad: VadChoice::Energy,
            models: ModelDir::new("/nonexistent"),
            ..PipelineConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_file_becomes_a_session_and_is_not_redone() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("talk.wav");
        tone_wav(&audio, 44_100, &[(0.5, 1.5), (3.0, 4.0)], 5.0);
        let sd = SessionDir::new(dir.path().join("s"));
        let p = energy();
        let s = p
            .segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        assert_eq!(s.utterances.len(), 2);
        assert_eq!(s.participants[0].display_name.as_deref(), Some("talk"));
        for u in &s.utterances {
            let a = nina_store::read_wav(&sd.root().join(&u.file), usize::MAX).unwrap();
            assert_eq!(a.sample_rate, 44_100);
            assert_eq!(a.encoding, nina_store::WavEncoding::I16);
        }
        let before = fs::read(sd.root().join("session.json")).unwrap();
        let again = p
            .segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        assert_eq!(again, s);
        // A stale file from another segmentation is removed when re-segmenting.
        fs::write(sd.root().join("audio/0/999999-0000099999.wav"), b"x").unwrap();
        p.segment_file(&audio, &sd, true, &crate::NoProgress)
            .unwrap();
        assert!(!sd.root().join("audio/0/999999-0000099999.wav").exists());
        assert_eq!(fs::read(sd.root().join("session.json")).unwrap(), before);
    }

    /// Panics once decoding passes `at` seconds: a crash in the middle of segmenting.
    struct CrashAt(f64);

    impl Progress for CrashAt {
        fn decoded(&self, seconds: f64) {
            assert!(seconds < self.0, "simulated crash");
        }
    }

    /// Every file `session.json` names is there and whole, every WAV there is named, and
    /// transcripts exist only if transcription is recorded.
    fn assert_consistent(sd: &SessionDir) -> Session {
        let s = sd.load().unwrap();
        let named: BTreeSet<String> = s.utterances.iter().map(|u| u.file.clone()).collect();
        for u in &s.utterances {
            let a = nina_store::read_wav(&sd.root().join(&u.file), usize::MAX).unwrap();
            let frames = a.samples.len() as f64 / f64::from(a.channels) / f64::from(a.sample_rate);
            assert!(
                (frames - (u.end - u.start)).abs() < 0.01,
                "{} is not whole",
                u.file
            );
        }
        for e in fs::read_dir(sd.root().join("audio/0")).unwrap() {
            let name = format!("audio/0/{}", e.unwrap().file_name().to_string_lossy());
            assert!(named.contains(&name), "{name} is not named by session.json");
        }
        let transcribed = s.processing_of(STEP_TRANSCRIBE).is_some();
        assert_eq!(sd.root().join(TRANSCRIPT_JSON).exists(), transcribed);
        s
    }

    #[test]
    fn a_crash_while_resegmenting_leaves_the_old_set_or_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("talk.wav");
        tone_wav(
            &audio,
            16_000,
            &[(0.5, 1.5), (2.5, 3.5), (4.5, 5.5), (6.5, 7.5)],
            8.0,
        );
        let sd = SessionDir::new(dir.path().join("s"));
        let p = energy();
        let old = p
            .segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        // Pretend it was transcribed, so a re-segmentation has transcripts to invalidate.
        let mut transcribed = old.clone();
        transcribed.set_processing(Processing {
            step: STEP_TRANSCRIBE.into(),
            name: "m".into(),
            sha256: None,
            options: serde_json::Value::Null,
            key: "k".into(),
            failed: vec![],
        });
        sd.save(&transcribed).unwrap();
        sd.write(TRANSCRIPT_JSON, b"{}").unwrap();
        let before = fs::read(sd.root().join("session.json")).unwrap();

        // Other options: every utterance changes. Crash half-way through.
        let mut cfg = p.config().clone();
        cfg.segmenter.padding = 0.05;
        let q = Pipeline::new(cfg).unwrap();
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.segment_file(&audio, &sd, false, &CrashAt(4.0))
        }));
        assert!(crashed.is_err(), "the crash did not happen");
        assert_eq!(fs::read(sd.root().join("session.json")).unwrap(), before);
        // The old set is whole (the new run's first files lie beside it, unnamed).
        for u in &old.utterances {
            nina_store::read_wav(&sd.root().join(&u.file), usize::MAX).unwrap();
        }
        assert!(sd.root().join(TRANSCRIPT_JSON).exists());

        // Run again: the new set, consistent, and no trace of the old one.
        let new = q
            .segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        assert_ne!(new.utterances, old.utterances);
        assert_eq!(assert_consistent(&sd), new);
        assert_eq!(sd.load().unwrap().processing.len(), 1);

        // A crash after the commit and before the clean-up: the next run finishes it.
        let stale = sd.root().join("audio/0/000009-0000009999-deadbeef.wav");
        fs::copy(sd.root().join(&new.utterances[0].file), &stale).unwrap();
        sd.write(TRANSCRIPT_TXT, b"stale").unwrap();
        q.segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        assert!(!stale.exists());
        assert_eq!(assert_consistent(&sd), new);
    }

    #[test]
    fn a_copied_file_finds_the_session_of_its_original() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("talk.wav");
        tone_wav(&audio, 16_000, &[(0.5, 1.5)], 2.0);
        let store = Store::new(dir.path().join("data"));
        let first = file_session_dir(&store, &audio).unwrap();
        energy()
            .segment_file(&audio, &first, false, &crate::NoProgress)
            .unwrap();
        // A copy made years later, under another name.
        let copy = dir.path().join("copy.wav");
        fs::copy(&audio, &copy).unwrap();
        let f = fs::File::options().write(true).open(&copy).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
            .unwrap();
        assert_eq!(
            file_session_dir(&store, &copy).unwrap().root(),
            first.root()
        );
        // Even when the first run was killed before any session.json.
        fs::remove_file(first.root().join("session.json")).unwrap();
        assert_eq!(
            file_session_dir(&store, &copy).unwrap().root(),
            first.root()
        );
    }

    #[test]
    fn output_into_a_directory_that_is_not_a_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("talk.wav");
        tone_wav(&audio, 16_000, &[(0.5, 1.5)], 2.0);
        let theirs = dir.path().join("home");
        fs::create_dir_all(theirs.join("deep/er")).unwrap();
        fs::write(theirs.join("deep/er/.notes.tmp"), b"mine").unwrap();
        fs::write(theirs.join(".x.tmp"), b"mine").unwrap();
        let e = energy()
            .segment_file(&audio, &SessionDir::new(&theirs), false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Usage, "{e}");
        let e = energy()
            .transcribe_session(&SessionDir::new(&theirs), false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Session, "{e}");
        assert!(theirs.join("deep/er/.notes.tmp").exists());
        assert!(theirs.join(".x.tmp").exists());
        assert_eq!(
            fs::read_dir(&theirs).unwrap().count(),
            2,
            "something was written"
        );
    }

    #[test]
    fn work_is_named_after_the_utterance_file() {
        let u = |file: &str| UtteranceRecord {
            user_id: 7,
            seq: 0,
            start: 0.0,
            end: 1.0,
            speech_start: 0.0,
            speech_end: 1.0,
            cut: false,
            file: file.into(),
            sample_rate: 16_000,
            channels: 1,
        };
        let a = work_name(&u("audio/7/000000-0000000000.wav"));
        let b = work_name(&u("audio/7/000000-0000000000-1a2b3c4d.wav"));
        assert_ne!(a, b, "same (user, seq), different files");
        assert!(nina_store::is_safe_id(&a) && nina_store::is_safe_id(&b));
    }

    #[test]
    fn execution_settings_are_not_part_of_the_key() {
        let s = {
            let mut s = file_session(Path::new("a.wav"), &"ab".repeat(32), 0);
            s.processing.push(Processing {
                step: STEP_SEGMENT.into(),
                name: "energy".into(),
                sha256: None,
                options: serde_json::Value::Null,
                key: "seg1".into(),
                failed: vec![],
            });
            s
        };
        let with = |f: &dyn Fn(&mut PipelineConfig)| {
            let mut cfg = energy().config().clone();
            f(&mut cfg);
            Pipeline::new(cfg).unwrap().transcription_key(&s, "sha")
        };
        let base = with(&|_| {});
        assert_eq!(base, with(&|c| c.transcribe.threads = 7));
        assert_eq!(base, with(&|c| c.workers = 5));
        assert_ne!(base, with(&|c| c.transcribe.translate = true));
        let mut other = s.clone();
        other.processing[0].key = "seg2".into();
        assert_ne!(
            base,
            energy().transcription_key(&other, "sha"),
            "the segmentation key is chained in"
        );
    }

    #[test]
    fn missing_models_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let audio = dir.path().join("a.wav");
        tone_wav(&audio, 16_000, &[(0.2, 1.0)], 1.5);
        let sd = SessionDir::new(dir.path().join("s"));
        let p = energy();
        p.segment_file(&audio, &sd, false, &crate::NoProgress)
            .unwrap();
        let e = p
            .transcribe_session(&sd, false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Models, "{e}");
        let msg = e.to_string();
        let file = catalog::DEFAULT_WHISPER.file;
        assert!(msg.contains(file) && msg.contains("fix:"), "{e}");
        let silero = Pipeline::new(PipelineConfig {
            vad: VadChoice::Silero,
            models: ModelDir::new("/nonexistent"),
            ..PipelineConfig::default()
        })
        .unwrap();
        let e = silero
            .segment_file(&audio, &sd, true, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Models, "{e}");
    }

    #[test]
    fn bad_sessions_and_audio_are_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let p = energy();
        let sd = SessionDir::new(dir.path().join("s"));
        fs::create_dir_all(sd.root()).unwrap();
        fs::write(
            sd.root().join("session.json"),
            b"{\"schema\": \"nina.session\"",
        )
        .unwrap();
        let e = p
            .transcribe_session(&sd, false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Session, "{e}");
        let empty = dir.path().join("empty.wav");
        fs::write(&empty, b"").unwrap();
        // A damaged session is never written over, whatever the input.
        let e = p
            .segment_file(&empty, &sd, false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Session, "{e}");
        let fresh = SessionDir::new(dir.path().join("fresh"));
        let e = p
            .segment_file(&empty, &fresh, false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Audio, "{e}");
    }
}
