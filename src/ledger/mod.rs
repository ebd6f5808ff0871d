//! The business ledger in domain terms: money, statuses and the merge rules that decide what a
//! late or repeated event may change, and the rows those decisions write ([`table`]). No SQL, no
//! HTTP, no floats: each backend's ledger store applies these rows, this module decides them.

pub mod money;
pub mod sale;
pub mod table;

pub use money::{Currency, Money, MoneyError, SaleAmountError};
pub use sale::{
    check_id, check_text, IncompleteSale, Sale, SaleMerge, SaleStatus, SaleUpsert, TextError,
    WriteTimes, MAX_ID_BYTES,
};
pub use table::{Cell, ColumnType, CorruptRow, RowWrite, Table};

/// One change a normalized delivery asks the ledger to make.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerChange {
    /// Create or update the sale keyed by (source, `cartpanda_id`) (seed 000's `sales` table).
    Sale(SaleUpsert),
}

/// Why a change cannot be applied now. Retried: the row it needs may arrive later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Incomplete(#[from] IncompleteSale),
    #[error(transparent)]
    Corrupt(#[from] CorruptRow),
}

impl LedgerChange {
    /// The table the change writes.
    pub fn table(&self) -> &'static Table {
        match self {
            Self::Sale(_) => &sale::SALES,
        }
    }

    /// The key of the row it writes, in `table().key` order.
    pub fn key(&self, source: &str) -> Vec<Cell> {
        match self {
            Self::Sale(upsert) => upsert.key(source),
        }
    }

    /// What to write, given the row as stored now (loaded by `key`, locked where the backend
    /// has several writers).
    pub fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<RowWrite, LedgerError> {
        match self {
            Self::Sale(upsert) => upsert.decide(source, current, times),
        }
    }
}
