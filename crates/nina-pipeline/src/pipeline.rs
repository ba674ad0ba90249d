//! The offline pipeline: a file into a session, a session through transcription.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nina_models::{ModelDir, ModelError, catalog};
use nina_segment::vad::{EnergyVad, SileroVad, VoiceDetector};
use nina_segment::{Samples, SegmentError, Segmenter, SegmenterConfig, wav};
use nina_store::{
    CURRENT_VERSION, Participant, Place, Processing, SCHEMA, Session, SessionDir, Store,
    StoreError, TRANSCRIPT_JSON, TRANSCRIPT_SRT, TRANSCRIPT_TXT, TRANSCRIPT_VTT, UtteranceRecord,
};
use nina_transcribe::{
    JobResult, ModelInfo, Segment, SpeakerDropped, SpeakerSegment, TranscribeOptions, Transcript,
    TranscriptDocument, TranscriptionPool, WhisperModel,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{PipelineError, Progress, SessionWriter, decode};

/// The user id of the single stream of a session built from a file.
pub const FILE_USER: u64 = 0;
const STEP_SEGMENT: &str = "segment";
const STEP_TRANSCRIBE: &str = "transcribe";
const WORK_PREFIX: &str = "transcribe-";

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
    /// The models directory (`models/` by default, `$NINA_MODELS` when set).
    pub models: PathBuf,
    /// Whisper model: a pinned id (`whisper-base`, `whisper-tiny-en`), a ggml file, or a URL.
    pub whisper: String,
    /// Expected sha256 of a downloaded Whisper model.
    pub whisper_sha256: Option<String>,
    /// Voice activity detector.
    pub vad: VadChoice,
    /// Hysteresis and limits of segmentation.
    pub segmenter: SegmenterConfig,
    /// Transcription options (recorded with the results).
    pub transcribe: TranscribeOptions,
    /// Transcription workers running at once.
    pub workers: usize,
    /// Utterances waiting for a worker before submitting blocks.
    pub queue: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            models: ModelDir::from_env().root().to_path_buf(),
            whisper: catalog::WHISPER_BASE.id.to_string(),
            whisper_sha256: None,
            vad: VadChoice::Auto,
            segmenter: SegmenterConfig::default(),
            transcribe: TranscribeOptions::default(),
            workers: 1,
            queue: 4,
        }
    }
}

