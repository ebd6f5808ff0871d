//! The business ledger in domain terms: money, statuses and the merge rules that decide what a
//! late or repeated event may change. No SQL, no HTTP, no floats: the journal applies these
//! values, this module decides them.

pub mod money;
pub mod sale;

pub use money::{Currency, Money, MoneyError, SaleAmountError};
pub use sale::{
    check_id, check_text, IncompleteSale, Sale, SaleMerge, SaleStatus, SaleUpsert, TextError,
    MAX_ID_BYTES,
};

/// One change a normalized delivery asks the ledger to make.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerChange {
    /// Create or update the sale keyed by `cartpanda_id` (seed 000's `sales` table).
    Sale(SaleUpsert),
}
