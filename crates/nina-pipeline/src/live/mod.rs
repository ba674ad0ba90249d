//! The live pipeline: what `reprocess` does on a file, done on each user's stream as it arrives.
//!
//! A [`LiveSession`] takes 20 ms frames per user (the Opus packet as received and, when decoding,
//! its audio), keeps each user's archival Ogg Opus track on the session clock and, when decoding,
//! their waveform peaks (`peaks/<user>.dat`, written every `peaks_every` and at the end), has the
//! decoded audio cut into utterances on the [`SegmentWorkers`] threads, writes the utterances at once and
//! hands them to a [`LiveTranscriber`]; both are shared by every session of the process
//! ([`LiveWorkers`]). Everything here blocks (files, fsync, models): run it on a thread of its
//! own, never on an async runtime.
//!
//! When transcription falls behind, utterances are still written; past `max_backlog` waiting
//! utterances they are not queued (and counted), and `reprocess session` finishes them later.
//! Finished transcripts are kept under `.work/transcribe-live/` with the model and options that
//! made them, and [`crate::Pipeline::transcribe_session`] adopts them when those match.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nina_segment::{SampleFormat, StreamFormat, Utterance};
use nina_store::peaks::{PeaksBuilder, peaks_file};
use nina_store::{Gap, OpusTrackWriter, Presence, Session, SessionDir, TrackRecord, track_file};
use nina_transcribe::{Transcript, TranscriptionPool};
use serde::{Deserialize, Serialize};

use crate::pipeline::work_name_of;
use crate::{Pipeline, PipelineError, SessionWriter};

mod workers;

pub use workers::SegmentWorkers;
use workers::{SegOut, SessionStreams};

/// The `.work/` folder of transcripts made live.
pub const LIVE_WORK: &str = "transcribe-live";

/// Samples of the session clock (48 kHz) in one 20 ms frame.
const FRAME_SAMPLES_48K: u64 = 960;

/// A transcript made live, with what made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveEntry {
    /// sha256 of the Whisper model.
    pub model_sha256: String,
    /// The options that decide the result ([`nina_transcribe::TranscribeOptions::result_options`]).
    pub options: serde_json::Value,
    /// The transcript, times relative to the utterance.
    pub transcript: Transcript,
}

/// Which utterance a live job is.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveUtterance {
    /// Whose.
    pub user_id: u64,
    /// Its file in the session.
    pub file: String,
    /// Start on the session clock, seconds.
    pub start: f64,
    /// End on the session clock, seconds.
    pub end: f64,
}

/// A transcript that just came back.
#[derive(Debug, Clone)]
pub struct LiveText {
    /// The utterance.
    pub utterance: LiveUtterance,
    /// Its text (segments joined), or why it failed.
    pub text: Result<String, String>,
}

struct Job {
    id: u64,
    audio: Vec<f32>,
    start: f64,
    utterance: LiveUtterance,
    reply: Sender<(LiveUtterance, Result<Transcript, String>)>,
}

/// Counters of a [`LiveTranscriber`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TranscriberStats {
    /// Utterances waiting or being transcribed.
    pub backlog: usize,
    /// Utterances not queued because the backlog was full (left for `reprocess`).
    pub skipped: u64,
    /// Utterances transcribed.
    pub done: u64,
}

