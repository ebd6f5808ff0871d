//! Moves an embedded installation to PostgreSQL (`wharf migrate --from sqlite://… --to
//! postgres://…`): the journal (`deliveries`, `delivery_payloads`, `attempts`) and the ledger
//! (`sales`), in batches, losing nothing, and idempotently: rows PostgreSQL already has are
//! left as they are and counted, so running the copy twice changes nothing, and a copy that was
//! interrupted is finished by running it again.
//!
//! The SQLite file is opened read-only, under the same exclusive lock a server takes
//! (`<database>.lock`): while a server holds it the copy refuses to start, and while the copy
//! runs no server can start on the file, so what is copied is one consistent state.
//!
//! Deliveries are matched by `(source, dedup_key)`, the key PostgreSQL deduplicates on; they get
//! fresh PostgreSQL ids (in SQLite id order), and their payloads and attempts follow them under
//! the new ids. Sales are matched by `(source, cartpanda_id)` and keep their UUIDs; their
//! decimal `price` and `commission_value` are rendered from the exact minor units, never from a
//! float. Leases are not copied: nothing holds a claim in a database no server runs on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use super::postgres::ledger as postgres_ledger;
use super::postgres::{tls, PostgresOptions, PostgresStorage};
use super::sqlite::ledger as sqlite_ledger;
use super::sqlite::{SqliteJournal, SqliteOptions};
use super::JournalError;
use crate::clock::{SystemClock, Timestamp};
use crate::ledger::{Currency, Money};

/// The SQLite schema version this copy reads (the newest of `migrations/sqlite/`, now
/// `V11__execution_and_expected_payments.sql`, whose new `trading_orders` and `payments`
/// columns the copy carries through `TRADING_ORDERS` and Stripe's `PAYMENTS`; `admin_tokens`
/// since `V10__admin_tokens.sql`; `V9__change_feed.sql` before it). A database at another
/// version is refused: an older one lacks columns, a newer one may hold data this copy would
/// drop. The change feed is not copied: it is a short-lived stream, and PostgreSQL numbers its
/// own.
pub const SQLITE_SCHEMA_VERSION: i64 = 11;

/// Most rows in one PostgreSQL transaction.
const BATCH_ROWS: usize = 1_000;

/// Most payload bytes in one batch of deliveries (a batch always holds at least one delivery).
const BATCH_BODY_BYTES: i64 = 32 * 1024 * 1024;

/// Told how the copy advances; the CLI draws a progress bar, tests count.
pub trait TransferProgress: Send + Sync {
    /// A table (`deliveries`, with their payloads and attempts, then `sales`) starts: `total`
    /// rows to go.
    fn start(&self, table: &str, total: u64);
    /// `n` more rows of the current table are done.
    fn advance(&self, n: u64);
    /// The current table is done.
    fn finish(&self);
}

