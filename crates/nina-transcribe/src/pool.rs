//! A pool of transcription workers with a bounded queue.
//!
//! Both the live collector and `reprocess` feed utterances through one pool: each worker owns a
//! [`Transcriber`] (sharing the model's weights), the job queue is bounded so a slow machine
//! pushes back on its producers instead of growing memory, and results come back in submission
//! order per stream whatever order the workers finish in. A job whose transcriber panics comes
//! back as [`TranscribeError::Panicked`]; dropping a pool cancels its queued jobs and joins its
//! workers.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{TranscribeError, TranscribeOptions, Transcriber, Transcript};

/// Errors of the pool itself (transcription errors travel inside [`JobResult`]).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The queue is full (only from [`TranscriptionPool::try_submit`]).
    #[error("the transcription queue is full")]
    Full,
    /// Every worker has stopped.
    #[error("the transcription pool has shut down")]
    Closed,
    /// A worker could not be started.
    #[error("starting a transcription worker: {0}")]
    Worker(#[from] TranscribeError),
}

/// One utterance to transcribe.
#[derive(Debug)]
struct Job<K> {
    stream: K,
    seq: u64,
    start: f64,
    audio: Vec<f32>,
}

/// A finished job.
#[derive(Debug)]
pub struct JobResult<K> {
    /// The stream (user) the audio came from.
    pub stream: K,
    /// Position of the job within its stream (0, 1, 2, ...).
    pub seq: u64,
    /// Where the audio starts on the session clock, seconds.
    pub start: f64,
    /// Duration of the audio, seconds.
    pub duration: f64,
    /// The transcript (times relative to the audio), or why it failed.
    pub transcript: Result<Transcript, TranscribeError>,
}

impl<K> JobResult<K> {
    /// The transcript with every time moved onto the session clock.
    pub fn on_session_clock(&self) -> Option<Transcript> {
        Some(self.transcript.as_ref().ok()?.clone().shifted(self.start))
    }
}

/// The message of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Reorders results so each stream's come out in submission order.
struct Reorder<K> {
    next: HashMap<K, u64>,
    pending: HashMap<K, BTreeMap<u64, JobResult<K>>>,
}

impl<K: Eq + Hash + Clone> Reorder<K> {
    fn push(&mut self, r: JobResult<K>) {
        self.pending
            .entry(r.stream.clone())
            .or_default()
            .insert(r.seq, r);
    }

    fn pop(&mut self) -> Option<JobResult<K>> {
        let (stream, seq) = self.pending.iter().find_map(|(k, m)| {
            let want = self.next.get(k).copied().unwrap_or(0);
            m.contains_key(&want).then(|| (k.clone(), want))
        })?;
        let queue = self.pending.get_mut(&stream)?;
        let r = queue.remove(&seq)?;
        if queue.is_empty() {
            self.pending.remove(&stream);
        }
        self.next.insert(stream, seq + 1);
        Some(r)
    }
}

/// Worker threads around a bounded job queue.
pub struct TranscriptionPool<K> {
    jobs: Option<SyncSender<Job<K>>>,
    results: Receiver<JobResult<K>>,
    reorder: Reorder<K>,
    seqs: HashMap<K, u64>,
    outstanding: usize,
    workers: Vec<JoinHandle<()>>,
    cancelled: Arc<AtomicBool>,
}

