//! Admin tokens at rest: only the SHA-256 digest of a token is stored (a stolen database holds
//! no usable token). `wharf serve` stores one at first start when none is configured, and
//! `wharf token create` adds more.

use async_trait::async_trait;

use super::JournalError;
use crate::clock::Timestamp;
use crate::ledger::table::Column;
use crate::ledger::{ColumnType, Table};

/// The `admin_tokens` table, described as data so that `wharf migrate --from … --to …` copies
/// it like a ledger table.
pub static ADMIN_TOKENS: Table = Table {
    name: "admin_tokens",
    key: &["digest"],
    columns: &[
        Column::fixed("digest", ColumnType::Text),
        Column::fixed("label", ColumnType::Text),
        Column::fixed("created_at", ColumnType::Timestamp),
    ],
};

/// A token's digest, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Lower-case hex SHA-256 of the token.
    pub digest: String,
    pub label: String,
    pub created_at: Timestamp,
}

/// Where token digests live; one implementation per backend.
#[async_trait]
pub trait AdminTokenStore: Send + Sync + 'static {
    /// Every stored digest.
    async fn admin_tokens(&self) -> Result<Vec<StoredToken>, JournalError>;

    /// Stores a digest. With `only_if_none`, only while no token is stored (so that two
    /// instances starting together on one database do not both mint one). Says whether it
    /// stored.
    async fn add_admin_token(
        &self,
        token: StoredToken,
        only_if_none: bool,
    ) -> Result<bool, JournalError>;
}
