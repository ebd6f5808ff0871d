//! Sales (seed 000's `sales` table) and the rule that keeps a late event from rolling a sale
//! back: a status only moves forward along the lifecycle, and within one stage only a newer
//! event wins.

use super::table::{Cell, Column, ColumnType, CorruptRow, RowReader, RowWrite, Table};
use super::{LedgerError, Money};
use crate::clock::Timestamp;

/// The longest external id the ledger accepts, in bytes of UTF-8: `cartpanda_id`,
/// `transaction_id`, `product_id`, `affiliate_code`, and `customer_email`, which is looked up
/// like one. Ids become keys: `cartpanda_id` is the sales table's unique key, `affiliate_code`
/// and `customer_email` are indexed, and the others are what other systems look a sale up by.
/// Every byte of a key is paid again in each index, where PostgreSQL also caps the size of an
/// entry; real provider ids are short tokens or numbers (and an email address is at most 254
/// bytes), so anything longer is a broken or hostile payload. [`check_id`] also refuses NUL,
/// which PostgreSQL `TEXT` cannot hold at all.
pub const MAX_ID_BYTES: usize = 255;

/// Why text cannot go into the ledger as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("is {bytes} bytes long; ids are at most {max} bytes", max = MAX_ID_BYTES)]
    TooLong { bytes: usize },
    /// PostgreSQL `TEXT` (and `JSONB`) cannot hold U+0000, whatever the encoding.
    #[error("contains a NUL byte, which PostgreSQL TEXT cannot store")]
    Nul,
}

/// Checks an external id, or other text that becomes a key, before it reaches the ledger: at
/// most [`MAX_ID_BYTES`] bytes and no NUL.
pub fn check_id(id: &str) -> Result<(), TextError> {
    check_text(id)?;
    if id.len() > MAX_ID_BYTES {
        return Err(TextError::TooLong { bytes: id.len() });
    }
    Ok(())
}

/// Checks text the ledger stores: no NUL, which PostgreSQL `TEXT` cannot hold.
pub fn check_text(text: &str) -> Result<(), TextError> {
    if text.contains('\0') {
        return Err(TextError::Nul);
    }
    Ok(())
}

/// Where a sale is in its lifecycle. The order of [`SaleStatus::stage`] is the order a sale
/// may move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaleStatus {
    Pending,
    Declined,
    Approved,
    Canceled,
    Refunded,
    Chargeback,
}

impl SaleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Declined => "declined",
            Self::Approved => "approved",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
            Self::Chargeback => "chargeback",
        }
    }

    /// Reads a status word as providers spell it (CartPanda's sale events, Shopify-style
    /// financial statuses).
    pub fn parse(word: &str) -> Option<Self> {
        let status = match word.trim().to_ascii_lowercase().as_str() {
            "pending" | "waiting_payment" | "waiting" | "created" | "authorized" | "processing" => {
                Self::Pending
            }
            "declined" | "refused" | "failed" | "rejected" => Self::Declined,
            "approved" | "paid" | "completed" | "complete" | "succeeded" => Self::Approved,
            "canceled" | "cancelled" | "voided" | "expired" => Self::Canceled,
            "refunded" | "partially_refunded" => Self::Refunded,
            "chargeback" | "chargedback" | "charged_back" | "disputed" => Self::Chargeback,
            _ => return None,
        };
        Some(status)
    }

    /// Lifecycle stage: a sale never moves to a lower stage. Terminal states share the top one,
    /// so between them the newer event decides.
    fn stage(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Declined => 1,
            Self::Approved => 2,
            Self::Canceled | Self::Refunded | Self::Chargeback => 3,
        }
    }
}

/// What one delivery says about a sale. `None` means "this event does not say".
#[derive(Debug, Clone, PartialEq)]
pub struct SaleUpsert {
    pub cartpanda_id: String,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub product_name: Option<String>,
    pub product_id: Option<String>,
    pub price: Option<Money>,
    pub status: Option<SaleStatus>,
    pub affiliate_code: Option<String>,
    pub affiliate_name: Option<String>,
    pub commission: Option<Money>,
    pub payment_method: Option<String>,
    pub transaction_id: Option<String>,
    /// The provider's own record of the sale, as JSON text (seed 000's `metadata JSONB`).
    pub metadata: Option<String>,
    /// When the provider says the event happened; orders events that share a stage.
    pub event_at: Option<Timestamp>,
}

