//! Segmenter threads shared by the live sessions of a process.
//!
//! Voice activity detection is most of the live pipeline's CPU (one Silero run per 32 ms of each
//! speaker's audio), so it runs off the session threads: each user's stream lives on one worker
//! (assigned in turn), the streams of a worker share that worker's loaded model, and utterances
//! go back, in order, over the channel of the session that owns the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nina_segment::vad::VoiceDetector;
use nina_segment::{Samples, SegmentError, Segmenter, SegmenterConfig, StreamFormat, Utterance};

use crate::{Pipeline, PipelineError};

/// A stream: (session, user).
type Key = (u64, u64);

/// What a worker sends back to a session.
#[derive(Debug)]
pub(crate) enum SegOut {
    /// A finished utterance of a user.
    Utterance(u64, Utterance),
    /// A user's stream failed.
    Failed(u64, SegmentError),
    /// A user's stream was ended and forgotten ([`SessionStreams::finish`]).
    Removed,
}

enum Cmd {
    Open {
        key: Key,
        format: StreamFormat,
        reply: Sender<SegOut>,
    },
    Push {
        key: Key,
        pcm: Vec<i16>,
        at: f64,
    },
    /// Closes the open utterance; the stream stays.
    Close {
        key: Key,
    },
    /// Closes the open utterance and forgets the stream.
    Remove {
        key: Key,
    },
}

struct Inner {
    workers: Vec<Sender<Cmd>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
    next_worker: AtomicUsize,
    next_session: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queues ends the workers once they have done what they hold.
        self.workers.clear();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Segmenter threads shared by every live session of a process; clone it into each session.
/// The threads end when the last clone is dropped, after finishing their queues.
#[derive(Clone)]
pub struct SegmentWorkers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SegmentWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentWorkers")
            .field("threads", &self.inner.workers.len())
            .field("queued", &self.queued())
            .finish()
    }
}

impl SegmentWorkers {
    /// Starts `threads` workers (at least one), each with its own voice activity detector as
    /// the pipeline configures it, cutting with the pipeline's segmenter settings.
    pub fn start(pipeline: &Pipeline, threads: usize) -> Result<Self, PipelineError> {
        let cfg = pipeline.config().segmenter.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (base, _) = pipeline.detector()?;
            let (tx, rx) = mpsc::channel();
            let (cfg, queued) = (cfg.clone(), queued.clone());
            let handle = std::thread::Builder::new()
                .name(format!("nina-segment-{i}"))
                .spawn(move || work(&rx, &cfg, base.as_ref(), &queued))
                .map_err(|e| PipelineError::Config(format!("cannot start a thread: {e}")))?;
            workers.push(tx);
            handles.push(handle);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                workers,
                threads: Mutex::new(handles),
                queued,
                next_worker: AtomicUsize::new(0),
                next_session: AtomicU64::new(0),
            }),
        })
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.inner.workers.len()
    }

    /// Frames handed to the workers and not yet segmented (a backlog that grows when the
    /// machine cannot keep up).
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// The streams of one session.
    pub(crate) fn session(&self, format: StreamFormat) -> SessionStreams {
        let (tx, rx) = mpsc::channel();
        SessionStreams {
            workers: self.clone(),
            session: self.inner.next_session.fetch_add(1, Ordering::Relaxed),
            format,
            assigned: HashMap::new(),
            tx,
            rx,
        }
    }

    fn send(&self, worker: usize, cmd: Cmd) -> Result<(), PipelineError> {
        self.inner.workers[worker]
            .send(cmd)
            .map_err(|_| PipelineError::Config("a segmenter thread stopped".into()))
    }
}

