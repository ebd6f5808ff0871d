//! TradingView signals in the ledger. Each user has one `trading_positions` row (positions,
//! realised P&L and the recent signals the risk rules need); a signal is decided against that
//! row as stored and locked, so the rules hold on both backends and under several workers.
//! History is appended: `trading_signals` (every signal, accepted or rejected with its
//! reason), `trading_orders` and `trading_fills` (the paper broker fills at the alert price; a
//! venue's fill is learned from the venue and applied to the account the same way,
//! [`VenueFill`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::alert::{Alert, Side};
use super::amount::Amount;
use super::execution::OrderRequest;
use crate::clock::Timestamp;
use crate::journal::DeliveryId;
use crate::ledger::edit::RowEdit;
use crate::ledger::table::{Column, RowReader};
use crate::ledger::OwedFollowUps;
use crate::ledger::{
    Appended, Cell, ColumnType, CorruptRow, Decision, FollowUp, LedgerError, RowChange, RowWrite,
    Table, WriteTimes,
};

/// One row per user: the account the risk rules read and the paper broker updates.
pub static TRADING_POSITIONS: Table = Table {
    name: "trading_positions",
    key: &["source", "user_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("user_id", ColumnType::Text),
        // {"BTCUSDT": {"quantity": "0.1", "average_price": "37000", "realized_pnl": "0"}}
        Column::updatable("positions", ColumnType::Json),
        Column::updatable("realized_pnl", ColumnType::Decimal),
        // The signals of the last minutes (and the last few ids), for the rate limit, the
        // duplicate window and replays.
        Column::updatable("recent", ColumnType::Json),
        Column::updatable("signals_count", ColumnType::Integer),
        Column::updatable("orders_count", ColumnType::Integer),
        Column::updatable("last_delivery_id", ColumnType::Integer),
        Column::fixed("created_at", ColumnType::Timestamp),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// Every signal, with what the rules decided.
pub static TRADING_SIGNALS: Table = Table {
    name: "trading_signals",
    key: &["source", "delivery_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("delivery_id", ColumnType::Integer),
        Column::fixed("user_id", ColumnType::Text),
        Column::fixed("symbol", ColumnType::Text),
        Column::fixed("action", ColumnType::Text),
        Column::fixed("price", ColumnType::Decimal),
        Column::fixed("quantity", ColumnType::Decimal),
        Column::fixed("strategy", ColumnType::Text),
        Column::fixed("status", ColumnType::Text),
        Column::fixed("reason", ColumnType::Text),
        Column::fixed("received_at", ColumnType::Timestamp),
        Column::fixed("created_at", ColumnType::Timestamp),
    ],
};

/// The order an accepted signal placed (one per signal, so keyed by its delivery).
pub static TRADING_ORDERS: Table = Table {
    name: "trading_orders",
    key: &["source", "delivery_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("delivery_id", ColumnType::Integer),
        Column::fixed("user_id", ColumnType::Text),
        Column::fixed("symbol", ColumnType::Text),
        Column::fixed("side", ColumnType::Text),
        Column::fixed("quantity", ColumnType::Decimal),
        Column::fixed("price", ColumnType::Decimal),
        Column::fixed("notional", ColumnType::Decimal),
        Column::fixed("broker", ColumnType::Text),
        // 'filled' (paper), or 'submitting' → 'accepted' | 'rejected' (a venue's answer to
        // the placement) and 'accepted' → 'filled' | 'canceled' (the venue's final word).
        Column::updatable("status", ColumnType::Text),
        Column::fixed("created_at", ColumnType::Timestamp),
        // OKX's `clOrdId`: the same for every try at placing this order.
        Column::fixed("client_order_id", ColumnType::Text),
        Column::updatable("venue_order_id", ColumnType::Text),
        Column::updatable("venue_code", ColumnType::Text),
        Column::updatable("venue_message", ColumnType::Text),
        Column::updatable("updated_at", ColumnType::Timestamp),
    ],
};

/// The fill of an order (the paper broker's, or a venue's final one), with the position it left.
pub static TRADING_FILLS: Table = Table {
    name: "trading_fills",
    key: &["source", "delivery_id"],
    columns: &[
        Column::fixed("source", ColumnType::Text),
        Column::fixed("delivery_id", ColumnType::Integer),
        Column::fixed("user_id", ColumnType::Text),
        Column::fixed("symbol", ColumnType::Text),
        Column::fixed("side", ColumnType::Text),
        Column::fixed("quantity", ColumnType::Decimal),
        Column::fixed("price", ColumnType::Decimal),
        Column::fixed("realized_pnl", ColumnType::Decimal),
        Column::fixed("position_after", ColumnType::Decimal),
        Column::fixed("average_price_after", ColumnType::Decimal),
        Column::fixed("created_at", ColumnType::Timestamp),
    ],
};

/// How big an order is when the alert does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    FixedQuantity(Amount),
    FixedNotional(Amount),
    /// Percent of equity (starting equity plus realised P&L), at the alert price.
    PercentOfEquity(Amount),
}

/// The risk rules and sizing of one source, carried by each change so that deciding is pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Upper-case; empty allows every symbol.
    pub allowed_symbols: Vec<String>,
    /// Largest absolute position per symbol, in units.
    pub max_position: Option<Amount>,
    pub max_order_notional: Option<Amount>,
    pub max_orders_per_minute: Option<u32>,
    /// An accepted signal identical to one within this many seconds is rejected; 0 turns it off.
    pub duplicate_window_secs: u32,
    pub sizing: Sizing,
    pub starting_equity: Amount,
    /// Decimals a sized quantity is rounded down to.
    pub quantity_decimals: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            allowed_symbols: Vec::new(),
            max_position: None,
            max_order_notional: None,
            max_orders_per_minute: None,
            duplicate_window_secs: 30,
            sizing: Sizing::FixedQuantity(Amount::from_units(1)),
            starting_equity: Amount::from_units(10_000),
            quantity_decimals: 8,
        }
    }
}