/// A sale as stored: every column the merge rule reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Sale {
    pub cartpanda_id: String,
    pub customer_email: String,
    pub customer_name: String,
    pub product_name: String,
    pub product_id: Option<String>,
    pub price: Money,
    pub status: SaleStatus,
    pub affiliate_code: Option<String>,
    pub affiliate_name: Option<String>,
    pub commission: Option<Money>,
    pub payment_method: Option<String>,
    pub transaction_id: Option<String>,
    /// The provider's own record of the sale, as JSON text (seed 000's `metadata JSONB`).
    pub metadata: Option<String>,
    pub status_event_at: Option<Timestamp>,
}

/// How an upsert lands.
#[derive(Debug, Clone, PartialEq)]
pub enum SaleMerge {
    Insert(Sale),
    Update(Sale),
    /// The event adds nothing the sale does not already say.
    Unchanged,
}

/// A first event for a sale that lacks what a sale must have. Retrying later can succeed once
/// the event that creates the sale has arrived (providers do not promise order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sale {cartpanda_id} does not exist yet and this event has no {missing}")]
pub struct IncompleteSale {
    pub cartpanda_id: String,
    pub missing: &'static str,
}

/// Decides how `incoming` lands on `current` (see the module doc for the rule).
pub fn merge(current: Option<&Sale>, incoming: &SaleUpsert) -> Result<SaleMerge, IncompleteSale> {
    let Some(current) = current else {
        return create(incoming).map(SaleMerge::Insert);
    };
    let (take_status, overwrite) = precedence(current, incoming);
    let pick = |new: &Option<String>, old: &str| -> String {
        let new = new.as_deref().filter(|v| !v.is_empty());
        match (overwrite, new) {
            (true, Some(new)) => new.to_owned(),
            (false, Some(new)) if old.is_empty() => new.to_owned(),
            _ => old.to_owned(),
        }
    };
    let pick_opt = |new: &Option<String>, old: &Option<String>| -> Option<String> {
        let new = new.clone().filter(|v| !v.is_empty());
        if overwrite {
            new.or_else(|| old.clone())
        } else {
            old.clone().or(new)
        }
    };
    let pick_money = |new: &Option<Money>, old: &Option<Money>| -> Option<Money> {
        if overwrite {
            new.clone().or_else(|| old.clone())
        } else {
            old.clone().or_else(|| new.clone())
        }
    };
    let merged = Sale {
        cartpanda_id: current.cartpanda_id.clone(),
        customer_email: pick(&incoming.customer_email, &current.customer_email),
        customer_name: pick(&incoming.customer_name, &current.customer_name),
        product_name: pick(&incoming.product_name, &current.product_name),
        product_id: pick_opt(&incoming.product_id, &current.product_id),
        price: pick_money(&incoming.price, &Some(current.price.clone()))
            .unwrap_or_else(|| current.price.clone()),
        status: match incoming.status {
            Some(status) if take_status => status,
            _ => current.status,
        },
        affiliate_code: pick_opt(&incoming.affiliate_code, &current.affiliate_code),
        affiliate_name: pick_opt(&incoming.affiliate_name, &current.affiliate_name),
        commission: pick_money(&incoming.commission, &current.commission),
        payment_method: pick_opt(&incoming.payment_method, &current.payment_method),
        transaction_id: pick_opt(&incoming.transaction_id, &current.transaction_id),
        metadata: match (&incoming.metadata, overwrite) {
            // The same document written differently (PostgreSQL's JSONB reorders keys and
            // adds spaces) is no change.
            (Some(metadata), true) if !same_json(metadata, current.metadata.as_deref()) => {
                Some(metadata.clone())
            }
            _ => current
                .metadata
                .clone()
                .or_else(|| incoming.metadata.clone()),
        },
        status_event_at: if take_status || (overwrite && incoming.event_at.is_some()) {
            incoming.event_at.or(current.status_event_at)
        } else {
            current.status_event_at
        },
    };
    Ok(if merged == *current {
        SaleMerge::Unchanged
    } else {
        SaleMerge::Update(merged)
    })
}

/// Whether two JSON texts hold the same document (object key order aside).
fn same_json(new: &str, stored: Option<&str>) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    match (
        serde_json::from_str::<serde_json::Value>(new),
        serde_json::from_str::<serde_json::Value>(stored),
    ) {
        (Ok(new), Ok(stored)) => new == stored,
        _ => new == stored,
    }
}