/// What [`Pipeline::transcribe_session`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Transcribed.
    Done {
        /// Utterances in the session.
        utterances: usize,
        /// Of them, found already done by an interrupted run.
        resumed: usize,
        /// Seconds of utterance audio.
        audio_seconds: f64,
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
fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn audio_err(path: &Path, reason: impl std::fmt::Display) -> PipelineError {
    PipelineError::Audio {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn sha256_of_file(path: &Path) -> Result<String, PipelineError> {
    let mut f = fs::File::open(path).map_err(|e| audio_err(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| audio_err(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The session of a file before segmentation: id from its contents, start from its modification
/// time, guild and channel 0, one participant named after the file.
fn file_session(audio: &Path, source_sha: &str) -> Session {
    let started_at_ms = fs::metadata(audio)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    Session {
        schema: SCHEMA.into(),
        schema_version: CURRENT_VERSION,
        id: format!("file-{}", &source_sha[..16]),
        guild: Place { id: 0, name: None },
        channel: Place { id: 0, name: None },
        started_at_ms,
        ended_at_ms: None,
        participants: vec![Participant {
            user_id: FILE_USER,
            display_name: audio.file_stem().map(|s| s.to_string_lossy().into_owned()),
        }],
        utterances: Vec::new(),
        processing: Vec::new(),
        source: audio.file_name().map(|s| s.to_string_lossy().into_owned()),
    }
}

/// Where a file's session goes in a data directory: `<data>/0/0/<date of the file>/file-<sha>/`.
pub fn file_session_dir(store: &Store, audio: &Path) -> Result<SessionDir, PipelineError> {
    let sha = sha256_of_file(audio)?;
    Ok(store.session_dir(&file_session(audio, &sha))?)
}

fn segmenter_options(c: &SegmenterConfig) -> serde_json::Value {
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

fn shifted(mut s: Segment, by: f64) -> Segment {
    s.start += by;
    s.end += by;
    for w in &mut s.words {
        w.start += by;
        w.end += by;
    }
    s
}

fn work_name(u: &UtteranceRecord) -> String {
    format!("u{}-{}", u.user_id, u.seq)
}

impl Pipeline {
    /// A pipeline with `cfg`; nothing is loaded until it is needed.
    pub fn new(cfg: PipelineConfig) -> Result<Self, PipelineError> {
        cfg.segmenter.validate()?;
        if cfg.workers == 0 || cfg.workers > 64 {
            return Err(PipelineError::Config(format!(
                "workers must be between 1 and 64, got {}",
                cfg.workers
            )));
        }
        Ok(Self {
            models: ModelDir::new(&cfg.models),
            cfg,
            whisper: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The Whisper model, loaded (and downloaded, for a URL) on first use.
    pub fn whisper(&self) -> Result<WhisperModel, PipelineError> {
        let mut slot = self
            .whisper
            .lock()
            .map_err(|_| PipelineError::Config("a thread panicked loading the model".into()))?;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let path = nina_models::resolve_or_download_whisper(
            &self.models,
            &self.cfg.whisper,
            self.cfg.whisper_sha256.as_deref(),
        )?;
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
    /// [`FILE_USER`]), writing `session.json` last. Skipped when `dest` already holds this file
    /// segmented the same way, unless `force`. Re-segmenting removes stale audio and transcripts.
    pub fn segment_file(
        &self,
        audio: &Path,
        dest: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Session, PipelineError> {
        let source_sha = sha256_of_file(audio)?;
        let (detector, vad_sha) = self.detector()?;
        let options = segmenter_options(&self.cfg.segmenter);
        let name = detector.name();
        let key = digest(&[STEP_SEGMENT, name, &source_sha, &options.to_string()]);
        if dest.exists() && !force {
            match dest.load() {
                Ok(s)
                    if s.processing
                        .iter()
                        .any(|p| p.step == STEP_SEGMENT && p.key == key) =>
                {
                    tracing::info!(session = %dest.root().display(), "already segmented");
                    dest.clean_temp_files()?;
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("replacing {}: {e}", dest.root().display()),
            }
        }
        let mut writer = SessionWriter::new(dest.clone(), file_session(audio, &source_sha))?;
        let mut detector = Some(detector);
        let mut seg: Option<Segmenter> = None;
        let (format, duration) = decode::decode_file(audio, |samples, at, format| {
            if seg.is_none() {
                let d = detector
                    .take()
                    .ok_or_else(|| audio_err(audio, "format changed"))?;
                seg = Some(Segmenter::new(self.cfg.segmenter.clone(), format, d)?);
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

        let mut session = writer.into_session();
        self.remove_stale_audio(dest, &session.utterances)?;
        for f in [
            TRANSCRIPT_JSON,
            TRANSCRIPT_SRT,
            TRANSCRIPT_VTT,
            TRANSCRIPT_TXT,
        ] {
            let _ = fs::remove_file(dest.root().join(f));
        }
        session.ended_at_ms = Some(session.started_at_ms + (duration * 1000.0).round() as i64);
        session.processing = vec![Processing {
            step: STEP_SEGMENT.into(),
            name: name.into(),
            sha256: vad_sha.map(str::to_owned),
            options,
            key,
        }];
        dest.save(&session)?;
        Ok(session)
    }

    fn remove_stale_audio(
        &self,
        dest: &SessionDir,
        keep: &[UtteranceRecord],
    ) -> Result<(), PipelineError> {
        let keep: BTreeSet<PathBuf> = keep.iter().map(|u| dest.root().join(&u.file)).collect();
        let dir = dest.root().join("audio").join(FILE_USER.to_string());
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let p = e.path();
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            if is_file && !keep.contains(&p) {
                fs::remove_file(&p).map_err(|err| StoreError::Io {
                    path: p.clone(),
                    source: err,
                })?;
            }
        }
        Ok(())
    }

    /// Loads an utterance's audio as 16 kHz mono.
    fn utterance_audio(
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
        let a = wav::read(&path, max).map_err(|e| damaged(e.to_string()))?;
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

    /// Transcribes every utterance of the session in `dir` and writes `transcript.{json,srt,vtt,txt}`,
    /// then records the step in `session.json`. Each finished utterance is saved under `.work/`,
    /// so an interrupted run resumes; a session already transcribed with the same model, options
    /// and utterances is skipped unless `force`.
    pub fn transcribe_session(
        &self,
        dir: &SessionDir,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<Outcome, PipelineError> {
        dir.clean_temp_files()?;
        let mut session = dir.load()?;
        let model = self.whisper()?;
        let sha = model.sha256()?;
        let opts = &self.cfg.transcribe;
        let options =
            serde_json::to_value(opts).map_err(|e| PipelineError::Config(e.to_string()))?;
        let mut utts = String::new();
        for u in &session.utterances {
            utts.push_str(&format!(
                "{}|{}|{}|{};",
                u.file, u.start, u.end, u.sample_rate
            ));
        }
        let key = digest(&[STEP_TRANSCRIBE, &sha, &options.to_string(), &utts]);
        let done_before = session
            .processing
            .iter()
            .any(|p| p.step == STEP_TRANSCRIBE && p.key == key);
        if done_before && !force && dir.root().join(TRANSCRIPT_JSON).is_file() {
            return Ok(Outcome::Skipped);
        }
        let work = format!("{WORK_PREFIX}{key}");
        if force {
            dir.clear_work(&work)?;
        }

        let n = session.utterances.len();
        let audio_seconds: f64 = session.utterances.iter().map(|u| u.end - u.start).sum();
        let mut results: Vec<Option<Transcript>> = session
            .utterances
            .iter()
            .map(|u| dir.get_work::<Transcript>(&work, &work_name(u)))
            .collect();
        let resumed = results.iter().filter(|r| r.is_some()).count();
        progress.transcription_started(dir.root(), n, resumed, audio_seconds);
        for (u, r) in session.utterances.iter().zip(&results) {
            if r.is_some() {
                progress.utterance_done(u.end - u.start);
            }
        }
        let todo: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
        if !todo.is_empty() {
            let workers = self.cfg.workers.min(todo.len());
            let mut pool =
                TranscriptionPool::<u64>::new(workers, self.cfg.queue, opts.clone(), || {
                    model.transcriber()
                })?;
            let mut pending: HashMap<(u64, u64), usize> = HashMap::new();
            let utterances = &session.utterances;
            let mut take = |r: JobResult<u64>,
                            pending: &mut HashMap<(u64, u64), usize>|
             -> Result<(), PipelineError> {
                let Some(i) = pending.remove(&(r.stream, r.seq)) else {
                    return Ok(());
                };
                let u = &utterances[i];
                let t = r.transcript.inspect_err(|e| {
                    tracing::error!(file = %u.file, "transcription failed: {e}");
                })?;
                dir.put_work(&work, &work_name(u), &t)?;
                results[i] = Some(t);
                progress.utterance_done(u.end - u.start);
                Ok(())
            };
            for i in todo {
                let u = &utterances[i];
                let audio = self.utterance_audio(dir, u)?;
                let seq = pool.submit(u.user_id, u.start, audio)?;
                pending.insert((u.user_id, seq), i);
                while let Some(r) = pool.recv_timeout(Duration::ZERO)? {
                    take(r, &mut pending)?;
                }
            }
            for r in pool.finish()? {
                take(r, &mut pending)?;
            }
        }

        let label = |user: u64| {
            session
                .participants
                .iter()
                .find(|p| p.user_id == user)
                .and_then(|p| p.display_name.clone())
                .unwrap_or_else(|| user.to_string())
        };
        let mut segments = Vec::new();
        let mut dropped = Vec::new();
        for (u, t) in session.utterances.iter().zip(results) {
            let Some(t) = t else { continue };
            let speaker = label(u.user_id);
            for s in t.segments {
                segments.push(SpeakerSegment {
                    speaker: speaker.clone(),
                    segment: shifted(s, u.start),
                });
            }
            for d in t.dropped {
                dropped.push(SpeakerDropped {
                    speaker: speaker.clone(),
                    segment: shifted(d.segment, u.start),
                    reason: d.reason,
                });
            }
        }
        let doc = TranscriptDocument::new(
            ModelInfo {
                name: model.name().to_string(),
                sha256: sha.clone(),
            },
            opts.clone(),
            segments,
            dropped,
        );
        dir.write(TRANSCRIPT_JSON, doc.to_json().as_bytes())?;
        dir.write(TRANSCRIPT_SRT, doc.to_srt().as_bytes())?;
        dir.write(TRANSCRIPT_VTT, doc.to_vtt().as_bytes())?;
        dir.write(TRANSCRIPT_TXT, doc.to_text().as_bytes())?;
        session.processing.retain(|p| p.step != STEP_TRANSCRIBE);
        session.processing.push(Processing {
            step: STEP_TRANSCRIBE.into(),
            name: model.name().to_string(),
            sha256: Some(sha),
            options,
            key,
        });
        dir.save(&session)?;
        self.clear_transcription_work(dir)?;
        Ok(Outcome::Done {
            utterances: n,
            resumed,
            audio_seconds,
        })
    }

    /// Removes every transcription work directory of the session (of any model).
    fn clear_transcription_work(&self, dir: &SessionDir) -> Result<(), PipelineError> {
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
            models: "/nonexistent".into(),
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
            let a = wav::read(&sd.root().join(&u.file), usize::MAX).unwrap();
            assert_eq!(a.sample_rate, 44_100);
            assert_eq!(a.format, nina_segment::SampleFormat::I16);
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
        assert!(e.to_string().contains("setup.sh"), "{e}");
        let silero = Pipeline::new(PipelineConfig {
            vad: VadChoice::Silero,
            models: "/nonexistent".into(),
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
        let e = p
            .segment_file(&empty, &sd, false, &crate::NoProgress)
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Audio, "{e}");
    }
}