/// Where an accepted signal's order goes (per user, from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Filled at once at the alert price, in the ledger.
    Paper,
    /// Placed at OKX after the signal is committed; its answer lands on the order row.
    Okx,
}

impl Broker {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Okx => "okx",
        }
    }
}

/// The follow-up that places an order at a venue ([`RowChange::follow_up`]).
pub const PLACE_ORDER_EVENT: &str = "order.place";

/// The follow-up that asks the venue how an accepted order filled, until it is final.
pub const FILL_ORDER_EVENT: &str = "order.fill";

/// Decide one signal for one user against the account row: accept (order and paper fill, or
/// an order to place at a venue) or reject with a reason.
#[derive(Debug, Clone)]
pub struct SignalChange {
    pub user: String,
    pub alert: Alert,
    pub delivery: DeliveryId,
    pub rules: Arc<Rules>,
    pub broker: Broker,
    /// The venue order the last decision accepted, for [`RowChange::follow_up`].
    pub placement: Arc<parking_lot::Mutex<Option<Placement>>>,
}

/// An order to place at a venue, as its follow-up delivery carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub signal_delivery: i64,
    pub user: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: String,
    #[serde(with = "text")]
    pub quantity: Amount,
    #[serde(with = "text")]
    pub limit_price: Amount,
}

impl Placement {
    /// The follow-up that carries this order: `event_type` is [`PLACE_ORDER_EVENT`] or
    /// [`FILL_ORDER_EVENT`]; one per order and event, by its `clOrdId`.
    pub fn follow_up(&self, event_type: &str) -> Option<FollowUp> {
        Some(FollowUp {
            event_type: event_type.to_owned(),
            dedup_key: format!("{event_type}:{}", self.client_order_id),
            body: serde_json::to_vec(self).ok()?,
        })
    }

    /// The order as its `trading_orders` row holds it (what the recovery sweep journals).
    fn from_order_row(row: &[Cell]) -> Option<Self> {
        let reader = RowReader::new(&TRADING_ORDERS, row);
        let amount = |column| Amount::parse(&reader.text(column).ok()?).ok();
        Some(Self {
            signal_delivery: reader.integer("delivery_id").ok()?,
            user: reader.text("user_id").ok()?,
            client_order_id: reader.text("client_order_id").ok()?,
            symbol: reader.text("symbol").ok()?,
            side: reader.text("side").ok()?,
            quantity: amount("quantity")?,
            limit_price: amount("price")?,
        })
    }

    pub fn side(&self) -> Option<Side> {
        match self.side.as_str() {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }

    pub fn order(&self) -> Option<OrderRequest> {
        Some(OrderRequest {
            client_order_id: self.client_order_id.clone(),
            symbol: self.symbol.clone(),
            side: self.side()?,
            quantity: self.quantity,
            limit_price: Some(self.limit_price),
        })
    }
}

/// OKX's `clOrdId` for a signal: letters and digits, at most 32, unique per source and
/// delivery (the source as a short hash, so that two sources on one OKX account differ).
pub fn client_order_id(source: &str, delivery: DeliveryId) -> String {
    use sha2::Digest as _;
    let tag = hex::encode(&sha2::Sha256::digest(source.as_bytes())[..4]);
    format!("w{tag}{}", delivery.0)
}

/// One symbol's position in the account row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(with = "text")]
    pub quantity: Amount,
    #[serde(with = "text")]
    pub average_price: Amount,
    #[serde(with = "text")]
    pub realized_pnl: Amount,
}

/// A signal the rules saw, kept while it can still matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recent {
    delivery: i64,
    /// Microseconds since the epoch (`received_at`).
    at: i64,
    fingerprint: String,
    accepted: bool,
    /// Its order, while placed at a venue and not yet final there (kept whatever its age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<OpenOrder>,
}

/// An order at a venue that may still fill: it counts against the maximum position until
/// the venue's final word on it is applied ([`VenueFill`]), which happens once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OpenOrder {
    symbol: String,
    /// Signed: a sell is negative.
    #[serde(with = "text")]
    quantity: Amount,
}

/// Ids kept for replays regardless of age.
const KEEP_LAST: usize = 64;
const MINUTE_MICROS: i64 = 60_000_000;

/// The account as decided on.
#[derive(Debug, Clone, Default)]
struct Account {
    positions: BTreeMap<String, Position>,
    realized_pnl: Amount,
    recent: Vec<Recent>,
    signals: i64,
    orders: i64,
}

/// What a fill did (the paper broker's, or a venue's).
#[derive(Debug, Clone, Copy)]
struct Fill {
    side: Side,
    quantity: Amount,
    price: Amount,
    notional: Amount,
    realized_pnl: Amount,
    after: Position,
}

