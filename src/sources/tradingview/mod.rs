//! TradingView alerts (seed 004) as trading signals: [`alert`] reads a message into an
//! [`Alert`] (pure, exact decimals from [`amount`]); [`source`] authenticates and stores it;
//! [`ledger`] decides it against the user's account row (risk rules, paper fills); [`execution`]
//! is where real exchanges plug in (OKX). Invariant: no float touches a price or a quantity.

pub mod alert;
pub mod amount;
pub mod execution;
pub mod ledger;
pub mod source;

pub use self::alert::{Action, Alert, AlertError, Side};
pub use self::amount::Amount;
pub use self::source::{TradingView, TradingViewProvider};
