//! Wharf receives webhooks, proves each one genuine, and records it durably before answering.
//!
//! The path of one delivery, in reading order:
//! 1. [`http`] takes the raw request (size, rate and time limits) and finds its [`sources::Source`];
//! 2. the source authenticates it ([`verify`]) and identifies it (event id, type, dedup key);
//! 3. the [`journal`] appends it, group-committed and fsync'd, and only then is it acked;
//! 4. the [`processor`] normalizes it into [`ledger`] changes, applied with its status in one
//!    transaction, retrying with backoff;
//! 5. [`metrics`] and the admin API show what happened.

pub mod background;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod health;
pub mod http;
pub mod journal;
pub mod ledger;
pub mod lookup;
pub mod metrics;
pub mod processor;
pub mod server;
pub mod sources;
pub mod telemetry;
pub mod verify;