impl RowChange for SignalChange {
    fn table(&self) -> &'static Table {
        &TRADING_POSITIONS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.user)]
    }

    /// An accepted signal for a venue asks for its order to be placed, once committed.
    fn follow_up(&self) -> Option<FollowUp> {
        self.placement.lock().as_ref()?.follow_up(PLACE_ORDER_EVENT)
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let mut account = match current {
            Some(row) => Account::read(row)?,
            None => Account::default(),
        };
        *self.placement.lock() = None;
        if account.recent.iter().any(|r| r.delivery == self.delivery.0) {
            return Ok(RowWrite::Unchanged.into());
        }
        let at = times.received_at;
        let outcome = self.judge(&account, at);
        let mut appended = vec![self.signal_row(source, &outcome, times)];
        account.signals += 1;
        let open = match (&outcome, self.broker) {
            (Ok(fill), Broker::Okx) => Some(OpenOrder {
                symbol: self.alert.symbol.clone(),
                quantity: signed(fill.side, fill.quantity).ok_or_else(|| overflow("recent"))?,
            }),
            _ => None,
        };
        account.recent.push(Recent {
            delivery: self.delivery.0,
            at: at.micros(),
            fingerprint: self.fingerprint(),
            accepted: outcome.is_ok(),
            open,
        });
        if let (Ok(fill), Broker::Okx) = (&outcome, self.broker) {
            // The venue fills it (or not): the account's positions move only with its fill
            // ([`VenueFill`]); until then the order counts as open.
            account.orders += 1;
            let placement = Placement {
                signal_delivery: self.delivery.0,
                user: self.user.clone(),
                client_order_id: client_order_id(source, self.delivery),
                symbol: self.alert.symbol.clone(),
                side: fill.side.as_str().to_owned(),
                quantity: fill.quantity,
                limit_price: self.alert.price,
            };
            appended.push(self.order_row(source, fill, times.now, Some(&placement)));
            *self.placement.lock() = Some(placement);
        } else if let Ok(fill) = &outcome {
            account.orders += 1;
            account.record_fill(&self.alert.symbol, fill)?;
            appended.push(self.order_row(source, fill, times.now, None));
            appended.push(fill_row(
                source,
                self.delivery,
                &self.user,
                &self.alert.symbol,
                fill,
                times.now,
            ));
        }
        account.prune(at, self.rules.duplicate_window_secs);
        let row = account.row(source, &self.user, self.delivery, current, times)?;
        Ok(Decision {
            row: if current.is_some() {
                RowWrite::Update(row)
            } else {
                RowWrite::Insert(row)
            },
            appended,
        })
    }
}

impl SignalChange {
    fn fingerprint(&self) -> String {
        let alert = &self.alert;
        format!(
            "{}|{}|{}|{}|{}",
            alert.symbol,
            alert.action.as_str(),
            alert.price,
            alert.quantity.map(|q| q.to_string()).unwrap_or_default(),
            alert.strategy.as_deref().unwrap_or_default()
        )
    }

    /// The risk rules, in order, then the paper fill; `Err` is the rejection's reason.
    fn judge(&self, account: &Account, at: Timestamp) -> Result<Fill, String> {
        let rules = &self.rules;
        let alert = &self.alert;
        if !rules.allowed_symbols.is_empty() && !rules.allowed_symbols.contains(&alert.symbol) {
            return Err(format!("symbol {} is not allowed", alert.symbol));
        }
        if rules.duplicate_window_secs > 0 {
            let since = at.micros() - i64::from(rules.duplicate_window_secs) * 1_000_000;
            let fingerprint = self.fingerprint();
            if account
                .recent
                .iter()
                .any(|r| r.accepted && r.at > since && r.fingerprint == fingerprint)
            {
                return Err(format!(
                    "an identical signal was accepted within the last {}s",
                    rules.duplicate_window_secs
                ));
            }
        }
        if let Some(limit) = rules.max_orders_per_minute {
            let since = at.micros() - MINUTE_MICROS;
            let orders = account
                .recent
                .iter()
                .filter(|r| r.accepted && r.at > since)
                .count();
            if orders >= limit as usize {
                return Err(format!(
                    "rate limit: {orders} orders in the last minute, at most {limit} allowed"
                ));
            }
        }
        let position = account
            .positions
            .get(&alert.symbol)
            .copied()
            .unwrap_or_default();
        let (side, quantity) = match alert.action.side() {
            Some(side) => (side, self.quantity(account)?),
            None if position.quantity.is_zero() => {
                return Err(format!("no open {} position to close", alert.symbol))
            }
            None if position.quantity.is_negative() => (Side::Buy, position.quantity.abs()),
            None => (Side::Sell, position.quantity),
        };
        if !quantity.is_positive() {
            return Err("the sized quantity rounds to zero".to_owned());
        }
        let notional = quantity
            .checked_mul(alert.price)
            .ok_or("the order notional is out of range")?;
        if let Some(max) = rules.max_order_notional {
            if notional > max {
                return Err(format!(
                    "order notional {notional} exceeds the maximum of {max}"
                ));
            }
        }
        let (after, realized_pnl) =
            fill(&position, side, quantity, alert.price).ok_or("the position is out of range")?;
        if let Some(max) = rules.max_position {
            // Orders still open at a venue may fill: they count as if they had.
            let open = account
                .open_quantity(&alert.symbol)
                .ok_or("the position is out of range")?;
            let (before, after) = position
                .quantity
                .checked_add(open)
                .zip(after.quantity.checked_add(open))
                .ok_or("the position is out of range")?;
            if after.abs() > max && after.abs() > before.abs() {
                return Err(format!(
                    "position {after} {} would exceed the maximum of {max}",
                    alert.symbol
                ));
            }
        }
        Ok(Fill {
            side,
            quantity,
            price: alert.price,
            notional,
            realized_pnl,
            after,
        })
    }

