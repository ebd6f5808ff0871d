//! PayPal: captures, refunds and reversals into `payments`, billing subscriptions into
//! `subscriptions` (the tables Stripe writes, `gateway = 'paypal'`). [`event`] reads an event
//! (pure), [`ledger`] decides the rows, and [`source`] the route and the signature check, which
//! needs PayPal's certificate and so runs in the processor as a lookup.

pub mod event;
pub mod ledger;
pub mod source;

pub use self::source::{CertHosts, Paypal, PaypalProvider};

#[cfg(test)]
mod tests;