impl<K: Eq + Hash + Clone + Send + 'static> TranscriptionPool<K> {
    /// Starts `workers` threads, each with a transcriber from `make`, sharing a queue of at most
    /// `queue` waiting jobs. Every job is transcribed with `options`.
    pub fn new<T, F>(
        workers: usize,
        queue: usize,
        options: TranscribeOptions,
        make: F,
    ) -> Result<Self, PoolError>
    where
        T: Transcriber + 'static,
        F: Fn() -> Result<T, TranscribeError>,
    {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job<K>>(queue.max(1));
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (res_tx, res_rx) = mpsc::channel();
        let options = Arc::new(options);
        let cancelled = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let mut transcriber = make()?;
            let (jobs_rx, res_tx, options, cancelled) = (
                Arc::clone(&jobs_rx),
                res_tx.clone(),
                Arc::clone(&options),
                Arc::clone(&cancelled),
            );
            let handle = std::thread::Builder::new()
                .name(format!("nina-transcribe-{i}"))
                .spawn(move || {
                    loop {
                        let job = match jobs_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok(job) = job else { break };
                        if cancelled.load(Ordering::Relaxed) {
                            break;
                        }
                        let duration = job.audio.len() as f64 / f64::from(crate::SAMPLE_RATE);
                        let transcript = catch_unwind(AssertUnwindSafe(|| {
                            transcriber.transcribe(&job.audio, &options)
                        }))
                        .unwrap_or_else(|p| {
                            let msg = panic_message(p.as_ref());
                            tracing::error!("a transcription worker panicked: {msg}");
                            Err(TranscribeError::Panicked(msg))
                        });
                        let r = JobResult {
                            stream: job.stream,
                            seq: job.seq,
                            start: job.start,
                            duration,
                            transcript,
                        };
                        if res_tx.send(r).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| TranscribeError::Engine(format!("spawning a worker: {e}")))?;
            handles.push(handle);
        }
        Ok(Self {
            jobs: Some(jobs_tx),
            results: res_rx,
            reorder: Reorder {
                next: HashMap::new(),
                pending: HashMap::new(),
            },
            seqs: HashMap::new(),
            outstanding: 0,
            workers: handles,
            cancelled,
        })
    }

    fn job(&mut self, stream: K, start: f64, audio: Vec<f32>) -> Job<K> {
        let seq = self.seqs.entry(stream.clone()).or_insert(0);
        let job = Job {
            stream,
            seq: *seq,
            start,
            audio,
        };
        *seq += 1;
        job
    }

    /// Queues 16 kHz mono `audio` of `stream` starting at `start` seconds on the session clock,
    /// blocking while the queue is full. Returns the job's sequence number within its stream.
    pub fn submit(&mut self, stream: K, start: f64, audio: Vec<f32>) -> Result<u64, PoolError> {
        let job = self.job(stream, start, audio);
        let seq = job.seq;
        self.jobs
            .as_ref()
            .ok_or(PoolError::Closed)?
            .send(job)
            .map_err(|_| PoolError::Closed)?;
        self.outstanding += 1;
        Ok(seq)
    }

    /// Like [`TranscriptionPool::submit`] but returns [`PoolError::Full`] instead of waiting.
    /// A refused job does not use up a sequence number.
    pub fn try_submit(&mut self, stream: K, start: f64, audio: Vec<f32>) -> Result<u64, PoolError> {
        let job = self.job(stream.clone(), start, audio);
        let seq = job.seq;
        match self.jobs.as_ref().ok_or(PoolError::Closed)?.try_send(job) {
            Ok(()) => {
                self.outstanding += 1;
                Ok(seq)
            }
            Err(e) => {
                if let Some(s) = self.seqs.get_mut(&stream) {
                    *s -= 1;
                }
                Err(match e {
                    TrySendError::Full(_) => PoolError::Full,
                    TrySendError::Disconnected(_) => PoolError::Closed,
                })
            }
        }
    }

    /// Jobs submitted whose results have not been returned yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The next result in per-stream order, waiting at most `timeout`. `Ok(None)` on time-out.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<JobResult<K>>, PoolError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.reorder.pop() {
                self.outstanding -= 1;
                return Ok(Some(r));
            }
            if self.outstanding == 0 {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.results.recv_timeout(left) {
                Ok(r) => self.reorder.push(r),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(PoolError::Closed),
            }
        }
    }

    /// The next result in per-stream order, waiting as long as needed; `None` when nothing is outstanding.
    pub fn recv(&mut self) -> Result<Option<JobResult<K>>, PoolError> {
        loop {
            if self.outstanding == 0 {
                return Ok(None);
            }
            if let Some(r) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(Some(r));
            }
        }
    }

    /// Stops taking jobs, returns every remaining result in order and joins the workers.
    pub fn finish(mut self) -> Result<Vec<JobResult<K>>, PoolError> {
        self.jobs = None;
        let mut out = Vec::new();
        while let Some(r) = self.recv()? {
            out.push(r);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(out)
    }
}

impl<K> Drop for TranscriptionPool<K> {
    /// Cancels the jobs still queued (a job being transcribed finishes) and joins the workers,
    /// so a pool's work never runs on after it is gone.
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.jobs = None; // workers see the queue close and exit
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    /// A transcriber that "transcribes" audio as its length, sleeping longer for short jobs so
    /// results finish out of order.
    struct Counting;

