//! Keeping the data directory's search index (`nina-index`, `<data_dir>/index.sqlite`) up to
//! date as a session records: its rows are replaced now and then while it runs and once it has
//! ended. Only when the index exists (`reprocess index` makes it). The recording never waits on
//! the index: updates while recording run on a thread of their own, one at a time, and give up
//! at once when another process is writing the index (the next one catches up).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nina_store::SessionDir;

/// How often a running session's rows are refreshed.
pub const EVERY: Duration = Duration::from_secs(30);

/// One session's index updates.
#[derive(Debug)]
pub struct IndexUpdates {
    data: PathBuf,
    dir: SessionDir,
    busy: Arc<AtomicBool>,
    last: Instant,
}

impl IndexUpdates {
    /// Updates of the session in `dir`, under the data directory `data`.
    pub fn new(data: PathBuf, dir: SessionDir) -> Self {
        Self {
            data,
            dir,
            busy: Arc::new(AtomicBool::new(false)),
            last: Instant::now(),
        }
    }

    fn enabled(&self) -> bool {
        self.data.join(nina_index::INDEX_FILE).is_file()
    }

    /// While recording: every [`EVERY`], starts an update in the background unless one is
    /// still running.
    pub fn tick(&mut self) {
        if self.last.elapsed() < EVERY || !self.enabled() {
            return;
        }
        self.last = Instant::now();
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (data, dir, busy) = (self.data.clone(), self.dir.clone(), self.busy.clone());
        let spawned = std::thread::Builder::new()
            .name("nina-index".into())
            .spawn(move || {
                update(&data, &dir, Duration::ZERO);
                busy.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.busy.store(false, Ordering::Release);
        }
    }

    /// Once the session has ended and its transcripts are written: a last update, waiting a
    /// little for another writer.
    pub fn finish(self) {
        if !self.enabled() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.busy.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        update(&self.data, &self.dir, Duration::from_secs(2));
    }
}

fn update(data: &std::path::Path, dir: &SessionDir, wait: Duration) {
    let r = nina_index::Index::open(data).and_then(|mut i| {
        i.set_busy_timeout(wait)?;
        i.update_session(dir)
    });
    match r {
        Ok(u) => tracing::debug!(?u, "search index updated"),
        Err(e) if e.is_busy() => tracing::debug!("search index busy; updated later"),
        Err(e) => tracing::warn!("search index not updated: {e}"),
    }
}