    /// The alert's quantity, or the configured sizing at the alert price.
    fn quantity(&self, account: &Account) -> Result<Amount, String> {
        if let Some(quantity) = self.alert.quantity {
            return Ok(quantity);
        }
        let rules = &self.rules;
        let price = self.alert.price;
        let sized = match rules.sizing {
            Sizing::FixedQuantity(quantity) => Some(quantity),
            Sizing::FixedNotional(notional) => notional.div_floor(price, rules.quantity_decimals),
            Sizing::PercentOfEquity(percent) => {
                let equity = rules
                    .starting_equity
                    .checked_add(account.realized_pnl)
                    .ok_or("equity is out of range")?;
                if !equity.is_positive() {
                    return Err(format!("equity {equity} leaves nothing to trade"));
                }
                equity
                    .checked_mul(percent)
                    .and_then(|budget| budget.div_floor(Amount::from_units(100), 8))
                    .and_then(|budget| budget.div_floor(price, rules.quantity_decimals))
            }
        };
        sized.ok_or_else(|| "the sized quantity is out of range".to_owned())
    }

    fn signal_row(
        &self,
        source: &str,
        outcome: &Result<Fill, String>,
        times: WriteTimes,
    ) -> Appended {
        let alert = &self.alert;
        let (status, reason) = match outcome {
            Ok(_) => ("accepted", Cell::Null),
            Err(reason) => ("rejected", Cell::text(reason.as_str())),
        };
        Appended {
            table: &TRADING_SIGNALS,
            row: vec![
                Cell::text(source),
                Cell::Integer(self.delivery.0),
                Cell::text(&self.user),
                Cell::text(&alert.symbol),
                Cell::text(alert.action.as_str()),
                decimal(alert.price),
                alert.quantity.map_or(Cell::Null, decimal),
                Cell::opt_text(alert.strategy.as_deref()),
                Cell::text(status),
                reason,
                Cell::Timestamp(times.received_at),
                Cell::Timestamp(times.now),
            ],
        }
    }

    fn order_row(
        &self,
        source: &str,
        fill: &Fill,
        now: Timestamp,
        placement: Option<&Placement>,
    ) -> Appended {
        let (broker, status) = match placement {
            Some(_) => (self.broker.as_str(), "submitting"),
            None => ("paper", "filled"),
        };
        Appended {
            table: &TRADING_ORDERS,
            row: vec![
                Cell::text(source),
                Cell::Integer(self.delivery.0),
                Cell::text(&self.user),
                Cell::text(&self.alert.symbol),
                Cell::text(fill.side.as_str()),
                decimal(fill.quantity),
                decimal(self.alert.price),
                decimal(fill.notional),
                Cell::text(broker),
                Cell::text(status),
                Cell::Timestamp(now),
                Cell::opt_text(placement.map(|p| p.client_order_id.as_str())),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::Timestamp(now),
            ],
        }
    }
}

/// The `trading_fills` row of the order of signal `delivery`.
fn fill_row(
    source: &str,
    delivery: DeliveryId,
    user: &str,
    symbol: &str,
    fill: &Fill,
    now: Timestamp,
) -> Appended {
    Appended {
        table: &TRADING_FILLS,
        row: vec![
            Cell::text(source),
            Cell::Integer(delivery.0),
            Cell::text(user),
            Cell::text(symbol),
            Cell::text(fill.side.as_str()),
            decimal(fill.quantity),
            decimal(fill.price),
            decimal(fill.realized_pnl),
            decimal(fill.after.quantity),
            decimal(fill.after.average_price),
            Cell::Timestamp(now),
        ],
    }
}

/// `quantity` signed by `side`: a sell is negative.
fn signed(side: Side, quantity: Amount) -> Option<Amount> {
    match side {
        Side::Buy => Some(quantity),
        Side::Sell => Amount::ZERO.checked_sub(quantity),
    }
}

/// A venue's final word on an order (filled, or canceled after filling part or nothing),
/// applied to its user's account exactly as the paper broker's fills are: the position moves
/// by what filled at the venue's average price ([`fill`]), a `trading_fills` row is appended,
/// and the order stops counting as open. Applied once: a replay finds the order no longer open
/// and changes nothing.
#[derive(Debug, Clone)]
pub struct VenueFill {
    pub user: String,
    pub signal_delivery: DeliveryId,
    /// The delivery that learned it (the account's `last_delivery_id`).
    pub delivery: DeliveryId,
    pub symbol: String,
    pub side: Side,
    /// Quantity and average price of what filled; `None` when nothing did.
    pub filled: Option<(Amount, Amount)>,
}

