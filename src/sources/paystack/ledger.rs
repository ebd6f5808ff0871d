//! Paystack transactions in seed 003's `payments` table (the columns Paystack knows; the
//! database defaults the rest), keyed by (source, reference), and order payment status steps
//! in `order_status_history` when the transaction's metadata names an `order_id`.
//!
//! Paystack promises no order either: a status only moves forward (failed → paid →
//! partially refunded → refunded), and within one status the newer event wins.

use serde_json::Value;

use crate::clock::Timestamp;
use crate::ledger::table::Column;
use crate::ledger::{
    Appended, Cell, ColumnType, CorruptRow, Currency, Decision, LedgerError, Money, RowChange,
    RowWrite, Table, WriteTimes,
};
use crate::sources::stripe::payments::ORDER_STATUS_HISTORY;

impl PaystackPayment {
    /// The status this report gives the row: a refund is full once the refunds known add up
    /// to the amount paid (the row's, whichever event brought it), else partial.
    fn status_on(&self, row: &[Cell]) -> Result<PaystackStatus, LedgerError> {
        let refunded = match row[position("amount_refunded_minor")?] {
            Cell::Integer(minor) => minor,
            _ => 0,
        };
        let counts_refunds = self.refunded.is_some() || self.status == PaystackStatus::Paid;
        if refunded <= 0 || !counts_refunds {
            return Ok(self.status);
        }
        let own_amount = self
            .amount
            .as_ref()
            .filter(|_| self.refunded.is_none())
            .map(|amount| amount.minor_units);
        let paid = match row[position("amount_minor")?] {
            Cell::Integer(paid) => Some(paid),
            _ => own_amount,
        };
        Ok(match paid {
            Some(paid) if paid > 0 && refunded >= paid => PaystackStatus::Refunded,
            _ => PaystackStatus::PartiallyRefunded,
        })
    }
}

/// Refuses a callback whose verified transaction is not the payment expected for its
/// reference: `expected_amount_minor` and `expected_currency`, which only the application
/// records (when it initialises the transaction) and no report from Paystack overwrites, so a
/// `charge.success` for less cannot make itself the expectation. Without one, nothing says
/// what the buyer should have paid, and a transaction the buyer initialised for less would
/// pass: that is refused too.
fn check_expected(current: Option<&[Cell]>, report: &PaystackPayment) -> Result<(), LedgerError> {
    let reference = &report.reference;
    let Some(row) = current else {
        return Err(LedgerError::Refused(format!(
            "no payment is expected for reference {reference:?}: record it when the \
             transaction is initialised (POST /api/payments/paystack/expected) before the \
             buyer returns"
        )));
    };
    let expected_minor = match row[position("expected_amount_minor")?] {
        Cell::Integer(minor) => Some(minor),
        _ => None,
    };
    let expected_currency = match &row[position("expected_currency")?] {
        Cell::Text(code) => Some(code.to_ascii_uppercase()),
        _ => None,
    };
    let (Some(expected_minor), Some(expected_currency)) = (expected_minor, expected_currency)
    else {
        return Err(LedgerError::Refused(format!(
            "no payment is expected for reference {reference:?}: its row has no expected \
             amount and currency (POST /api/payments/paystack/expected)"
        )));
    };
    let Some(verified) = &report.amount else {
        return Err(LedgerError::Refused(format!(
            "Paystack's verification of {reference:?} names no amount and currency"
        )));
    };
    if verified.minor_units != expected_minor || verified.currency.code() != expected_currency {
        return Err(LedgerError::Refused(format!(
            "Paystack verified {reference:?} for {} {} but {expected_minor} {expected_currency} \
             is expected",
            verified.minor_units,
            verified.currency.code()
        )));
    }
    Ok(())
}

/// Adds a refund to the row's `refunds` (by its reference, so a repeat counts once) and sets
/// the refunded total to their sum.
fn note_refund(
    row: &mut [Cell],
    reference: Option<&str>,
    refunded: &Money,
) -> Result<(), LedgerError> {
    let at = position("refunds")?;
    let mut refunds = match &row[at] {
        Cell::Json(text) | Cell::Text(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(LedgerError::Corrupt(CorruptRow {
                    table: PAYSTACK_PAYMENTS.name,
                    column: "refunds",
                }))
            }
        },
        _ => serde_json::Map::new(),
    };
    let key = reference.unwrap_or("(unreferenced)").to_owned();
    refunds.insert(key, Value::from(refunded.minor_units));
    let total: i64 = refunds
        .values()
        .filter_map(Value::as_i64)
        .fold(0, i64::saturating_add);
    row[at] = Cell::Json(Value::Object(refunds).to_string());
    row[position("amount_refunded_minor")?] = Cell::Integer(total);
    row[position("amount_refunded")?] = decimal(&Money {
        minor_units: total,
        currency: refunded.currency.clone(),
    });
    Ok(())
}

