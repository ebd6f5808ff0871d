//! The scale-out backend: PostgreSQL, shared by several Wharf instances. Appends are
//! group-committed by a few writer tasks (one multi-row `INSERT … ON CONFLICT DO NOTHING` per
//! batch, acked after PostgreSQL's own commit); claims take leases with `FOR UPDATE SKIP
//! LOCKED`; each completion is its own short transaction, conditional on its claim token, with
//! the ledger rows it touches locked. While PostgreSQL is unreachable every call fails fast
//! (pool timeouts) so ingest answers 503, and the pool reconnects by itself once it is back.

mod feed;
pub(crate) mod ledger;
mod query;
mod read;
pub mod tls;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::join_all;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::ledger::ApplyError;
use self::writer::AppendRequest;
use super::feed::{
    self as feed_kind, Change, ChangeFeed, FeedBounds, FeedRetention, DELIVERY_REPLAYED,
};
use super::query::{LedgerQuery, RevenueDay, SourceWindow, WindowStats};
use super::tokens::{AdminTokenStore, StoredToken};
use super::{
    Appended, AttemptView, Backend, Backlog, ClaimRequest, ClaimToken, ClaimedDelivery, Completed,
    Completion, CompletionOutcome, DeliveryFilter, DeliveryId, DeliveryLog, DeliveryStatus,
    DeliveryView, JournalError, NewDelivery, ReadModel, ReplayRequest, RetryPlan, StatusCounts,
    Storage, REPLAYABLE,
};
use crate::clock::{SharedClock, Timestamp};
use crate::ledger::{LedgerChange, LedgerError, WriteTimes};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// A key no other application is likely to hold: serializes migrations across instances that
/// start at once.
const MIGRATION_LOCK: i64 = 0x5748_4152_465f_4d47; // "WHARF_MG"

/// Backend tuning; the defaults suit one instance on a small machine.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: SecretString,
    /// Connections kept open (writers, processor, admin reads share them).
    pub pool_size: usize,
    /// Writer tasks that group-commit appends; each holds at most one batch in flight.
    pub writers: usize,
    /// Most appends in one batch.
    pub max_batch: usize,
    /// How long a call waits for a connection before the request gets a 503.
    pub connect_timeout: Duration,
    /// Completions run at once (each in its own transaction).
    pub completion_concurrency: usize,
    /// How much of the change feed is kept.
    pub feed_retention: FeedRetention,
}

impl PostgresOptions {
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            pool_size: 24,
            writers: 3,
            max_batch: 512,
            connect_timeout: Duration::from_secs(2),
            completion_concurrency: 16,
            feed_retention: FeedRetention::default(),
        }
    }
}

pub struct PostgresStorage {
    pool: Pool,
    appends: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    appended: Arc<Notify>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    clock: SharedClock,
    completion_concurrency: usize,
    /// Told of local commits that wrote feed rows and of other instances' notifications.
    feed_written: Arc<Notify>,
    feed_retention: FeedRetention,
    /// Stops the `LISTEN` task at close.
    listening: CancellationToken,
}

fn storage_error(error: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::storage(error)
}

