//! Seed 002's collections as ledger tables, and [`PancakeChange`], which writes one
//! [`CollectionChange`]: the document is created when absent, and otherwise its top-level keys
//! are merged into the stored one, only when the change's guard is newer than the stored guard.
//! A POS order's status step is appended to `pc_pos_order_status_history` once, even when the
//! document write is stale. No SQL: each backend's ledger store renders these tables.
//!
//! Rows are keyed by (source, page or shop, object id), except POS products, customers and
//! variations: their ids are UUIDs, and Pancake POS posts them bare without a shop, so they are
//! keyed by (source, object id) and their `shop_id` is filled in when a delivery names it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    decide, ChangeOp, CollectionChange, Decision as GuardDecision, Guard, PosOrderStatus,
    StockLevel, FB_CONVERSATION, FB_CUSTOMER, FB_MESSAGE, PC_ORDER, PC_POS_CUSTOMER, PC_POS_ORDER,
    PC_POS_PRODUCT, PC_POS_VARIATION,
};
use crate::clock::Timestamp;
use crate::ledger::table::{Column, RowReader};
use crate::ledger::{
    Appended, Cell, ColumnType as T, CorruptRow, Decision, LedgerError, RowChange, RowWrite, Table,
    WriteTimes,
};
use crate::sources::NormalizeError;

/// Every collection's row id (time-ordered, v7), source and document, and when the row was
/// created and last changed.
const ID: Column = Column::fixed("id", T::Uuid);
const SOURCE: Column = Column::fixed("source", T::Text);
const DOCUMENT: Column = Column::updatable("document", T::Json);
const CREATED_AT: Column = Column::fixed("created_at", T::Timestamp);
const UPDATED_AT: Column = Column::updatable("updated_at", T::Timestamp);