/// A [`TransferProgress`] that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl TransferProgress for NoProgress {
    fn start(&self, _table: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Rows of one table: written by this copy, or found already in PostgreSQL and left alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCount {
    pub copied: u64,
    pub already_present: u64,
}

impl TableCount {
    fn add(&mut self, read: usize, copied: u64) {
        self.copied += copied;
        self.already_present += (read as u64).saturating_sub(copied);
    }
}

/// What a copy did, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    pub deliveries: TableCount,
    pub payloads: TableCount,
    pub attempts: TableCount,
    pub sales: TableCount,
    /// The providers' own ledger tables, in copy order.
    pub ledger: Vec<(&'static str, TableCount)>,
}

impl TransferReport {
    /// Each table by its name, in copy order.
    pub fn tables(&self) -> Vec<(&'static str, TableCount)> {
        let mut tables = vec![
            ("deliveries", self.deliveries),
            ("delivery_payloads", self.payloads),
            ("attempts", self.attempts),
            ("sales", self.sales),
        ];
        tables.extend(self.ledger.iter().copied());
        tables
    }
}

impl std::fmt::Display for TransferReport {
    /// One line per table: `deliveries: 3 copied, 0 already present`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (table, count) in self.tables() {
            writeln!(
                f,
                "{table}: {} copied, {} already present",
                count.copied, count.already_present
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum TransferError {
    #[error("{}: no such SQLite database", .0.display())]
    SourceMissing(PathBuf),
    #[error(
        "{path} is in use by a running wharf server (pid {pid}); stop it first, so that the copy \
         is complete and consistent"
    )]
    SourceInUse { path: String, pid: String },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {} read-only: {source}", path.display())]
    OpenSqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} is at schema version {found}, this wharf copies version {expected}: {advice}",
        found = found.map_or_else(|| "none (not a migrated wharf database)".to_owned(), |v| v.to_string()),
        expected = SQLITE_SCHEMA_VERSION,
    )]
    SchemaVersion {
        path: String,
        found: Option<i64>,
        advice: &'static str,
    },
    #[error("replaying the SQLite delivery log failed: {0}")]
    Replay(#[source] JournalError),
    #[error("reading {table} from SQLite failed: {source}")]
    Sqlite {
        table: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{table} row {id} cannot be copied: {problem}")]
    BadRow {
        table: &'static str,
        id: String,
        problem: String,
    },
    #[error("cannot open PostgreSQL: {0}")]
    OpenPostgres(#[source] JournalError),
    #[error("PostgreSQL failed while {doing}: {detail}")]
    Postgres {
        doing: &'static str,
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the SQLite reader stopped unexpectedly")]
    ReaderLost,
}

fn postgres(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> TransferError {
    move |source| {
        let detail = match source.as_db_error() {
            Some(db) => {
                let mut detail = format!("{} ({})", db.message(), db.code().code());
                if let Some(more) = db.detail() {
                    detail.push_str(": ");
                    detail.push_str(more);
                }
                detail
            }
            None => source.to_string(),
        };
        TransferError::Postgres {
            doing,
            detail,
            source,
        }
    }
}

fn sqlite(table: &'static str) -> impl FnOnce(rusqlite::Error) -> TransferError {
    move |source| TransferError::Sqlite { table, source }
}

/// Copies everything in the SQLite database at `from` into the PostgreSQL database `to`
/// (migrating it first), skipping rows PostgreSQL already has. Refuses while a server holds
/// the SQLite database, and unless its schema is [`SQLITE_SCHEMA_VERSION`].
pub async fn copy_sqlite_to_postgres(
    from: &Path,
    to: SecretString,
    progress: &dyn TransferProgress,
) -> Result<TransferReport, TransferError> {
    settle_delivery_log(from).await?;
    let source = Source::open(from)?;

    let (storage, _) =
        PostgresStorage::open(PostgresOptions::new(to.clone()), Arc::new(SystemClock))
            .await
            .map_err(TransferError::OpenPostgres)?;
    storage.log.close().await;
    let (mut client, driver) = connect(&to).await?;

    let mut report = TransferReport::default();
    let copied = copy_journal(&source, &mut client, progress, &mut report).await;
    let copied = match copied {
        Ok(()) => copy_sales(&source, &mut client, progress, &mut report).await,
        Err(error) => Err(error),
    };
    let copied = match copied {
        Ok(()) => copy_ledger_tables(&source, &mut client, progress, &mut report).await,
        Err(error) => Err(error),
    };
    drop(client);
    let _ = driver.await;
    copied.map(|()| report)
}

/// Opens the embedded journal once, so that whatever its delivery log holds beyond SQLite (a
/// server that was killed, not stopped) is projected before the copy reads SQLite.
async fn settle_delivery_log(path: &Path) -> Result<(), TransferError> {
    if !path.is_file() {
        return Ok(());
    }
    drop(lock_source(path)?);
    // Only a database at this wharf's schema is opened for writing: anything else is left
    // alone and refused by the schema check with advice.
    let at_current_schema = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()
        .is_some_and(|conn| check_schema(&conn, path).is_ok());
    if !at_current_schema {
        return Ok(());
    }
    let (storage, _) =
        SqliteJournal::open_storage(SqliteOptions::new(path)).map_err(TransferError::Replay)?;
    storage.log.close().await;
    Ok(())
}

async fn connect(
    url: &SecretString,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), TransferError> {
    let (url, tls_choice) = tls::split_url(url.expose_secret());
    let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
        TransferError::OpenPostgres(JournalError::Config(format!("PostgreSQL URL: {error}")))
    })?;
    config.ssl_mode(tls_choice.mode);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("wharf migrate");
    }
    let tls = tls::connector(&tls_choice).map_err(TransferError::OpenPostgres)?;
    let (client, connection) = config.connect(tls).await.map_err(postgres("connecting"))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "transfer connection closed");
        }
    });
    // Times without a zone (hand-written SQLite rows) are UTC, as SQLite's own functions write.
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .map_err(postgres("connecting"))?;
    Ok((client, driver))
}

