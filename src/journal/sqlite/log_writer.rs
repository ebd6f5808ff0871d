//! The ack path of the embedded journal: one thread takes every append waiting, answers
//! duplicates from an in-memory window of recent keys, encodes the new deliveries into the
//! segment log and writes them with one `write`; a second thread `fdatasync`s what was written
//! and only then answers. SQLite is not on this path at all: the projector (see
//! [`super::writer`]) follows the synced records into it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::BuildHasher;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::journal::segment_log::record::{self, body_fingerprint, Conflict};
use crate::journal::segment_log::SegmentLog;
use crate::journal::{Appended, DeliveryId, JournalError, NewDelivery, StorageFault};
use crate::metrics::{timed, DiskTimings};
use crate::telemetry::LogLimiter;

/// The fingerprint of a delivery stored before fingerprints were kept: never a conflict.
pub(super) const UNKNOWN_FINGERPRINT: i64 = i64::MIN;

/// How often the writer checks that its files are still the ones it opened.
const IDENTITY_CHECK: Duration = Duration::from_secs(1);

/// A request to the log writer.
pub(super) enum LogCommand {
    Append {
        delivery: NewDelivery,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    /// Proves the log can be written and synced now.
    Probe {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// Progress shared by the log writer, the syncer and the projector.
#[derive(Debug, Default)]
pub(super) struct LogProgress {
    /// `applied`, for readers that wait to see their writes.
    pub applied_watch: tokio::sync::watch::Sender<u64>,
    /// Highest sequence number written and synced (acked or ackable).
    pub synced: AtomicU64,
    /// Highest sequence number projected into SQLite (committed).
    pub applied: AtomicU64,
    /// Highest sequence number whose projection is durable in SQLite: segments up to it may
    /// be reused.
    pub durable: AtomicU64,
    /// Set when a file under the journal was deleted or replaced: nothing is acked after it.
    pub poisoned: AtomicBool,
    /// Set while projecting into SQLite fails (health reports it; acks go on into the log).
    pub projection_failing: AtomicBool,
}

/// Keys seen recently, to answer a duplicate without touching the disk. A key beyond the
/// window that comes again is caught by SQLite's `UNIQUE (source, dedup_key)` when projected:
/// it changes nothing, and a different body is recorded as a conflict there.
pub(super) struct DedupWindow {
    entries: HashMap<u64, Seen>,
    order: VecDeque<u64>,
    capacity: usize,
    primary: RandomState,
    check: RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// A second, independent hash of the key: both must match, so a false duplicate needs a
    /// 128-bit collision.
    check: u64,
    id: i64,
    fingerprint: i64,
}

impl DedupWindow {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            primary: RandomState::new(),
            check: RandomState::new(),
        }
    }

    /// The key's two hashes, computed once for a lookup and the insert that may follow it.
    fn hashes(&self, source: &str, dedup_key: &str) -> KeyHashes {
        let key = (source, dedup_key);
        KeyHashes(self.primary.hash_one(key), self.check.hash_one(key))
    }

    /// The stored delivery with this key, and its body's fingerprint.
    #[cfg(test)]
    fn get(&self, source: &str, dedup_key: &str) -> Option<(i64, i64)> {
        self.get_hashed(self.hashes(source, dedup_key))
    }

    fn get_hashed(&self, KeyHashes(primary, check): KeyHashes) -> Option<(i64, i64)> {
        self.entries
            .get(&primary)
            .filter(|seen| seen.check == check)
            .map(|seen| (seen.id, seen.fingerprint))
    }

    pub fn insert(&mut self, source: &str, dedup_key: &str, id: i64, fingerprint: i64) {
        self.insert_hashed(self.hashes(source, dedup_key), id, fingerprint);
    }

    fn insert_hashed(&mut self, KeyHashes(primary, check): KeyHashes, id: i64, fingerprint: i64) {
        let seen = Seen {
            check,
            id,
            fingerprint,
        };
        if self.entries.insert(primary, seen).is_none() {
            self.order.push_back(primary);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// A key's hashes in a [`DedupWindow`]: where it is kept, and the check that it is the same key.
#[derive(Debug, Clone, Copy)]
struct KeyHashes(u64, u64);

/// An answer that may only be given once its batch is synced.
enum Reply {
    Append(oneshot::Sender<Result<Appended, JournalError>>, Appended),
    Probe(oneshot::Sender<Result<(), JournalError>>),
}

struct SyncJob {
    files: Vec<Arc<File>>,
    replies: Vec<Reply>,
    last_seq: u64,
}

pub(super) struct LogWriter {
    pub log: SegmentLog,
    pub window: DedupWindow,
    pub next_seq: u64,
    pub progress: Arc<LogProgress>,
    pub fsync: bool,
    /// The SQLite database file, watched with the log's own files.
    pub database: (PathBuf, u64),
    /// Where each sync's duration goes.
    pub disk: Arc<DiskTimings>,
    /// Called after each sync that moved `synced` on, to wake the projector.
    pub on_synced: Box<dyn Fn() + Send>,
}

impl LogWriter {
    /// Runs until every sender is gone; then waits for the syncer to answer what is left.
    pub fn run(mut self, mut commands: mpsc::Receiver<LogCommand>, max_batch: usize) {
        let (jobs, receiver) = std_mpsc::channel::<SyncJob>();
        let progress = self.progress.clone();
        let on_synced = std::mem::replace(&mut self.on_synced, Box::new(|| {}));
        let fsync = self.fsync;
        let disk = self.disk.clone();
        let syncer = std::thread::Builder::new()
            .name("wharf-log-sync".into())
            .spawn(move || run_syncer(receiver, &progress, fsync, &disk, on_synced.as_ref()));
        let mut last_identity_check = Instant::now();
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = commands.blocking_recv() {
            batch.push(first);
            while batch.len() < max_batch {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            if last_identity_check.elapsed() >= IDENTITY_CHECK {
                last_identity_check = Instant::now();
                self.check_identity();
            }
            self.log
                .release_through(self.progress.durable.load(Ordering::Acquire));
            let job = self.write_batch(&mut batch);
            if let Some(job) = job {
                if let Err(std_mpsc::SendError(job)) = jobs.send(job) {
                    fail_replies(job.replies, &closed());
                }
            }
        }
        drop(jobs);
        if let Ok(handle) = syncer {
            let _ = handle.join();
        }
    }

    /// Encodes and writes one batch; returns what the syncer must sync and answer.
    fn write_batch(&mut self, batch: &mut Vec<LogCommand>) -> Option<SyncJob> {
        if self.progress.poisoned.load(Ordering::Acquire) {
            let error = poisoned();
            for command in batch.drain(..) {
                match command {
                    LogCommand::Append { reply, .. } => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    LogCommand::Probe { reply } => {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
            return None;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut encoded = Vec::with_capacity(2048);
        for command in batch.drain(..) {
            match command {
                LogCommand::Append { delivery, reply } => {
                    match self.append(&delivery, &mut encoded) {
                        Ok(appended) => replies.push(Reply::Append(reply, appended)),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                }
                LogCommand::Probe { reply } => replies.push(Reply::Probe(reply)),
            }
        }
        if let Err(error) = self.log.flush() {
            static LIMITER: LogLimiter = LogLimiter::new();
            if let Some(suppressed) = LIMITER.allow() {
                tracing::error!(%error, suppressed, "delivery log write failed; answering 503");
            }
            fail_replies(replies, &JournalError::Storage(StorageFault::new(error)));
            return None;
        }
        Some(SyncJob {
            files: self.log.take_dirty(),
            replies,
            last_seq: self.next_seq - 1,
        })
    }

    /// Decides one append: a duplicate (maybe with a conflicting body, which is logged) or a
    /// new delivery whose id is its sequence number.
    fn append(
        &mut self,
        delivery: &NewDelivery,
        encoded: &mut Vec<u8>,
    ) -> Result<Appended, JournalError> {
        let fingerprint = body_fingerprint(&delivery.body);
        let hashes = self.window.hashes(&delivery.source, &delivery.dedup_key);
        if let Some((id, stored)) = self.window.get_hashed(hashes) {
            if stored != fingerprint && stored != UNKNOWN_FINGERPRINT {
                let conflict = Conflict {
                    delivery_id: id,
                    received_at: delivery.received_at,
                    headers_json: delivery.headers_json.clone(),
                    body: delivery.body.clone(),
                };
                self.push(encoded, |seq, out| {
                    record::encode_conflict(seq, &conflict, out)
                })?;
            }
            return Ok(Appended::Duplicate(DeliveryId(id)));
        }
        let seq = self.push(encoded, |seq, out| {
            record::encode_delivery(seq, delivery, out)
        })?;
        let id = seq as i64;
        self.window.insert_hashed(hashes, id, fingerprint);
        Ok(Appended::Stored(DeliveryId(id)))
    }

    /// Adds a record under the next sequence number, which is only taken if it fits.
    fn push(
        &mut self,
        encoded: &mut Vec<u8>,
        encode: impl FnOnce(u64, &mut Vec<u8>),
    ) -> Result<u64, JournalError> {
        encoded.clear();
        let seq = self.next_seq;
        encode(seq, encoded);
        self.log.push(seq, encoded).map_err(|error| {
            static LIMITER: LogLimiter = LogLimiter::new();
            if let Some(suppressed) = LIMITER.allow() {
                tracing::error!(%error, suppressed, "delivery log refused a record; answering 503");
            }
            JournalError::Storage(StorageFault::new(error))
        })?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Fails closed when the database or the active segment was deleted or replaced: writes
    /// would land in a file nobody will ever read again.
    fn check_identity(&self) {
        let (segment, inode) = self.log.active_identity();
        let database_moved = std::fs::metadata(&self.database.0)
            .map(|meta| meta.ino() != self.database.1)
            .unwrap_or(true);
        let segment_moved = std::fs::metadata(&segment)
            .map(|meta| meta.ino() != inode)
            .unwrap_or(true);
        if (database_moved || segment_moved) && !self.progress.poisoned.swap(true, Ordering::AcqRel)
        {
            tracing::error!(
                database = %self.database.0.display(),
                segment = %segment.display(),
                "a journal file was deleted or replaced while running; refusing deliveries \
                 (503) until restart"
            );
        }
    }
}

fn poisoned() -> JournalError {
    JournalError::Storage(StorageFault::new(std::io::Error::other(
        "a journal file was deleted or replaced while running; restart wharf",
    )))
}

fn closed() -> JournalError {
    JournalError::Closed
}

fn fail_replies(replies: Vec<Reply>, error: &JournalError) {
    for reply in replies {
        match reply {
            Reply::Append(reply, _) => {
                let _ = reply.send(Err(error.clone()));
            }
            Reply::Probe(reply) => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Folds every job waiting into one `fdatasync` per file, then answers them all.
fn run_syncer(
    jobs: std_mpsc::Receiver<SyncJob>,
    progress: &LogProgress,
    fsync: bool,
    disk: &DiskTimings,
    on_synced: &(dyn Fn() + Send),
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let mut files: Vec<Arc<File>> = Vec::new();
        for job in &group {
            for file in &job.files {
                if !files.iter().any(|known| Arc::ptr_eq(known, file)) {
                    files.push(file.clone());
                }
            }
        }
        let synced = if fsync {
            timed(&disk.log_sync, || {
                files.iter().try_for_each(|file| file.sync_data())
            })
            .map_err(|error| JournalError::Sync(StorageFault::new(error)))
        } else {
            Ok(())
        };
        if let Err(error) = &synced {
            static LIMITER: LogLimiter = LogLimiter::new();
            if let Some(suppressed) = LIMITER.allow() {
                tracing::error!(%error, suppressed, "delivery log sync failed; answering 503");
            }
        }
        let mut moved = false;
        for job in group {
            if synced.is_ok() {
                moved |= progress.synced.fetch_max(job.last_seq, Ordering::AcqRel) < job.last_seq;
            }
            for reply in job.replies {
                match (reply, &synced) {
                    (Reply::Append(reply, appended), Ok(())) => {
                        let _ = reply.send(Ok(appended));
                    }
                    (Reply::Append(reply, _), Err(error)) => {
                        let _ = reply.send(Err(error.clone()));
                    }
                    (Reply::Probe(reply), result) => {
                        let _ = reply.send(result.clone());
                    }
                }
            }
        }
        if moved {
            on_synced();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_remembers_recent_keys_and_forgets_the_oldest() {
        let mut window = DedupWindow::new(2);
        window.insert("a", "k1", 1, 10);
        window.insert("a", "k2", 2, 20);
        assert_eq!(window.get("a", "k1"), Some((1, 10)));
        assert_eq!(window.get("b", "k1"), None, "keys are per source");
        window.insert("a", "k3", 3, 30);
        assert_eq!(
            window.get("a", "k1"),
            None,
            "the oldest key left the window"
        );
        assert_eq!(window.get("a", "k3"), Some((3, 30)));
    }
}