impl PostgresStorage {
    /// Connects, migrates (one instance at a time), and starts the writers.
    pub async fn open(
        options: PostgresOptions,
        clock: SharedClock,
    ) -> Result<(Storage, Vec<String>), JournalError> {
        let (url, tls_choice) = tls::split_url(options.url.expose_secret());
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| JournalError::Config(format!("PostgreSQL URL: {error}")))?;
        config.ssl_mode(tls_choice.mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("wharf");
        }
        let tls = tls::connector(&tls_choice)?;
        let applied = migrate(&config, tls.clone()).await?;
        let feed_written = Arc::new(Notify::new());
        let listening = CancellationToken::new();
        tokio::spawn(feed::listen(
            config.clone(),
            tls.clone(),
            feed_written.clone(),
            listening.clone(),
        ));
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(options.writers + 2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|error| JournalError::Config(format!("PostgreSQL pool: {error}")))?;
        let appended = Arc::new(Notify::new());
        let (sender, receiver) = mpsc::channel(16 * 1024);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let writers = (0..options.writers.max(1))
            .map(|_| {
                tokio::spawn(writer::run(
                    pool.clone(),
                    receiver.clone(),
                    options.max_batch,
                    appended.clone(),
                    feed_written.clone(),
                ))
            })
            .collect();
        let storage = Arc::new(Self {
            pool,
            appends: Mutex::new(Some(sender)),
            appended,
            writers: Mutex::new(writers),
            clock,
            completion_concurrency: options.completion_concurrency.max(1),
            feed_written,
            feed_retention: options.feed_retention,
            listening,
        });
        Ok((
            Storage {
                backend: Backend::Postgres,
                log: storage.clone(),
                read: storage.clone(),
                feed: storage.clone(),
                tokens: storage,
                // PostgreSQL's commit is the ack: no journal disk work of Wharf's own to time.
                disk: None,
            },
            applied,
        ))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        self.pool.get().await.map_err(storage_error)
    }

    async fn complete_one(&self, completion: &Completion) -> Result<Completed, JournalError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(storage_error)?;
        match &completion.outcome {
            CompletionOutcome::Apply(changes) => {
                if !mark(&tx, completion, DeliveryStatus::Processed, None, None).await? {
                    return Ok(Completed::Stale);
                }
                match apply_all(&tx, completion, changes).await {
                    Ok(()) => {
                        record_step(&tx, completion, DeliveryStatus::Processed, None).await?;
                        record_attempt(&tx, completion, "processed", None).await?;
                        tx.commit().await.map_err(storage_error)?;
                        Ok(Completed::Processed)
                    }
                    Err(ApplyError::Sql(error)) if is_storage_failure(&error) => {
                        Err(storage_error(error))
                    }
                    Err(ApplyError::Ledger(LedgerError::Refused(reason))) => {
                        tx.rollback().await.map_err(storage_error)?;
                        let tx = client.transaction().await.map_err(storage_error)?;
                        let rejected = DeliveryStatus::Rejected;
                        if !mark(&tx, completion, rejected, Some(&reason), None).await? {
                            return Ok(Completed::Stale);
                        }
                        record_attempt(&tx, completion, "rejected", Some(&reason)).await?;
                        tx.commit().await.map_err(storage_error)?;
                        Ok(Completed::Rejected)
                    }
                    Err(error) => {
                        tx.rollback().await.map_err(storage_error)?;
                        let message = format!("applying to the ledger failed: {error}");
                        let plan = completion.if_apply_fails;
                        let tx = client.transaction().await.map_err(storage_error)?;
                        if !record_failure(&tx, completion, &message, plan).await? {
                            return Ok(Completed::Stale);
                        }
                        tx.commit().await.map_err(storage_error)?;
                        Ok(Completed::Failed(plan))
                    }
                }
            }
            CompletionOutcome::Ignore(reason) => {
                if !mark(&tx, completion, DeliveryStatus::Ignored, Some(reason), None).await? {
                    return Ok(Completed::Stale);
                }
                record_step(&tx, completion, DeliveryStatus::Ignored, Some(reason)).await?;
                record_attempt(&tx, completion, "ignored", Some(reason)).await?;
                tx.commit().await.map_err(storage_error)?;
                Ok(Completed::Ignored)
            }
            CompletionOutcome::Fail { error, plan } => {
                if !record_failure(&tx, completion, error, *plan).await? {
                    return Ok(Completed::Stale);
                }
                tx.commit().await.map_err(storage_error)?;
                Ok(Completed::Failed(*plan))
            }
            CompletionOutcome::Reject(reason) => {
                if !mark(
                    &tx,
                    completion,
                    DeliveryStatus::Rejected,
                    Some(reason),
                    None,
                )
                .await?
                {
                    return Ok(Completed::Stale);
                }
                record_step(&tx, completion, DeliveryStatus::Rejected, Some(reason)).await?;
                record_attempt(&tx, completion, "rejected", Some(reason)).await?;
                tx.commit().await.map_err(storage_error)?;
                Ok(Completed::Rejected)
            }
        }
    }
}