impl RowChange for VenueFill {
    fn table(&self) -> &'static Table {
        &TRADING_POSITIONS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::text(&self.user)]
    }

    fn decide(
        &self,
        source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        let Some(row) = current else {
            return Err(LedgerError::Waiting(format!(
                "the account of {} is not in trading_positions",
                self.user
            )));
        };
        let mut account = Account::read(row)?;
        let signal = self.signal_delivery.0;
        let Some(open) = account
            .recent
            .iter_mut()
            .find(|recent| recent.delivery == signal && recent.open.is_some())
        else {
            return Ok(RowWrite::Unchanged.into());
        };
        open.open = None;
        let mut appended = Vec::new();
        if let Some((quantity, price)) = self.filled.filter(|(quantity, _)| quantity.is_positive())
        {
            let position = account
                .positions
                .get(&self.symbol)
                .copied()
                .unwrap_or_default();
            let (after, realized_pnl) =
                fill(&position, self.side, quantity, price).ok_or_else(|| overflow("positions"))?;
            let filled = Fill {
                side: self.side,
                quantity,
                price,
                notional: quantity
                    .checked_mul(price)
                    .ok_or_else(|| overflow("positions"))?,
                realized_pnl,
                after,
            };
            account.record_fill(&self.symbol, &filled)?;
            appended.push(fill_row(
                source,
                self.signal_delivery,
                &self.user,
                &self.symbol,
                &filled,
                times.now,
            ));
        }
        let row = account.row(source, &self.user, self.delivery, current, times)?;
        Ok(Decision {
            row: RowWrite::Update(row),
            appended,
        })
    }
}

/// Where an order's status stands: a venue's answer only ever moves it forward, so that a
/// late or replayed answer never takes back a fill.
fn stage(status: &str) -> u8 {
    match status {
        "submitting" => 0,
        "accepted" => 1,
        _ => 2,
    }
}

/// What a `trading_orders` row owes while its order is not final at a venue: `submitting`,
/// its placement; `accepted`, the question how it filled.
fn owed_by_order(row: &[Cell]) -> Option<FollowUp> {
    let status = RowReader::new(&TRADING_ORDERS, row).text("status").ok()?;
    let event = match status.as_str() {
        "submitting" => PLACE_ORDER_EVENT,
        "accepted" => FILL_ORDER_EVENT,
        _ => return None,
    };
    Placement::from_order_row(row)?.follow_up(event)
}

/// The orders of `source` that `broker` has not finished with (see [`owed_by_order`]).
pub fn owed_follow_ups(source: &str, broker: Broker) -> Vec<OwedFollowUps> {
    ["submitting", "accepted"]
        .into_iter()
        .map(|status| OwedFollowUps {
            table: &TRADING_ORDERS,
            equals: vec![
                ("source", Cell::text(source)),
                ("broker", Cell::text(broker.as_str())),
                ("status", Cell::text(status)),
            ],
            owed: owed_by_order,
        })
        .collect()
}

/// A venue's answer about a placed order, on its `trading_orders` row. It only moves the
/// order forward ([`stage`]); an order it moves to `accepted` asks, once committed, how it
/// fills ([`FILL_ORDER_EVENT`]).
#[derive(Debug, Clone)]
pub struct OrderOutcome {
    pub signal_delivery: DeliveryId,
    /// `accepted` or `rejected` (the placement), `filled` or `canceled` (its final word).
    pub status: &'static str,
    pub venue_order_id: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// The order, for the follow-up that asks how it filled.
    pub placement: Placement,
    /// Whether the last decision moved the order (a replay moves nothing and asks nothing).
    pub moved: Arc<parking_lot::Mutex<bool>>,
}

impl RowChange for OrderOutcome {
    fn table(&self) -> &'static Table {
        &TRADING_ORDERS
    }

    fn key(&self, source: &str) -> Vec<Cell> {
        vec![Cell::text(source), Cell::Integer(self.signal_delivery.0)]
    }

    fn decide(
        &self,
        _source: &str,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Decision, LedgerError> {
        *self.moved.lock() = false;
        let Some(stored) = current else {
            return Err(LedgerError::Waiting(format!(
                "the order of signal {} is not in trading_orders",
                self.signal_delivery.0
            )));
        };
        let status = RowReader::new(&TRADING_ORDERS, stored).text("status")?;
        if stage(self.status) <= stage(&status) {
            return Ok(RowWrite::Unchanged.into());
        }
        *self.moved.lock() = true;
        let mut row = RowEdit::open(&TRADING_ORDERS, current);
        row.set("status", Cell::text(self.status))?;
        row.set(
            "venue_order_id",
            Cell::opt_text(self.venue_order_id.as_deref()),
        )?;
        row.set("venue_code", Cell::opt_text(self.code.as_deref()))?;
        row.set("venue_message", Cell::opt_text(self.message.as_deref()))?;
        Ok(row.finish(times.now)?.into())
    }

    fn follow_up(&self) -> Option<FollowUp> {
        if self.status != "accepted" || !*self.moved.lock() {
            return None;
        }
        self.placement.follow_up(FILL_ORDER_EVENT)
    }
}