    impl Transcriber for Counting {
        fn transcribe(
            &mut self,
            audio: &[f32],
            _: &TranscribeOptions,
        ) -> Result<Transcript, TranscribeError> {
            crate::validate_audio(audio)?;
            std::thread::sleep(Duration::from_millis(if audio.len() < 5 { 30 } else { 1 }));
            Ok(Transcript {
                segments: vec![Segment {
                    start: 0.0,
                    end: 0.5,
                    text: audio.len().to_string(),
                    avg_logprob: 0.0,
                    no_speech_prob: 0.0,
                    ..Segment::default()
                }],
                ..Transcript::default()
            })
        }

        fn model_name(&self) -> &str {
            "counting"
        }
    }

    #[test]
    fn results_come_back_in_order_per_stream() {
        let mut pool =
            TranscriptionPool::new(3, 4, TranscribeOptions::default(), || Ok(Counting)).unwrap();
        for i in 0..12usize {
            let stream = if i % 2 == 0 { "alice" } else { "bob" };
            // Alternate short (slow) and long (fast) jobs within each stream.
            let len = if (i / 2) % 2 == 0 { 2 } else { 10 + i };
            pool.submit(stream, i as f64, vec![0.1; len]).unwrap();
        }
        let results = pool.finish().unwrap();
        assert_eq!(results.len(), 12);
        for s in ["alice", "bob"] {
            let seqs: Vec<u64> = results
                .iter()
                .filter(|r| r.stream == s)
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, (0..6).collect::<Vec<_>>());
        }
        let r = &results[0];
        let shifted = r.on_session_clock().unwrap();
        assert_eq!(shifted.segments[0].start, r.start);
    }

    #[test]
    fn a_full_queue_pushes_back() {
        let mut pool =
            TranscriptionPool::new(1, 1, TranscribeOptions::default(), || Ok(Counting)).unwrap();
        let mut refused = 0;
        for _ in 0..20 {
            match pool.try_submit(7u64, 0.0, vec![0.1; 2]) {
                Ok(_) => {}
                Err(PoolError::Full) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 0, "a queue of one never filled");
        let results = pool.finish().unwrap();
        assert_eq!(results.len(), 20 - refused);
        let seqs: Vec<u64> = results.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "refused jobs left gaps"
        );
    }

    /// Panics on audio of length 3, counts the jobs it ran.
    struct Fragile(Arc<std::sync::atomic::AtomicUsize>);

    impl Transcriber for Fragile {
        fn transcribe(
            &mut self,
            audio: &[f32],
            o: &TranscribeOptions,
        ) -> Result<Transcript, TranscribeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            assert!(audio.len() != 3, "bug on purpose");
            std::thread::sleep(Duration::from_millis(20));
            Counting.transcribe(audio, o)
        }

        fn model_name(&self) -> &str {
            "fragile"
        }
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_rest_completes() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = Arc::clone(&runs);
        let mut pool = TranscriptionPool::new(2, 8, TranscribeOptions::default(), move || {
            Ok(Fragile(Arc::clone(&r2)))
        })
        .unwrap();
        for len in [5, 3, 6, 7] {
            pool.submit("s", 0.0, vec![0.1; len]).unwrap();
        }
        let results = pool.finish().unwrap();
        assert_eq!(results.len(), 4, "no job lost");
        assert!(matches!(
            results[1].transcript,
            Err(TranscribeError::Panicked(ref m)) if m.contains("bug on purpose")
        ));
        for i in [0, 2, 3] {
            assert!(results[i].transcript.is_ok(), "job {i} held back");
        }
    }

    #[test]
    fn a_dropped_pool_cancels_its_queue_and_joins() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r2 = Arc::clone(&runs);
        let mut pool = TranscriptionPool::new(1, 32, TranscribeOptions::default(), move || {
            Ok(Fragile(Arc::clone(&r2)))
        })
        .unwrap();
        for _ in 0..20 {
            pool.submit(1u8, 0.0, vec![0.1; 8]).unwrap();
        }
        drop(pool);
        let after_drop = runs.load(Ordering::SeqCst);
        assert!(after_drop < 20, "queued jobs ran after the drop");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            after_drop,
            "a worker still runs"
        );
    }

    #[test]
    fn errors_travel_with_their_job() {
        let mut pool =
            TranscriptionPool::new(2, 2, TranscribeOptions::default(), || Ok(Counting)).unwrap();
        pool.submit("s", 0.0, vec![]).unwrap();
        pool.submit("s", 1.0, vec![0.2; 3]).unwrap();
        let results = pool.finish().unwrap();
        assert!(matches!(
            results[0].transcript,
            Err(TranscribeError::Audio(_))
        ));
        assert!(results[1].transcript.is_ok());
    }
}