/// Runs the migrations over one dedicated connection, under an advisory lock so that
/// instances starting together take turns.
async fn migrate(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<Vec<String>, JournalError> {
    let (mut client, connection) = config.connect(tls).await.map_err(storage_error)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection closed");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(storage_error)?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    let report = report.map_err(storage_error)?;
    unlocked.map_err(storage_error)?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "PostgreSQL migrated");
    }
    Ok(applied)
}

/// PostgreSQL `TEXT` cannot hold NUL, which SQLite and the providers can: free text written
/// to PostgreSQL (ids a provider chose, error messages quoting a payload) has NUL replaced by
/// U+FFFD, so one odd delivery never fails the batch it shares with others.
fn pg_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn datetime(at: Timestamp) -> DateTime<Utc> {
    at.to_datetime()
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp(at.timestamp_micros())
}

fn finished_at(completion: &Completion) -> Timestamp {
    Timestamp(completion.started_at.micros() + completion.duration_micros)
}

async fn apply_all(
    tx: &Transaction<'_>,
    completion: &Completion,
    changes: &[LedgerChange],
) -> Result<(), ApplyError> {
    let times = WriteTimes {
        received_at: completion.received_at,
        now: finished_at(completion),
    };
    for change in changes {
        if let Some(written) = ledger::apply(tx, change, &completion.source, times).await? {
            feed::record_ledger(
                tx,
                times.now,
                &completion.source,
                completion.delivery,
                &written,
            )
            .await?;
        }
    }
    Ok(())
}

/// Moves a delivery to `status` if it is still pending at the claimed attempt count and still
/// under this claim's token (a claim taken over after its lease ran out is stale).
async fn mark(
    tx: &Transaction<'_>,
    completion: &Completion,
    status: DeliveryStatus,
    error: Option<&str>,
    next_attempt_at: Option<Timestamp>,
) -> Result<bool, JournalError> {
    let processed_at = (!status.is_waiting()).then(|| datetime(finished_at(completion)));
    let statement = tx
        .prepare_cached(
            "UPDATE deliveries SET status = $1, attempts = attempts + 1, last_error = $2, \
             next_attempt_at = $3, processed_at = $4, lease_token = NULL, lease_until = NULL \
             WHERE id = $5 AND status IN ('pending', 'verifying') AND attempts = $6 \
             AND lease_token = $7",
        )
        .await
        .map_err(storage_error)?;
    let changed = tx
        .execute(
            &statement,
            &[
                &status.as_str(),
                &error.map(pg_text),
                &next_attempt_at.map(datetime),
                &processed_at,
                &completion.delivery.0,
                &(completion.claimed_attempts as i32),
                &completion.claim.0,
            ],
        )
        .await
        .map_err(storage_error)?;
    Ok(changed == 1)
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

async fn record_failure(
    tx: &Transaction<'_>,
    completion: &Completion,
    error: &str,
    plan: RetryPlan,
) -> Result<bool, JournalError> {
    let (status, next, outcome) = plan_columns(plan, completion);
    if !mark(tx, completion, status, Some(error), next).await? {
        return Ok(false);
    }
    record_step(tx, completion, status, Some(error)).await?;
    record_attempt(tx, completion, outcome, Some(error)).await?;
    Ok(true)
}

/// The change feed's row for the status an attempt left the delivery in.
async fn record_step(
    tx: &Transaction<'_>,
    completion: &Completion,
    status: DeliveryStatus,
    error: Option<&str>,
) -> Result<(), JournalError> {
    let data = feed_kind::delivery_data(
        status,
        completion.claimed_attempts + 1,
        error.map(pg_text).as_deref(),
    );
    feed::record_step(
        tx,
        finished_at(completion),
        feed_kind::attempt_kind(status),
        completion.delivery,
        &data,
    )
    .await
}

async fn record_attempt(
    tx: &Transaction<'_>,
    completion: &Completion,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), JournalError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO attempts (delivery_id, attempt, started_at, duration_us, outcome, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(storage_error)?;
    tx.execute(
        &statement,
        &[
            &completion.delivery.0,
            &(completion.claimed_attempts as i32 + 1),
            &datetime(completion.started_at),
            &completion.duration_micros,
            &outcome,
            &error.map(pg_text),
        ],
    )
    .await
    .map_err(storage_error)?;
    Ok(())
}

/// Errors that mean the database cannot be used now (as opposed to a row the ledger refused):
/// the whole batch fails and its leases run out, so the work is retried later.
fn is_storage_failure(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08 connection, 40 rollback (deadlock, serialization), 53 resources,
            // 57 operator intervention, 58 system error.
            matches!(class, "08" | "40" | "53" | "57" | "58")
        }
    }
}