/// Copies every provider's own ledger tables and the admin token digests (see [`crate::sources::Provider::ledger_tables`])
/// through the backends' ledger stores: rows PostgreSQL already has (same key) are skipped;
/// database-assigned ids are assigned anew, and triggers fill in what refers to them.
async fn copy_ledger_tables(
    source: &Source,
    client: &mut tokio_postgres::Client,
    progress: &dyn TransferProgress,
    report: &mut TransferReport,
) -> Result<(), TransferError> {
    // Admin token digests travel too: a token that worked keeps working after the move.
    let tables = crate::sources::PROVIDERS
        .iter()
        .flat_map(|provider| provider.ledger_tables().iter().copied())
        .chain(std::iter::once(&crate::journal::tokens::ADMIN_TOKENS));
    for table in tables {
        let name = table.name;
        let total = source
            .read(name, move |conn| count_rows(conn, name))
            .await?;
        progress.start(name, total);
        let mut count = TableCount::default();
        let mut after = 0;
        loop {
            let batch = source
                .read(name, move |conn| {
                    sqlite_ledger::rows_after(conn, table, after, BATCH_ROWS)
                })
                .await?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = *last;
            let tx = client
                .transaction()
                .await
                .map_err(postgres("starting a transaction"))?;
            let insert = tx
                .prepare(&postgres_ledger::insert_sql(table))
                .await
                .map_err(postgres("preparing a ledger copy"))?;
            let mut copied = 0;
            for (_, row) in &batch {
                let params = postgres_ledger::insert_params(table, row);
                copied += tx
                    .execute(&insert, &postgres_ledger::refs(&params))
                    .await
                    .map_err(postgres("copying ledger rows"))?;
            }
            tx.commit()
                .await
                .map_err(postgres("committing a batch of ledger rows"))?;
            count.add(batch.len(), copied);
            progress.advance(batch.len() as u64);
        }
        progress.finish();
        report.ledger.push((name, count));
    }
    Ok(())
}

// ---- the SQLite side -------------------------------------------------------------------------

/// The read-only SQLite database, held under the server's lock for as long as the copy runs.
struct Source {
    conn: Arc<Mutex<Connection>>,
    _lock: Option<File>,
}

impl Source {
    fn open(path: &Path) -> Result<Self, TransferError> {
        if !path.is_file() {
            return Err(TransferError::SourceMissing(path.to_owned()));
        }
        let lock = lock_source(path)?;
        let open_error = |source| TransferError::OpenSqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        check_schema(&conn, path)?;
        // One read transaction for the whole copy: every batch sees the same snapshot.
        conn.execute_batch("BEGIN").map_err(open_error)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            _lock: lock,
        })
    }

    /// Runs a read off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        table: &'static str,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TransferError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || query(&conn.lock()))
            .await
            .map_err(|_| TransferError::ReaderLost)?
            .map_err(sqlite(table))
    }
}

/// Takes the exclusive lock a server takes on `<database>.lock`, or says who holds it. Without
/// a lock file that can be created (a read-only copy of a database), no server can be running
/// on the file either, and the copy goes ahead without one.
fn lock_source(db: &Path) -> Result<Option<File>, TransferError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let lock_error = |source| TransferError::Lock {
        path: path.clone(),
        source,
    };
    let (mut file, writable) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => (file, true),
        Err(error) => match File::open(&path) {
            Ok(file) => (file, false),
            Err(missing) if missing.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(%error, lock = %path.display(), "cannot create the lock file; copying without it");
                return Ok(None);
            }
            Err(_) => return Err(lock_error(error)),
        },
    };
    match file.try_lock() {
        Ok(()) => {
            if writable {
                // A server that tries to start meanwhile names this process.
                file.set_len(0).map_err(lock_error)?;
                writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
            }
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(TransferError::SourceInUse {
                path: db.display().to_string(),
                pid: holder.trim().to_owned(),
            })
        }
        Err(std::fs::TryLockError::Error(error)) => Err(lock_error(error)),
    }
}

