//! The SQLite writer: one thread owns the write connection. It follows the delivery log into
//! SQLite in large batches ([`super::projection`]), and runs the processor's claims and
//! completions, so SQLite never sees two writers. It runs at the lowest CPU priority: acks do
//! not wait for it (the log acks), so under saturation it yields to ingest and catches up
//! after. It also bounds SQLite's WAL and tells the log which segments SQLite holds durably.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};
use tokio::sync::{mpsc, oneshot, Notify};

use super::feed;
use super::ledger::{self, ApplyError};
use super::log_writer::LogProgress;
use super::projection::{self, Projected};
use super::read;
use crate::background::OwnPriority;
use crate::clock::Timestamp;
use crate::journal::feed::{self as feed_kind, FeedRetention};
use crate::journal::segment_log::{LogReader, SegmentMap};
use crate::journal::tokens::StoredToken;
use crate::journal::{
    ClaimRequest, ClaimToken, ClaimedDelivery, Completed, Completion, CompletionOutcome,
    DeliveryId, DeliveryStatus, FirstAttempt, JournalError, ReplayRequest, RetryPlan, StorageFault,
    REPLAYABLE,
};
use crate::ledger::{LedgerChange, LedgerError, WriteTimes};
use crate::metrics::{timed, DiskTimings, Histogram};
use crate::telemetry::LogLimiter;

/// How far SQLite's projection may run ahead of its last WAL sync before it syncs again (and
/// lets the log reuse the segments it covers); also how often the WAL's size is checked.
const DURABLE_EVERY: Duration = Duration::from_millis(500);
/// Past this size (four times `journal_size_limit`), the WAL is checkpointed and truncated by
/// the writer itself, so that it restarts however busy the readers are.
const WAL_LIMIT_BYTES: u64 = 256 << 20;
/// Pause after a failed projection before trying again (disk full, I/O error).
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// SQLite writes far fewer pages per delivery in large transactions (each commit rewrites the
/// index pages it touches), so projection waits until this many records are synced...
const PROJECT_AT_LEAST: u64 = 256;
/// ...or this long after the oldest unprojected record, whichever comes first.
const PROJECT_WITHIN: Duration = Duration::from_millis(20);
/// The writer yields to ingest (`SCHED_IDLE`) until clearing its backlog would take longer than
/// this with a core to itself; then it competes as an equal, so that a burst is in the ledger
/// within seconds of its end (issue 8 asks for 10 s after a 12 s burst) and the log holding
/// the backlog stays far from its bound...
const RAISE_BEYOND: Duration = Duration::from_secs(6);
/// ...until the backlog would take less than this.
const LOWER_WITHIN: Duration = Duration::from_secs(3);
/// How often change-feed rows beyond the retention are deleted...
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// ...at most this many per transaction (about 40 ms of the writer's time); while a prune
/// finds a full chunk, the next one follows at once instead of a second later.
const PRUNE_CHUNK: u64 = 8192;