fn create(incoming: &SaleUpsert) -> Result<Sale, IncompleteSale> {
    let price = incoming.price.clone().ok_or_else(|| IncompleteSale {
        cartpanda_id: incoming.cartpanda_id.clone(),
        missing: "price",
    })?;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    Ok(Sale {
        cartpanda_id: incoming.cartpanda_id.clone(),
        customer_email: text(&incoming.customer_email),
        customer_name: text(&incoming.customer_name),
        product_name: text(&incoming.product_name),
        product_id: incoming.product_id.clone(),
        price,
        status: incoming.status.unwrap_or(SaleStatus::Pending),
        affiliate_code: incoming.affiliate_code.clone(),
        affiliate_name: incoming.affiliate_name.clone(),
        commission: incoming.commission.clone(),
        payment_method: incoming.payment_method.clone(),
        transaction_id: incoming.transaction_id.clone(),
        metadata: incoming.metadata.clone(),
        status_event_at: incoming.event_at,
    })
}

/// Whether the event moves the status, and whether its field values replace the stored ones.
fn precedence(current: &Sale, incoming: &SaleUpsert) -> (bool, bool) {
    let newer = is_newer(incoming.event_at, current.status_event_at);
    let take_status = match incoming.status {
        None => false,
        Some(status) if status.stage() > current.status.stage() => true,
        Some(status) if status.stage() == current.status.stage() => {
            status != current.status && newer
        }
        Some(_) => false,
    };
    let same_stage_and_newer = incoming
        .status
        .is_none_or(|status| status.stage() == current.status.stage())
        && newer;
    (take_status, take_status || same_stage_and_newer)
}

/// With times on both sides, time decides; an event without a time is newer only when the
/// stored state has no time either (then the latest arrival wins).
fn is_newer(incoming: Option<Timestamp>, current: Option<Timestamp>) -> bool {
    match (incoming, current) {
        (Some(new), Some(old)) => new >= old,
        (Some(_), None) | (None, None) => true,
        (None, Some(_)) => false,
    }
}

/// Seed 000's `sales` table, keyed by (source, cartpanda_id) so that two stores configured as
/// two sources never collide on an order id.
pub static SALES: Table = Table {
    name: "sales",
    key: &["source", "cartpanda_id"],
    columns: &[
        Column::fixed("id", ColumnType::Uuid),
        Column::fixed("source", ColumnType::Text),
        Column::fixed("cartpanda_id", ColumnType::Text),
        Column::updatable("customer_email", ColumnType::Text),
        Column::updatable("customer_name", ColumnType::Text),
        Column::updatable("product_name", ColumnType::Text),
        Column::updatable("product_id", ColumnType::Text),
        Column::updatable("price", ColumnType::Decimal),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("status", ColumnType::Text),
        Column::updatable("affiliate_code", ColumnType::Text),
        Column::updatable("affiliate_name", ColumnType::Text),
        Column::updatable("commission_value", ColumnType::Decimal),
        Column::updatable("payment_method", ColumnType::Text),
        Column::updatable("transaction_id", ColumnType::Text),
        Column::fixed("webhook_received_at", ColumnType::Timestamp),
        Column::updatable("metadata", ColumnType::Json),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
        Column::updatable("price_minor", ColumnType::Integer),
        Column::updatable("commission_minor", ColumnType::Integer),
        Column::updatable("status_event_at", ColumnType::Timestamp),
    ],
};

/// When a row is written: the delivery's arrival and the moment of the write.
#[derive(Debug, Clone, Copy)]
pub struct WriteTimes {
    pub received_at: Timestamp,
    pub now: Timestamp,
}

impl SaleUpsert {
    pub fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.cartpanda_id)]
    }

    /// Decides, with [`merge`], what this event does to the stored row (if any).
    pub fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<RowWrite, LedgerError> {
        let current = current.map(Sale::from_row).transpose()?;
        Ok(match merge(current.as_ref().map(|(_, sale)| sale), self)? {
            SaleMerge::Insert(sale) => RowWrite::Insert(sale.to_row(
                uuid::Uuid::now_v7(),
                source,
                times.received_at,
                times,
            )),
            SaleMerge::Update(sale) => {
                let id = current.map(|(id, _)| id).unwrap_or_default();
                RowWrite::Update(sale.to_row(id, source, times.received_at, times))
            }
            SaleMerge::Unchanged => RowWrite::Unchanged,
        })
    }
}