/// The `payments` columns a Paystack transaction fills.
pub static PAYSTACK_PAYMENTS: Table = Table {
    name: "payments",
    key: &["source", "gateway_transaction_id"],
    columns: &[
        Column::fixed("id", ColumnType::Uuid),
        Column::fixed("source", ColumnType::Text),
        Column::fixed("gateway_transaction_id", ColumnType::Text),
        Column::fixed("gateway", ColumnType::Text),
        Column::updatable("order_id", ColumnType::Text),
        Column::updatable("customer_email", ColumnType::Text),
        Column::updatable("payment_method", ColumnType::Text),
        Column::updatable("amount", ColumnType::Decimal),
        Column::updatable("amount_minor", ColumnType::Integer),
        Column::updatable("amount_refunded", ColumnType::Decimal),
        Column::updatable("amount_refunded_minor", ColumnType::Integer),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("payment_status", ColumnType::Text),
        Column::updatable("captured_at", ColumnType::Timestamp),
        Column::updatable("gateway_response", ColumnType::Json),
        Column::updatable("refunds", ColumnType::Json),
        Column::updatable("expected_amount_minor", ColumnType::Integer),
        Column::updatable("expected_currency", ColumnType::Text),
        Column::updatable("status_event_at", ColumnType::Timestamp),
        Column::updatable("last_event_id", ColumnType::Text),
        Column::updatable("last_event_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// Where a Paystack transaction stands, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PaystackStatus {
    /// Expected: the application initialised the transaction; nothing is paid yet.
    Pending,
    Failed,
    Paid,
    PartiallyRefunded,
    Refunded,
}

impl PaystackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "failed" => Self::Failed,
            "paid" => Self::Paid,
            "partially_refunded" => Self::PartiallyRefunded,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }
}

/// One transaction as an event (or the verify API) reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaystackPayment {
    pub reference: String,
    pub status: PaystackStatus,
    /// The amount in the currency's subunit (kobo, pesewas, cents), as Paystack sends it.
    pub amount: Option<Money>,
    pub refunded: Option<Money>,
    pub email: Option<String>,
    pub channel: Option<String>,
    pub order_id: Option<String>,
    pub paid_at: Option<Timestamp>,
    /// The transaction object as Paystack sent it.
    pub response: Option<String>,
    /// What reported it (`charge.success`, `callback`), and when.
    pub event: String,
    pub event_id: String,
    pub event_at: Timestamp,
    /// A refund report: its own reference (refunds of one payment are added up by it).
    pub refund_reference: Option<String>,
    /// Whether the report must match the payment already expected for its reference (the
    /// buyer's callback: its amount and currency, else it is refused).
    pub must_match_expected: bool,
    /// The application's expectation: its amount is recorded as the expected one.
    pub is_expectation: bool,
}

impl PaystackPayment {
    /// Reads `data` of a webhook or of the verify API's answer.
    pub fn from_transaction(
        data: &Value,
        status: PaystackStatus,
        event: &str,
        event_id: String,
        fallback_at: Timestamp,
    ) -> Option<Self> {
        let text = |pointer: &str| crate::sources::json::text(data, pointer);
        let reference = text("/reference").or_else(|| text("/transaction_reference"))?;
        let currency = text("/currency").and_then(|code| Currency::parse(&code).ok());
        let minor = |pointer: &str| data.pointer(pointer).and_then(Value::as_i64);
        let money = |units: Option<i64>| {
            currency
                .clone()
                .zip(units)
                .map(|(currency, minor_units)| Money {
                    minor_units,
                    currency,
                })
        };
        let paid_at = text("/paid_at")
            .or_else(|| text("/paidAt"))
            .and_then(|at| Timestamp::parse_rfc3339(&at));
        let event_at = text("/updated_at")
            .or_else(|| text("/created_at"))
            .and_then(|at| Timestamp::parse_rfc3339(&at))
            .or(paid_at)
            .unwrap_or(fallback_at);
        Some(Self {
            reference,
            status,
            amount: money(minor("/amount")),
            refunded: money(minor("/amount_refunded").or_else(|| {
                (event.starts_with("refund"))
                    .then(|| minor("/amount"))
                    .flatten()
            })),
            refund_reference: event
                .starts_with("refund")
                .then(|| text("/refund_reference").or_else(|| text("/id")))
                .flatten(),
            must_match_expected: false,
            is_expectation: false,
            email: text("/customer/email"),
            channel: text("/channel"),
            order_id: text("/metadata/order_id"),
            paid_at,
            response: Some(data.to_string()),
            event: event.to_owned(),
            event_id,
            event_at,
        })
    }
}

