//! The embedded backend: SQLite in WAL mode, one writer thread that group-commits (see
//! [`writer`]), a checkpoint thread so checkpoints never stall the writer, and a small pool of
//! read-only connections for the admin API. One process owns the file: a second `wharf` on the
//! same database refuses to start (an exclusive lock on `<database>.lock`).

mod ledger;
mod read;
pub mod schema;
mod writer;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, Notify};

use self::writer::{Command, Writer, WriterConfig};
use super::{
    Appended, AttemptView, Backend, Backlog, ClaimRequest, ClaimedDelivery, Completed, Completion,
    DeliveryFilter, DeliveryId, DeliveryLog, DeliveryView, JournalError, NewDelivery, ReadModel,
    StatusCounts, Storage,
};
use crate::clock::{SharedClock, Timestamp};

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fdatasync` of the WAL before the ack: survives power loss.
    Fsync,
    /// Written to the OS before the ack: survives a process crash, not a power loss.
    Os,
}

/// Completions per writer transaction.
const COMPLETION_CHUNK: usize = 64;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub durability: Durability,
    /// Most commands in one transaction.
    pub max_batch: usize,
    /// Commands that may wait for the writer before senders wait too (backpressure).
    pub queue_capacity: usize,
    pub checkpoint_interval: Duration,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Fsync,
            max_batch: 1024,
            queue_capacity: 16 * 1024,
            checkpoint_interval: Duration::from_millis(1000),
        }
    }
}

pub struct SqliteJournal {
    /// Held for the journal's life: the exclusive lock that keeps a second process out.
    _owner: File,
    /// The migrations this open applied.
    applied: Vec<String>,
    commands: mpsc::Sender<Command>,
    readers: Arc<ReaderPool>,
    appended: Arc<Notify>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Arc<AtomicBool>,
}

impl SqliteJournal {
    /// Opens (creating if needed) and migrates the database, then starts the writer.
    pub fn open(options: SqliteOptions, clock: SharedClock) -> Result<Self, JournalError> {
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
        let (commands, receiver) = mpsc::channel(options.queue_capacity);
        let appended = Arc::new(Notify::new());
        let writer = Writer::new(
            conn,
            receiver,
            WriterConfig {
                max_batch: options.max_batch,
                fsync: options.durability == Durability::Fsync,
                wal_path: wal_path(&options.path),
            },
            appended.clone(),
            clock,
        );
        let writer_thread = std::thread::Builder::new()
            .name("wharf-journal-writer".into())
            .spawn(move || writer.run())
            .map_err(JournalError::storage)?;
        let checkpointer = Arc::new(AtomicBool::new(true));
        spawn_checkpointer(&options, checkpointer.clone())?;
        Ok(Self {
            _owner: owner,
            applied,
            commands,
            readers: Arc::new(ReaderPool::new(options.path)),
            appended,
            writer_thread: Mutex::new(Some(writer_thread)),
            checkpointer,
        })
    }

    /// The migrations this open applied (empty when the schema was up to date).
    pub fn applied_migrations(&self) -> &[String] {
        &self.applied
    }

    /// Opens the database as a [`Storage`]: one journal serves as log and read model.
    pub fn open_storage(
        options: SqliteOptions,
        clock: SharedClock,
    ) -> Result<(Storage, Vec<String>), JournalError> {
        let journal = Arc::new(Self::open(options, clock)?);
        let applied = journal.applied.clone();
        let storage = Storage {
            backend: Backend::Sqlite,
            log: journal.clone(),
            read: journal,
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

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, JournalError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(query))
            .await
            .map_err(|_| JournalError::Closed)?
    }
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
/// blocks the writer; the WAL restarts from its beginning once a checkpoint has caught up.
fn spawn_checkpointer(
    options: &SqliteOptions,
    running: Arc<AtomicBool>,
) -> Result<(), JournalError> {
    let conn = Connection::open(&options.path).map_err(JournalError::storage)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
        .map_err(JournalError::storage)?;
    let interval = options.checkpoint_interval;
    std::thread::Builder::new()
        .name("wharf-journal-checkpoint".into())
        .spawn(move || {
            while running.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::debug!(%error, "journal checkpoint skipped");
                }
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
        self.send(|reply| Command::Append { delivery, reply }).await
    }

    async fn claim_due(&self, request: ClaimRequest) -> Result<Vec<ClaimedDelivery>, JournalError> {
        self.send(|reply| Command::Claim { request, reply }).await
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<Vec<Completed>, JournalError> {
        let mut results = Vec::with_capacity(batch.len());
        let mut pending = batch;
        // Small transactions keep the single writer free for acks between them.
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

    async fn probe(&self) -> Result<(), JournalError> {
        self.send(|reply| Command::Probe { reply }).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, JournalError> {
        self.read(read::next_due).await
    }

    fn appended_signal(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    async fn close(&self) {
        self.checkpointer.store(false, Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        let handle = self.writer_thread.lock().take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

#[async_trait]
impl ReadModel for SqliteJournal {
    async fn status_counts(&self) -> Result<StatusCounts, JournalError> {
        self.read(read::status_counts).await
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog, JournalError> {
        self.read(move |conn| read::backlog(conn, now)).await
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryView>, JournalError> {
        self.read(move |conn| read::deliveries(conn, &filter)).await
    }

    async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryView>, JournalError> {
        self.read(move |conn| read::delivery(conn, id)).await
    }

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<AttemptView>, JournalError> {
        self.read(move |conn| read::attempts(conn, id)).await
    }
}