/// The paper broker: fills `quantity` at `price` against `position`. Adding to a position
/// moves its average price; reducing realises (price − average) × closed quantity, signed by
/// the position's direction; going through zero opens the rest at `price`.
pub fn fill(
    position: &Position,
    side: Side,
    quantity: Amount,
    price: Amount,
) -> Option<(Position, Amount)> {
    let change = signed(side, quantity)?;
    let held = position.quantity;
    let after_quantity = held.checked_add(change)?;
    let same_direction = held.is_zero() || held.is_negative() == change.is_negative();
    let (average_price, realized) = if same_direction {
        let cost = held
            .abs()
            .checked_mul(position.average_price)?
            .checked_add(quantity.checked_mul(price)?)?;
        (cost.checked_div(after_quantity.abs())?, Amount::ZERO)
    } else {
        let closed = held.abs().min(quantity);
        let per_unit = if held.is_negative() {
            position.average_price.checked_sub(price)?
        } else {
            price.checked_sub(position.average_price)?
        };
        let realized = closed.checked_mul(per_unit)?;
        let average = if after_quantity.is_zero() {
            Amount::ZERO
        } else if after_quantity.is_negative() == held.is_negative() {
            position.average_price
        } else {
            price
        };
        (average, realized)
    };
    let after = Position {
        quantity: after_quantity,
        average_price,
        realized_pnl: position.realized_pnl.checked_add(realized)?,
    };
    let after = if after.quantity.is_zero() {
        Position {
            realized_pnl: after.realized_pnl,
            ..Position::default()
        }
    } else {
        after
    };
    Some((after, realized))
}

impl Account {
    /// Applies one fill (the paper broker's, or a venue's): the symbol's position becomes the
    /// one the fill left, and its realised P&L adds to the account's.
    fn record_fill(&mut self, symbol: &str, fill: &Fill) -> Result<(), LedgerError> {
        self.realized_pnl = self
            .realized_pnl
            .checked_add(fill.realized_pnl)
            .ok_or_else(|| overflow("realized_pnl"))?;
        if fill.after == Position::default() {
            self.positions.remove(symbol);
        } else {
            self.positions.insert(symbol.to_owned(), fill.after);
        }
        Ok(())
    }

    /// The signed quantity of `symbol` in orders still open at a venue (`None` out of range).
    fn open_quantity(&self, symbol: &str) -> Option<Amount> {
        self.recent
            .iter()
            .filter_map(|recent| recent.open.as_ref())
            .filter(|open| open.symbol == symbol)
            .try_fold(Amount::ZERO, |sum, open| sum.checked_add(open.quantity))
    }

    fn read(row: &[Cell]) -> Result<Self, LedgerError> {
        let reader = RowReader::new(&TRADING_POSITIONS, row);
        let positions = reader.opt_text("positions")?.unwrap_or_default();
        let recent = reader.opt_text("recent")?.unwrap_or_default();
        let corrupt = |column| {
            LedgerError::Corrupt(CorruptRow {
                table: TRADING_POSITIONS.name,
                column,
            })
        };
        let positions: BTreeMap<String, Position> = if positions.is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(&positions).map_err(|_| corrupt("positions"))?
        };
        let recent: Vec<Recent> = if recent.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&recent).map_err(|_| corrupt("recent"))?
        };
        // The total is the sum of the symbols' (the column is for reading, and SQLite's
        // numeric affinity may hand back a float's text).
        let realized_pnl = positions
            .values()
            .try_fold(Amount::ZERO, |sum, p| sum.checked_add(p.realized_pnl))
            .ok_or_else(|| corrupt("positions"))?;
        Ok(Self {
            positions,
            realized_pnl,
            recent,
            signals: reader.opt_integer("signals_count")?.unwrap_or(0),
            orders: reader.opt_integer("orders_count")?.unwrap_or(0),
        })
    }

    /// Keeps what the rate limit, the duplicate window and replay detection can still need.
    fn prune(&mut self, at: Timestamp, window_secs: u32) {
        let horizon = MINUTE_MICROS.max(i64::from(window_secs) * 1_000_000);
        let since = at.micros() - horizon;
        let keep_from = self.recent.len().saturating_sub(KEEP_LAST);
        let mut index = 0;
        self.recent.retain(|r| {
            index += 1;
            index > keep_from || r.at > since || r.open.is_some()
        });
    }

    fn row(
        &self,
        source: &str,
        user: &str,
        delivery: DeliveryId,
        current: Option<&[Cell]>,
        times: WriteTimes,
    ) -> Result<Vec<Cell>, LedgerError> {
        let created_at = match current {
            Some(row) => RowReader::new(&TRADING_POSITIONS, row)
                .opt_timestamp("created_at")?
                .unwrap_or(times.now),
            None => times.now,
        };
        // Positions whose P&L is realised but quantity flat stay, so the total is kept.
        let mut positions = self.positions.clone();
        positions.retain(|_, p| !p.quantity.is_zero() || !p.realized_pnl.is_zero());
        let json = |value: serde_json::Result<String>, column| {
            value.map_err(|_| {
                LedgerError::Corrupt(CorruptRow {
                    table: TRADING_POSITIONS.name,
                    column,
                })
            })
        };
        Ok(vec![
            Cell::text(source),
            Cell::text(user),
            Cell::Json(json(serde_json::to_string(&positions), "positions")?),
            decimal(self.realized_pnl),
            Cell::Json(json(serde_json::to_string(&self.recent), "recent")?),
            Cell::Integer(self.signals),
            Cell::Integer(self.orders),
            Cell::Integer(delivery.0),
            Cell::Timestamp(created_at),
            Cell::Timestamp(times.now),
        ])
    }
}

fn decimal(amount: Amount) -> Cell {
    Cell::Decimal(amount.to_string())
}

fn overflow(column: &'static str) -> LedgerError {
    LedgerError::Corrupt(CorruptRow {
        table: TRADING_POSITIONS.name,
        column,
    })
}

