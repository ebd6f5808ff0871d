//! The single writer: one thread owns the write connection and group-commits every command
//! waiting in its queue in one transaction; a second thread makes each committed batch durable
//! with one `fdatasync` of the WAL while the writer already gathers and writes the next batch.
//! Acks wait for the sync; nothing else does.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Notify};

use super::ledger::{self, ApplyError};
use super::read;
use crate::clock::{SharedClock, Timestamp};
use crate::journal::{
    Appended, ClaimRequest, ClaimToken, ClaimedDelivery, Completed, Completion, CompletionOutcome,
    DeliveryId, DeliveryStatus, JournalError, NewDelivery, RetryPlan, StorageFault,
};
use crate::ledger::{LedgerChange, WriteTimes};

/// A request to the writer.
pub(super) enum Command {
    Append {
        delivery: NewDelivery,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    Complete {
        batch: Vec<Completion>,
        reply: oneshot::Sender<Result<Vec<Completed>, JournalError>>,
    },
    Claim {
        request: ClaimRequest,
        reply: oneshot::Sender<Result<Vec<ClaimedDelivery>, JournalError>>,
    },
    Probe {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What one command produced inside a committed transaction.
enum Produced {
    Appended(Appended),
    Completed(Vec<Completed>),
    Claimed(Vec<ClaimedDelivery>),
    Probed,
    Shutdown,
}

/// An answer that may only be given once the batch is durable.
enum DurableReply {
    Append(oneshot::Sender<Result<Appended, JournalError>>, Appended),
    Probe(oneshot::Sender<Result<(), JournalError>>),
}

impl DurableReply {
    fn send(self, synced: &Result<(), JournalError>) {
        match (self, synced) {
            (Self::Append(reply, appended), Ok(())) => {
                let _ = reply.send(Ok(appended));
            }
            (Self::Append(reply, _), Err(error)) => {
                let _ = reply.send(Err(error.clone()));
            }
            (Self::Probe(reply), result) => {
                let _ = reply.send(result.clone());
            }
        }
    }
}

/// A committed batch waiting for its sync.
struct SyncJob {
    replies: Vec<DurableReply>,
    stored_any: bool,
}

pub(super) struct WriterConfig {
    pub max_batch: usize,
    pub fsync: bool,
    pub wal_path: PathBuf,
}

pub(super) struct Writer {
    conn: Connection,
    commands: mpsc::Receiver<Command>,
    config: WriterConfig,
    appended: Arc<Notify>,
    clock: SharedClock,
    /// Used only if the sync thread could not be started.
    inline_wal: WalHandle,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        commands: mpsc::Receiver<Command>,
        config: WriterConfig,
        appended: Arc<Notify>,
        clock: SharedClock,
    ) -> Self {
        Self {
            conn,
            commands,
            config,
            appended,
            clock,
            inline_wal: WalHandle::default(),
        }
    }

    /// Runs until a `Shutdown` command or until every sender is gone.
    pub(super) fn run(mut self) {
        let syncer = self.config.fsync.then(|| {
            let (jobs, receiver) = std_mpsc::channel::<SyncJob>();
            let wal_path = self.config.wal_path.clone();
            let appended = self.appended.clone();
            let handle = std::thread::Builder::new()
                .name("wharf-journal-sync".into())
                .spawn(move || run_syncer(&wal_path, receiver, &appended));
            (jobs, handle)
        });
        let (jobs, sync_thread) = match syncer {
            Some((jobs, Ok(handle))) => (Some(jobs), Some(handle)),
            Some((_, Err(error))) => {
                tracing::error!(%error, "journal sync thread could not start; syncing inline");
                (None, None)
            }
            None => (None, None),
        };
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut shutdown = None;
        while shutdown.is_none() {
            let Some(first) = self.commands.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match self.commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            shutdown = self.execute_acks_first(&mut batch, jobs.as_ref());
        }
        drop(jobs);
        if let Some(handle) = sync_thread {
            let _ = handle.join();
        }
        if let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(%error, "final journal checkpoint failed; the WAL is replayed at next open");
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Commits what waits for an ack (appends, probes) first, in one transaction, so that a
    /// large completion batch never delays an ack; then each claim or completion in its own.
    fn execute_acks_first(
        &mut self,
        batch: &mut Vec<Command>,
        syncer: Option<&std_mpsc::Sender<SyncJob>>,
    ) -> Option<oneshot::Sender<()>> {
        let (mut acks, completions): (Vec<Command>, Vec<Command>) =
            batch.drain(..).partition(|command| {
                !matches!(command, Command::Complete { .. } | Command::Claim { .. })
            });
        let mut shutdown = None;
        if !acks.is_empty() {
            shutdown = self.execute(&mut acks, syncer);
        }
        for completion in completions {
            let mut single = vec![completion];
            self.execute(&mut single, syncer);
        }
        shutdown
    }

    /// Commits one batch and routes every answer; returns the shutdown reply if asked to stop.
    fn execute(
        &mut self,
        batch: &mut Vec<Command>,
        syncer: Option<&std_mpsc::Sender<SyncJob>>,
    ) -> Option<oneshot::Sender<()>> {
        let produced = match self.write_transaction(batch) {
            Ok(produced) => produced,
            Err(error) => {
                tracing::error!(error = %error, batch = batch.len(), "journal write failed");
                let error = JournalError::Storage(StorageFault::new(error));
                return fail_all(batch.drain(..), &error);
            }
        };
        let mut durable = Vec::new();
        let mut stored_any = false;
        let mut shutdown = None;
        for (command, produced) in batch.drain(..).zip(produced) {
            match (command, produced) {
                (Command::Append { reply, .. }, Produced::Appended(appended)) => {
                    stored_any |= matches!(appended, Appended::Stored(_));
                    durable.push(DurableReply::Append(reply, appended));
                }
                (Command::Complete { reply, .. }, Produced::Completed(results)) => {
                    // Losing a completion in a crash loses its ledger change with it (same
                    // transaction), so completions need not wait for the sync.
                    let _ = reply.send(Ok(results));
                }
                (Command::Claim { reply, .. }, Produced::Claimed(claimed)) => {
                    // A claim lost in a crash only delays the delivery until the next open,
                    // which clears every lease (this process held the database alone).
                    let _ = reply.send(Ok(claimed));
                }
                (Command::Probe { reply }, Produced::Probed) => {
                    durable.push(DurableReply::Probe(reply));
                }
                (Command::Shutdown { reply }, Produced::Shutdown) => shutdown = Some(reply),
                _ => unreachable_pairing(),
            }
        }
        self.hand_to_syncer(durable, stored_any, syncer);
        shutdown
    }

    fn hand_to_syncer(
        &mut self,
        replies: Vec<DurableReply>,
        stored_any: bool,
        syncer: Option<&std_mpsc::Sender<SyncJob>>,
    ) {
        if replies.is_empty() {
            return;
        }
        let job = SyncJob {
            replies,
            stored_any,
        };
        let job = match syncer {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return,
                Err(std_mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let synced = if self.config.fsync {
            self.inline_wal.sync(&self.config.wal_path)
        } else {
            Ok(())
        };
        finish_job(job, &synced, &self.appended);
    }

    /// Writes every command of the batch in one transaction. Per-completion failures are
    /// contained by savepoints; a storage failure aborts the whole batch.
    fn write_transaction(&mut self, batch: &[Command]) -> rusqlite::Result<Vec<Produced>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut produced = Vec::with_capacity(batch.len());
        for command in batch {
            produced.push(match command {
                Command::Append { delivery, .. } => Produced::Appended(append(&tx, delivery)?),
                Command::Complete { batch, .. } => {
                    let mut results = Vec::with_capacity(batch.len());
                    for completion in batch {
                        results.push(complete(&tx, completion)?);
                    }
                    Produced::Completed(results)
                }
                Command::Claim { request, .. } => Produced::Claimed(claim(&tx, request)?),
                Command::Probe { .. } => {
                    probe(&tx, self.clock.now())?;
                    Produced::Probed
                }
                Command::Shutdown { .. } => Produced::Shutdown,
            });
        }
        tx.commit()?;
        Ok(produced)
    }
}

fn unreachable_pairing() {
    tracing::error!("journal writer paired a command with another command's result");
}

fn fail_all(
    commands: impl Iterator<Item = Command>,
    error: &JournalError,
) -> Option<oneshot::Sender<()>> {
    let mut shutdown = None;
    for command in commands {
        match command {
            Command::Append { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Complete { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Claim { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Probe { reply } => {
                let _ = reply.send(Err(error.clone()));
            }
            Command::Shutdown { reply } => shutdown = Some(reply),
        }
    }
    shutdown
}

fn append(conn: &Connection, delivery: &NewDelivery) -> rusqlite::Result<Appended> {
    let next_attempt_at =
        (delivery.status == DeliveryStatus::Pending).then_some(delivery.received_at.micros());
    let inserted = conn
        .prepare_cached(
            "INSERT INTO deliveries (source, event_id, event_type, dedup_key, received_at, \
             status, last_error, next_attempt_at, body_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (source, dedup_key) DO NOTHING",
        )?
        .execute(params![
            delivery.source,
            delivery.event_id,
            delivery.event_type,
            delivery.dedup_key,
            delivery.received_at.micros(),
            delivery.status.as_str(),
            delivery.last_error,
            next_attempt_at,
            delivery.body.len() as i64,
        ])?;
    if inserted == 1 {
        let id = conn.last_insert_rowid();
        conn.prepare_cached(
            "INSERT INTO delivery_payloads (delivery_id, headers, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, delivery.headers_json, &delivery.body[..]])?;
        return Ok(Appended::Stored(DeliveryId(id)));
    }
    let existing: i64 = conn
        .prepare_cached("SELECT id FROM deliveries WHERE source = ?1 AND dedup_key = ?2")?
        .query_row(params![delivery.source, delivery.dedup_key], |row| {
            row.get(0)
        })?;
    Ok(Appended::Duplicate(DeliveryId(existing)))
}

/// Applies one completion. The claim is taken first (a stale claimer writes nothing); the
/// ledger decision is made before the ledger is written, and a single-change apply is one
/// statement, so no savepoint is needed, which spares SQLite a sub-journal copy of every page
/// the completion touches. Several changes share a savepoint so that they land together.
fn complete(conn: &Connection, completion: &Completion) -> rusqlite::Result<Completed> {
    match &completion.outcome {
        CompletionOutcome::Apply(changes) => apply_changes(conn, completion, changes),
        CompletionOutcome::Ignore(reason) => {
            if !mark(
                conn,
                completion,
                DeliveryStatus::Ignored,
                Some(reason),
                None,
            )? {
                return Ok(Completed::Stale);
            }
            record_attempt(conn, completion, "ignored", Some(reason))?;
            Ok(Completed::Ignored)
        }
        CompletionOutcome::Fail { error, plan } => {
            if !record_failure(conn, completion, error, *plan)? {
                return Ok(Completed::Stale);
            }
            Ok(Completed::Failed(*plan))
        }
    }
}

fn apply_changes(
    conn: &Connection,
    completion: &Completion,
    changes: &[LedgerChange],
) -> rusqlite::Result<Completed> {
    if !mark(conn, completion, DeliveryStatus::Processed, None, None)? {
        return Ok(Completed::Stale);
    }
    let applied = match changes {
        [single] => apply_one(conn, completion, single),
        several => in_savepoint(conn, || {
            several
                .iter()
                .try_for_each(|change| apply_one(conn, completion, change))
        }),
    };
    match applied {
        Ok(()) => {
            record_attempt(conn, completion, "processed", None)?;
            Ok(Completed::Processed)
        }
        Err(ApplyError::Sql(error)) if is_storage_failure(&error) => Err(error),
        Err(error) => {
            let plan = completion.if_apply_fails;
            let message = format!("applying to the ledger failed: {error}");
            remark_failure(conn, completion, &message, plan)?;
            Ok(Completed::Failed(plan))
        }
    }
}

fn apply_one(
    conn: &Connection,
    completion: &Completion,
    change: &LedgerChange,
) -> Result<(), ApplyError> {
    let times = WriteTimes {
        received_at: completion.received_at,
        now: finished_at(completion),
    };
    ledger::apply(conn, change, &completion.source, times)
}

/// Leases the oldest due deliveries to one claimer: they are not due for anyone else until the
/// lease runs out or they are completed.
fn claim(conn: &Connection, request: &ClaimRequest) -> rusqlite::Result<Vec<ClaimedDelivery>> {
    let token = ClaimToken::random();
    let now = request.now.micros();
    let ids: Vec<i64> = conn
        .prepare_cached(
            "UPDATE deliveries SET lease_token = ?1, lease_until = ?2 WHERE id IN ( \
             SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?3 \
             AND (lease_until IS NULL OR lease_until <= ?3) \
             ORDER BY next_attempt_at, id LIMIT ?4) RETURNING id",
        )?
        .query_map(
            params![
                token.0,
                request.lease_until().micros(),
                now,
                request.limit as i64
            ],
            |row| row.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut claimed = ids
        .into_iter()
        .map(|id| read::claimed(conn, DeliveryId(id), token))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    claimed.sort_by_key(|delivery| delivery.id);
    Ok(claimed)
}

fn in_savepoint(
    conn: &Connection,
    work: impl FnOnce() -> Result<(), ApplyError>,
) -> Result<(), ApplyError> {
    conn.prepare_cached("SAVEPOINT changes")?.execute([])?;
    let result = work();
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO changes")?.execute([])?;
    }
    conn.prepare_cached("RELEASE changes")?.execute([])?;
    result
}

/// Turns a delivery just marked processed into the failure its plan says, when the ledger
/// refused the change after the claim was taken.
fn remark_failure(
    conn: &Connection,
    completion: &Completion,
    error: &str,
    plan: RetryPlan,
) -> rusqlite::Result<()> {
    let (status, next, outcome) = plan_columns(plan);
    let processed_at =
        (status != DeliveryStatus::Pending).then(|| finished_at(completion).micros());
    conn.prepare_cached(
        "UPDATE deliveries SET status = ?1, last_error = ?2, next_attempt_at = ?3, \
         processed_at = ?4 WHERE id = ?5",
    )?
    .execute(params![
        status.as_str(),
        error,
        next.map(Timestamp::micros),
        processed_at,
        completion.delivery.0,
    ])?;
    record_attempt(conn, completion, outcome, Some(error))
}

fn plan_columns(plan: RetryPlan) -> (DeliveryStatus, Option<Timestamp>, &'static str) {
    match plan {
        RetryPlan::RetryAt(at) => (DeliveryStatus::Pending, Some(at), "retry"),
        RetryPlan::Dead => (DeliveryStatus::Dead, None, "dead"),
        RetryPlan::Failed => (DeliveryStatus::Failed, None, "failed"),
    }
}

/// Records a failed attempt and its plan; false when the claim was stale.
fn record_failure(
    conn: &Connection,
    completion: &Completion,
    error: &str,
    plan: RetryPlan,
) -> rusqlite::Result<bool> {
    let (status, next, outcome) = plan_columns(plan);
    if !mark(conn, completion, status, Some(error), next)? {
        return Ok(false);
    }
    record_attempt(conn, completion, outcome, Some(error))?;
    Ok(true)
}

fn finished_at(completion: &Completion) -> Timestamp {
    Timestamp(completion.started_at.micros() + completion.duration_micros)
}

/// Moves a delivery to `status` if it is still pending at the claimed attempt count and still
/// under this claim's lease token (a claim taken over after its lease ran out is stale).
fn mark(
    conn: &Connection,
    completion: &Completion,
    status: DeliveryStatus,
    error: Option<&str>,
    next_attempt_at: Option<Timestamp>,
) -> rusqlite::Result<bool> {
    let processed_at =
        (status != DeliveryStatus::Pending).then(|| finished_at(completion).micros());
    let changed = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?1, attempts = attempts + 1, last_error = ?2, \
             next_attempt_at = ?3, processed_at = ?4, lease_token = NULL, lease_until = NULL \
             WHERE id = ?5 AND status = 'pending' AND attempts = ?6 AND lease_token = ?7",
        )?
        .execute(params![
            status.as_str(),
            error,
            next_attempt_at.map(Timestamp::micros),
            processed_at,
            completion.delivery.0,
            completion.claimed_attempts,
            completion.claim.0,
        ])?;
    Ok(changed == 1)
}

fn record_attempt(
    conn: &Connection,
    completion: &Completion,
    outcome: &str,
    error: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, attempt, started_at, duration_us, outcome, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        completion.delivery.0,
        completion.claimed_attempts + 1,
        completion.started_at.micros(),
        completion.duration_micros,
        outcome,
        error,
    ])?;
    Ok(())
}

fn probe(conn: &Connection, now: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO wharf_meta (key, value) VALUES ('last_probe', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([now.to_rfc3339()])?;
    Ok(())
}

/// Errors that mean the database itself cannot be written: they abort the whole batch, so
/// that no ack is sent for it.
pub(super) fn is_storage_failure(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::FileLockingProtocolFailed
        )
    )
}

/// The sync thread: waits for committed batches, folds every batch waiting into one
/// `fdatasync` of the WAL, then answers them all.
fn run_syncer(wal_path: &Path, jobs: std_mpsc::Receiver<SyncJob>, appended: &Notify) {
    let mut wal = WalHandle::default();
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        group.extend(jobs.try_iter());
        let synced = wal.sync(wal_path);
        if let Err(error) = &synced {
            tracing::error!(%error, "journal sync failed; answering 503 for the batch");
        }
        for job in group {
            finish_job(job, &synced, appended);
        }
    }
}

fn finish_job(job: SyncJob, synced: &Result<(), JournalError>, appended: &Notify) {
    for reply in job.replies {
        reply.send(synced);
    }
    if job.stored_any && synced.is_ok() {
        appended.notify_one();
    }
}

/// An open handle on the WAL file, reopened if the file is ever replaced.
#[derive(Default)]
struct WalHandle {
    file: Option<(File, u64)>,
}

impl WalHandle {
    fn sync(&mut self, wal_path: &Path) -> Result<(), JournalError> {
        let sync_error = |error: std::io::Error| JournalError::Sync(StorageFault::new(error));
        let inode = std::fs::metadata(wal_path).map_err(sync_error)?.ino();
        if !matches!(&self.file, Some((_, open)) if *open == inode) {
            let file = File::open(wal_path).map_err(sync_error)?;
            // A new WAL file is durable only once its directory entry is.
            if let Some(directory) = wal_path.parent() {
                let directory = if directory.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    directory
                };
                File::open(directory)
                    .and_then(|dir| dir.sync_all())
                    .map_err(sync_error)?;
            }
            self.file = Some((file, inode));
        }
        match &self.file {
            Some((file, _)) => file.sync_data().map_err(sync_error),
            None => Ok(()),
        }
    }
}
