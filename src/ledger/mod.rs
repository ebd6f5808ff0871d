//! The business ledger in domain terms: money, statuses and the merge rules that decide what a
//! late or repeated event may change, and the rows those decisions write ([`table`]). No SQL, no
//! HTTP, no floats: each backend's ledger store applies these rows, this module decides them.

pub mod edit;
pub mod money;
pub mod sale;
pub mod table;

use std::fmt;
use std::sync::Arc;

pub use money::{Currency, Money, MoneyError, SaleAmountError};
pub use sale::{
    check_id, check_text, IncompleteSale, Sale, SaleMerge, SaleStatus, SaleUpsert, TextError,
    WriteTimes, MAX_ID_BYTES,
};
pub use table::{Appended, Cell, ColumnType, CorruptRow, Decision, RowJson, RowWrite, Table};

/// One change a normalized delivery asks the ledger to make: one row of one table, decided
/// against the row as stored. Each backend's ledger store applies it without knowing the
/// provider; a provider's module defines its own changes ([`RowChange`]).
#[derive(Debug, Clone)]
pub enum LedgerChange {
    /// Create or update the sale keyed by (source, `cartpanda_id`) (seed 000's `sales` table).
    Sale(Box<SaleUpsert>),
    /// A change a provider module defines.
    Row(Arc<dyn RowChange>),
}

impl PartialEq for LedgerChange {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Sale(a), Self::Sale(b)) => a == b,
            (Self::Row(a), Self::Row(b)) => Arc::ptr_eq(a, b) || a.describe() == b.describe(),
            _ => false,
        }
    }
}

/// A change to one row of a provider's table: which row (`key`, in `table().key` order) and,
/// given that row as stored now (loaded, and locked where the backend has several writers),
/// what to write.
pub trait RowChange: fmt::Debug + Send + Sync {
    fn table(&self) -> &'static Table;

    fn key(&self, source: &str) -> Vec<Cell>;

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError>;

    /// For comparing changes in tests and logs.
    fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// Work that must follow once this change is committed, as [`Self::decide`] last decided
    /// it (an order to place at a venue): the processor journals it as a delivery of the same
    /// source after the commit, never before, so that nothing acts on a decision that was
    /// rolled back.
    fn follow_up(&self) -> Option<FollowUp> {
        None
    }
}

/// A delivery a committed change asks for (see [`RowChange::follow_up`]). It is journaled as
/// `verifying` under `dedup_key`, so asking twice journals it once, and proven (carried out)
/// by its source's lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub event_type: String,
    pub dedup_key: String,
    pub body: Vec<u8>,
}

/// Committed rows that still owe a follow-up (an order left `submitting` until its venue
/// answers). The processor journals what each owes at start and on every sweep: a follow-up
/// already journaled is a duplicate by its dedup key and changes nothing, and one lost between
/// its change's commit and its append (a crash, a failed append) is journaled then.
#[derive(Debug, Clone)]
pub struct OwedFollowUps {
    pub table: &'static Table,
    /// `column = value` conditions that select the rows that owe one.
    pub equals: Vec<(&'static str, Cell)>,
    /// What one such row owes, read from the row as stored (in `table.columns` order); `None`
    /// for a row it cannot be read from.
    pub owed: fn(&[Cell]) -> Option<FollowUp>,
}

/// Why a change cannot be applied now. Retried: the row it needs may arrive later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Incomplete(#[from] IncompleteSale),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
    /// A provider's change that needs a row another delivery writes (retried until it lands).
    #[error("{0}")]
    Waiting(String),
    /// The change cannot be true given the rows as they stand (a payment verified for another
    /// amount than the one expected): the delivery is rejected with this reason, and nothing
    /// of its completion is written.
    #[error("{0}")]
    Refused(String),
}

impl LedgerChange {
    /// The table the change writes.
    pub fn table(&self) -> &'static Table {
        match self {
            Self::Sale(_) => &sale::SALES,
            Self::Row(change) => change.table(),
        }
    }

    /// The key of the row it writes, in `table().key` order.
    pub fn key(&self, source: &str) -> Vec<Cell> {
        match self {
            Self::Sale(upsert) => upsert.key(source),
            Self::Row(change) => change.key(source),
        }
    }

    /// What to write, given the row as stored now (loaded by `key`, locked where the backend
    /// has several writers).
    pub fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let mut decision = match self {
            Self::Sale(upsert) => upsert.decide(source, current, times).map(Decision::from)?,
            Self::Row(change) => change.decide(source, current, times)?,
        };
        // An update that writes the row as it is (a replay, a resend) is no write at all: on
        // PostgreSQL an UPDATE would still fire the seeds' `updated_at` trigger.
        if let (RowWrite::Update(row), Some(current)) = (&decision.row, current) {
            if row.as_slice() == current {
                decision.row = RowWrite::Unchanged;
            }
        }
        Ok(decision)
    }
}