impl Sale {
    /// A full `sales` row. `id` is time-ordered (v7) on insert, so the primary-key index grows
    /// at its end instead of dirtying a random page per sale.
    fn to_row(
        &self,
        id: uuid::Uuid,
        source: &str,
        received_at: Timestamp,
        times: WriteTimes,
    ) -> Vec<Cell> {
        let decimal = |money: &Money| Cell::Decimal(money.to_decimal_string());
        vec![
            Cell::Uuid(id),
            Cell::text(source),
            Cell::text(&self.cartpanda_id),
            Cell::text(&self.customer_email),
            Cell::text(&self.customer_name),
            Cell::text(&self.product_name),
            Cell::opt_text(self.product_id.as_deref()),
            decimal(&self.price),
            Cell::text(self.price.currency.code()),
            Cell::text(self.status.as_str()),
            Cell::opt_text(self.affiliate_code.as_deref()),
            Cell::opt_text(self.affiliate_name.as_deref()),
            self.commission.as_ref().map_or(Cell::Null, decimal),
            Cell::opt_text(self.payment_method.as_deref()),
            Cell::opt_text(self.transaction_id.as_deref()),
            Cell::Timestamp(received_at),
            self.metadata.clone().map_or(Cell::Null, Cell::Json),
            Cell::Timestamp(times.now),
            Cell::Timestamp(times.now),
            Cell::Integer(self.price.minor_units),
            self.commission
                .as_ref()
                .map_or(Cell::Null, |money| Cell::Integer(money.minor_units)),
            self.status_event_at.map_or(Cell::Null, Cell::Timestamp),
        ]
    }