fn work(rx: &Receiver<Cmd>, cfg: &SegmenterConfig, base: &dyn VoiceDetector, queued: &AtomicUsize) {
    let mut streams: HashMap<Key, (Segmenter, Sender<SegOut>)> = HashMap::new();
    let deliver =
        |reply: &Sender<SegOut>, user: u64, r: Result<Vec<Utterance>, SegmentError>| match r {
            Ok(us) => us.into_iter().for_each(|u| {
                let _ = reply.send(SegOut::Utterance(user, u));
            }),
            Err(e) => {
                let _ = reply.send(SegOut::Failed(user, e));
            }
        };
    for cmd in rx {
        match cmd {
            Cmd::Open { key, format, reply } => {
                match Segmenter::new(cfg.clone(), format, base.new_stream()) {
                    Ok(s) => {
                        streams.insert(key, (s, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(SegOut::Failed(key.1, e));
                    }
                }
            }
            Cmd::Push { key, pcm, at } => {
                queued.fetch_sub(1, Ordering::Relaxed);
                if let Some((s, reply)) = streams.get_mut(&key) {
                    deliver(reply, key.1, s.push(Samples::I16(&pcm), at));
                }
            }
            Cmd::Close { key } => {
                if let Some((s, reply)) = streams.get_mut(&key) {
                    deliver(reply, key.1, s.finish());
                }
            }
            Cmd::Remove { key } => {
                if let Some((mut s, reply)) = streams.remove(&key) {
                    deliver(&reply, key.1, s.finish());
                    let _ = reply.send(SegOut::Removed);
                }
            }
        }
    }
}

/// One session's streams on the shared workers, and the channel their utterances come back on.
pub(crate) struct SessionStreams {
    workers: SegmentWorkers,
    session: u64,
    format: StreamFormat,
    assigned: HashMap<u64, usize>,
    tx: Sender<SegOut>,
    rx: Receiver<SegOut>,
}

impl SessionStreams {
    fn worker_of(&mut self, user: u64) -> Result<usize, PipelineError> {
        if let Some(w) = self.assigned.get(&user) {
            return Ok(*w);
        }
        let inner = &self.workers.inner;
        let w = inner.next_worker.fetch_add(1, Ordering::Relaxed) % inner.workers.len();
        self.workers.send(
            w,
            Cmd::Open {
                key: (self.session, user),
                format: self.format,
                reply: self.tx.clone(),
            },
        )?;
        self.assigned.insert(user, w);
        Ok(w)
    }

    /// Hands a frame of `user` starting at `at` seconds to their worker.
    pub(crate) fn push(&mut self, user: u64, pcm: &[i16], at: f64) -> Result<(), PipelineError> {
        let w = self.worker_of(user)?;
        self.workers.inner.queued.fetch_add(1, Ordering::Relaxed);
        let key = (self.session, user);
        self.workers
            .send(
                w,
                Cmd::Push {
                    key,
                    pcm: pcm.to_vec(),
                    at,
                },
            )
            .inspect_err(|_| {
                self.workers.inner.queued.fetch_sub(1, Ordering::Relaxed);
            })
    }

    /// Closes `user`'s open utterance (it comes back later through [`Self::ready`]).
    pub(crate) fn close(&mut self, user: u64) -> Result<(), PipelineError> {
        match self.assigned.get(&user) {
            Some(&w) => self.workers.send(
                w,
                Cmd::Close {
                    key: (self.session, user),
                },
            ),
            None => Ok(()),
        }
    }

    /// What came back so far, without waiting.
    pub(crate) fn ready(&self) -> Vec<SegOut> {
        self.rx.try_iter().collect()
    }

    /// Closes every stream and waits until the workers have handed back all they held for this
    /// session (however long their queue), failing only if nothing comes back for `idle`.
    pub(crate) fn finish(&mut self, idle: Duration) -> Result<Vec<SegOut>, PipelineError> {
        let mut left = self.assigned.len();
        for (&user, &w) in &self.assigned {
            self.workers.send(
                w,
                Cmd::Remove {
                    key: (self.session, user),
                },
            )?;
        }
        self.assigned.clear();
        let mut out = Vec::new();
        while left > 0 {
            match self.rx.recv_timeout(idle) {
                Ok(SegOut::Removed) => left -= 1,
                Ok(o) => out.push(o),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(PipelineError::Config(format!(
                        "segmenter threads stalled: {left} streams not finished after {idle:?}"
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(out)
    }
}

impl Drop for SessionStreams {
    fn drop(&mut self) {
        // A session that ends without `finish` (an error) frees its streams.
        for (&user, &w) in &self.assigned {
            let _ = self.workers.send(
                w,
                Cmd::Remove {
                    key: (self.session, user),
                },
            );
        }
    }
}