#[async_trait]
impl DeliveryLog for PostgresStorage {
    async fn append(&self, delivery: NewDelivery) -> Result<Appended, JournalError> {
        let sender = self.appends.lock().clone().ok_or(JournalError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(AppendRequest { delivery, reply })
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    async fn claim_due(&self, request: ClaimRequest) -> Result<Vec<ClaimedDelivery>, JournalError> {
        let client = self.client().await?;
        read::claim(&client, request, ClaimToken::random()).await
    }

    async fn complete(&self, batch: Vec<Completion>) -> Result<Vec<Completed>, JournalError> {
        // Each completion is its own transaction: a completion never holds a lock while it
        // waits for another's, so two instances cannot deadlock over shared ledger rows.
        let mut results = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(self.completion_concurrency) {
            let outcomes = join_all(chunk.iter().map(|c| self.complete_one(c))).await;
            for outcome in outcomes {
                results.push(outcome?);
            }
        }
        self.feed_written.notify_one();
        Ok(results)
    }

    async fn probe(&self) -> Result<(), JournalError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO wharf_meta (key, value) VALUES ('last_probe', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&self.clock.now().to_rfc3339()],
            )
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, JournalError> {
        let client = self.client().await?;
        read::next_due(&client).await
    }

    async fn replay(&self, request: ReplayRequest) -> Result<u64, JournalError> {
        let client = self.client().await?;
        let ids: Option<Vec<i64>> = request
            .ids
            .as_ref()
            .map(|ids| ids.iter().map(|id| id.0).collect());
        let matching = format!(
            "SELECT id FROM deliveries WHERE status IN {REPLAYABLE} \
             AND event_type <> 'unidentified' \
             AND ($1::int8[] IS NULL OR id = ANY($1)) \
             AND ($2::text IS NULL OR source = $2) AND ($3::text IS NULL OR status = $3) \
             AND ($4::text IS NULL OR event_type = $4) ORDER BY id LIMIT $5"
        );
        let status = request.status.map(DeliveryStatus::as_str);
        let limit = i64::from(request.limit);
        if request.dry_run {
            let row = client
                .query_one(
                    &format!("SELECT COUNT(*) FROM ({matching}) AS matching"),
                    &[&ids, &request.source, &status, &request.event_type, &limit],
                )
                .await
                .map_err(storage_error)?;
            return Ok(row.try_get::<_, i64>(0).map_err(storage_error)? as u64);
        }
        // The replayed deliveries' feed rows are written by the same statement.
        let replayed = client
            .execute(
                &format!(
                    "WITH replayed AS ( \
                     UPDATE deliveries SET \
                     status = CASE status WHEN 'rejected' THEN 'verifying' ELSE 'pending' END, \
                     next_attempt_at = $6, processed_at = NULL, lease_token = NULL, \
                     lease_until = NULL WHERE id IN ({matching}) \
                     RETURNING id, source, event_type, status, attempts) \
                     INSERT INTO change_feed (at, kind, source, delivery_id, event_type, data) \
                     SELECT $6, '{DELIVERY_REPLAYED}', source, id, event_type, \
                     json_build_object('status', status, 'attempts', attempts, 'error', NULL)::text \
                     FROM replayed ORDER BY id"
                ),
                &[
                    &ids,
                    &request.source,
                    &status,
                    &request.event_type,
                    &limit,
                    &datetime(request.now),
                ],
            )
            .await
            .map_err(storage_error)?;
        if replayed > 0 {
            self.appended.notify_waiters();
            self.feed_written.notify_one();
        }
        Ok(replayed)
    }

    fn appended_signal(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    async fn close(&self) {
        self.listening.cancel();
        // Dropping the sender lets each writer finish what is queued and stop.
        self.appends.lock().take();
        let writers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.writers.lock());
        for writer in writers {
            let _ = writer.await;
        }
        self.pool.close();
    }
}

/// The advisory lock taken while storing an admin token (`"wharf-tk"` as an integer).
const ADMIN_TOKENS_LOCK: i64 = 0x7768_6172_662d_746b;

#[async_trait]
impl AdminTokenStore for PostgresStorage {
    async fn admin_tokens(&self) -> Result<Vec<StoredToken>, JournalError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT digest, label, created_at FROM admin_tokens ORDER BY created_at",
                &[],
            )
            .await
            .map_err(storage_error)?;
        Ok(rows
            .iter()
            .map(|row| StoredToken {
                digest: row.get(0),
                label: row.get(1),
                created_at: timestamp(row.get(2)),
            })
            .collect())
    }

    async fn add_admin_token(
        &self,
        token: StoredToken,
        only_if_none: bool,
    ) -> Result<bool, JournalError> {
        // Instances starting together on an empty table serialize here, so that only one
        // of them mints the first token.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(storage_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMIN_TOKENS_LOCK])
            .await
            .map_err(storage_error)?;
        let inserted = tx
            .execute(
                "INSERT INTO admin_tokens (digest, label, created_at) SELECT $1, $2, $3 \
                 WHERE NOT $4 OR NOT EXISTS (SELECT 1 FROM admin_tokens) \
                 ON CONFLICT (digest) DO NOTHING",
                &[
                    &token.digest,
                    &token.label,
                    &datetime(token.created_at),
                    &only_if_none,
                ],
            )
            .await
            .map_err(storage_error)?;
        tx.commit().await.map_err(storage_error)?;
        Ok(inserted == 1)
    }
}