/// `fb_conversation`: a Facebook (or Zalo, Instagram…) conversation of a page, ordered by its
/// `version`, which only grows.
pub static FB_CONVERSATION_TABLE: Table = Table {
    name: FB_CONVERSATION,
    key: &["source", "page_id", "conversation_id"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("page_id", T::Text),
        Column::fixed("conversation_id", T::Text),
        DOCUMENT,
        Column::updatable("version", T::Integer),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `fb_message`: one message or comment, with its conversation's id.
pub static FB_MESSAGE_TABLE: Table = Table {
    name: FB_MESSAGE,
    key: &["source", "page_id", "message_id"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("page_id", T::Text),
        Column::fixed("message_id", T::Text),
        Column::updatable("conversation_id", T::Text),
        DOCUMENT,
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `fb_customer`: a page's customer.
pub static FB_CUSTOMER_TABLE: Table = Table {
    name: FB_CUSTOMER,
    key: &["source", "page_id", "customer_id"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("page_id", T::Text),
        Column::fixed("customer_id", T::Text),
        DOCUMENT,
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_order`: an order a page created (Pancake's own orders, not POS's).
pub static PC_ORDER_TABLE: Table = Table {
    name: PC_ORDER,
    key: &["source", "page_id", "order_id"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("page_id", T::Text),
        Column::fixed("order_id", T::Text),
        DOCUMENT,
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_pos_order`: a POS order, whose id counts per shop. `status_code` and `status` (the
/// English name of the code) and `total_price` (as sent, in the shop currency's unit) are read
/// from the stored document; `status_steps` lists the steps of the status history, so that a
/// late step is placed without reading the history table.
pub static PC_POS_ORDER_TABLE: Table = Table {
    name: PC_POS_ORDER,
    key: &["source", "shop_id", "order_id"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("shop_id", T::Text),
        Column::fixed("order_id", T::Text),
        Column::updatable("status_code", T::Integer),
        Column::updatable("status", T::Text),
        Column::updatable("total_price", T::Integer),
        DOCUMENT,
        Column::updatable("pos_updated_at", T::Timestamp),
        Column::updatable("status_steps", T::Json),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_pos_product`.
pub static PC_POS_PRODUCT_TABLE: Table = Table {
    name: PC_POS_PRODUCT,
    key: &["source", "product_id"],
    columns: &[
        ID,
        SOURCE,
        Column::updatable("shop_id", T::Text),
        Column::fixed("product_id", T::Text),
        DOCUMENT,
        Column::updatable("pos_updated_at", T::Timestamp),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_pos_customer`.
pub static PC_POS_CUSTOMER_TABLE: Table = Table {
    name: PC_POS_CUSTOMER,
    key: &["source", "customer_id"],
    columns: &[
        ID,
        SOURCE,
        Column::updatable("shop_id", T::Text),
        Column::fixed("customer_id", T::Text),
        DOCUMENT,
        Column::updatable("pos_updated_at", T::Timestamp),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_pos_variation`: a product variation and its stock. `warehouse_stock` maps each warehouse
/// to its `remain_quantity` (what can still be sold); `remain_quantity` is the all-warehouse
/// level when a delivery gives one, else the sum of the warehouses known.
pub static PC_POS_VARIATION_TABLE: Table = Table {
    name: PC_POS_VARIATION,
    key: &["source", "variation_id"],
    columns: &[
        ID,
        SOURCE,
        Column::updatable("shop_id", T::Text),
        Column::fixed("variation_id", T::Text),
        Column::updatable("remain_quantity", T::Integer),
        Column::updatable("warehouse_stock", T::Json),
        DOCUMENT,
        Column::updatable("pos_updated_at", T::Timestamp),
        CREATED_AT,
        UPDATED_AT,
    ],
};

/// `pc_pos_order_status_history`: one row per status an order took, at the time it took it;
/// never updated. A step already recorded is skipped, so a replay appends nothing.
pub static PC_POS_ORDER_STATUS_HISTORY: Table = Table {
    name: "pc_pos_order_status_history",
    key: &["source", "shop_id", "order_id", "changed_at", "status_code"],
    columns: &[
        ID,
        SOURCE,
        Column::fixed("shop_id", T::Text),
        Column::fixed("order_id", T::Text),
        Column::fixed("status_code", T::Integer),
        Column::fixed("status", T::Text),
        Column::fixed("changed_at", T::Timestamp),
        Column::fixed("created_at", T::Timestamp),
    ],
};

/// Pancake's tables, and Pancake POS's.
pub static PANCAKE_TABLES: [&Table; 4] = [
    &FB_CONVERSATION_TABLE,
    &FB_MESSAGE_TABLE,
    &FB_CUSTOMER_TABLE,
    &PC_ORDER_TABLE,
];
pub static POS_TABLES: [&Table; 5] = [
    &PC_POS_ORDER_TABLE,
    &PC_POS_ORDER_STATUS_HISTORY,
    &PC_POS_PRODUCT_TABLE,
    &PC_POS_CUSTOMER_TABLE,
    &PC_POS_VARIATION_TABLE,
];

/// Where a collection lives and which of its columns name the owner and the object.
#[derive(Debug)]
pub struct Collection {
    pub table: &'static Table,
    /// `page_id` or `shop_id`.
    pub owner: &'static str,
    /// The object's id column, e.g. `conversation_id`.
    pub id: &'static str,
}

impl Collection {
    /// Whether the owner is part of the key (and so must be known).
    pub fn keyed_by_owner(&self) -> bool {
        self.table.key.contains(&self.owner)
    }
}

/// Seed 002's collections, by name.
pub static COLLECTIONS: [Collection; 8] = [
    Collection {
        table: &FB_CONVERSATION_TABLE,
        owner: "page_id",
        id: "conversation_id",
    },
    Collection {
        table: &FB_MESSAGE_TABLE,
        owner: "page_id",
        id: "message_id",
    },
    Collection {
        table: &FB_CUSTOMER_TABLE,
        owner: "page_id",
        id: "customer_id",
    },
    Collection {
        table: &PC_ORDER_TABLE,
        owner: "page_id",
        id: "order_id",
    },
    Collection {
        table: &PC_POS_ORDER_TABLE,
        owner: "shop_id",
        id: "order_id",
    },
    Collection {
        table: &PC_POS_PRODUCT_TABLE,
        owner: "shop_id",
        id: "product_id",
    },
    Collection {
        table: &PC_POS_CUSTOMER_TABLE,
        owner: "shop_id",
        id: "customer_id",
    },
    Collection {
        table: &PC_POS_VARIATION_TABLE,
        owner: "shop_id",
        id: "variation_id",
    },
];

/// The collection named `name` (one of the `FB_*`/`PC_*` constants).
pub fn collection(name: &str) -> Option<&'static Collection> {
    COLLECTIONS
        .iter()
        .find(|collection| collection.table.name == name)
}

/// One [`CollectionChange`] as a ledger change.
#[derive(Debug, Clone)]
pub struct PancakeChange {
    collection: &'static Collection,
    change: CollectionChange,
}

impl PancakeChange {
    /// Refuses a change the ledger could not key: an unknown collection, or no owner where the
    /// owner is part of the key (the parser never makes either).
    pub fn new(change: CollectionChange) -> Result<Self, NormalizeError> {
        let collection = collection(change.collection).ok_or_else(|| {
            NormalizeError::Invalid(format!("no ledger table for {}", change.collection))
        })?;
        if collection.keyed_by_owner() && change.owner.is_none() {
            return Err(NormalizeError::Invalid(format!(
                "a {} change must name its {}",
                change.collection, collection.owner
            )));
        }
        if let Some(Guard::Version(version)) = change.guard {
            if i64::try_from(version).is_err() {
                return Err(NormalizeError::Invalid(format!(
                    "version {version} is beyond the ledger's BIGINT"
                )));
            }
        }
        Ok(Self { collection, change })
    }

    pub fn change(&self) -> &CollectionChange {
        &self.change
    }
}

impl RowChange for PancakeChange {
    fn table(&self) -> &'static Table {
        self.collection.table
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        self.collection
            .table
            .key
            .iter()
            .map(|&column| match column {
                "source" => Cell::text(source),
                name if name == self.collection.owner => {
                    Cell::opt_text(self.change.owner.as_deref())
                }
                _ => Cell::text(&self.change.id),
            })
            .collect()
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let stored = current
            .map(|cells| Stored::read(self.collection, cells))
            .transpose()?;
        let mut next = stored.clone().unwrap_or_else(|| Stored::new(times.now));
        let applies = stored.is_none()
            || decide(
                self.change.guard.as_ref(),
                stored.as_ref().and_then(|stored| stored.guard.as_ref()),
            ) == GuardDecision::Apply;
        if applies {
            next.apply(&self.change);
        }
        let mut appended = Vec::new();
        if let ChangeOp::StatusHistory { status, at } = &self.change.op {
            let at = at.unwrap_or(times.received_at);
            if next.add_step(Step {
                at,
                status: status.code(),
            }) {
                appended.push(Appended {
                    table: &PC_POS_ORDER_STATUS_HISTORY,
                    row: self.history_row(source, *status, at, times.now),
                });
            }
        }
        let row = match &stored {
            None => RowWrite::Insert(next.to_row(self, source, times.now)),
            Some(stored) if *stored == next => RowWrite::Unchanged,
            Some(_) => RowWrite::Update(next.to_row(self, source, times.now)),
        };
        Ok(Decision { row, appended })
    }
}

impl PancakeChange {
    fn history_row(
        &self,
        source: &str,
        status: PosOrderStatus,
        at: Timestamp,
        now: Timestamp,
    ) -> Vec<Cell> {
        vec![
            Cell::Uuid(uuid::Uuid::now_v7()),
            Cell::text(source),
            Cell::opt_text(self.change.owner.as_deref()),
            Cell::text(&self.change.id),
            Cell::Integer(status.code()),
            Cell::text(status.name()),
            Cell::Timestamp(at),
            Cell::Timestamp(now),
        ]
    }
}

/// A step of an order's status history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    at: Timestamp,
    status: i64,
}

/// A row as the merge rule reads it; `updated_at` is left out, so that a change adding nothing
/// compares equal and writes nothing.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    id: uuid::Uuid,
    owner: Option<String>,
    document: Value,
    guard: Option<Guard>,
    /// Oldest first.
    steps: Vec<Step>,
    total_stock: Option<i64>,
    warehouse_stock: BTreeMap<String, i64>,
    created_at: Timestamp,
}

impl Stored {
    fn new(now: Timestamp) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            owner: None,
            document: Value::Object(Map::new()),
            guard: None,
            steps: Vec::new(),
            total_stock: None,
            warehouse_stock: BTreeMap::new(),
            created_at: now,
        }
    }

    fn read(collection: &'static Collection, cells: &[Cell]) -> Result<Self, CorruptRow> {
        let table = collection.table;
        let row = RowReader::new(table, cells);
        let corrupt = |column| CorruptRow {
            table: table.name,
            column,
        };
        let has = |column: &str| table.position(column).is_some();
        let id = match table.position("id").and_then(|at| cells.get(at)) {
            Some(Cell::Uuid(id)) => *id,
            _ => return Err(corrupt("id")),
        };
        let json = |column: &'static str| -> Result<Option<Value>, CorruptRow> {
            if !has(column) {
                return Ok(None);
            }
            row.opt_text(column)?
                .map(|text| serde_json::from_str(&text).map_err(|_| corrupt(column)))
                .transpose()
        };
        let document = json("document")?.unwrap_or_else(|| Value::Object(Map::new()));
        let version = if has("version") {
            row.opt_integer("version")?
        } else {
            None
        };
        let pos_updated_at = if has("pos_updated_at") {
            row.opt_timestamp("pos_updated_at")?
        } else {
            None
        };
        let guard = match (version, pos_updated_at) {
            (Some(version), _) => Some(Guard::Version(
                u64::try_from(version).map_err(|_| corrupt("version"))?,
            )),
            (None, Some(at)) => Some(Guard::UpdatedAt(at)),
            (None, None) => None,
        };
        let steps = match json("status_steps")? {
            None => Vec::new(),
            Some(value) => read_steps(&value).ok_or(corrupt("status_steps"))?,
        };
        let warehouse_stock = match json("warehouse_stock")? {
            None => BTreeMap::new(),
            Some(value) => read_stock(&value).ok_or(corrupt("warehouse_stock"))?,
        };
        let total_stock = if has("remain_quantity") {
            row.opt_integer("remain_quantity")?
        } else {
            None
        };
        Ok(Self {
            id,
            owner: row.opt_text(collection.owner)?,
            document,
            guard,
            steps,
            total_stock,
            warehouse_stock,
            created_at: row
                .opt_timestamp("created_at")?
                .ok_or(corrupt("created_at"))?,
        })
    }

    /// The change's document merged in (top-level keys, the change's winning), its guard, its
    /// owner when it names one, its stock levels.
    fn apply(&mut self, change: &CollectionChange) {
        match (&mut self.document, &change.document) {
            (Value::Object(stored), Value::Object(incoming)) => {
                for (key, value) in incoming {
                    stored.insert(key.clone(), value.clone());
                }
            }
            (stored, incoming) => *stored = incoming.clone(),
        }
        if change.guard.is_some() {
            self.guard = change.guard;
        }
        if change.owner.is_some() {
            self.owner.clone_from(&change.owner);
        }
        if let ChangeOp::StockChange { levels } = &change.op {
            self.set_stock(levels);
        }
    }

    fn set_stock(&mut self, levels: &[StockLevel]) {
        let mut total = None;
        for level in levels {
            match &level.warehouse_id {
                None => total = Some(level.remain_quantity),
                Some(warehouse) => {
                    self.warehouse_stock
                        .insert(warehouse.clone(), level.remain_quantity);
                }
            }
        }
        self.total_stock = match total {
            Some(total) => Some(total),
            None if levels.is_empty() => self.total_stock,
            None => Some(
                self.warehouse_stock
                    .values()
                    .fold(0i64, |sum, quantity| sum.saturating_add(*quantity)),
            ),
        };
    }

    /// Records `step` unless the history holds it already or the step just before it has the
    /// same status (a bare order is posted on every update, not only on a status change).
    /// Returns whether it was added.
    fn add_step(&mut self, step: Step) -> bool {
        if self.steps.contains(&step) {
            return false;
        }
        let after = self.steps.partition_point(|stored| stored.at <= step.at);
        if after > 0 && self.steps[after - 1].status == step.status {
            return false;
        }
        self.steps.insert(after, step);
        true
    }

    /// The full row, in `table.columns` order.
    fn to_row(&self, change: &PancakeChange, source: &str, now: Timestamp) -> Vec<Cell> {
        change
            .collection
            .table
            .columns
            .iter()
            .map(|column| {
                self.cell(change, column.name, source, now)
                    .unwrap_or(Cell::Null)
            })
            .collect()
    }

    /// The value of one column; `None` for a column no collection has.
    fn cell(
        &self,
        change: &PancakeChange,
        column: &str,
        source: &str,
        now: Timestamp,
    ) -> Option<Cell> {
        let collection = change.collection;
        let integer = |value: Option<i64>| value.map_or(Cell::Null, Cell::Integer);
        Some(match column {
            name if name == collection.id => Cell::text(&change.change.id),
            name if name == collection.owner => Cell::opt_text(self.owner.as_deref()),
            "id" => Cell::Uuid(self.id),
            "source" => Cell::text(source),
            "document" => Cell::Json(self.document.to_string()),
            "version" => integer(match self.guard {
                // Checked in `PancakeChange::new`, or read back from a BIGINT.
                Some(Guard::Version(version)) => i64::try_from(version).ok(),
                _ => None,
            }),
            "pos_updated_at" => match self.guard {
                Some(Guard::UpdatedAt(at)) => Cell::Timestamp(at),
                _ => Cell::Null,
            },
            "status_code" => integer(self.document_integer("status")),
            "status" => self.document_integer("status").map_or(Cell::Null, |code| {
                Cell::text(PosOrderStatus::from_code(code).name())
            }),
            "total_price" => integer(self.document_integer("total_price")),
            "status_steps" => Cell::Json(steps_json(&self.steps).to_string()),
            "remain_quantity" => integer(self.total_stock),
            "warehouse_stock" if self.warehouse_stock.is_empty() => Cell::Null,
            "warehouse_stock" => Cell::Json(stock_json(&self.warehouse_stock).to_string()),
            "conversation_id" => self
                .document_text("conversation_id")
                .map_or(Cell::Null, Cell::Text),
            "created_at" => Cell::Timestamp(self.created_at),
            "updated_at" => Cell::Timestamp(now),
            _ => return None,
        })
    }

    /// A whole number at the document's top level: a JSON integer or a string of digits.
    fn document_integer(&self, key: &str) -> Option<i64> {
        match self.document.get(key)? {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn document_text(&self, key: &str) -> Option<String> {
        match self.document.get(key)? {
            Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }
}

/// `[{"at": "2024-11-15T07:44:17.123456Z", "status": 2}, …]`, oldest first.
fn steps_json(steps: &[Step]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|step| {
                let mut object = Map::new();
                object.insert("at".to_owned(), Value::from(step.at.to_rfc3339()));
                object.insert("status".to_owned(), Value::from(step.status));
                Value::Object(object)
            })
            .collect(),
    )
}

fn read_steps(value: &Value) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for step in value.as_array()? {
        steps.push(Step {
            at: Timestamp::parse_rfc3339(step.get("at")?.as_str()?)?,
            status: step.get("status")?.as_i64()?,
        });
    }
    steps.sort_by_key(|step| step.at);
    Some(steps)
}

fn stock_json(stock: &BTreeMap<String, i64>) -> Value {
    Value::Object(
        stock
            .iter()
            .map(|(warehouse, quantity)| (warehouse.clone(), Value::from(*quantity)))
            .collect(),
    )
}

fn read_stock(value: &Value) -> Option<BTreeMap<String, i64>> {
    value
        .as_object()?
        .iter()
        .map(|(warehouse, quantity)| Some((warehouse.clone(), quantity.as_i64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sources::pancake::{parse_pancake, parse_pos, PosKind};

    const SOURCE: &str = "pancake-pos";

    fn times(seconds: i64) -> WriteTimes {
        WriteTimes {
            received_at: Timestamp::from_unix_seconds(seconds),
            now: Timestamp::from_unix_seconds(seconds + 1),
        }
    }

    fn pos_change(body: &str, kind: Option<PosKind>) -> PancakeChange {
        let event = parse_pos(body.as_bytes(), kind).expect("a POS body");
        PancakeChange::new(event.effect.changes()[0].clone()).expect("a ledger change")
    }

    fn order(status: i64, updated_at: &str, note: &str) -> PancakeChange {
        let body = json!({"id": 1234, "shop_id": 26290, "status": status,
                          "updated_at": updated_at, "note": note, "total_price": 280000});
        pos_change(&body.to_string(), Some(PosKind::Orders))
    }

    /// Applies `change` to `row` as a ledger store would; returns the row after and the
    /// history rows appended.
    fn apply(
        change: &PancakeChange,
        row: Option<Vec<Cell>>,
        at: i64,
    ) -> (Option<Vec<Cell>>, Vec<Vec<Cell>>, &'static str) {
        let decision = change
            .decide(SOURCE, row.as_deref(), times(at))
            .expect("decided");
        let history = decision.appended.into_iter().map(|a| a.row).collect();
        match decision.row {
            RowWrite::Insert(new) => (Some(new), history, "insert"),
            RowWrite::Update(new) => (Some(new), history, "update"),
            RowWrite::Unchanged => (row, history, "unchanged"),
        }
    }

    fn cell(table: &'static Table, row: &[Cell], column: &str) -> Cell {
        row[table.position(column).expect("a column")].clone()
    }

    fn document(table: &'static Table, row: &[Cell]) -> Value {
        match cell(table, row, "document") {
            Cell::Json(text) => serde_json::from_str(&text).expect("json"),
            other => panic!("document is {other:?}"),
        }
    }

    #[test]
    fn every_column_of_every_collection_is_written() {
        let change = order(1, "2024-11-15T07:44:17", "");
        let stored = Stored::new(Timestamp(0));
        for described in &COLLECTIONS {
            let change = PancakeChange {
                collection: described,
                change: change.change.clone(),
            };
            for column in described.table.columns {
                assert!(
                    stored
                        .cell(&change, column.name, SOURCE, Timestamp(0))
                        .is_some(),
                    "{}.{}",
                    described.table.name,
                    column.name
                );
            }
            assert_eq!(described.table.key[0], "source");
            assert!(described.table.key.contains(&described.id));
            assert_eq!(
                collection(described.table.name).map(|c| c.id),
                Some(described.id)
            );
        }
    }

    #[test]
    fn the_key_follows_the_table() {
        let order = order(1, "2024-11-15T07:44:17", "");
        assert_eq!(
            order.key(SOURCE),
            [Cell::text(SOURCE), Cell::text("26290"), Cell::text("1234")]
        );
        let product = pos_change(r#"{"id":"p-1","name":"Áo"}"#, Some(PosKind::Products));
        assert_eq!(product.table().name, "pc_pos_product");
        assert_eq!(product.key(SOURCE), [Cell::text(SOURCE), Cell::text("p-1")]);
    }

    #[test]
    fn a_change_keyed_by_its_owner_must_name_it() {
        let mut change = order(1, "2024-11-15T07:44:17", "").change;
        change.owner = None;
        assert!(matches!(
            PancakeChange::new(change),
            Err(NormalizeError::Invalid(message)) if message.contains("shop_id")
        ));
    }

    #[test]
    fn a_newer_order_merges_into_the_stored_one_and_an_older_one_changes_nothing() {
        let table = &PC_POS_ORDER_TABLE;
        let (row, _, how) = apply(&order(0, "2024-11-14T03:00:00", "first"), None, 10);
        assert_eq!(how, "insert");
        let mut newer = order(1, "2024-11-14T05:00:00", "second");
        let mut partial = newer.change.document.as_object().cloned().expect("object");
        partial.remove("total_price");
        newer.change.document = Value::Object(partial);
        let (row, _, how) = apply(&newer, row, 20);
        assert_eq!(how, "update");
        let row = row.expect("a row");
        assert_eq!(
            document(table, &row),
            json!({"id": 1234, "shop_id": 26290, "status": 1, "updated_at": "2024-11-14T05:00:00",
                   "note": "second", "total_price": 280000}),
            "a key the newer object lacks stays"
        );
        assert_eq!(cell(table, &row, "status_code"), Cell::Integer(1));
        assert_eq!(cell(table, &row, "status"), Cell::text("confirmed"));
        assert_eq!(cell(table, &row, "total_price"), Cell::Integer(280000));
        assert_eq!(
            cell(table, &row, "created_at"),
            Cell::Timestamp(Timestamp::from_unix_seconds(11))
        );
        assert_eq!(
            cell(table, &row, "updated_at"),
            Cell::Timestamp(Timestamp::from_unix_seconds(21))
        );
        let (after, _, how) = apply(
            &order(0, "2024-11-14T04:00:00", "late"),
            Some(row.clone()),
            30,
        );
        assert_eq!(how, "unchanged");
        assert_eq!(after, Some(row));
    }

    fn statuses(history: &[Vec<Cell>]) -> Vec<i64> {
        history
            .iter()
            .map(
                |row| match cell(&PC_POS_ORDER_STATUS_HISTORY, row, "status_code") {
                    Cell::Integer(code) => code,
                    other => panic!("{other:?}"),
                },
            )
            .collect()
    }

    #[test]
    fn a_status_step_is_appended_once_and_only_when_the_status_changes() {
        let mut row = None;
        let mut appended = Vec::new();
        let steps = [
            (0, "2024-11-14T03:00:00"),
            (1, "2024-11-14T05:00:00"),
            (1, "2024-11-14T06:00:00"),
            (2, "2024-11-15T07:00:00"),
            (9, "2024-11-15T01:00:00"),
            (1, "2024-11-14T05:30:00"),
        ];
        for (at, (status, updated_at)) in steps.into_iter().enumerate() {
            let (after, history, _) = apply(&order(status, updated_at, ""), row, at as i64);
            row = after;
            appended.extend(history);
        }
        assert_eq!(
            statuses(&appended),
            [0, 1, 2, 9],
            "a repeated status and a late step just after the same status add nothing; a late \
             step with another status is placed in the past"
        );
        let row = row.expect("a row");
        assert_eq!(
            cell(&PC_POS_ORDER_TABLE, &row, "status_code"),
            Cell::Integer(2),
            "the late step does not move the order's own status"
        );
        let (_, again, how) = apply(&order(9, "2024-11-15T01:00:00", ""), Some(row), 99);
        assert!(again.is_empty(), "applying a step twice appends it once");
        assert_eq!(how, "unchanged");
        let first = &appended[0];
        assert_eq!(
            (
                cell(&PC_POS_ORDER_STATUS_HISTORY, first, "shop_id"),
                cell(&PC_POS_ORDER_STATUS_HISTORY, first, "order_id"),
                cell(&PC_POS_ORDER_STATUS_HISTORY, first, "status"),
                cell(&PC_POS_ORDER_STATUS_HISTORY, first, "changed_at"),
            ),
            (
                Cell::text("26290"),
                Cell::text("1234"),
                Cell::text("new"),
                Cell::Timestamp(Timestamp::parse_rfc3339("2024-11-14T03:00:00Z").expect("time")),
            )
        );
    }

    #[test]
    fn a_status_change_without_a_time_is_dated_by_the_delivery() {
        let change = pos_change(
            r#"{"payload":{"eventType":"order_status_changed","shopId":1,"data":{"id":55,"status":6}}}"#,
            None,
        );
        let (_, history, _) = apply(&change, None, 1_700_000_000);
        assert_eq!(
            cell(&PC_POS_ORDER_STATUS_HISTORY, &history[0], "changed_at"),
            Cell::Timestamp(Timestamp::from_unix_seconds(1_700_000_000))
        );
    }

    #[test]
    fn stock_levels_are_absolute_and_the_total_follows_the_warehouses() {
        let table = &PC_POS_VARIATION_TABLE;
        let variation = pos_change(
            r#"{"id":"v1","remain_quantity":30,"variations_warehouses":[
                {"warehouse_id":"w1","remain_quantity":20},{"warehouse_id":"w2","remain_quantity":10}]}"#,
            Some(PosKind::Variations),
        );
        let (row, _, _) = apply(&variation, None, 1);
        let row = row.expect("a row");
        assert_eq!(cell(table, &row, "remain_quantity"), Cell::Integer(30));
        let one_warehouse = pos_change(
            r#"{"payload":{"eventType":"inventory_updated","shopId":7,"data":{"variation_id":"v1",
                "variations_warehouses":[{"warehouse_id":"w2","remain_quantity":4}]}}}"#,
            None,
        );
        let (row, _, _) = apply(&one_warehouse, Some(row), 2);
        let row = row.expect("a row");
        assert_eq!(cell(table, &row, "remain_quantity"), Cell::Integer(24));
        assert_eq!(
            cell(table, &row, "warehouse_stock"),
            Cell::Json(r#"{"w1":20,"w2":4}"#.to_owned())
        );
        assert_eq!(cell(table, &row, "shop_id"), Cell::text("7"));
        let without_stock =
            pos_change(r#"{"id":"v1","retail_price":1}"#, Some(PosKind::Variations));
        let (row, _, _) = apply(&without_stock, Some(row), 3);
        let row = row.expect("a row");
        assert_eq!(
            cell(table, &row, "remain_quantity"),
            Cell::Integer(24),
            "a variation without stock leaves it"
        );
        assert_eq!(
            cell(table, &row, "shop_id"),
            Cell::text("7"),
            "and its shop"
        );
    }

    #[test]
    fn a_conversation_is_ordered_by_its_version() {
        let table = &FB_CONVERSATION_TABLE;
        let conversation = |version: u64, snippet: &str| {
            let body = json!({"page_id": "p", "event_type": "conversation", "data": {
                "conversation": {"id": "p_1", "version": version, "snippet": snippet}}});
            let event = parse_pancake(body.to_string().as_bytes()).expect("event");
            PancakeChange::new(event.effect.changes()[0].clone()).expect("change")
        };
        let (row, _, _) = apply(&conversation(5, "five"), None, 1);
        assert_eq!(
            cell(table, row.as_deref().expect("row"), "version"),
            Cell::Integer(5)
        );
        let (row, _, how) = apply(&conversation(4, "four"), row, 2);
        assert_eq!(how, "unchanged");
        let (row, _, how) = apply(&conversation(5, "five again"), row, 3);
        assert_eq!(how, "unchanged");
        let (row, _, how) = apply(&conversation(6, "six"), row, 4);
        assert_eq!(how, "update");
        let row = row.expect("row");
        assert_eq!(document(table, &row)["snippet"], "six");
        assert_eq!(cell(table, &row, "version"), Cell::Integer(6));
    }

    #[test]
    fn an_unreadable_stored_row_is_corrupt_not_overwritten() {
        let change = order(1, "2024-11-15T07:44:17", "");
        let (row, _, _) = apply(&change, None, 1);
        let mut row = row.expect("row");
        let at = PC_POS_ORDER_TABLE.position("status_steps").expect("column");
        row[at] = Cell::Json("{\"not\":\"steps\"}".to_owned());
        assert!(matches!(
            change.decide(SOURCE, Some(&row), times(2)),
            Err(LedgerError::Corrupt(CorruptRow {
                column: "status_steps",
                ..
            }))
        ));
    }
}
