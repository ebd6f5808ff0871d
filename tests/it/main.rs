//! Integration tests: one binary, real servers on random ports, temporary databases. Stories
//! that touch storage run on both backends (`story::sqlite`, `story::postgres`); PostgreSQL
//! must be reachable (see `support`).

mod abuse;
mod admin;
mod admin_api;
mod admin_tokens;
mod bad_input;
mod cartpanda;
mod cli;
mod cli_admin;
mod configured_sources;
mod crash;
mod dashboard;
mod duplicates;
mod export_memory;
mod journal_log;
mod multi_instance;
mod openapi;
mod operator_logs;
mod pancake;
mod paypal;
mod paystack;
mod processing;
mod refract;
mod source_health;
mod storage;
mod storage_failure;
mod stream;
mod stripe;
mod support;
mod tradingview;
mod transfer;
mod trigger;
