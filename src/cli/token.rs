//! `wharf token create`: mints an admin token and stores only its digest in the database the
//! configuration names; the token is printed once. And the notice `wharf serve` prints when it
//! minted the first token itself.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::{Clock as _, SystemClock};
use crate::config::{Config, ProcessEnv};
use crate::http::admin::auth::mint_and_store;
use crate::journal::JournalError;
use crate::server::open_storage;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an admin token: stores its SHA-256 digest in the database and prints the token
    /// once. On SQLite the server must be stopped (it holds the database alone); on
    /// PostgreSQL running servers accept the new token within a second.
    #[command(after_help = "\
Examples:
  wharf token create
  wharf token create --label ci --config /etc/wharf/wharf.toml")]
    Create {
        #[arg(long)]
        config: Option<PathBuf>,
        /// What the token is for, kept beside its digest.
        #[arg(long, default_value = "wharf token create")]
        label: String,
    },
}

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { config, label } = command;
    let config = Config::load(config.as_deref(), &ProcessEnv)?;
    let clock = Arc::new(SystemClock);
    let (storage, _) = open_storage(&config, clock.clone())
        .await
        .map_err(|error| match error {
            JournalError::InUse(_) => anyhow::anyhow!(
                "{error}; stop the server first: on SQLite only one process opens the database"
            ),
            error => error.into(),
        })?;
    let minted = mint_and_store(storage.tokens.as_ref(), &label, clock.now(), false).await;
    storage.log.close().await;
    let token = minted?.ok_or_else(|| anyhow::anyhow!("the token was not stored; try again"))?;
    println!("{}", token.expose_secret());
    eprintln!("Keep it now: only its digest is stored. Use it as Authorization: Bearer TOKEN.");
    Ok(())
}

/// What `wharf serve` prints when it minted the first admin token: the token, once.
pub fn announce_first_token(token: &SecretString) {
    println!(
        "wharf: no admin token was configured, so one was created. It is shown only this once \
         (only its SHA-256 digest is stored):\n\n    {}\n\nUse it as `Authorization: Bearer \
         TOKEN` for /api/…, or set WHARF_ADMIN_TOKEN to choose your own.",
        token.expose_secret()
    );
}