#[async_trait]
impl ReadModel for PostgresStorage {
    async fn status_counts(&self) -> Result<StatusCounts, JournalError> {
        read::status_counts(&self.client().await?).await
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog, JournalError> {
        read::backlog(&self.client().await?, now).await
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryView>, JournalError> {
        read::deliveries(&self.client().await?, &filter).await
    }

    async fn delivery(&self, id: DeliveryId) -> Result<Option<DeliveryView>, JournalError> {
        read::delivery(&self.client().await?, id).await
    }

    async fn attempts(&self, id: DeliveryId) -> Result<Vec<AttemptView>, JournalError> {
        read::attempts(&self.client().await?, id).await
    }

    async fn ledger_rows(
        &self,
        query: LedgerQuery,
    ) -> Result<Vec<Vec<crate::ledger::Cell>>, JournalError> {
        query::ledger_rows(&self.client().await?, &query).await
    }

    async fn source_counts(&self, since: Timestamp) -> Result<Vec<SourceWindow>, JournalError> {
        query::source_counts(&self.client().await?, since)
            .await
            .map(|counts| counts.into_values().collect())
    }

    async fn window_stats(&self, since: Timestamp) -> Result<WindowStats, JournalError> {
        query::window_stats(&self.client().await?, since).await
    }

    async fn revenue(&self, since: Timestamp) -> Result<Vec<RevenueDay>, JournalError> {
        query::revenue(&self.client().await?, since).await
    }
}

#[async_trait]
impl ChangeFeed for PostgresStorage {
    async fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<Change>, JournalError> {
        feed::changes_after(&self.client().await?, after, limit).await
    }

    async fn bounds(&self) -> Result<FeedBounds, JournalError> {
        feed::bounds(&self.client().await?).await
    }

    fn written(&self) -> Arc<Notify> {
        self.feed_written.clone()
    }

    async fn sequence(&self) -> Result<Option<u64>, JournalError> {
        feed::sequence(&mut self.client().await?).await
    }

    async fn prune(&self, now: Timestamp) -> Result<u64, JournalError> {
        feed::prune(&self.client().await?, self.feed_retention, now).await
    }
}