fn check_schema(conn: &Connection, path: &Path) -> Result<(), TransferError> {
    let history: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite("refinery_schema_history"))?;
    let found: Option<i64> = match history {
        None => None,
        Some(_) => conn
            .query_row(
                "SELECT MAX(version) FROM refinery_schema_history",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite("refinery_schema_history"))?,
    };
    let advice = match found {
        Some(SQLITE_SCHEMA_VERSION) => return Ok(()),
        Some(version) if version > SQLITE_SCHEMA_VERSION => {
            "it was written by a newer wharf; copy it with that version"
        }
        _ => "run `wharf migrate` on it first (WHARF_DATABASE=sqlite://…), then copy again",
    };
    Err(TransferError::SchemaVersion {
        path: path.display().to_string(),
        found,
        advice,
    })
}

fn count_rows(conn: &Connection, table: &'static str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|count| count.max(0) as u64)
}

/// Text as SQLite holds it, whatever the storage class (columns with numeric affinity hold
/// numbers); `None` for NULL.
fn loose_text(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(at)? {
        ValueRef::Null => None,
        ValueRef::Integer(value) => Some(value.to_string()),
        ValueRef::Real(value) => Some(value.to_string()),
        ValueRef::Text(text) | ValueRef::Blob(text) => {
            Some(String::from_utf8_lossy(text).into_owned())
        }
    })
}

/// Bytes, whether stored as a blob or as text.
fn bytes(row: &Row<'_>, at: usize) -> rusqlite::Result<Vec<u8>> {
    match row.get_ref(at)? {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Ok(bytes.to_vec()),
        ValueRef::Null => Ok(Vec::new()),
        other => Err(rusqlite::Error::InvalidColumnType(
            at,
            "body".to_owned(),
            other.data_type(),
        )),
    }
}

/// PostgreSQL `TEXT` cannot hold NUL; SQLite can. NUL becomes U+FFFD, as the PostgreSQL
/// backend stores such text, so a delivery copied here dedups against one received there.
fn pg_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

fn pg_opt_text(text: Option<String>) -> Option<String> {
    text.map(pg_text)
}

fn micros(at: i64) -> DateTime<Utc> {
    Timestamp(at).to_datetime()
}

fn int4(
    table: &'static str,
    id: impl ToString,
    column: &str,
    value: i64,
) -> Result<i32, TransferError> {
    i32::try_from(value).map_err(|_| TransferError::BadRow {
        table,
        id: id.to_string(),
        problem: format!("{column} {value} does not fit PostgreSQL's INTEGER"),
    })
}

// ---- the journal -----------------------------------------------------------------------------

struct DeliveryRow {
    id: i64,
    source: String,
    event_id: Option<String>,
    event_type: String,
    dedup_key: String,
    received_at: i64,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: Option<i64>,
    processed_at: Option<i64>,
    body_bytes: i64,
}

struct PayloadRow {
    delivery_id: i64,
    headers: String,
    body: Vec<u8>,
}

struct AttemptRow {
    delivery_id: i64,
    attempt: i64,
    started_at: i64,
    duration_us: i64,
    outcome: String,
    error: Option<String>,
}

struct JournalBatch {
    deliveries: Vec<DeliveryRow>,
    payloads: Vec<PayloadRow>,
    attempts: Vec<AttemptRow>,
}

