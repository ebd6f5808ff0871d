//! Stripe (seeds 003 and 004): payment intents, charges, refunds and disputes into `payments`,
//! `refunds`, `disputes` and `order_status_history`; subscriptions and invoices into
//! `subscriptions` and `user_plans`. [`event`] reads an event into a report (pure),
//! [`lifecycle`] decides which of two reports wins, [`payments`] and [`billing`] are the rows,
//! and [`source`] the routes, signature and replies.
//!
//! Stripe does not promise order, so no change waits for another: every report lands in the row
//! it concerns (creating it if need be), each row keeps the event time of what it holds, and
//! whatever follows from several reports (a payment's status under its refunds) is computed
//! again from the row each time.

pub mod billing;
pub mod event;
pub mod fixtures;
pub mod lifecycle;
pub mod payments;
mod row;
pub mod source;

pub use self::source::{Stripe, StripeProvider};

#[cfg(test)]
mod tests;
