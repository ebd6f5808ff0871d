//! Integration tests: one binary, real servers on random ports, temporary databases.

mod admin;
mod bad_input;
mod cartpanda;
mod configured_sources;
mod crash;
mod duplicates;
mod processing;
mod storage_failure;
mod support;
