//! The embedded backend, log-first. An append goes to the delivery log ([`log_writer`]: one
//! writer, one syncer, `fdatasync` before the ack, duplicates answered from memory); SQLite is
//! a projection of that log, filled in large batches by one low-priority writer thread
//! ([`writer`], [`projection`]) that also runs claims and completions, with the applied
//! sequence number committed beside the rows so that recovery replays exactly what is missing.
//! A checkpoint thread, a pool of read-only connections for the read model, and an exclusive
//! lock on `<database>.lock` (one SQLite database serves one server) complete it.

mod feed;
pub(crate) mod ledger;
mod log_writer;
mod projection;
mod query;
mod read;
pub mod schema;
mod writer;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, Notify};

use self::log_writer::{DedupWindow, LogCommand, LogProgress, LogWriter};
use self::writer::{Command, Writer};
use super::feed::{Change, ChangeFeed, FeedBounds, FeedRetention};
use super::query::{LedgerQuery, RevenueDay, SourceWindow, WindowStats};
use super::segment_log::{LogReader, SegmentLog};
use super::tokens::{AdminTokenStore, StoredToken};
use super::{
    Appended, AttemptView, Backend, Backlog, ClaimRequest, ClaimedDelivery, Completed, Completion,
    DeliveryFilter, DeliveryId, DeliveryLog, DeliveryView, FirstAttempt, JournalError, NewDelivery,
    ReadModel, ReplayRequest, StatusCounts, Storage,
};
use crate::clock::Timestamp;
use crate::metrics::DiskTimings;

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fdatasync` of the delivery log before the ack: survives power loss.
    Fsync,
    /// Written to the OS before the ack: survives a process crash, not a power loss.
    Os,
}

/// Longest a read waits for SQLite to show what was acked before it.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// Completions per writer transaction.
const COMPLETION_CHUNK: usize = 64;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// Most appends in one log write.
    pub max_batch: usize,
    /// Commands that may wait for a writer before senders wait too (backpressure).
    pub queue_capacity: usize,
    /// How often the checkpointer copies the WAL into the database. Short, because each
    /// checkpoint ends with a sync of everything it copied, and on a disk whose flush persists
    /// all that came before, every ack's log sync that lands behind it waits for all of it:
    /// at 200 ms instead of a second, the half-load ack p99 fell from 37–142 to 20–58 ms over
    /// two sessions' `wharf-bench --repeat 3` pairs. Full load pays for it (p99 +1–1.5 ms,
    /// ~5% fewer req/s: five checkpoints and database fsyncs a second on a saturated
    /// machine); issue 8's notes have the figures.
    pub checkpoint_interval: Duration,
    /// Size of one delivery-log segment file.
    pub segment_bytes: u64,
    /// Most segment files: the log's bound on disk (the backlog SQLite may be behind by).
    pub max_segments: usize,
    /// Recent keys answered as duplicates from memory.
    pub dedup_window: usize,
    /// How much of the change feed is kept.
    pub feed_retention: FeedRetention,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Fsync,
            max_batch: 1024,
            queue_capacity: 16 * 1024,
            checkpoint_interval: Duration::from_millis(200),
            segment_bytes: 64 << 20,
            max_segments: 16,
            dedup_window: 1 << 18,
            feed_retention: FeedRetention::default(),
        }
    }
}

pub struct SqliteJournal {
    /// Held for the journal's life: the exclusive lock that keeps a second process out.
    _owner: File,
    /// The migrations this open applied.
    applied: Vec<String>,
    log: Mutex<Option<mpsc::Sender<LogCommand>>>,
    commands: mpsc::Sender<Command>,
    readers: Arc<ReaderPool>,
    appended: Arc<Notify>,
    feed_written: Arc<Notify>,
    progress: Arc<LogProgress>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    checkpointer: Arc<AtomicBool>,
    /// Shared with the SQLite writer: see [`DeliveryLog::attempt_on_arrival`].
    first_attempt: Arc<OnceLock<Arc<dyn FirstAttempt>>>,
    /// Timings of the log's syncs, the WAL's syncs and checkpoints, for `/metrics`.
    disk: Arc<DiskTimings>,
}

impl SqliteJournal {
    /// Opens (creating if needed) and migrates the database, replays whatever the delivery
    /// log holds beyond it, then starts the writers.
    pub fn open(options: SqliteOptions) -> Result<Self, JournalError> {
        let owner = lock_exclusively(&options.path)?;
        let mut conn = open_write_connection(&options.path).map_err(JournalError::storage)?;
        let applied = schema::migrate(&mut conn).map_err(JournalError::storage)?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, path = %options.path.display(), "journal migrated");
        }
        // This process holds the database alone, so every lease left in it belongs to a
        // process that is gone: release them so the work resumes now, not when they expire.
        conn.execute(
            "UPDATE deliveries SET lease_token = NULL, lease_until = NULL \
             WHERE lease_token IS NOT NULL",
            [],
        )
        .map_err(JournalError::storage)?;

        let applied_seq = projection::applied_seq(&conn).map_err(JournalError::storage)?;
        let (log, recovered) = SegmentLog::open(
            &log_dir(&options.path),
            options.segment_bytes,
            options.max_segments,
            applied_seq,
        )
        .map_err(JournalError::storage)?;
        let progress = Arc::new(LogProgress::default());
        progress.synced.store(recovered.last_seq, Ordering::Release);
        progress.applied.store(applied_seq, Ordering::Release);
        progress.applied_watch.send_replace(applied_seq);
        progress.durable.store(applied_seq, Ordering::Release);
        let replayed = replay(&mut conn, &log, &progress)?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "journal replayed the delivery log into SQLite"
            );
        }
        let window = load_window(&conn, options.dedup_window).map_err(JournalError::storage)?;
        let next_seq = recovered
            .last_seq
            .max(progress.applied.load(Ordering::Acquire))
            .max(projection::max_delivery_id(&conn).map_err(JournalError::storage)?)
            + 1;
        let database_inode = std::fs::metadata(&options.path)
            .map_err(JournalError::storage)?
            .ino();

        let disk = Arc::new(DiskTimings::default());
        let appended = Arc::new(Notify::new());
        let feed_written = Arc::new(Notify::new());
        let (commands, receiver) = mpsc::channel(options.queue_capacity);
        let segments = log.readable();
        let first_attempt = Arc::new(OnceLock::new());
        let sqlite_writer = Writer {
            conn,
            commands: receiver,
            max_batch: options.max_batch,
            wal_path: wal_path(&options.path),
            segments,
            progress: progress.clone(),
            appended: appended.clone(),
            fsync: options.durability == Durability::Fsync,
            first_attempt: first_attempt.clone(),
            feed_written: feed_written.clone(),
            feed_retention: options.feed_retention,
            pace: Default::default(),
            disk: disk.clone(),
        };
        let mut threads = vec![std::thread::Builder::new()
            .name("wharf-sqlite-writer".into())
            .spawn(move || sqlite_writer.run())
            .map_err(JournalError::storage)?];

        let (log_sender, log_receiver) = mpsc::channel(options.queue_capacity);
        let wake = commands.clone();
        let log_writer = LogWriter {
            log,
            window,
            next_seq,
            progress: progress.clone(),
            fsync: options.durability == Durability::Fsync,
            database: (options.path.clone(), database_inode),
            disk: disk.clone(),
            on_synced: Box::new(move || {
                let _ = wake.try_send(Command::Wake);
            }),
        };
        let max_batch = options.max_batch;
        threads.push(
            std::thread::Builder::new()
                .name("wharf-log-writer".into())
                .spawn(move || log_writer.run(log_receiver, max_batch))
                .map_err(JournalError::storage)?,
        );
        let checkpointer = Arc::new(AtomicBool::new(true));
        spawn_checkpointer(&options, checkpointer.clone(), disk.clone())?;
        Ok(Self {
            _owner: owner,
            applied,
            log: Mutex::new(Some(log_sender)),
            commands,
            readers: Arc::new(ReaderPool::new(options.path)),
            appended,
            feed_written,
            progress,
            threads: Mutex::new(threads),
            checkpointer,
            first_attempt,
            disk,
        })
    }

    /// Opens the database as a [`Storage`]: one journal serves as log and read model.
    pub fn open_storage(options: SqliteOptions) -> Result<(Storage, Vec<String>), JournalError> {
        let journal = Arc::new(Self::open(options)?);
        let applied = journal.applied.clone();
        let storage = Storage {
            backend: Backend::Sqlite,
            disk: Some(journal.disk.clone()),
            log: journal.clone(),
            read: journal.clone(),
            feed: journal.clone(),
            tokens: journal,
        };
        Ok((storage, applied))
    }

    async fn send<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Command,
    ) -> Result<T, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn send_to_log<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> LogCommand,
    ) -> Result<T, JournalError> {
        let sender = self.log.lock().clone().ok_or(JournalError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(command(reply))
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, JournalError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(query))
            .await
            .map_err(|_| JournalError::Closed)?
    }

    /// Synced records SQLite does not hold yet.
    fn unprojected(&self) -> u64 {
        self.unprojected_since(self.progress.applied.load(Ordering::Acquire))
    }

    /// Records synced beyond a snapshot of SQLite that held everything through `applied`.
    fn unprojected_since(&self, applied: u64) -> u64 {
        self.progress
            .synced
            .load(Ordering::Acquire)
            .saturating_sub(applied)
    }
}

/// Projects everything the log holds beyond SQLite, before anything new is accepted.
fn replay(
    conn: &mut Connection,
    log: &SegmentLog,
    progress: &LogProgress,
) -> Result<u64, JournalError> {
    let start = progress.applied.load(Ordering::Acquire);
    let through = progress.synced.load(Ordering::Acquire);
    let mut reader = LogReader::new(log.readable(), start + 1);
    // Recovery only restores the rows: the processor attempts what it finds pending.
    while let Some(projection::Projected { last, .. }) =
        projection::project_batch(conn, &mut reader, through, projection::BATCH, None)
            .map_err(JournalError::storage)?
    {
        progress.applied.store(last, Ordering::Release);
        progress.applied_watch.send_replace(last);
    }
    let applied = progress.applied.load(Ordering::Acquire);
    // Readers add the log's unprojected records to what SQLite says it applied: say it.
    conn.execute(
        "INSERT INTO wharf_meta (key, value) VALUES ('applied_seq', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [applied.to_string()],
    )
    .map_err(JournalError::storage)?;
    progress.synced.fetch_max(applied, Ordering::AcqRel);
    Ok(applied - start)
}

/// The most recent keys, oldest first, so the window evicts in arrival order.
fn load_window(conn: &Connection, capacity: usize) -> rusqlite::Result<DedupWindow> {
    let mut window = DedupWindow::new(capacity);
    let mut statement = conn.prepare(
        "SELECT id, source, dedup_key, body_hash FROM deliveries ORDER BY id DESC LIMIT ?1",
    )?;
    let rows: Vec<(i64, String, String, Option<i64>)> = statement
        .query_map([capacity as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, source, key, hash) in rows.into_iter().rev() {
        window.insert(
            &source,
            &key,
            id,
            hash.unwrap_or(log_writer::UNKNOWN_FINGERPRINT),
        );
    }
    Ok(window)
}

/// `wharf.db` → `wharf.db-log/`, beside the database.
fn log_dir(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-log");
    PathBuf::from(name)
}

/// Takes the exclusive lock on `<database>.lock`, or explains who holds it. The kernel drops
/// the lock when the process dies, so a crash never leaves the database locked.
fn lock_exclusively(db: &Path) -> Result<File, JournalError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(JournalError::storage)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(JournalError::storage)?;
            writeln!(file, "{}", std::process::id()).map_err(JournalError::storage)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(JournalError::InUse(format!(
                "{} is in use by another wharf process (pid {}); one SQLite database serves \
                 one server: stop the other, or use PostgreSQL to run several",
                db.display(),
                holder.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(error)) => Err(JournalError::storage(error)),
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The write connection lives on the writer thread alone, so SQLite's own mutexes are off.
fn open_write_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}
/// Checkpoints from their own connection, so the writer never waits on one. PASSIVE never
/// blocks the writer; the writer copies the last frames itself so that the WAL restarts.
fn spawn_checkpointer(
    options: &SqliteOptions,
    running: Arc<AtomicBool>,
    disk: Arc<DiskTimings>,
) -> Result<(), JournalError> {
    let conn = Connection::open(&options.path).map_err(JournalError::storage)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .map_err(JournalError::storage)?;
    let interval = options.checkpoint_interval;
    std::thread::Builder::new()
        .name("wharf-journal-checkpoint".into())
        .spawn(move || {
            // Not lowered: a checkpointer starved through a burst leaves the whole WAL to the
            // writer's own checkpoint (`Writer::bound_wal`), which then holds every first
            // attempt for a second or more. Its work is mostly copying pages.
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                writer::checkpoint(&conn, "PRAGMA wal_checkpoint(PASSIVE);", &disk.checkpoint);
            }
        })
        .map_err(JournalError::storage)?;
    Ok(())
}

/// Read-only connections, opened on demand and kept for reuse.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        let conn = match self.idle.lock().pop() {
            Some(conn) => conn,
            None => self.open().map_err(JournalError::storage)?,
        };
        let result = query(&conn).map_err(JournalError::storage);
        let mut idle = self.idle.lock();
        if idle.len() < 8 {
            idle.push(conn);
        }
        result
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Memory-mapped reads: a reader's page cache is reset whenever the writer commits, and
        // mmap makes re-reading those pages free of copies.
        conn.execute_batch(
            "PRAGMA busy_timeout = 5000; PRAGMA query_only = 1; PRAGMA mmap_size = 268435456;",
        )?;
        Ok(conn)
    }
}

#[async_trait]
impl DeliveryLog for SqliteJournal {
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, JournalError> {
        self.send_to_log(|reply| LogCommand::Append { delivery, reply })
            .await
    }

    async fn claim_due(&self, request: ClaimRequest) -> Result<Vec<ClaimedDelivery>, JournalError> {
        self.send(|reply| Command::Claim { request, reply }).await
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<Vec<Completed>, JournalError> {
        let mut results = Vec::with_capacity(batch.len());
        let mut pending = batch;
        // Small transactions keep the single writer free for projection between them.
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(COMPLETION_CHUNK));
            let chunk = pending;
            results.extend(
                self.send(|reply| Command::Complete {
                    batch: chunk,
                    reply,
                })
                .await?,
            );
            pending = rest;
        }
        Ok(results)
    }

    /// Healthy while the log takes and syncs writes and SQLite keeps up with it.
    async fn probe(&self) -> Result<(), JournalError> {
        self.send_to_log(|reply| LogCommand::Probe { reply })
            .await?;
        if self.progress.projection_failing.load(Ordering::Acquire) {
            return Err(JournalError::storage(std::io::Error::other(
                "SQLite cannot be written: deliveries wait in the delivery log",
            )));
        }
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, JournalError> {
        if self.unprojected() > 0 {
            return Ok(Some(Timestamp(0)));
        }
        self.read(read::next_due).await
    }

    async fn replay(&self, request: ReplayRequest) -> Result<u64, JournalError> {
        // Only what SQLite holds is finished; the log's unprojected tail is pending anyway.
        self.await_visible().await;
        let dry_run = request.dry_run;
        let replayed = self
            .send(|reply| Command::Replay { request, reply })
            .await?;
        if !dry_run && replayed > 0 {
            self.appended.notify_waiters();
        }
        Ok(replayed)
    }

    fn appended_signal(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    fn attempt_on_arrival(&self, first: Arc<dyn FirstAttempt>) {
        if self.first_attempt.set(first).is_err() {
            tracing::warn!("a first-attempt hook was already installed; keeping the first one");
        }
    }

    async fn close(&self) {
        self.checkpointer.store(false, Ordering::Relaxed);
        // The log writer drains its queue and stops once its sender is gone; then SQLite
        // projects what it synced and checkpoints.
        self.log.lock().take();
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        let mut threads = threads.into_iter();
        let sqlite_writer = threads.next();
        for log_writer in threads {
            let _ = tokio::task::spawn_blocking(move || log_writer.join()).await;
        }
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        if let Some(handle) = sqlite_writer {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[async_trait]
impl AdminTokenStore for SqliteJournal {
    async fn admin_tokens(&self) -> Result<Vec<StoredToken>, JournalError> {
        self.read(query::admin_tokens).await
    }

    async fn add_admin_token(
        &self,
        token: StoredToken,
        only_if_none: bool,
    ) -> Result<bool, JournalError> {
        self.send(|reply| Command::AddAdminToken {
            token,
            only_if_none,
            reply,
        })
        .await
    }
}

#[async_trait]
impl ReadModel for SqliteJournal {
    /// Counts what SQLite holds plus what the log synced beyond the same snapshot.
    async fn status_counts(&self) -> Result<StatusCounts, JournalError> {
        let (mut counts, applied) = self.read(read::status_counts_at_snapshot).await?;
        counts.pending += self.unprojected_since(applied);
        Ok(counts)
    }

    /// Pending work includes what the log holds and SQLite does not yet.
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, JournalError> {
        let (mut backlog, applied) = self
            .read(move |conn| read::backlog_at_snapshot(conn, now))
            .await?;
        let unprojected = self.unprojected_since(applied);
        backlog.due += unprojected;
        backlog.pending += unprojected;
        Ok(backlog)
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryView>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| read::deliveries(conn, &filter)).await
    }

    async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryView>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| read::delivery(conn, id)).await
    }

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<AttemptView>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| read::attempts(conn, id)).await
    }

    async fn ledger_rows(
        &self,
        query: LedgerQuery,
    ) -> Result<Vec<Vec<crate::ledger::Cell>>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| query::ledger_rows(conn, &query))
            .await
    }

    async fn source_counts(&self, since: Timestamp) -> Result<Vec<SourceWindow>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| query::source_counts(conn, since))
            .await
            .map(|counts| counts.into_values().collect())
    }

    async fn window_stats(&self, since: Timestamp) -> Result<WindowStats, JournalError> {
        self.await_visible().await;
        self.read(move |conn| query::window_stats(conn, since))
            .await
    }

    async fn revenue(&self, since: Timestamp) -> Result<Vec<RevenueDay>, JournalError> {
        self.await_visible().await;
        self.read(move |conn| query::revenue(conn, since)).await
    }

    async fn await_visible(&self) {
        let target = self.progress.synced.load(Ordering::Acquire);
        let mut applied = self.progress.applied_watch.subscribe();
        let caught_up = applied.wait_for(|applied| *applied >= target);
        let _ = tokio::time::timeout(VISIBILITY_WAIT, caught_up).await;
    }
}

#[async_trait]
impl ChangeFeed for SqliteJournal {
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>, JournalError> {
        self.read(move |conn| feed::changes_after(conn, after, limit))
            .await
    }

    async fn bounds(&self) -> Result<FeedBounds, JournalError> {
        self.read(feed::bounds).await
    }

    fn written(&self) -> Arc<Notify> {
        self.feed_written.clone()
    }
}
