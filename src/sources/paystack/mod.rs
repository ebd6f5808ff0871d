//! Paystack (seed 004): the signed webhook and the buyer's unsigned callback, proven by
//! Paystack's verify API ([`source`]); both land in the payments ledger Stripe also writes
//! ([`ledger`]), with `gateway = 'paystack'` and the transaction reference as
//! `gateway_transaction_id`.

pub mod billing;
pub mod ledger;
pub mod source;

pub use self::source::{Paystack, PaystackProvider, PaystackSettings};
