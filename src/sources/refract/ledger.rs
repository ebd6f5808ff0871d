//! Refract orders in the ledger: seed 001's `orders` table, upserted by (source, order number),
//! and `order_events`, one row per field a delivery changed. A later message updates only the
//! fields it carries (the seed's "Test 3"); a replay changes nothing and records nothing.

use crate::clock::Timestamp;
use crate::journal::DeliveryId;
use crate::ledger::table::Column;
use crate::ledger::{
    Appended, Cell, ColumnType, CorruptRow, Decision, LedgerError, RowChange, RowWrite, Table,
    WriteTimes,
};

use super::message::{OrderField, OrderStatus, Price, RefractOrder};

/// Seed 001's `orders`, keyed by (source, order_number). The integer `id` is the database's.
pub static ORDERS: Table = Table {
    name: "orders",
    key: &["source", "order_number"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("order_number", ColumnType::Text),
        Column::updatable("status", ColumnType::Text),
        Column::updatable("store", ColumnType::Text),
        Column::updatable("product", ColumnType::Text),
        Column::updatable("sku", ColumnType::Text),
        Column::updatable("size", ColumnType::Text),
        Column::updatable("price", ColumnType::Decimal),
        Column::updatable("quantity", ColumnType::Integer),
        Column::updatable("total", ColumnType::Decimal),
        Column::updatable("commission", ColumnType::Decimal),
        Column::updatable("currency", ColumnType::Text),
        Column::updatable("email", ColumnType::Text),
        Column::updatable("customer_name", ColumnType::Text),
        Column::updatable("profile", ColumnType::Text),
        Column::updatable("proxy_list", ColumnType::Text),
        Column::updatable("share_link", ColumnType::Text),
        Column::updatable("tracking_number", ColumnType::Text),
        Column::updatable("reference_number", ColumnType::Text),
        Column::updatable("payment_method", ColumnType::Text),
        Column::updatable("shipping_address", ColumnType::Text),
        Column::updatable("shipping_method", ColumnType::Text),
        Column::updatable("notes", ColumnType::Text),
        Column::updatable("mode", ColumnType::Text),
        Column::updatable("checkout_time", ColumnType::Text),
        Column::updatable("image_url", ColumnType::Text),
        Column::updatable("extra", ColumnType::Json),
        Column::fixed("order_date", ColumnType::Timestamp),
        Column::fixed("order_time", ColumnType::Text),
        Column::updatable("shipped_date", ColumnType::Timestamp),
        Column::updatable("delivered_date", ColumnType::Timestamp),
        Column::updatable("last_delivery_id", ColumnType::Integer),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// One row per (delivery, field) that changed; `order_id` is filled in by the database.
pub static ORDER_EVENTS: Table = Table {
    name: "order_events",
    key: &["source", "delivery_id", "field"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("order_number", ColumnType::Text),
        Column::fixed("delivery_id", ColumnType::Integer),
        Column::fixed("field", ColumnType::Text),
        Column::fixed("old_value", ColumnType::Text),
        Column::fixed("new_value", ColumnType::Text),
        Column::fixed("created_at", ColumnType::Timestamp),
    ],
};

/// Create or update one order from one message.
#[derive(Debug, Clone)]
pub struct OrderUpsert {
    pub order: RefractOrder,
    pub delivery: DeliveryId,
}

impl RowChange for OrderUpsert {
    fn table(&self) -> &'static Table {
        &ORDERS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.order.order_number)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let (mut row, created) = match current {
            Some(current) => (current.to_vec(), false),
            None => (self.new_row(source, times), true),
        };
        let mut appended = Vec::new();
        for (column, cell) in self.carried_cells(created) {
            let at = position(column)?;
            if !created && same(&row[at], &cell) {
                continue;
            }
            let old = if created { None } else { cell_text(&row[at]) };
            if let Some(new) = cell_text(&cell) {
                appended.push(self.event(source, column, old, new, times.now));
            }
            row[at] = cell;
        }
        if !created && appended.is_empty() {
            return Ok(RowWrite::Unchanged.into());
        }
        self.stamp_lifecycle(&mut row, times)?;
        row[position("last_delivery_id")?] = Cell::Integer(self.delivery.0);
        row[position("updated_at")?] = Cell::Timestamp(times.now);
        let write = if created {
            RowWrite::Insert(row)
        } else {
            RowWrite::Update(row)
        };
        Ok(Decision {
            row: write,
            appended,
        })
    }
}

