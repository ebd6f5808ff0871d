//! PostgreSQL backend (in progress).
use secrecy::SecretString;

use super::{JournalError, Storage};
use crate::clock::SharedClock;

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub url: SecretString,
}

impl PostgresOptions {
    pub fn new(url: SecretString) -> Self {
        Self { url }
    }
}

pub struct PostgresStorage;

impl PostgresStorage {
    pub async fn open(
        _options: PostgresOptions,
        _clock: SharedClock,
    ) -> Result<(Storage, Vec<String>), JournalError> {
        Err(JournalError::Config("not yet".into()))
    }
}