/// One transcription pool shared by every live session of a process.
#[derive(Clone)]
pub struct LiveTranscriber {
    jobs: Sender<Job>,
    backlog: Arc<AtomicUsize>,
    skipped: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    next_id: Arc<AtomicU64>,
    max_backlog: usize,
    model_sha256: String,
    options: serde_json::Value,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for LiveTranscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTranscriber")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl LiveTranscriber {
    /// Loads the pipeline's Whisper model and starts its pool (workers and queue as configured);
    /// at most `max_backlog` utterances wait at once.
    pub fn start(pipeline: &Pipeline, max_backlog: usize) -> Result<Self, PipelineError> {
        let model = pipeline.whisper()?;
        let sha = model.sha256()?;
        let cfg = pipeline.config();
        let mut pool =
            TranscriptionPool::<u64>::new(cfg.workers, cfg.queue, cfg.transcribe.clone(), || {
                model.transcriber()
            })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (b, d) = (backlog.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("nina-live-transcribe".into())
            .spawn(move || {
                let mut waiting: HashMap<u64, (LiveUtterance, Sender<_>)> = HashMap::new();
                let deliver = |waiting: &mut HashMap<u64, (LiveUtterance, Sender<_>)>,
                               r: nina_transcribe::JobResult<u64>| {
                    b.fetch_sub(1, Ordering::Relaxed);
                    d.fetch_add(1, Ordering::Relaxed);
                    if let Some((u, reply)) = waiting.remove(&r.stream) {
                        let _ = reply.send((u, r.transcript.map_err(|e| e.to_string())));
                    }
                };
                loop {
                    match rx.recv_timeout(Duration::from_millis(20)) {
                        Ok(job) => {
                            let Job {
                                id,
                                audio,
                                start,
                                utterance,
                                reply,
                            } = job;
                            match pool.submit(id, start, audio) {
                                Ok(_) => {
                                    waiting.insert(id, (utterance, reply));
                                }
                                Err(e) => {
                                    b.fetch_sub(1, Ordering::Relaxed);
                                    let _ = reply.send((utterance, Err(e.to_string())));
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    loop {
                        match pool.recv_timeout(Duration::ZERO) {
                            Ok(Some(r)) => deliver(&mut waiting, r),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::error!("transcription pool failed: {e}");
                                return;
                            }
                        }
                    }
                }
                match pool.finish() {
                    Ok(rs) => rs.into_iter().for_each(|r| deliver(&mut waiting, r)),
                    Err(e) => tracing::error!("transcription pool failed: {e}"),
                }
            })
            .map_err(|e| PipelineError::Config(format!("cannot start a thread: {e}")))?;
        Ok(Self {
            jobs: tx,
            backlog,
            skipped: Arc::new(AtomicU64::new(0)),
            done,
            next_id: Arc::new(AtomicU64::new(0)),
            max_backlog: max_backlog.max(1),
            model_sha256: sha,
            options: cfg.transcribe.result_options(),
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Counters.
    pub fn stats(&self) -> TranscriberStats {
        TranscriberStats {
            backlog: self.backlog.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
        }
    }

    /// Queues an utterance unless the backlog is full (then it is counted and left).
    fn submit(
        &self,
        audio: Vec<f32>,
        utterance: LiveUtterance,
        reply: &Sender<(LiveUtterance, Result<Transcript, String>)>,
    ) -> bool {
        if self.backlog.load(Ordering::Relaxed) >= self.max_backlog {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                file = %utterance.file,
                backlog = self.max_backlog,
                "transcription is behind; utterance stored, left for reprocess"
            );
            return false;
        }
        self.backlog.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            audio,
            start: utterance.start,
            utterance,
            reply: reply.clone(),
        };
        if self.jobs.send(job).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Stops accepting work and waits for the pool to finish what it holds (when this is the
    /// last handle; other sessions' handles keep it running).
    pub fn shutdown(self) {
        let thread = self.thread.clone();
        drop(self);
        if Arc::strong_count(&thread) == 1
            && let Some(t) = thread.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = t.join();
        }
    }
}

/// How a live session records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveOptions {
    /// Rate and channels of the decoded frames, or `None` when recording Opus only.
    pub decode: Option<(u32, u16)>,
    /// Channels of the Opus packets (Discord sends stereo).
    pub track_channels: u8,
    /// How often tracks are synced and `session.json` is rewritten.
    pub checkpoint_every: Duration,
    /// A user silent this long has their open utterance closed (seconds).
    pub idle_close: f64,
    /// How often the waveform peaks of a decoding session are rewritten.
    pub peaks_every: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            decode: Some((16_000, 1)),
            track_channels: 2,
            checkpoint_every: Duration::from_secs(1),
            idle_close: 0.6,
            peaks_every: Duration::from_secs(10),
        }
    }
}

/// What the live sessions of a process share: started once, cloned into each session.
#[derive(Debug, Clone, Default)]
pub struct LiveWorkers {
    /// Segmenter threads; a session that decodes without them starts one thread of its own.
    pub segmenters: Option<SegmentWorkers>,
    /// Transcription; without it utterances are stored untranscribed.
    pub transcriber: Option<LiveTranscriber>,
}

struct UserStream {
    track: OpusTrackWriter,
    last_frame: u64,
    /// Audio was pushed since the user's utterance was last closed.
    open: bool,
    /// Waveform peaks of the decoded audio on the session clock (when decoding).
    peaks: Option<PeaksBuilder>,
}

/// One voice channel being recorded into one session directory.
pub struct LiveSession {
    writer: SessionWriter,
    opts: LiveOptions,
    users: BTreeMap<u64, UserStream>,
    streams: Option<SessionStreams>,
    transcriber: Option<LiveTranscriber>,
    reply_tx: Sender<(LiveUtterance, Result<Transcript, String>)>,
    reply_rx: Receiver<(LiveUtterance, Result<Transcript, String>)>,
    pending: usize,
    skipped: u64,
    last_checkpoint: Instant,
    last_peaks: Instant,
    dirty: bool,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("dir", self.writer.dir())
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

fn seconds(frame: u64) -> f64 {
    frame as f64 * 0.02
}

impl LiveSession {
    /// Starts recording `session` (a skeleton: identity, guild, channel, start, recorder) into
    /// `dir`, which must be new or empty. Its identity is on disk before any audio.
    pub fn start(
        pipeline: &Pipeline,
        dir: SessionDir,
        session: Session,
        opts: LiveOptions,
        workers: LiveWorkers,
    ) -> Result<Self, PipelineError> {
        let (lock, existing) = dir.claim()?;
        if existing.is_some() {
            return Err(PipelineError::Config(format!(
                "{} already holds a session",
                dir.root().display()
            )));
        }
        let streams = match opts.decode {
            Some((rate, channels)) => {
                let segmenters = match workers.segmenters {
                    Some(s) => s,
                    None => SegmentWorkers::start(pipeline, 1)?,
                };
                Some(segmenters.session(StreamFormat {
                    sample_rate: rate,
                    channels,
                    format: SampleFormat::I16,
                }))
            }
            None => None,
        };
        dir.save(&session)?;
        let (reply_tx, reply_rx) = mpsc::channel();
        Ok(Self {
            writer: SessionWriter::new(dir, session, lock),
            opts,
            users: BTreeMap::new(),
            streams,
            transcriber: workers.transcriber,
            reply_tx,
            reply_rx,
            pending: 0,
            skipped: 0,
            last_checkpoint: Instant::now(),
            last_peaks: Instant::now(),
            dirty: false,
        })
    }

    /// The session directory.
    pub fn dir(&self) -> &SessionDir {
        self.writer.dir()
    }

    /// The session as recorded so far.
    pub fn session(&self) -> &Session {
        self.writer.session()
    }

    /// Utterances handed to transcription whose text has not come back.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Utterances not transcribed live because the backlog was full (left for `reprocess`).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Someone entered the channel at `frame`.
    pub fn joined(&mut self, frame: u64, user_id: u64, name: Option<String>) {
        self.writer.participant(user_id, name);
        let s = self.writer.session_mut();
        if let Some(p) = s.participants.iter_mut().find(|p| p.user_id == user_id) {
            match p.presence.last_mut() {
                Some(l) if l.left.is_none() => {}
                // Back within a second (a reconnect): the same stay.
                Some(l) if l.left.is_some_and(|left| seconds(frame) - left <= 1.0) => {
                    l.left = None;
                }
                _ => p.presence.push(Presence {
                    joined: seconds(frame),
                    left: None,
                }),
            }
        }
        self.dirty = true;
    }

    /// Someone left the channel at `frame`: their open utterance is closed.
    pub fn left(&mut self, frame: u64, user_id: u64) -> Result<(), PipelineError> {
        if let Some(p) = self
            .writer
            .session_mut()
            .participants
            .iter_mut()
            .find(|p| p.user_id == user_id)
            && let Some(last) = p.presence.last_mut()
            && last.left.is_none()
        {
            last.left = Some(seconds(frame));
        }
        self.close_user(user_id)?;
        self.dirty = true;
        Ok(())
    }

    /// The call's end-to-end encryption as the recorder sees it (stored in `session.json`).
    pub fn set_dave(&mut self, dave: nina_store::DaveRecord) {
        let s = self.writer.session_mut();
        if s.dave.as_ref() != Some(&dave) {
            s.dave = Some(dave);
            self.dirty = true;
        }
    }

    /// Nothing was received between `start` and `end` (frames): a dropped connection, for
    /// everyone (`user_id` None) or one user.
    pub fn gap(&mut self, start: u64, end: u64, user_id: Option<u64>, reason: &str) {
        self.writer.session_mut().gaps.push(Gap {
            start: seconds(start),
            end: seconds(end),
            user_id,
            reason: reason.to_string(),
        });
        self.dirty = true;
    }

    fn stream(&mut self, user_id: u64) -> Result<&mut UserStream, PipelineError> {
        if !self.users.contains_key(&user_id) {
            self.writer.participant(user_id, None);
            let file = track_file(user_id);
            let path = self.writer.dir().file(&file)?;
            let session_id = self.writer.session().id.clone();
            let track = OpusTrackWriter::create(
                &path,
                (user_id ^ (user_id >> 32)) as u32,
                self.opts.track_channels,
                &[
                    ("NINA_SESSION".into(), session_id),
                    ("NINA_USER".into(), user_id.to_string()),
                ],
            )?;
            let peaks = self.opts.decode.map(|(rate, _)| PeaksBuilder::new(rate));
            self.users.insert(
                user_id,
                UserStream {
                    track,
                    last_frame: 0,
                    open: false,
                    peaks,
                },
            );
            self.dirty = true;
        }
        self.users
            .get_mut(&user_id)
            .ok_or_else(|| PipelineError::Config("user stream vanished".into()))
    }

    /// One 20 ms frame of `user_id` at `frame` on the session clock: `opus` as received (None
    /// when lost), `pcm` the decoded audio when decoding.
    pub fn audio(
        &mut self,
        user_id: u64,
        frame: u64,
        opus: Option<&[u8]>,
        pcm: Option<&[i16]>,
    ) -> Result<(), PipelineError> {
        let decoded = pcm.is_some() && self.streams.is_some();
        let format = self.opts.decode;
        let s = self.stream(user_id)?;
        if let Some(p) = opus {
            s.track.push(frame * FRAME_SAMPLES_48K, p)?;
        }
        s.last_frame = frame;
        if decoded {
            s.open = true;
        }
        if let (Some(peaks), Some(pcm), Some((rate, channels))) = (s.peaks.as_mut(), pcm, format) {
            // Laid on the session clock: silence up to this frame, then its samples.
            peaks.pad_to(frame * u64::from(rate) / 50);
            let samples: Vec<f32> = pcm.iter().map(|&x| f32::from(x) / 32_768.0).collect();
            peaks.push_interleaved(&samples, channels);
        }
        if let (Some(streams), Some(pcm)) = (self.streams.as_mut(), pcm) {
            streams.push(user_id, pcm, seconds(frame))?;
        }
        Ok(())
    }

    /// Stores what the segmenter threads handed back.
    fn take(&mut self, outs: Vec<SegOut>) -> Result<(), PipelineError> {
        for o in outs {
            match o {
                SegOut::Utterance(user, u) => self.utterance(user, &u)?,
                SegOut::Failed(user, e) => {
                    tracing::error!(user, "segmenting failed: {e}");
                    return Err(e.into());
                }
                SegOut::Removed => {}
            }
        }
        Ok(())
    }

    fn utterance(&mut self, user_id: u64, u: &Utterance) -> Result<(), PipelineError> {
        let rec = self.writer.utterance(user_id, u)?.clone();
        self.dirty = true;
        if let Some(t) = &self.transcriber {
            let lu = LiveUtterance {
                user_id,
                file: rec.file,
                start: rec.start,
                end: rec.end,
            };
            if t.submit(u.audio_16k.clone(), lu, &self.reply_tx) {
                self.pending += 1;
            } else {
                self.skipped += 1;
            }
        }
        Ok(())
    }

    fn close_user(&mut self, user_id: u64) -> Result<(), PipelineError> {
        if let Some(s) = self.users.get_mut(&user_id)
            && s.open
            && let Some(streams) = self.streams.as_mut()
        {
            streams.close(user_id)?;
            s.open = false;
        }
        Ok(())
    }

    /// Housekeeping, called often (every 100 ms or so) with the current frame: closes the
    /// utterances of users silent for `idle_close`, syncs tracks and checkpoints `session.json`
    /// every `checkpoint_every`, and returns the transcripts that came back.
    pub fn tick(&mut self, now: u64) -> Result<Vec<LiveText>, PipelineError> {
        let idle = (self.opts.idle_close / 0.02).ceil() as u64;
        let silent: Vec<u64> = self
            .users
            .iter()
            .filter(|(_, s)| s.open && now.saturating_sub(s.last_frame) > idle)
            .map(|(u, _)| *u)
            .collect();
        for u in silent {
            self.close_user(u)?;
        }
        if let Some(streams) = &self.streams {
            let outs = streams.ready();
            self.take(outs)?;
        }
        if self.last_checkpoint.elapsed() >= self.opts.checkpoint_every {
            self.checkpoint()?;
        }
        if self.last_peaks.elapsed() >= self.opts.peaks_every {
            self.write_peaks(None)?;
        }
        self.collect(Duration::ZERO)
    }

    /// Syncs every track and saves `session.json` if anything changed.
    pub fn checkpoint(&mut self) -> Result<(), PipelineError> {
        for s in self.users.values_mut() {
            s.track.flush()?;
        }
        if self.dirty {
            self.writer.checkpoint()?;
            self.dirty = false;
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Rewrites every user's peaks file; at the end (`end`, a frame) each is padded to it.
    fn write_peaks(&mut self, end: Option<u64>) -> Result<(), PipelineError> {
        let rate = self.opts.decode.map_or(0, |(r, _)| u64::from(r));
        for (user, s) in &mut self.users {
            if let Some(b) = s.peaks.as_mut() {
                if let Some(end) = end {
                    b.pad_to(end * rate / 50);
                }
                self.writer
                    .dir()
                    .write(&peaks_file(*user), &b.snapshot().to_bytes())?;
            }
        }
        self.last_peaks = Instant::now();
        Ok(())
    }

    /// Transcripts that came back, waiting up to `wait` for the first.
    fn collect(&mut self, wait: Duration) -> Result<Vec<LiveText>, PipelineError> {
        let mut out = Vec::new();
        let mut next = self.reply_rx.recv_timeout(wait).ok();
        while let Some((u, r)) = next {
            self.pending = self.pending.saturating_sub(1);
            let text = match r {
                Ok(t) => {
                    if let Some(tr) = &self.transcriber {
                        let entry = LiveEntry {
                            model_sha256: tr.model_sha256.clone(),
                            options: tr.options.clone(),
                            transcript: t,
                        };
                        self.writer
                            .dir()
                            .put_work(LIVE_WORK, &work_name_of(&u.file), &entry)?;
                        Ok(entry
                            .transcript
                            .segments
                            .iter()
                            .map(|s| s.text.trim())
                            .collect::<Vec<_>>()
                            .join(" "))
                    } else {
                        Ok(String::new())
                    }
                }
                Err(e) => Err(e),
            };
            out.push(LiveText { utterance: u, text });
            next = self.reply_rx.try_recv().ok();
        }
        Ok(out)
    }

    /// Ends the recording at `end` (frame): closes every open utterance, ends every track at
    /// the same length, waits up to `wait` for transcripts in flight (returned), and saves
    /// `session.json`. Run [`crate::Pipeline::transcribe_session`] afterwards to write the
    /// transcript files (it adopts the live transcripts and does what was left).
    pub fn finish(
        mut self,
        end: u64,
        ended_at_ms: i64,
        wait: Duration,
    ) -> Result<(Session, Vec<LiveText>), PipelineError> {
        if let Some(mut streams) = self.streams.take() {
            let outs = streams.finish(Duration::from_secs(60))?;
            self.take(outs)?;
        }
        let mut texts = Vec::new();
        let deadline = Instant::now() + wait;
        while self.pending > 0 && Instant::now() < deadline {
            texts.extend(self.collect(deadline.saturating_duration_since(Instant::now()))?);
        }
        self.write_peaks(Some(end))?;
        let end_samples = end * FRAME_SAMPLES_48K;
        let mut tracks = Vec::new();
        for (user_id, s) in std::mem::take(&mut self.users) {
            let summary = s.track.finish(end_samples)?;
            tracks.push(TrackRecord {
                user_id,
                file: track_file(user_id),
                channels: u16::from(self.opts.track_channels),
                duration: summary.seconds(),
            });
        }
        let session = self.writer.session_mut();
        for p in &mut session.participants {
            if let Some(l) = p.presence.last_mut()
                && l.left.is_none()
            {
                l.left = Some(seconds(end));
            }
        }
        session.tracks = tracks;
        let session = self.writer.finish(Some(ended_at_ms))?;
        Ok((session, texts))
    }
}

/// A live transcript of `file` made with `model_sha256` and `options`, if one was kept.
pub(crate) fn adopt_live(
    dir: &SessionDir,
    file: &str,
    model_sha256: &str,
    options: &serde_json::Value,
) -> Option<Transcript> {
    let e: LiveEntry = dir.get_work(LIVE_WORK, &work_name_of(file))?;
    (e.model_sha256 == model_sha256 && &e.options == options).then_some(e.transcript)
}

/// Parses `audio/<user>/<seq>-<start_ms>.wav` (a live utterance name).
fn parse_live_name(file: &str) -> Option<(u64, u64, u64)> {
    let rest = file.strip_prefix("audio/")?;
    let (user, name) = rest.split_once('/')?;
    let stem = name.strip_suffix(".wav")?;
    let (seq, ms) = stem.split_once('-')?;
    Some((user.parse().ok()?, seq.parse().ok()?, ms.parse().ok()?))
}

/// Finishes a live session a crash left unfinished (no `ended_at_ms`): utterance files written
/// after the last checkpoint are adopted, every track is repaired (torn tail dropped, ended
/// properly) and recorded, the end is set to the last audio, and `session.json` is saved.
/// Returns the session, or `None` when it was finished already.
pub fn recover_session(dir: &SessionDir) -> Result<Option<Session>, PipelineError> {
    let (_lock, mut session) = dir.open()?;
    if session.ended_at_ms.is_some() {
        return Ok(None);
    }
    let known: std::collections::HashSet<String> =
        session.utterances.iter().map(|u| u.file.clone()).collect();
    let mut end = session
        .utterances
        .iter()
        .map(|u| u.end)
        .fold(0.0_f64, f64::max);
    let audio = dir.root().join("audio");
    let mut adopted = 0;
    for user_dir in std::fs::read_dir(&audio).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(user_dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = format!(
                "audio/{}/{}",
                user_dir.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            let Some((user_id, seq, ms)) = parse_live_name(&name) else {
                continue;
            };
            if known.contains(&name) {
                continue;
            }
            let a = match nina_store::read_wav(&f.path(), usize::MAX) {
                Ok(a) if !a.samples.is_empty() => a,
                _ => continue,
            };
            let start = ms as f64 / 1000.0;
            let dur = a.samples.len() as f64 / f64::from(a.channels) / f64::from(a.sample_rate);
            session.utterances.push(nina_store::UtteranceRecord {
                user_id,
                seq,
                start,
                end: start + dur,
                speech_start: start,
                speech_end: start + dur,
                cut: false,
                file: name,
                sample_rate: a.sample_rate,
                channels: a.channels,
            });
            if !session.participants.iter().any(|p| p.user_id == user_id) {
                session.participants.push(nina_store::Participant {
                    user_id,
                    display_name: None,
                    presence: vec![],
                });
            }
            end = end.max(start + dur);
            adopted += 1;
        }
    }
    let mut tracks = Vec::new();
    for f in std::fs::read_dir(dir.root().join("tracks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = f.file_name().to_string_lossy().into_owned();
        let Some(user_id) = n.strip_suffix(".opus").and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        match nina_store::repair_opus_track(&f.path()) {
            Ok(summary) => {
                end = end.max(summary.seconds());
                tracks.push(TrackRecord {
                    user_id,
                    file: track_file(user_id),
                    channels: 2,
                    duration: summary.seconds(),
                });
            }
            Err(e) => tracing::warn!(file = %f.path().display(), "track not repaired: {e}"),
        }
    }
    tracks.sort_by_key(|t| t.user_id);
    for t in &tracks {
        if !session.participants.iter().any(|p| p.user_id == t.user_id) {
            session.participants.push(nina_store::Participant {
                user_id: t.user_id,
                display_name: None,
                presence: vec![],
            });
        }
    }
    session.tracks = tracks;
    session.utterances.sort_by(|a, b| {
        a.start
            .total_cmp(&b.start)
            .then(a.user_id.cmp(&b.user_id))
            .then(a.seq.cmp(&b.seq))
    });
    for p in &mut session.participants {
        if let Some(l) = p.presence.last_mut()
            && l.left.is_none()
        {
            l.left = Some(end);
        }
    }
    session.ended_at_ms = Some(session.started_at_ms + (end * 1000.0).round() as i64);
    dir.save(&session)?;
    tracing::info!(dir = %dir.root().display(), adopted, "recovered an unfinished session");
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::WORK_PREFIX;
    use crate::{PipelineConfig, VadChoice};

    #[test]
    fn live_work_is_cleared_with_the_other_transcription_work() {
        assert!(LIVE_WORK.starts_with(WORK_PREFIX));
    }

    #[test]
    fn live_names_parse_and_others_do_not() {
        let name = nina_store::utterance_file(42, 3, 1.5, None);
        assert_eq!(parse_live_name(&name), Some((42, 3, 1500)));
        assert_eq!(parse_live_name("audio/42/x.wav"), None);
        assert_eq!(parse_live_name("tracks/42.opus"), None);
    }

    /// A valid 20 ms Opus packet (hybrid, full band) that is not the silence frame.
    const PACKET: [u8; 2] = [0x78, 0x00];

    fn tone(frame: u64) -> Vec<i16> {
        (0..320u64)
            .map(|i| {
                let t = (frame * 320 + i) as f32 / 16_000.0;
                ((t * 440.0 * std::f32::consts::TAU).sin() * 0.3 * 32767.0) as i16
            })
            .collect()
    }

    fn pipeline() -> Pipeline {
        Pipeline::new(PipelineConfig {
            vad: VadChoice::Energy,
            ..PipelineConfig::default()
        })
        .unwrap()
    }

    fn skeleton() -> Session {
        let place = |id| nina_store::Place { id, name: None };
        Session::new("live-1", place(1), place(2), 1_000_000)
    }

    fn voiced(dir: &SessionDir, user: u64) -> usize {
        nina_store::read_opus_track(&dir.root().join(track_file(user)))
            .unwrap()
            .packets
            .iter()
            .filter(|p| p.data != nina_store::OPUS_SILENCE)
            .count()
    }

    #[test]
    fn two_users_land_where_they_spoke_and_their_tracks_line_up() {
        let d = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(d.path().join("s"));
        let p = pipeline();
        let mut live = LiveSession::start(
            &p,
            sd.clone(),
            skeleton(),
            LiveOptions::default(),
            LiveWorkers::default(),
        )
        .unwrap();
        live.joined(0, 1, Some("Ann".into()));
        live.joined(0, 2, None);
        // Ann speaks 1.0-3.0 s, Bob 2.0-4.0 s; nothing is sent while they are quiet.
        for f in 0..260u64 {
            if (50..150).contains(&f) {
                live.audio(1, f, Some(&PACKET), Some(&tone(f))).unwrap();
            }
            if (100..200).contains(&f) {
                live.audio(2, f, Some(&PACKET), Some(&tone(f))).unwrap();
            }
            if f % 5 == 0 {
                live.tick(f).unwrap();
            }
        }
        live.left(210, 2).unwrap();
        live.gap(220, 230, None, "voice connection lost");
        let (s, texts) = live.finish(260, 1_005_200, Duration::ZERO).unwrap();
        assert!(texts.is_empty());
        for (user, start) in [(1, 1.0), (2, 2.0)] {
            let u: Vec<_> = s.utterances.iter().filter(|u| u.user_id == user).collect();
            assert_eq!(u.len(), 1, "{user}: {u:?}");
            assert!(
                (u[0].speech_start - start).abs() <= 0.1,
                "{user}: speech from {}",
                u[0].speech_start
            );
            assert!((u[0].speech_end - (start + 2.0)).abs() <= 0.2);
            assert_eq!(voiced(&sd, user), 100);
        }
        assert_eq!(s.tracks.len(), 2);
        assert!(s.tracks.iter().all(|t| (t.duration - 5.2).abs() < 0.021));
        let bob = s.participants.iter().find(|p| p.user_id == 2).unwrap();
        assert_eq!(bob.presence.len(), 1);
        assert_eq!(bob.presence[0].left, Some(4.2));
        let ann = s.participants.iter().find(|p| p.user_id == 1).unwrap();
        assert_eq!(ann.presence[0].left, Some(5.2), "still there at the end");
        assert_eq!(s.gaps.len(), 1);
        assert_eq!(sd.load().unwrap(), s);
        // Waveform peaks on the session clock, 10 ms a pair, as long as the session: loud
        // where each spoke, flat elsewhere.
        for (user, loud) in [(1u64, 100..300), (2, 200..400)] {
            let bytes = std::fs::read(sd.root().join(peaks_file(user))).unwrap();
            let p = nina_store::peaks::Peaks::from_bytes(&bytes).unwrap();
            assert_eq!(p.pairs.len(), 520, "{user}");
            for (i, &(lo, hi)) in p.pairs.iter().enumerate() {
                if loud.contains(&i) {
                    assert!(lo <= -30 && hi >= 30, "{user} pixel {i}: {lo} {hi}");
                } else {
                    assert_eq!((lo, hi), (0, 0), "{user} pixel {i}");
                }
            }
        }
    }

    #[test]
    fn sessions_sharing_segmenter_threads_get_their_own_utterances() {
        let d = tempfile::tempdir().unwrap();
        let p = pipeline();
        let workers = LiveWorkers {
            segmenters: Some(SegmentWorkers::start(&p, 2).unwrap()),
            transcriber: None,
        };
        let mut sessions: Vec<(SessionDir, LiveSession)> = (0..2)
            .map(|i| {
                let sd = SessionDir::new(d.path().join(format!("s{i}")));
                let live = LiveSession::start(
                    &p,
                    sd.clone(),
                    skeleton(),
                    LiveOptions::default(),
                    workers.clone(),
                )
                .unwrap();
                (sd, live)
            })
            .collect();
        // Session i has users 10i+1..10i+3; user k speaks k times, 1 s each, 1 s apart.
        for f in 0..600u64 {
            for (i, (_, live)) in sessions.iter_mut().enumerate() {
                for k in 1..=3u64 {
                    let user = 10 * i as u64 + k;
                    let burst = f / 100;
                    if burst < k && f % 100 < 50 {
                        live.audio(user, f, Some(&PACKET), Some(&tone(f))).unwrap();
                    }
                }
                if f % 5 == 0 {
                    live.tick(f).unwrap();
                }
            }
        }
        for (i, (sd, live)) in sessions.into_iter().enumerate() {
            let (s, _) = live.finish(600, 1_012_000, Duration::ZERO).unwrap();
            for k in 1..=3u64 {
                let user = 10 * i as u64 + k;
                let n = s.utterances.iter().filter(|u| u.user_id == user).count();
                assert_eq!(n, k as usize, "session {i} user {user}: {:?}", s.utterances);
            }
            assert_eq!(s.utterances.len(), 6, "session {i}: only its own users");
            assert_eq!(sd.load().unwrap(), s);
        }
        assert_eq!(workers.segmenters.unwrap().queued(), 0);
    }

    #[test]
    fn a_crash_is_finished_by_recovery() {
        let d = tempfile::tempdir().unwrap();
        let sd = SessionDir::new(d.path().join("s"));
        let p = pipeline();
        let mut live = LiveSession::start(
            &p,
            sd.clone(),
            skeleton(),
            LiveOptions::default(),
            LiveWorkers::default(),
        )
        .unwrap();
        for f in 0..200u64 {
            if (50..150).contains(&f) {
                live.audio(1, f, Some(&PACKET), Some(&tone(f))).unwrap();
            }
            if f == 60 {
                live.checkpoint().unwrap();
            }
            if f % 5 == 0 {
                live.tick(f).unwrap();
            }
        }
        // The segmenter thread hands the utterance back a moment later; it is written after
        // the last checkpoint; then the process dies.
        let deadline = Instant::now() + Duration::from_secs(10);
        while live.session().utterances.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            live.tick(200).unwrap();
        }
        assert_eq!(live.session().utterances.len(), 1);
        assert!(sd.load().unwrap().utterances.is_empty());
        drop(live);
        let s = recover_session(&sd).unwrap().expect("unfinished");
        assert!(s.ended_at_ms.is_some());
        assert_eq!(s.utterances.len(), 1, "adopted");
        assert!(
            (s.utterances[0].start - 1.0).abs() <= 0.1,
            "{:?}",
            s.utterances[0]
        );
        assert_eq!(s.tracks.len(), 1);
        assert!(
            s.tracks[0].duration >= 1.2,
            "the track up to the checkpoint at least"
        );
        s.validate().unwrap();
        assert_eq!(sd.load().unwrap(), s);
        assert!(
            recover_session(&sd).unwrap().is_none(),
            "finished sessions are left alone"
        );
    }
}