    /// Reads a stored row back; money comes from the exact minor-units columns.
    fn from_row(cells: &[Cell]) -> Result<(uuid::Uuid, Sale), CorruptRow> {
        let row = RowReader::new(&SALES, cells);
        let corrupt = |column| CorruptRow {
            table: SALES.name,
            column,
        };
        let id = match cells.first() {
            Some(Cell::Uuid(id)) => *id,
            _ => return Err(corrupt("id")),
        };
        let currency = row
            .opt_text("currency")?
            .map_or(Ok(super::Currency::brl()), |code| {
                super::Currency::parse(&code)
            })
            .map_err(|_| corrupt("currency"))?;
        let money = |minor_units| Money {
            minor_units,
            currency: currency.clone(),
        };
        let sale = Sale {
            cartpanda_id: row.text("cartpanda_id")?,
            customer_email: row.text("customer_email")?,
            customer_name: row.text("customer_name")?,
            product_name: row.text("product_name")?,
            product_id: row.opt_text("product_id")?,
            price: money(row.integer("price_minor")?),
            status: SaleStatus::parse(&row.text("status")?).ok_or(corrupt("status"))?,
            affiliate_code: row.opt_text("affiliate_code")?,
            affiliate_name: row.opt_text("affiliate_name")?,
            commission: row.opt_integer("commission_minor")?.map(money),
            payment_method: row.opt_text("payment_method")?,
            transaction_id: row.opt_text("transaction_id")?,
            metadata: row.opt_text("metadata")?,
            status_event_at: row.opt_timestamp("status_event_at")?,
        };
        Ok((id, sale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Currency;

    fn upsert(status: Option<SaleStatus>, at: Option<i64>) -> SaleUpsert {
        SaleUpsert {
            cartpanda_id: "SALE_1".into(),
            customer_email: Some("new@example.com".into()),
            customer_name: None,
            product_name: None,
            product_id: None,
            price: None,
            status,
            affiliate_code: None,
            affiliate_name: None,
            commission: None,
            payment_method: None,
            transaction_id: None,
            metadata: None,
            event_at: at.map(Timestamp::from_unix_seconds),
        }
    }

    fn stored(status: SaleStatus, at: Option<i64>) -> Sale {
        Sale {
            cartpanda_id: "SALE_1".into(),
            customer_email: "old@example.com".into(),
            customer_name: "John Doe".into(),
            product_name: "Product".into(),
            product_id: None,
            price: Money::parse_decimal("99.90", Currency::brl()).expect("decimal"),
            status,
            affiliate_code: None,
            affiliate_name: None,
            commission: None,
            payment_method: None,
            transaction_id: None,
            metadata: None,
            status_event_at: at.map(Timestamp::from_unix_seconds),
        }
    }

    fn updated(merge: Result<SaleMerge, IncompleteSale>) -> Sale {
        match merge {
            Ok(SaleMerge::Update(sale)) => sale,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    #[test]
    fn first_event_inserts_the_sale_and_needs_a_price() {
        let mut first = upsert(Some(SaleStatus::Approved), None);
        assert!(matches!(
            merge(None, &first),
            Err(IncompleteSale {
                missing: "price",
                ..
            })
        ));
        first.price = Some(Money::parse_decimal("10", Currency::brl()).expect("decimal"));
        assert!(
            matches!(merge(None, &first), Ok(SaleMerge::Insert(sale)) if sale.status == SaleStatus::Approved)
        );
    }

    #[test]
    fn late_approval_does_not_overwrite_refund() {
        let current = stored(SaleStatus::Refunded, Some(200));
        let late = upsert(Some(SaleStatus::Approved), Some(300));
        assert_eq!(merge(Some(&current), &late), Ok(SaleMerge::Unchanged));
    }

    #[test]
    fn approval_after_pending_moves_forward_even_with_older_timestamp() {
        let current = stored(SaleStatus::Pending, Some(200));
        let sale = updated(merge(
            Some(&current),
            &upsert(Some(SaleStatus::Approved), Some(100)),
        ));
        assert_eq!(sale.status, SaleStatus::Approved);
        assert_eq!(sale.customer_email, "new@example.com");
    }

    #[test]
    fn within_terminal_stage_only_newer_event_wins() {
        let current = stored(SaleStatus::Chargeback, Some(200));
        let older_refund = upsert(Some(SaleStatus::Refunded), Some(100));
        assert_eq!(
            merge(Some(&current), &older_refund),
            Ok(SaleMerge::Unchanged)
        );
        let newer = updated(merge(
            Some(&current),
            &upsert(Some(SaleStatus::Refunded), Some(300)),
        ));
        assert_eq!(newer.status, SaleStatus::Refunded);
    }

    #[test]
    fn stale_event_only_fills_missing_fields() {
        let current = stored(SaleStatus::Approved, Some(200));
        let mut stale = upsert(None, Some(100));
        stale.transaction_id = Some("TRX_1".into());
        let sale = updated(merge(Some(&current), &stale));
        assert_eq!(sale.customer_email, "old@example.com");
        assert_eq!(sale.transaction_id.as_deref(), Some("TRX_1"));
    }

    #[test]
    fn repeated_event_changes_nothing() {
        let mut event = upsert(Some(SaleStatus::Approved), Some(100));
        event.price = Some(Money::parse_decimal("99.90", Currency::brl()).expect("decimal"));
        let Ok(SaleMerge::Insert(sale)) = merge(None, &event) else {
            panic!("insert")
        };
        assert_eq!(merge(Some(&sale), &event), Ok(SaleMerge::Unchanged));
    }

    #[test]
    fn ids_are_bounded_in_bytes_not_characters() {
        assert_eq!(check_id(&"a".repeat(MAX_ID_BYTES)), Ok(()));
        assert_eq!(
            check_id(&"a".repeat(MAX_ID_BYTES + 1)),
            Err(TextError::TooLong { bytes: 256 })
        );
        assert_eq!(
            check_id(&"é".repeat(128)),
            Err(TextError::TooLong { bytes: 256 })
        );
    }

    #[test]
    fn nul_is_refused_in_ids_and_in_any_stored_text() {
        assert_eq!(check_id("SALE\u{0}1"), Err(TextError::Nul));
        assert_eq!(check_text("John\u{0}"), Err(TextError::Nul));
        assert_eq!(check_text("John Doe"), Ok(()));
        assert_eq!(
            TextError::TooLong { bytes: 300 }.to_string(),
            "is 300 bytes long; ids are at most 255 bytes"
        );
    }

    #[test]
    fn provider_status_words_map_to_lifecycle() {
        assert_eq!(SaleStatus::parse("paid"), Some(SaleStatus::Approved));
        assert_eq!(SaleStatus::parse("Cancelled"), Some(SaleStatus::Canceled));
        assert_eq!(
            SaleStatus::parse("chargedback"),
            Some(SaleStatus::Chargeback)
        );
        assert_eq!(SaleStatus::parse("teleported"), None);
    }
}