/// A request to the writer.
pub(super) enum Command {
    Complete {
        batch: Vec<Completion>,
        reply: oneshot::Sender<Result<Vec<Completed>, JournalError>>,
    },
    Claim {
        request: ClaimRequest,
        reply: oneshot::Sender<Result<Vec<ClaimedDelivery>, JournalError>>,
    },
    Replay {
        request: ReplayRequest,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    /// Stores an admin token's digest (see [`crate::journal::tokens`]).
    AddAdminToken {
        token: StoredToken,
        only_if_none: bool,
        reply: oneshot::Sender<Result<bool, JournalError>>,
    },
    /// New records were synced to the log.
    Wake,
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What one command produced inside a committed transaction.
enum Produced {
    Completed(Vec<Completed>),
    Claimed(Vec<ClaimedDelivery>),
    Replayed(u64),
    TokenAdded(bool),
    Nothing,
}

pub(super) struct Writer {
    pub conn: Connection,
    pub commands: mpsc::Receiver<Command>,
    pub max_batch: usize,
    pub wal_path: PathBuf,
    pub segments: SegmentMap,
    pub progress: Arc<LogProgress>,
    /// Wakes the processor when a projection left it deliveries to attempt.
    pub appended: Arc<Notify>,
    pub fsync: bool,
    /// Set once the processor is ready to make first attempts as deliveries are projected.
    pub first_attempt: Arc<OnceLock<Arc<dyn FirstAttempt>>>,
    /// Told after every commit that may have written change-feed rows.
    pub feed_written: Arc<Notify>,
    pub feed_retention: FeedRetention,
    pub pace: ProjectionPace,
    /// Where checkpoint and WAL sync durations go.
    pub disk: Arc<DiskTimings>,
}

/// How fast projection clears records per second of the writer's own CPU time (an average over
/// recent transactions), to tell how long the backlog would take with a core to itself. CPU
/// time, not wall time: while lowered, the writer waits for the core for as long as ingest
/// keeps it busy, which says nothing about how fast it goes once it gets it.
#[derive(Debug, Default)]
pub(super) struct ProjectionPace {
    records_per_second: Option<f64>,
}

impl ProjectionPace {
    /// Weight of the newest transaction in the average.
    const NEWEST: f64 = 0.2;

    fn record(&mut self, records: u64, took: Duration) {
        if records == 0 || took.is_zero() {
            return;
        }
        let pace = records as f64 / took.as_secs_f64();
        self.records_per_second = Some(match self.records_per_second {
            Some(average) => average + Self::NEWEST * (pace - average),
            None => pace,
        });
    }

    /// How long `backlog` records would take; unknown before the first transaction.
    fn time_for(&self, backlog: u64) -> Option<Duration> {
        let pace = self.records_per_second?;
        Some(Duration::from_secs_f64(backlog as f64 / pace))
    }
}

impl Writer {
    /// Runs until a `Shutdown` command (after projecting everything synced) or until every
    /// sender is gone.
    pub(super) fn run(mut self) {
        // Spawned before the writer lowers itself (threads inherit it): the WAL syncer only
        // waits on the disk, and segments are reused only after it syncs.
        let syncer = WalSyncer {
            wal_path: self.wal_path.clone(),
            progress: self.progress.clone(),
            fsync: self.fsync,
            disk: self.disk.clone(),
        }
        .spawn();
        let mut priority = OwnPriority::lowered();
        let mut reader = self.reader();
        let mut last_bounded = Instant::now();
        let mut last_prune = Instant::now();
        let mut prune_again = false;
        let mut shutdown = None;
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut waiting_since: Option<Instant> = None;
        // Halved after a failure (a full disk may fit a small transaction, not a large one),
        // doubled back after each success.
        let mut limit = projection::BATCH;
        loop {
            let backlog = self.backlog();
            let behind = backlog > 0;
            // A small backlog waits a moment to become a large batch.
            if behind && backlog < PROJECT_AT_LEAST {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                let left = PROJECT_WITHIN.saturating_sub(since.elapsed());
                if !left.is_zero() && batch.is_empty() {
                    match self.commands.try_recv() {
                        // The log synced more: the backlog is looked at again, nothing is
                        // committed early. (Projecting at every log sync made a tenth of load
                        // hundreds of transactions a second of a few deliveries each.)
                        Ok(Command::Wake) => {}
                        Ok(command) => batch.push(command),
                        Err(_) => std::thread::sleep(left.min(Duration::from_millis(2))),
                    }
                    if batch.is_empty() {
                        continue;
                    }
                }
            }
            if behind {
                while batch.len() < self.max_batch {
                    match self.commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
            } else {
                match self.commands.blocking_recv() {
                    Some(command) => batch.push(command),
                    None => break,
                }
                while batch.len() < self.max_batch {
                    match self.commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
            }
            let mut projected = behind && self.project(&mut reader, &mut limit, &mut priority);
            // A claim sees every delivery acked before it was asked for.
            if batch
                .iter()
                .any(|command| matches!(command, Command::Claim { .. }))
            {
                while self.behind() && self.project(&mut reader, &mut limit, &mut priority) {
                    projected = true;
                }
            }
            if projected {
                waiting_since = None;
            }
            if let Some(reply) = self.execute(&mut batch) {
                shutdown = Some(reply);
                break;
            }
            if last_bounded.elapsed() >= DURABLE_EVERY {
                last_bounded = Instant::now();
                self.bound_wal();
            }
            if prune_again || last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                prune_again = self.prune_feed();
            }
            if behind && !projected && batch.is_empty() {
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        // Everything the log synced reaches SQLite before the process goes.
        while self.behind() && self.project(&mut reader, &mut limit, &mut priority) {}
        if let Some((stop, handle)) = syncer {
            drop(stop);
            let _ = handle.join();
        }
        make_durable(
            &self.progress,
            &mut WalHandle::default(),
            &self.wal_path,
            self.fsync,
            &self.disk.wal_sync,
        );
        if let Err(error) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(%error, "final journal checkpoint failed; the WAL is replayed at next open");
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Yields to ingest unless the backlog would take too long to clear that way.
    fn keep_pace(&self, priority: &mut OwnPriority, backlog: u64) {
        let Some(time) = self.pace.time_for(backlog) else {
            return;
        };
        if time > RAISE_BEYOND {
            priority.raise();
        } else if time < LOWER_WITHIN {
            priority.lower();
        }
    }

    fn reader(&self) -> LogReader {
        LogReader::new(
            self.segments.clone(),
            self.progress.applied.load(Ordering::Acquire) + 1,
        )
    }

    fn behind(&self) -> bool {
        self.backlog() > 0
    }

    /// Records synced to the log and not yet in SQLite.
    fn backlog(&self) -> u64 {
        self.progress
            .synced
            .load(Ordering::Acquire)
            .saturating_sub(self.progress.applied.load(Ordering::Acquire))
    }

    /// One projection transaction; true if it applied anything.
    fn project(
        &mut self,
        reader: &mut LogReader,
        limit: &mut usize,
        priority: &mut OwnPriority,
    ) -> bool {
        let through = self.progress.synced.load(Ordering::Acquire);
        self.keep_pace(priority, self.backlog());
        let first = self.first_attempt.get().map(|first| first.as_ref());
        let started = crate::background::thread_cpu_time();
        let before = self.progress.applied.load(Ordering::Acquire);
        match projection::project_batch(&mut self.conn, reader, through, *limit, first) {
            Ok(Some(Projected {
                last,
                left_for_processor,
            })) => {
                let spent = crate::background::thread_cpu_time().saturating_sub(started);
                self.pace.record(last.saturating_sub(before), spent);
                *limit = (*limit * 2).min(projection::BATCH);
                self.progress.applied.store(last, Ordering::Release);
                self.progress.applied_watch.send_replace(last);
                self.progress
                    .projection_failing
                    .store(false, Ordering::Release);
                if left_for_processor {
                    self.appended.notify_one();
                }
                self.feed_written.notify_one();
                true
            }
            Ok(None) => false,
            Err(error) => {
                static LIMITER: LogLimiter = LogLimiter::new();
                if let Some(suppressed) = LIMITER.allow() {
                    tracing::error!(%error, suppressed, "projecting the delivery log into SQLite failed; retrying");
                }
                self.progress
                    .projection_failing
                    .store(true, Ordering::Release);
                *limit = (*limit / 2).max(1);
                *reader = self.reader();
                false
            }
        }
    }

    /// Drops change-feed rows beyond the retention, in a transaction of its own; true if more
    /// may be left.
    fn prune_feed(&mut self) -> bool {
        let now = Timestamp(chrono::Utc::now().timestamp_micros());
        match feed::prune(&self.conn, self.feed_retention, now, PRUNE_CHUNK) {
            Ok(deleted) => deleted >= PRUNE_CHUNK,
            Err(error) => {
                tracing::debug!(%error, "pruning the change feed deferred");
                false
            }
        }
    }

    /// Keeps the WAL from growing. The checkpointer thread copies most of the WAL into the
    /// database, but under a steady stream of commits it never catches the last frames, and
    /// SQLite restarts the WAL from its beginning only once every frame is copied. Here,
    /// between the writer's own transactions, nothing can commit meanwhile, so a PASSIVE
    /// checkpoint copies the few frames left and the next transaction restarts the WAL
    /// (`journal_size_limit` then trims the file). Only if readers keep it from restarting
    /// and it passes the limit anyway is it truncated, which waits for them.
    fn bound_wal(&mut self) {
        self.checkpoint("PRAGMA wal_checkpoint(PASSIVE);");
        let wal_bytes = std::fs::metadata(&self.wal_path).map_or(0, |meta| meta.len());
        if wal_bytes > WAL_LIMIT_BYTES {
            self.checkpoint("PRAGMA wal_checkpoint(TRUNCATE);");
        }
    }

    fn checkpoint(&self, pragma: &str) {
        checkpoint(&self.conn, pragma, &self.disk.checkpoint);
    }

    /// Runs the batch's claims and completions in one transaction and answers them.
    fn execute(&mut self, batch: &mut Vec<Command>) -> Option<oneshot::Sender<()>> {
        let shutdown_at = batch
            .iter()
            .position(|command| matches!(command, Command::Shutdown { .. }));
        let mut shutdown = None;
        if let Some(at) = shutdown_at {
            if let Command::Shutdown { reply } = batch.remove(at) {
                shutdown = Some(reply);
            }
        }
        batch.retain(|command| !matches!(command, Command::Wake));
        if batch.is_empty() {
            return shutdown;
        }
        match self.write_transaction(batch) {
            Ok(produced) => {
                self.feed_written.notify_one();
                for (command, produced) in batch.drain(..).zip(produced) {
                    match (command, produced) {
                        (Command::Complete { reply, .. }, Produced::Completed(results)) => {
                            let _ = reply.send(Ok(results));
                        }
                        (Command::Claim { reply, .. }, Produced::Claimed(claimed)) => {
                            let _ = reply.send(Ok(claimed));
                        }
                        (Command::Replay { reply, .. }, Produced::Replayed(count)) => {
                            let _ = reply.send(Ok(count));
                        }
                        (Command::AddAdminToken { reply, .. }, Produced::TokenAdded(added)) => {
                            let _ = reply.send(Ok(added));
                        }
                        _ => {}
                    }
                }
            }
            Err(error) => {
                static LIMITER: LogLimiter = LogLimiter::new();
                if let Some(suppressed) = LIMITER.allow() {
                    tracing::error!(%error, suppressed, batch = batch.len(), "journal write failed");
                }
                let error = JournalError::Storage(StorageFault::new(error));
                for command in batch.drain(..) {
                    match command {
                        Command::Complete { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Command::Claim { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Command::Replay { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Command::AddAdminToken { reply, .. } => {
                            let _ = reply.send(Err(error.clone()));
                        }
                        Command::Wake | Command::Shutdown { .. } => {}
                    }
                }
            }
        }
        shutdown
    }

    /// Claims and completions of one batch in one transaction. Per-completion ledger
    /// failures are contained; a storage failure aborts the whole batch.
    fn write_transaction(&mut self, batch: &[Command]) -> rusqlite::Result<Vec<Produced>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut produced = Vec::with_capacity(batch.len());
        for command in batch {
            produced.push(match command {
                Command::Complete { batch, .. } => {
                    let mut results = Vec::with_capacity(batch.len());
                    for completion in batch {
                        results.push(complete(&tx, completion)?);
                    }
                    Produced::Completed(results)
                }
                Command::Claim { request, .. } => Produced::Claimed(claim(&tx, request)?),
                Command::Replay { request, .. } => Produced::Replayed(replay(&tx, request)?),
                Command::AddAdminToken {
                    token,
                    only_if_none,
                    ..
                } => Produced::TokenAdded(add_admin_token(&tx, token, *only_if_none)?),
                Command::Wake | Command::Shutdown { .. } => Produced::Nothing,
            });
        }
        tx.commit()?;
        Ok(produced)
    }
}

pub(super) fn complete(conn: &Connection, completion: &Completion) -> rusqlite::Result<Completed> {
    let marked = Marked::of(completion);
    if !mark(conn, completion, &marked)? {
        return Ok(Completed::Stale);
    }
    finish(conn, completion, &marked, None)
}

/// What an attempt's outcome writes on its delivery's row, before anything else of it: the
/// status it leaves the delivery in, its error and when it is due again.
pub(super) struct Marked<'a> {
    pub status: DeliveryStatus,
    pub error: Option<&'a str>,
    pub next_attempt_at: Option<Timestamp>,
    /// The attempt's word in `attempts.outcome`.
    outcome: &'static str,
}

impl<'a> Marked<'a> {
    pub fn of(completion: &'a Completion) -> Self {
        let settled = |status, outcome, error| Self {
            status,
            error,
            next_attempt_at: None,
            outcome,
        };
        match &completion.outcome {
            CompletionOutcome::Apply(_) => settled(DeliveryStatus::Processed, "processed", None),
            CompletionOutcome::Ignore(reason) => {
                settled(DeliveryStatus::Ignored, "ignored", Some(reason))
            }
            CompletionOutcome::Fail { error, plan } => {
                let (status, next_attempt_at, outcome) = plan_columns(*plan, completion);
                Self {
                    status,
                    error: Some(error),
                    next_attempt_at,
                    outcome,
                }
            }
            CompletionOutcome::Reject(reason) => {
                settled(DeliveryStatus::Rejected, "rejected", Some(reason))
            }
        }
    }

    /// When the delivery finished; none while it waits for another attempt.
    pub fn processed_at(&self, completion: &Completion) -> Option<i64> {
        (!self.status.is_waiting()).then(|| finished_at(completion).micros())
    }
}

/// The rest of a completion once its delivery's row says `marked` (by [`mark`], or inserted so
/// by the projection): the ledger changes, the feed's step and the attempt row. `event_type`
/// is the delivery's when the caller holds it (the projection has just inserted the row), so
/// the feed's rows need not read it back.
pub(super) fn finish(
    conn: &Connection,
    completion: &Completion,
    marked: &Marked<'_>,
    event_type: Option<&str>,
) -> rusqlite::Result<Completed> {
    let completed = match &completion.outcome {
        CompletionOutcome::Apply(changes) => {
            return apply_changes(conn, completion, changes, event_type)
        }
        CompletionOutcome::Ignore(_) => Completed::Ignored,
        CompletionOutcome::Fail { plan, .. } => Completed::Failed(*plan),
        CompletionOutcome::Reject(_) => Completed::Rejected,
    };
    record_step(conn, completion, marked.status, marked.error, event_type)?;
    record_attempt(conn, completion, marked.outcome, marked.error)?;
    Ok(completed)
}

/// Applies a processed delivery's changes; a change the ledger cannot take turns the
/// delivery into what its failure says.
fn apply_changes(
    conn: &Connection,
    completion: &Completion,
    changes: &[LedgerChange],
    event_type: Option<&str>,
) -> rusqlite::Result<Completed> {
    let applied = match changes {
        [single] => apply_one(conn, completion, single, event_type),
        several => in_savepoint(conn, || {
            several
                .iter()
                .try_for_each(|change| apply_one(conn, completion, change, event_type))
        }),
    };
    match applied {
        Ok(()) => {
            record_step(
                conn,
                completion,
                DeliveryStatus::Processed,
                None,
                event_type,
            )?;
            record_attempt(conn, completion, "processed", None)?;
            Ok(Completed::Processed)
        }
        Err(ApplyError::Sql(error)) if is_storage_failure(&error) => Err(error),
        Err(ApplyError::Ledger(LedgerError::Refused(reason))) => {
            remark_rejected(conn, completion, &reason)?;
            Ok(Completed::Rejected)
        }
        Err(error) => {
            let plan = completion.if_apply_fails;
            let message = format!("applying to the ledger failed: {error}");
            remark_failure(conn, completion, &message, plan, event_type)?;
            Ok(Completed::Failed(plan))
        }
    }
}

fn apply_one(
    conn: &Connection,
    completion: &Completion,
    change: &LedgerChange,
    event_type: Option<&str>,
) -> Result<(), ApplyError> {
    let times = WriteTimes {
        received_at: completion.received_at,
        now: finished_at(completion),
    };
    if let Some(written) = ledger::apply(conn, change, &completion.source, times)? {
        feed::record_ledger(
            conn,
            times.now,
            &completion.source,
            completion.delivery,
            event_type,
            &written,
        )?;
    }
    Ok(())
}

/// Runs one checkpoint pragma, timed; a busy database only defers it. The writer and the
/// checkpointer thread both checkpoint through here.
pub(super) fn checkpoint(conn: &Connection, pragma: &str, timing: &Histogram) {
    if let Err(error) = timed(timing, || conn.execute_batch(pragma)) {
        tracing::debug!(%error, "WAL checkpoint deferred");
    }
}

/// Puts matching finished deliveries back in line (see `DeliveryLog::replay`).
fn replay(conn: &Connection, request: &ReplayRequest) -> rusqlite::Result<u64> {
    let ids = request.ids.as_ref().map(|ids| {
        serde_json::Value::from(ids.iter().map(|id| id.0).collect::<Vec<_>>()).to_string()
    });
    let matching = format!(
        "SELECT id FROM deliveries WHERE status IN {REPLAYABLE} \
         AND event_type <> 'unidentified' \
         AND (?1 IS NULL OR id IN (SELECT value FROM json_each(?1))) \
         AND (?2 IS NULL OR source = ?2) AND (?3 IS NULL OR status = ?3) \
         AND (?4 IS NULL OR event_type = ?4) ORDER BY id LIMIT ?5"
    );
    let filter = params![
        ids,
        request.source,
        request.status.map(DeliveryStatus::as_str),
        request.event_type,
        i64::from(request.limit),
    ];
    if request.dry_run {
        let sql = format!("SELECT COUNT(*) FROM ({matching})");
        return conn
            .prepare_cached(&sql)?
            .query_row(filter, |row| row.get(0));
    }
    let sql = format!(
        "UPDATE deliveries SET \
         status = CASE status WHEN 'rejected' THEN 'verifying' ELSE 'pending' END, \
         next_attempt_at = ?6, processed_at = NULL, lease_token = NULL, lease_until = NULL \
         WHERE id IN ({matching}) RETURNING id, status, attempts"
    );
    let replayed: Vec<(i64, String, u32)> = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                ids,
                request.source,
                request.status.map(DeliveryStatus::as_str),
                request.event_type,
                i64::from(request.limit),
                request.now.micros(),
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    for (id, status, attempts) in &replayed {
        let status = DeliveryStatus::parse(status).unwrap_or(DeliveryStatus::Pending);
        feed::record_step(
            conn,
            request.now,
            feed_kind::DELIVERY_REPLAYED,
            DeliveryId(*id),
            None,
            &feed_kind::delivery_data(status, *attempts, None),
        )?;
    }
    Ok(replayed.len() as u64)
}

/// Leases the oldest due deliveries to one claimer: they are not due for anyone else until the
/// lease runs out or they are completed.
fn claim(conn: &Connection, request: &ClaimRequest) -> rusqlite::Result<Vec<ClaimedDelivery>> {
    let token = ClaimToken::random();
    let now = request.now.micros();
    let ids: Vec<i64> = conn
        .prepare_cached(
            "UPDATE deliveries SET lease_token = ?1, lease_until = ?2 WHERE id IN ( \
             SELECT id FROM deliveries WHERE status IN ('pending', 'verifying') \
             AND next_attempt_at <= ?3 \
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
    event_type: Option<&str>,
) -> rusqlite::Result<()> {
    let (status, next, outcome) = plan_columns(plan, completion);
    let processed_at = (!status.is_waiting()).then(|| finished_at(completion).micros());
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
    record_step(conn, completion, status, Some(error), event_type)?;
    record_attempt(conn, completion, outcome, Some(error))
}

/// A completion whose ledger change was refused ([`LedgerError::Refused`]): nothing of it was
/// written (a single change refuses before writing, several roll back their savepoint), and
/// the delivery is rejected with the reason.
fn remark_rejected(
    conn: &Connection,
    completion: &Completion,
    reason: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE deliveries SET status = ?1, last_error = ?2, next_attempt_at = NULL, \
         processed_at = ?3 WHERE id = ?4",
    )?
    .execute(params![
        DeliveryStatus::Rejected.as_str(),
        reason,
        finished_at(completion).micros(),
        completion.delivery.0,
    ])?;
    record_attempt(conn, completion, "rejected", Some(reason))
}

/// The status, next attempt time and attempt outcome a plan records; a retry waits in the
/// status the delivery was claimed in (`verifying` stays `verifying`).
fn plan_columns(
    plan: RetryPlan,
    completion: &Completion,
) -> (DeliveryStatus, Option<Timestamp>, &'static str) {
    match plan {
        RetryPlan::RetryAt(at) => (completion.waiting_status(), Some(at), "retry"),
        RetryPlan::Dead => (DeliveryStatus::Dead, None, "dead"),
        RetryPlan::Failed => (DeliveryStatus::Failed, None, "failed"),
    }
}

fn finished_at(completion: &Completion) -> Timestamp {
    Timestamp(completion.started_at.micros() + completion.duration_micros)
}

/// Moves a delivery to what `marked` says if it is still pending at the claimed attempt count
/// and still under this claim's lease token (a claim taken over after its lease ran out is
/// stale).
fn mark(conn: &Connection, completion: &Completion, marked: &Marked<'_>) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?1, attempts = attempts + 1, last_error = ?2, \
             next_attempt_at = ?3, processed_at = ?4, lease_token = NULL, lease_until = NULL \
             WHERE id = ?5 AND status IN ('pending', 'verifying') AND attempts = ?6 \
             AND lease_token = ?7",
        )?
        .execute(params![
            marked.status.as_str(),
            marked.error,
            marked.next_attempt_at.map(Timestamp::micros),
            marked.processed_at(completion),
            completion.delivery.0,
            completion.claimed_attempts,
            completion.claim.0,
        ])?;
    Ok(changed == 1)
}

/// The change feed's row for the status an attempt left the delivery in.
fn record_step(
    conn: &Connection,
    completion: &Completion,
    status: DeliveryStatus,
    error: Option<&str>,
    event_type: Option<&str>,
) -> rusqlite::Result<()> {
    let known = event_type.map(|event_type| feed::Known {
        source: &completion.source,
        event_type,
    });
    feed::record_step(
        conn,
        finished_at(completion),
        feed_kind::attempt_kind(status),
        completion.delivery,
        known,
        &feed_kind::delivery_data(status, completion.claimed_attempts + 1, error),
    )
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

/// Errors that mean the database itself cannot be written: they abort the whole batch.
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

/// Makes SQLite's projection durable off the writer thread, every [`DURABLE_EVERY`], so the
/// log can reuse the segments it covers. An `fdatasync` of half a second of WAL can take tens
/// of milliseconds on a busy disk; on the writer, every delivery behind it would wait that
/// long for its first attempt. Syncing the WAL after reading `applied` covers every commit up
/// to it, whatever the writer commits (or checkpoints: a checkpoint syncs the database file
/// before it truncates the WAL) meanwhile.
struct WalSyncer {
    wal_path: PathBuf,
    progress: Arc<LogProgress>,
    fsync: bool,
    disk: Arc<DiskTimings>,
}

impl WalSyncer {
    /// Starts the thread; it stops once the returned sender is dropped. `None` if no thread
    /// could be started: the writer then makes everything durable when it stops, and the log
    /// keeps its segments until then (bounded by its segment count).
    fn spawn(self) -> Option<(std_mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
        let (stop, stopped) = std_mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("wharf-wal-sync".into())
            .spawn(move || self.run(&stopped));
        match spawned {
            Ok(handle) => Some((stop, handle)),
            Err(error) => {
                tracing::error!(%error, "starting the WAL sync thread failed");
                None
            }
        }
    }

    fn run(self, stopped: &std_mpsc::Receiver<()>) {
        let mut wal = WalHandle::default();
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(DURABLE_EVERY) {
            make_durable(
                &self.progress,
                &mut wal,
                &self.wal_path,
                self.fsync,
                &self.disk.wal_sync,
            );
        }
    }
}

/// Syncs the WAL if SQLite applied more than is durable, then records the new durable mark.
fn make_durable(
    progress: &LogProgress,
    wal: &mut WalHandle,
    wal_path: &Path,
    fsync: bool,
    wal_sync: &Histogram,
) {
    let applied = progress.applied.load(Ordering::Acquire);
    if applied <= progress.durable.load(Ordering::Acquire) {
        return;
    }
    let synced = if fsync {
        timed(wal_sync, || wal.sync(wal_path))
    } else {
        Ok(())
    };
    match synced {
        Ok(()) => progress.durable.store(applied, Ordering::Release),
        Err(error) => tracing::warn!(%error, "syncing SQLite's WAL failed; log segments kept"),
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

/// Inserts a token digest; with `only_if_none`, only into an empty table.
fn add_admin_token(
    conn: &Connection,
    token: &StoredToken,
    only_if_none: bool,
) -> rusqlite::Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO admin_tokens (digest, label, created_at) SELECT ?1, ?2, ?3 \
             WHERE NOT ?4 OR NOT EXISTS (SELECT 1 FROM admin_tokens) \
             ON CONFLICT (digest) DO NOTHING",
        )?
        .execute(rusqlite::params![
            token.digest,
            token.label,
            token.created_at.to_rfc3339(),
            only_if_none
        ])?;
    Ok(inserted == 1)
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn the_pace_is_unknown_until_a_transaction_and_then_follows_recent_ones() {
        let mut pace = ProjectionPace::default();
        assert_eq!(pace.time_for(1000), None);
        pace.record(0, Duration::from_millis(5));
        assert_eq!(
            pace.time_for(1000),
            None,
            "an empty transaction says nothing"
        );
        pace.record(1000, Duration::from_millis(100));
        assert_eq!(pace.time_for(20_000), Some(Duration::from_secs(2)));
        // A slower transaction moves the average a fifth of the way: 10,000/s → 8,200/s.
        pace.record(100, Duration::from_millis(100));
        let time = pace.time_for(8200).expect("known");
        assert!((time.as_secs_f64() - 1.0).abs() < 1e-9, "{time:?}");
    }
}