/// The next batch of deliveries after `after`, in id order, with their payloads and attempts.
fn read_journal_batch(conn: &Connection, after: i64) -> rusqlite::Result<JournalBatch> {
    let mut statement = conn.prepare_cached(
        "SELECT id, source, event_id, event_type, dedup_key, received_at, status, attempts, \
         last_error, next_attempt_at, processed_at, body_bytes \
         FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map((after, BATCH_ROWS as i64), |row| {
        Ok(DeliveryRow {
            id: row.get(0)?,
            source: row.get(1)?,
            event_id: row.get(2)?,
            event_type: row.get(3)?,
            dedup_key: row.get(4)?,
            received_at: row.get(5)?,
            status: row.get(6)?,
            attempts: row.get(7)?,
            last_error: row.get(8)?,
            next_attempt_at: row.get(9)?,
            processed_at: row.get(10)?,
            body_bytes: row.get(11)?,
        })
    })?;
    let mut deliveries = Vec::new();
    let mut body_bytes = 0i64;
    for row in rows {
        let row = row?;
        body_bytes = body_bytes.saturating_add(row.body_bytes.max(0));
        if !deliveries.is_empty() && body_bytes > BATCH_BODY_BYTES {
            break;
        }
        deliveries.push(row);
    }
    let (Some(first), Some(last)) = (deliveries.first(), deliveries.last()) else {
        return Ok(JournalBatch {
            deliveries,
            payloads: Vec::new(),
            attempts: Vec::new(),
        });
    };
    let range = (first.id, last.id);
    let payloads = conn
        .prepare_cached(
            "SELECT delivery_id, headers, body FROM delivery_payloads \
             WHERE delivery_id BETWEEN ?1 AND ?2 ORDER BY delivery_id",
        )?
        .query_map(range, |row| {
            Ok(PayloadRow {
                delivery_id: row.get(0)?,
                headers: row.get(1)?,
                body: bytes(row, 2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let attempts = conn
        .prepare_cached(
            "SELECT delivery_id, attempt, started_at, duration_us, outcome, error FROM attempts \
             WHERE delivery_id BETWEEN ?1 AND ?2 ORDER BY delivery_id, attempt",
        )?
        .query_map(range, |row| {
            Ok(AttemptRow {
                delivery_id: row.get(0)?,
                attempt: row.get(1)?,
                started_at: row.get(2)?,
                duration_us: row.get(3)?,
                outcome: row.get(4)?,
                error: row.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(JournalBatch {
        deliveries,
        payloads,
        attempts,
    })
}

/// Inserts a batch's deliveries in order; the conflict target is PostgreSQL's dedup key.
const INSERT_DELIVERIES: &str = "\
INSERT INTO deliveries (source, event_id, event_type, dedup_key, received_at, status, attempts,
                        last_error, next_attempt_at, processed_at, body_bytes)
SELECT source, event_id, event_type, dedup_key, received_at, status, attempts, last_error,
       next_attempt_at, processed_at, body_bytes
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::int4[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::int4[])
     WITH ORDINALITY AS t(source, event_id, event_type, dedup_key, received_at, status, attempts,
                          last_error, next_attempt_at, processed_at, body_bytes, ord)
ORDER BY ord
ON CONFLICT (source, dedup_key) DO NOTHING
RETURNING id";

/// The PostgreSQL id of each delivery of the batch, new or already there, by position.
const DELIVERY_IDS: &str = "\
SELECT k.ord, d.id
FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS k(source, dedup_key, ord)
JOIN deliveries d ON d.source = k.source AND d.dedup_key = k.dedup_key";

const INSERT_PAYLOADS: &str = "\
INSERT INTO delivery_payloads (delivery_id, headers, body)
SELECT delivery_id, headers::jsonb, body
FROM UNNEST($1::int8[], $2::text[], $3::bytea[]) AS t(delivery_id, headers, body)
ON CONFLICT (delivery_id) DO NOTHING";

const INSERT_ATTEMPTS: &str = "\
INSERT INTO attempts (delivery_id, attempt, started_at, duration_us, outcome, error)
SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::timestamptz[], $4::int8[], $5::text[],
                     $6::text[])
ON CONFLICT (delivery_id, attempt) DO NOTHING";

async fn copy_journal(
    source: &Source,
    client: &mut tokio_postgres::Client,
    progress: &dyn TransferProgress,
    report: &mut TransferReport,
) -> Result<(), TransferError> {
    let total = source
        .read("deliveries", |conn| count_rows(conn, "deliveries"))
        .await?;
    progress.start("deliveries", total);
    let insert_deliveries = client
        .prepare(INSERT_DELIVERIES)
        .await
        .map_err(postgres("preparing the deliveries copy"))?;
    let delivery_ids = client
        .prepare(DELIVERY_IDS)
        .await
        .map_err(postgres("preparing the deliveries copy"))?;
    let insert_payloads = client
        .prepare(INSERT_PAYLOADS)
        .await
        .map_err(postgres("preparing the payloads copy"))?;
    let insert_attempts = client
        .prepare(INSERT_ATTEMPTS)
        .await
        .map_err(postgres("preparing the attempts copy"))?;
    let mut after = 0i64;
    loop {
        let batch = source
            .read("deliveries", move |conn| read_journal_batch(conn, after))
            .await?;
        let Some(last) = batch.deliveries.last() else {
            break;
        };
        after = last.id;
        let read = batch.deliveries.len();

        let mut sqlite_ids = Vec::with_capacity(read);
        let mut sources = Vec::with_capacity(read);
        let mut event_ids = Vec::with_capacity(read);
        let mut event_types = Vec::with_capacity(read);
        let mut keys = Vec::with_capacity(read);
        let mut received = Vec::with_capacity(read);
        let mut statuses = Vec::with_capacity(read);
        let mut attempt_counts = Vec::with_capacity(read);
        let mut errors = Vec::with_capacity(read);
        let mut next = Vec::with_capacity(read);
        let mut processed = Vec::with_capacity(read);
        let mut sizes = Vec::with_capacity(read);
        for row in batch.deliveries {
            attempt_counts.push(int4("deliveries", row.id, "attempts", row.attempts)?);
            sizes.push(int4("deliveries", row.id, "body_bytes", row.body_bytes)?);
            sqlite_ids.push(row.id);
            sources.push(pg_text(row.source));
            event_ids.push(pg_opt_text(row.event_id));
            event_types.push(pg_text(row.event_type));
            keys.push(pg_text(row.dedup_key));
            received.push(micros(row.received_at));
            statuses.push(pg_text(row.status));
            errors.push(pg_opt_text(row.last_error));
            next.push(row.next_attempt_at.map(micros));
            processed.push(row.processed_at.map(micros));
        }

        let tx = client
            .transaction()
            .await
            .map_err(postgres("starting a transaction"))?;
        let inserted = tx
            .query(
                &insert_deliveries,
                &[
                    &sources,
                    &event_ids,
                    &event_types,
                    &keys,
                    &received,
                    &statuses,
                    &attempt_counts,
                    &errors,
                    &next,
                    &processed,
                    &sizes,
                ],
            )
            .await
            .map_err(postgres("copying deliveries"))?;
        report.deliveries.add(read, inserted.len() as u64);

        // SQLite id → PostgreSQL id, for the payloads and attempts that follow.
        let mut pg_ids: HashMap<i64, i64> = HashMap::with_capacity(read);
        for row in tx
            .query(&delivery_ids, &[&sources, &keys])
            .await
            .map_err(postgres("looking up copied deliveries"))?
        {
            let ord: i64 = row.get(0);
            let pg_id: i64 = row.get(1);
            if let Some(&sqlite_id) = usize::try_from(ord - 1)
                .ok()
                .and_then(|at| sqlite_ids.get(at))
            {
                pg_ids.insert(sqlite_id, pg_id);
            }
        }
        let pg_id = |table: &'static str, sqlite_id: i64| {
            pg_ids
                .get(&sqlite_id)
                .copied()
                .ok_or_else(|| TransferError::BadRow {
                    table,
                    id: sqlite_id.to_string(),
                    problem: "its delivery was not found in PostgreSQL after the copy".to_owned(),
                })
        };

        let payloads_read = batch.payloads.len();
        let mut payload_ids = Vec::with_capacity(payloads_read);
        let mut headers = Vec::with_capacity(payloads_read);
        let mut bodies = Vec::with_capacity(payloads_read);
        for payload in batch.payloads {
            payload_ids.push(pg_id("delivery_payloads", payload.delivery_id)?);
            headers.push(pg_text(payload.headers));
            bodies.push(payload.body);
        }
        let copied = tx
            .execute(&insert_payloads, &[&payload_ids, &headers, &bodies])
            .await
            .map_err(postgres("copying delivery payloads"))?;
        report.payloads.add(payloads_read, copied);

        let attempts_read = batch.attempts.len();
        let mut attempt_ids = Vec::with_capacity(attempts_read);
        let mut numbers = Vec::with_capacity(attempts_read);
        let mut started = Vec::with_capacity(attempts_read);
        let mut durations = Vec::with_capacity(attempts_read);
        let mut outcomes = Vec::with_capacity(attempts_read);
        let mut attempt_errors = Vec::with_capacity(attempts_read);
        for attempt in batch.attempts {
            attempt_ids.push(pg_id("attempts", attempt.delivery_id)?);
            numbers.push(int4(
                "attempts",
                attempt.delivery_id,
                "attempt",
                attempt.attempt,
            )?);
            started.push(micros(attempt.started_at));
            durations.push(attempt.duration_us);
            outcomes.push(pg_text(attempt.outcome));
            attempt_errors.push(pg_opt_text(attempt.error));
        }
        let copied = tx
            .execute(
                &insert_attempts,
                &[
                    &attempt_ids,
                    &numbers,
                    &started,
                    &durations,
                    &outcomes,
                    &attempt_errors,
                ],
            )
            .await
            .map_err(postgres("copying attempts"))?;
        report.attempts.add(attempts_read, copied);

        tx.commit()
            .await
            .map_err(postgres("committing a batch of deliveries"))?;
        progress.advance(read as u64);
    }
    progress.finish();
    Ok(())
}

// ---- the ledger ------------------------------------------------------------------------------

struct SaleRow {
    id: String,
    source: String,
    cartpanda_id: String,
    customer_email: String,
    customer_name: String,
    product_name: String,
    product_id: Option<String>,
    currency: Option<String>,
    status: String,
    affiliate_code: Option<String>,
    affiliate_name: Option<String>,
    commission_value: Option<String>,
    payment_method: Option<String>,
    transaction_id: Option<String>,
    webhook_received_at: Option<String>,
    metadata: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    price_minor: i64,
    commission_minor: Option<i64>,
    status_event_at: Option<String>,
}

fn read_sales_batch(conn: &Connection, after: &str) -> rusqlite::Result<Vec<SaleRow>> {
    let mut statement = conn.prepare_cached(
        "SELECT id, source, cartpanda_id, customer_email, customer_name, product_name, \
         product_id, currency, status, affiliate_code, affiliate_name, commission_value, \
         payment_method, transaction_id, webhook_received_at, metadata, created_at, updated_at, \
         price_minor, commission_minor, status_event_at \
         FROM sales WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = statement.query_map((after, BATCH_ROWS as i64), |row| {
        let text =
            |at| -> rusqlite::Result<String> { Ok(loose_text(row, at)?.unwrap_or_default()) };
        Ok(SaleRow {
            id: text(0)?,
            source: text(1)?,
            cartpanda_id: text(2)?,
            customer_email: text(3)?,
            customer_name: text(4)?,
            product_name: text(5)?,
            product_id: loose_text(row, 6)?,
            currency: loose_text(row, 7)?,
            status: text(8)?,
            affiliate_code: loose_text(row, 9)?,
            affiliate_name: loose_text(row, 10)?,
            commission_value: loose_text(row, 11)?,
            payment_method: loose_text(row, 12)?,
            transaction_id: loose_text(row, 13)?,
            webhook_received_at: loose_text(row, 14)?,
            metadata: loose_text(row, 15)?,
            created_at: loose_text(row, 16)?,
            updated_at: loose_text(row, 17)?,
            price_minor: row.get(18)?,
            commission_minor: row.get(19)?,
            status_event_at: loose_text(row, 20)?,
        })
    })?;
    rows.collect()
}

/// Seed 000's `DECIMAL(10,2)` text for an exact amount, in the sale's currency (BRL when the
/// row names none, as the ledger reads it). Refuses what the ledger itself would never have
/// written, such as a third decimal PostgreSQL would round away.
fn sale_decimal(minor_units: i64, currency: Option<&str>) -> Result<String, String> {
    let currency = match currency {
        Some(code) => Currency::parse(code).map_err(|error| error.to_string())?,
        None => Currency::brl(),
    };
    let money = Money {
        minor_units,
        currency,
    };
    money
        .check_sale_amount()
        .map_err(|error| error.to_string())?;
    Ok(money.to_decimal_string())
}

/// Inserts a batch of sales in order; the conflict target is the ledger's key.
const INSERT_SALES: &str = "\
INSERT INTO sales (id, source, cartpanda_id, customer_email, customer_name, product_name,
                   product_id, price, currency, status, affiliate_code, affiliate_name,
                   commission_value, payment_method, transaction_id, webhook_received_at,
                   metadata, created_at, updated_at, price_minor, commission_minor,
                   status_event_at)
SELECT id::uuid, source, cartpanda_id, customer_email, customer_name, product_name, product_id,
       price::numeric, currency, status, affiliate_code, affiliate_name,
       commission_value::numeric, payment_method, transaction_id,
       webhook_received_at::timestamptz, metadata::jsonb, created_at::timestamptz,
       updated_at::timestamptz, price_minor, commission_minor, status_event_at::timestamptz
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
            $20::int8[], $21::int8[], $22::text[])
     WITH ORDINALITY AS t(id, source, cartpanda_id, customer_email, customer_name, product_name,
                          product_id, price, currency, status, affiliate_code, affiliate_name,
                          commission_value, payment_method, transaction_id,
                          webhook_received_at, metadata, created_at, updated_at, price_minor,
                          commission_minor, status_event_at, ord)
ORDER BY ord
ON CONFLICT (source, cartpanda_id) DO NOTHING";

async fn copy_sales(
    source: &Source,
    client: &mut tokio_postgres::Client,
    progress: &dyn TransferProgress,
    report: &mut TransferReport,
) -> Result<(), TransferError> {
    let total = source
        .read("sales", |conn| count_rows(conn, "sales"))
        .await?;
    progress.start("sales", total);
    let insert = client
        .prepare(INSERT_SALES)
        .await
        .map_err(postgres("preparing the sales copy"))?;
    let mut after = String::new();
    loop {
        let from = after.clone();
        let batch = source
            .read("sales", move |conn| read_sales_batch(conn, &from))
            .await?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.id.clone();
        let read = batch.len();

        let mut columns: [Vec<Option<String>>; 19] = Default::default();
        let mut price_minor = Vec::with_capacity(read);
        let mut commission_minor = Vec::with_capacity(read);
        let mut status_event_at = Vec::with_capacity(read);
        for sale in batch {
            let bad = |problem: String| TransferError::BadRow {
                table: "sales",
                id: sale.id.clone(),
                problem,
            };
            let price = sale_decimal(sale.price_minor, sale.currency.as_deref())
                .map_err(|error| bad(format!("price: {error}")))?;
            let commission = match (sale.commission_minor, sale.commission_value) {
                (Some(minor), _) => Some(
                    sale_decimal(minor, sale.currency.as_deref())
                        .map_err(|error| bad(format!("commission: {error}")))?,
                ),
                // Not written by the ledger (which fills both); the decimal is all there is.
                (None, value) => value,
            };
            let values = [
                Some(sale.id),
                Some(sale.source),
                Some(sale.cartpanda_id),
                Some(sale.customer_email),
                Some(sale.customer_name),
                Some(sale.product_name),
                sale.product_id,
                Some(price),
                sale.currency,
                Some(sale.status),
                sale.affiliate_code,
                sale.affiliate_name,
                commission,
                sale.payment_method,
                sale.transaction_id,
                sale.webhook_received_at,
                sale.metadata,
                sale.created_at,
                sale.updated_at,
            ];
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(pg_opt_text(value));
            }
            price_minor.push(sale.price_minor);
            commission_minor.push(sale.commission_minor);
            status_event_at.push(sale.status_event_at);
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|column| column as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        params.push(&price_minor);
        params.push(&commission_minor);
        params.push(&status_event_at);

        let tx = client
            .transaction()
            .await
            .map_err(postgres("starting a transaction"))?;
        let copied = tx
            .execute(&insert, &params)
            .await
            .map_err(postgres("copying sales"))?;
        tx.commit()
            .await
            .map_err(postgres("committing a batch of sales"))?;
        report.sales.add(read, copied);
        progress.advance(read as u64);
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sale_amounts_are_rendered_from_minor_units_exactly() {
        assert_eq!(sale_decimal(9990, Some("BRL")).as_deref(), Ok("99.90"));
        assert_eq!(sale_decimal(9990, None).as_deref(), Ok("99.90"));
        assert_eq!(sale_decimal(5, Some("usd")).as_deref(), Ok("0.05"));
        assert_eq!(sale_decimal(1200, Some("JPY")).as_deref(), Ok("1200"));
        assert_eq!(sale_decimal(1230, Some("KWD")).as_deref(), Ok("1.230"));
        assert!(
            sale_decimal(1235, Some("KWD")).is_err(),
            "a third decimal would be rounded away"
        );
        assert!(sale_decimal(100, Some("nope")).is_err());
    }

    #[test]
    fn the_report_reads_per_table() {
        let mut report = TransferReport::default();
        report.deliveries.add(5, 3);
        report.sales.add(2, 2);
        let text = report.to_string();
        assert!(
            text.contains("deliveries: 3 copied, 2 already present\n"),
            "{text}"
        );
        assert!(
            text.contains("sales: 2 copied, 0 already present\n"),
            "{text}"
        );
        assert!(
            text.contains("attempts: 0 copied, 0 already present\n"),
            "{text}"
        );
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(pg_text("a\0b".to_owned()), "a\u{FFFD}b");
        assert_eq!(pg_text("plain".to_owned()), "plain");
    }
}