/// Amounts as decimal text in the account's JSON, so that no reader takes them for floats.
mod text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Amount;

    pub fn serialize<S: Serializer>(amount: &Amount, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(amount)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        let text = String::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::super::alert::{parse, Action};
    use super::*;

    fn a(text: &str) -> Amount {
        Amount::parse(text).expect("amount")
    }

    fn times(seconds: i64) -> WriteTimes {
        let at = Timestamp::from_unix_seconds(1_800_000_000 + seconds);
        WriteTimes {
            received_at: at,
            now: at,
        }
    }

    /// Applies signals in order against one account row; returns each signal's status/reason.
    fn run(rules: Rules, signals: &[(i64, &str)]) -> (Vec<(String, Option<String>)>, Vec<Cell>) {
        let rules = Arc::new(rules);
        let mut row: Option<Vec<Cell>> = None;
        let mut outcomes = Vec::new();
        for (index, (second, body)) in signals.iter().enumerate() {
            let change = SignalChange {
                user: "alice".into(),
                alert: parse(body.as_bytes()).expect("alert"),
                delivery: DeliveryId(index as i64 + 1),
                rules: Arc::clone(&rules),
                broker: Broker::Paper,
                placement: Arc::default(),
            };
            let decision = change
                .decide("tradingview", row.as_deref(), times(*second))
                .expect("decided");
            let signal = decision
                .appended
                .iter()
                .find(|appended| appended.table.name == "trading_signals")
                .expect("signal row");
            let text = |cell: &Cell| match cell {
                Cell::Text(text) => Some(text.clone()),
                _ => None,
            };
            outcomes.push((
                text(&signal.row[8]).unwrap_or_default(),
                text(&signal.row[9]),
            ));
            row = match decision.row {
                RowWrite::Insert(cells) | RowWrite::Update(cells) => Some(cells),
                RowWrite::Unchanged => row,
            };
        }
        (outcomes, row.unwrap_or_default())
    }

    fn position(row: &[Cell], symbol: &str) -> Position {
        let account = Account::read(row).expect("account");
        account.positions.get(symbol).copied().unwrap_or_default()
    }

    #[test]
    fn the_paper_broker_averages_in_and_realises_on_the_way_out() {
        let flat = Position::default();
        let (long, pnl) = fill(&flat, Side::Buy, a("1"), a("100")).expect("fill");
        assert_eq!(
            (long.quantity, long.average_price, pnl),
            (a("1"), a("100"), a("0"))
        );
        let (long, _) = fill(&long, Side::Buy, a("1"), a("110")).expect("fill");
        assert_eq!((long.quantity, long.average_price), (a("2"), a("105")));
        let (half, pnl) = fill(&long, Side::Sell, a("1"), a("120")).expect("fill");
        assert_eq!(
            (half.quantity, half.average_price, pnl),
            (a("1"), a("105"), a("15"))
        );
        let (short, pnl) = fill(&half, Side::Sell, a("3"), a("100")).expect("fill");
        assert_eq!(
            (short.quantity, short.average_price, pnl),
            (a("-2"), a("100"), a("-5"))
        );
        let (flat, pnl) = fill(&short, Side::Buy, a("2"), a("90")).expect("fill");
        assert_eq!(
            (flat.quantity, pnl, flat.realized_pnl),
            (a("0"), a("20"), a("30"))
        );
    }

    #[test]
    fn buy_then_close_ends_flat_with_realised_pnl() {
        let rules = Rules {
            sizing: Sizing::FixedQuantity(a("0.5")),
            ..Rules::default()
        };
        let (outcomes, row) = run(
            rules,
            &[
                (0, r#"{"symbol":"BTCUSDT","action":"buy","price":"37000"}"#),
                (
                    5,
                    r#"{"symbol":"BTCUSDT","action":"close","price":"38000.5"}"#,
                ),
                (
                    9,
                    r#"{"symbol":"BTCUSDT","action":"exit","price":"38000.5"}"#,
                ),
            ],
        );
        assert_eq!(outcomes[0].0, "accepted");
        assert_eq!(outcomes[1].0, "accepted");
        assert_eq!(
            outcomes[2],
            (
                "rejected".into(),
                Some("no open BTCUSDT position to close".into())
            )
        );
        let btc = position(&row, "BTCUSDT");
        assert_eq!((btc.quantity, btc.realized_pnl), (a("0"), a("500.25")));
    }

    #[test]
    fn risk_rules_reject_with_their_reasons() {
        let rules = Rules {
            allowed_symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            max_position: Some(a("2")),
            max_order_notional: Some(a("50000")),
            max_orders_per_minute: Some(3),
            duplicate_window_secs: 30,
            sizing: Sizing::FixedQuantity(a("1")),
            ..Rules::default()
        };
        let (outcomes, _) = run(
            rules,
            &[
                (0, r#"{"symbol":"DOGEUSDT","action":"buy","price":"1"}"#),
                (0, r#"{"symbol":"BTCUSDT","action":"buy","price":"37000"}"#),
                (1, r#"{"symbol":"BTCUSDT","action":"buy","price":"37000"}"#),
                (
                    2,
                    r#"{"symbol":"BTCUSDT","action":"buy","price":"37000","quantity":"2"}"#,
                ),
                (3, r#"{"symbol":"BTCUSDT","action":"buy","price":"37001"}"#),
                (4, r#"{"symbol":"BTCUSDT","action":"buy","price":"37002"}"#),
                (5, r#"{"symbol":"ETHUSDT","action":"sell","price":"2000"}"#),
                (6, r#"{"symbol":"ETHUSDT","action":"sell","price":"2001"}"#),
                (61, r#"{"symbol":"ETHUSDT","action":"sell","price":"2001"}"#),
            ],
        );
        let reasons: Vec<&str> = outcomes
            .iter()
            .map(|(status, reason)| reason.as_deref().unwrap_or(status))
            .collect();
        assert_eq!(
            reasons,
            [
                "symbol DOGEUSDT is not allowed",
                "accepted",
                "an identical signal was accepted within the last 30s",
                "order notional 74000 exceeds the maximum of 50000",
                "accepted",
                "position 3 BTCUSDT would exceed the maximum of 2",
                "accepted",
                "rate limit: 3 orders in the last minute, at most 3 allowed",
                "accepted",
            ]
        );
    }

    #[test]
    fn sizing_by_notional_and_percent_of_equity_rounds_down() {
        let by_notional = Rules {
            sizing: Sizing::FixedNotional(a("1000")),
            quantity_decimals: 4,
            ..Rules::default()
        };
        let (_, row) = run(
            by_notional,
            &[(0, r#"{"symbol":"BTCUSDT","action":"long","price":"37000"}"#)],
        );
        assert_eq!(position(&row, "BTCUSDT").quantity, a("0.027"));
        let by_equity = Rules {
            sizing: Sizing::PercentOfEquity(a("10")),
            starting_equity: a("20000"),
            ..Rules::default()
        };
        let (_, row) = run(
            by_equity,
            &[(0, r#"{"symbol":"ETHUSDT","action":"short","price":"2500"}"#)],
        );
        assert_eq!(position(&row, "ETHUSDT").quantity, a("-0.8"));
    }

    fn okx_buy(delivery: i64, rules: &Arc<Rules>) -> SignalChange {
        SignalChange {
            user: "alice".into(),
            alert: parse(br#"{"symbol":"BTCUSDT","action":"buy","price":"100","quantity":"1"}"#)
                .expect("alert"),
            delivery: DeliveryId(delivery),
            rules: Arc::clone(rules),
            broker: Broker::Okx,
            placement: Arc::default(),
        }
    }

    fn written(decision: Decision) -> Vec<Cell> {
        match decision.row {
            RowWrite::Insert(row) | RowWrite::Update(row) => row,
            RowWrite::Unchanged => panic!("expected a write"),
        }
    }

    #[test]
    fn a_venue_fill_moves_the_position_once_and_open_orders_count_against_the_maximum() {
        let rules = Arc::new(Rules {
            max_position: Some(a("1.5")),
            duplicate_window_secs: 0,
            ..Rules::default()
        });
        let row = written(
            okx_buy(1, &rules)
                .decide("tv", None, times(0))
                .expect("decided"),
        );
        assert_eq!(
            position(&row, "BTCUSDT"),
            Position::default(),
            "not filled yet"
        );
        // The first order is open at OKX: a second would make 2 if both fill.
        let refused = okx_buy(2, &rules)
            .decide("tv", Some(&row), times(1))
            .expect("decided");
        assert!(refused
            .appended
            .iter()
            .all(|r| r.table.name != "trading_orders"));
        assert_eq!(
            refused.appended[0].row[9],
            Cell::text("position 2 BTCUSDT would exceed the maximum of 1.5")
        );
        let row = written(refused);
        let fill = VenueFill {
            user: "alice".into(),
            signal_delivery: DeliveryId(1),
            delivery: DeliveryId(9),
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            filled: Some((a("1"), a("99.5"))),
        };
        let decision = fill.decide("tv", Some(&row), times(2)).expect("decided");
        assert_eq!(decision.appended.len(), 1, "one fill row");
        let row = written(decision);
        let btc = position(&row, "BTCUSDT");
        assert_eq!((btc.quantity, btc.average_price), (a("1"), a("99.5")));
        let again = fill.decide("tv", Some(&row), times(3)).expect("decided");
        assert_eq!(again.row, RowWrite::Unchanged, "applied once");
        assert!(again.appended.is_empty());
    }

    #[test]
    fn a_replayed_signal_changes_nothing() {
        let change = SignalChange {
            user: "alice".into(),
            alert: parse(br#"{"symbol":"BTCUSDT","action":"buy","price":"1"}"#).expect("alert"),
            delivery: DeliveryId(7),
            rules: Arc::new(Rules::default()),
            broker: Broker::Okx,
            placement: Arc::default(),
        };
        assert_eq!(change.alert.action, Action::Buy);
        let first = change
            .decide("tradingview", None, times(0))
            .expect("decided");
        let follow_up = change.follow_up().expect("an order to place at OKX");
        assert_eq!(follow_up.event_type, PLACE_ORDER_EVENT);
        assert_eq!(
            follow_up.dedup_key,
            format!(
                "order.place:{}",
                client_order_id("tradingview", DeliveryId(7))
            )
        );
        assert!(
            first
                .appended
                .iter()
                .all(|row| row.table.name != "trading_fills"),
            "OKX fills it, not the paper broker"
        );
        let RowWrite::Insert(row) = first.row else {
            panic!("inserted")
        };
        let again = change
            .decide("tradingview", Some(&row), times(1))
            .expect("decided");
        assert_eq!(again.row, RowWrite::Unchanged);
        assert!(again.appended.is_empty());
        assert_eq!(change.follow_up(), None, "a replay places nothing again");
    }
}