fn position(column: &'static str) -> Result<usize, LedgerError> {
    PAYSTACK_PAYMENTS
        .position(column)
        .ok_or(LedgerError::Corrupt(CorruptRow {
            table: PAYSTACK_PAYMENTS.name,
            column,
        }))
}

/// Sets a column: always when `overwrite`, else only where nothing is known yet.
fn fill(
    row: &mut [Cell],
    column: &'static str,
    cell: Cell,
    overwrite: bool,
) -> Result<(), LedgerError> {
    let at = position(column)?;
    if cell != Cell::Null && (overwrite || row[at] == Cell::Null) {
        row[at] = cell;
    }
    Ok(())
}

fn decimal(money: &Money) -> Cell {
    Cell::Decimal(money.to_decimal_string())
}

impl RowChange for PaystackPayment {
    fn table(&self) -> &'static Table {
        &PAYSTACK_PAYMENTS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.reference)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let created = current.is_none();
        let mut row = match current {
            Some(current) => current.to_vec(),
            None => {
                let mut row = vec![Cell::Null; PAYSTACK_PAYMENTS.columns.len()];
                row[position("id")?] = Cell::Uuid(uuid::Uuid::now_v7());
                row[position("source")?] = Cell::text(source);
                row[position("gateway_transaction_id")?] = Cell::text(&self.reference);
                row[position("gateway")?] = Cell::text("paystack");
                row[position("amount_refunded_minor")?] = Cell::Integer(0);
                row[position("created_at")?] = Cell::Timestamp(times.now);
                row
            }
        };
        if self.must_match_expected {
            check_expected(current, self)?;
        }
        if let Some(refunded) = &self.refunded {
            note_refund(&mut row, self.refund_reference.as_deref(), refunded)?;
        }
        let status = self.status_on(&row)?;
        let old_status = match &row[position("payment_status")?] {
            Cell::Text(text) => PaystackStatus::parse(text),
            _ => None,
        };
        let old_event_at = match &row[position("status_event_at")?] {
            Cell::Timestamp(at) => Some(*at),
            _ => None,
        };
        let takes_status = match (old_status, old_event_at) {
            (None, _) => true,
            (Some(old), _) if status > old => true,
            (Some(old), Some(at)) => status == old && self.event_at > at,
            (Some(_), None) => false,
        };
        fill(
            &mut row,
            "customer_email",
            Cell::opt_text(self.email.as_deref()),
            false,
        )?;
        fill(
            &mut row,
            "payment_method",
            Cell::opt_text(self.channel.as_deref()),
            false,
        )?;
        fill(
            &mut row,
            "order_id",
            Cell::opt_text(self.order_id.as_deref()),
            false,
        )?;
        if let Some(amount) = &self.amount {
            if !self.event.starts_with("refund") {
                fill(&mut row, "amount", decimal(amount), takes_status)?;
                let minor = Cell::Integer(amount.minor_units);
                fill(&mut row, "amount_minor", minor, takes_status)?;
                let currency = Cell::text(amount.currency.code());
                fill(&mut row, "currency", currency, takes_status)?;
            }
        }
        if let (true, Some(amount)) = (self.is_expectation, &self.amount) {
            row[position("expected_amount_minor")?] = Cell::Integer(amount.minor_units);
            row[position("expected_currency")?] = Cell::text(amount.currency.code());
        }
        let paid_at = self.paid_at.map_or(Cell::Null, Cell::Timestamp);
        fill(&mut row, "captured_at", paid_at, false)?;
        let mut appended = Vec::new();
        if takes_status {
            row[position("payment_status")?] = Cell::text(status.as_str());
            row[position("status_event_at")?] = Cell::Timestamp(self.event_at);
            row[position("gateway_response")?] =
                self.response.clone().map_or(Cell::Null, Cell::Json);
            if old_status != Some(status) {
                if let Some(order_id) = &self.order_id {
                    appended.push(Appended {
                        table: &ORDER_STATUS_HISTORY,
                        row: vec![
                            Cell::text(source),
                            Cell::text(order_id),
                            Cell::text(&self.reference),
                            old_status.map_or(Cell::Null, |s| Cell::text(s.as_str())),
                            Cell::text(status.as_str()),
                            Cell::text(&self.event_id),
                            Cell::text(&self.event),
                            Cell::Timestamp(self.event_at),
                            Cell::Timestamp(times.now),
                        ],
                    });
                }
            }
        }
        if !created && Some(&row[..]) == current {
            return Ok(RowWrite::Unchanged.into());
        }
        row[position("last_event_id")?] = Cell::text(&self.event_id);
        row[position("last_event_at")?] = Cell::Timestamp(self.event_at);
        row[position("updated_at")?] = Cell::Timestamp(times.now);
        Ok(Decision {
            row: if created {
                RowWrite::Insert(row)
            } else {
                RowWrite::Update(row)
            },
            appended,
        })
    }
}