impl OrderUpsert {
    /// A new order: every column empty but its identity, dates and seed 001's defaults
    /// (quantity 1, total = price × quantity).
    fn new_row(&self, source: &str, times: WriteTimes) -> Vec<Cell> {
        let mut row = vec![Cell::Null; ORDERS.columns.len()];
        let mut set = |column: &str, cell: Cell| {
            if let Some(at) = ORDERS.position(column) {
                row[at] = cell;
            }
        };
        set("source", Cell::text(source));
        set("order_number", Cell::text(&self.order.order_number));
        set("status", Cell::text(self.order.status.as_str()));
        set(
            "quantity",
            Cell::Integer(i64::from(self.order.quantity_or_default())),
        );
        if let Some(total) = self.order.total_or_price() {
            set("total", decimal(&total));
        }
        if let Some(currency) = self.currency() {
            set("currency", Cell::text(currency));
        }
        set("order_date", Cell::Timestamp(times.received_at));
        set(
            "order_time",
            Cell::text(
                times
                    .received_at
                    .to_datetime()
                    .format("%H:%M:%S")
                    .to_string(),
            ),
        );
        set("created_at", Cell::Timestamp(times.now));
        set("updated_at", Cell::Timestamp(times.now));
        row
    }

    /// The columns this message sets, as cells. A new order also takes the defaults it was
    /// created with as changes (so its first events say what it started as).
    fn carried_cells(&self, created: bool) -> Vec<(&'static str, Cell)> {
        let order = &self.order;
        let mut cells: Vec<(&'static str, Cell)> = order
            .fields_present()
            .into_iter()
            .filter(|field| *field != OrderField::OrderNumber)
            .filter_map(|field| {
                let cell = match field {
                    OrderField::Price => decimal(order.price.as_ref()?),
                    OrderField::Total => decimal(order.total.as_ref()?),
                    OrderField::Commission => decimal(order.commission.as_ref()?),
                    OrderField::Quantity => Cell::Integer(i64::from(order.quantity?)),
                    other => Cell::text(order.value_of(other)?),
                };
                Some((field.column(), cell))
            })
            .collect();
        if created && order.status_origin == super::message::StatusOrigin::Default {
            cells.push(("status", Cell::text(order.status.as_str())));
        }
        if let Some(currency) = self.currency() {
            cells.push(("currency", Cell::text(currency)));
        }
        if !order.extra.is_empty() {
            let extra: serde_json::Map<String, serde_json::Value> = order
                .extra
                .iter()
                .map(|(label, value)| (label.clone(), serde_json::Value::from(value.as_str())))
                .collect();
            cells.push((
                "extra",
                Cell::Json(serde_json::Value::Object(extra).to_string()),
            ));
        }
        cells
    }

    /// The currency of the first amount that names one.
    fn currency(&self) -> Option<&str> {
        [&self.order.price, &self.order.total, &self.order.commission]
            .into_iter()
            .flatten()
            .find_map(|price| price.currency.as_ref())
            .map(|currency| currency.code())
    }

    /// Seed 001's `shipped_date` and `delivered_date`: when the order first reached them.
    fn stamp_lifecycle(&self, row: &mut [Cell], times: WriteTimes) -> Result<(), LedgerError> {
        let date_column = match self.order.status {
            OrderStatus::Shipped => "shipped_date",
            OrderStatus::Delivered => "delivered_date",
            _ => return Ok(()),
        };
        let at = position(date_column)?;
        if row[at] == Cell::Null {
            row[at] = Cell::Timestamp(times.received_at);
        }
        Ok(())
    }

    fn event(
        &self,
        source: &str,
        field: &str,
        old: Option<String>,
        new: String,
        now: Timestamp,
    ) -> Appended {
        Appended {
            table: &ORDER_EVENTS,
            row: vec![
                Cell::text(source),
                Cell::text(&self.order.order_number),
                Cell::Integer(self.delivery.0),
                Cell::text(field),
                old.map_or(Cell::Null, Cell::Text),
                Cell::Text(new),
                Cell::Timestamp(now),
            ],
        }
    }
}

/// An amount as the `Decimal` column holds it; a price that is not one amount (`Free`) is kept
/// as nothing rather than as text a numeric column cannot hold.
fn decimal(price: &Price) -> Cell {
    price
        .amount
        .as_ref()
        .map_or(Cell::Null, |amount| Cell::Decimal(amount.clone()))
}

fn position(column: &'static str) -> Result<usize, LedgerError> {
    ORDERS
        .position(column)
        .ok_or(LedgerError::Corrupt(CorruptRow {
            table: ORDERS.name,
            column,
        }))
}

/// Whether a stored cell already holds a new value. Decimals compare by value: SQLite's numeric
/// affinity gives `100.00` back as `100`.
fn same(stored: &Cell, new: &Cell) -> bool {
    match (stored, new) {
        (Cell::Decimal(a), Cell::Decimal(b)) => canonical_decimal(a) == canonical_decimal(b),
        _ => stored == new,
    }
}

fn canonical_decimal(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A cell as `order_events` records it.
fn cell_text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Text(text) | Cell::Decimal(text) | Cell::Json(text) => Some(text.clone()),
        Cell::Integer(value) => Some(value.to_string()),
        Cell::Timestamp(at) => Some(at.to_rfc3339()),
        Cell::Uuid(id) => Some(id.to_string()),
    }
}
