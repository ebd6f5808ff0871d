//! Applies ledger changes to the SQLite tables; the merge decisions come from [`crate::ledger`].

use rusqlite::{params, Connection, OptionalExtension, Row};
use thiserror::Error;

use crate::clock::Timestamp;
use crate::ledger::sale::{self, Sale, SaleMerge};
use crate::ledger::{Currency, IncompleteSale, LedgerChange, Money, SaleStatus};

#[derive(Debug, Error)]
pub(super) enum ApplyError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Incomplete(#[from] IncompleteSale),
    #[error("stored sale has an unreadable {0}")]
    Corrupt(&'static str),
}

pub(super) fn apply(
    conn: &Connection,
    change: &LedgerChange,
    received_at: Timestamp,
    now: Timestamp,
) -> Result<(), ApplyError> {
    match change {
        LedgerChange::Sale(upsert) => {
            let current = load_sale(conn, &upsert.cartpanda_id)?;
            match sale::merge(current.as_ref().map(|(_, sale)| sale), upsert)? {
                SaleMerge::Insert(sale) => insert_sale(conn, &sale, received_at, now)?,
                SaleMerge::Update(sale) => {
                    let row_id = current.map(|(id, _)| id).unwrap_or_default();
                    update_sale(conn, &row_id, &sale, now)?;
                }
                SaleMerge::Unchanged => {}
            }
            Ok(())
        }
    }
}

fn load_sale(conn: &Connection, cartpanda_id: &str) -> Result<Option<(String, Sale)>, ApplyError> {
    let row = conn
        .prepare_cached(
            "SELECT id, cartpanda_id, customer_email, customer_name, product_name, product_id, \
             price_minor, currency, status, affiliate_code, affiliate_name, commission_minor, \
             payment_method, transaction_id, metadata, status_event_at \
             FROM sales WHERE cartpanda_id = ?1",
        )?
        .query_row([cartpanda_id], read_sale_row)
        .optional()?;
    row.map(|raw| raw.into_sale()).transpose()
}

/// A sales row as read, before its text columns are checked.
struct RawSale {
    id: String,
    sale: Sale,
    currency: String,
    status: String,
    price_minor: i64,
    commission_minor: Option<i64>,
}

fn read_sale_row(row: &Row<'_>) -> rusqlite::Result<RawSale> {
    let placeholder = Money {
        minor_units: 0,
        currency: Currency::brl(),
    };
    Ok(RawSale {
        id: row.get(0)?,
        sale: Sale {
            cartpanda_id: row.get(1)?,
            customer_email: row.get(2)?,
            customer_name: row.get(3)?,
            product_name: row.get(4)?,
            product_id: row.get(5)?,
            price: placeholder,
            status: SaleStatus::Pending,
            affiliate_code: row.get(9)?,
            affiliate_name: row.get(10)?,
            commission: None,
            payment_method: row.get(12)?,
            transaction_id: row.get(13)?,
            metadata: row.get(14)?,
            status_event_at: row.get::<_, Option<i64>>(15)?.map(Timestamp),
        },
        price_minor: row.get(6)?,
        currency: row
            .get::<_, Option<String>>(7)?
            .unwrap_or_else(|| "BRL".into()),
        status: row.get(8)?,
        commission_minor: row.get(11)?,
    })
}

impl RawSale {
    fn into_sale(self) -> Result<(String, Sale), ApplyError> {
        let currency =
            Currency::parse(&self.currency).map_err(|_| ApplyError::Corrupt("currency"))?;
        let mut sale = self.sale;
        sale.status = SaleStatus::parse(&self.status).ok_or(ApplyError::Corrupt("status"))?;
        sale.price = Money {
            minor_units: self.price_minor,
            currency: currency.clone(),
        };
        sale.commission = self.commission_minor.map(|minor_units| Money {
            minor_units,
            currency,
        });
        Ok((self.id, sale))
    }
}

fn insert_sale(
    conn: &Connection,
    sale: &Sale,
    received_at: Timestamp,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let now_text = now.to_rfc3339();
    conn.prepare_cached(
        "INSERT INTO sales (id, cartpanda_id, customer_email, customer_name, product_name, \
         product_id, price, currency, status, affiliate_code, affiliate_name, commission_value, \
         payment_method, transaction_id, webhook_received_at, metadata, created_at, updated_at, \
         price_minor, commission_minor, status_event_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17, \
         ?18, ?19, ?20)",
    )?
    .execute(params![
        // Time-ordered (v7) so inserts append to the primary-key index instead of
        // dirtying a random page per sale.
        uuid::Uuid::now_v7().to_string(),
        sale.cartpanda_id,
        sale.customer_email,
        sale.customer_name,
        sale.product_name,
        sale.product_id,
        sale.price.to_decimal_string(),
        sale.price.currency.code(),
        sale.status.as_str(),
        sale.affiliate_code,
        sale.affiliate_name,
        sale.commission.as_ref().map(Money::to_decimal_string),
        sale.payment_method,
        sale.transaction_id,
        received_at.to_rfc3339(),
        sale.metadata,
        now_text,
        sale.price.minor_units,
        sale.commission.as_ref().map(|money| money.minor_units),
        sale.status_event_at.map(Timestamp::micros),
    ])?;
    Ok(())
}

fn update_sale(
    conn: &Connection,
    row_id: &str,
    sale: &Sale,
    now: Timestamp,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE sales SET customer_email = ?2, customer_name = ?3, product_name = ?4, \
         product_id = ?5, price = ?6, currency = ?7, status = ?8, affiliate_code = ?9, \
         affiliate_name = ?10, commission_value = ?11, payment_method = ?12, \
         transaction_id = ?13, metadata = ?14, updated_at = ?15, price_minor = ?16, \
         commission_minor = ?17, status_event_at = ?18 WHERE id = ?1",
    )?
    .execute(params![
        row_id,
        sale.customer_email,
        sale.customer_name,
        sale.product_name,
        sale.product_id,
        sale.price.to_decimal_string(),
        sale.price.currency.code(),
        sale.status.as_str(),
        sale.affiliate_code,
        sale.affiliate_name,
        sale.commission.as_ref().map(Money::to_decimal_string),
        sale.payment_method,
        sale.transaction_id,
        sale.metadata,
        now.to_rfc3339(),
        sale.price.minor_units,
        sale.commission.as_ref().map(|money| money.minor_units),
        sale.status_event_at.map(Timestamp::micros),
    ])?;
    Ok(())
}
