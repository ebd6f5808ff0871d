//! Assembles a running Wharf from a [`Config`]: journal, processor, HTTP server (the accept
//! loop with its connection limits is [`crate::http::serve`]); and takes it down gracefully:
//! stop accepting, finish in-flight requests, stop the processor, flush the journal.

use std::net::SocketAddr;
use std::sync::Arc;

use secrecy::SecretString;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{Config, DatabaseUrl};
use crate::http::admin::auth::{mint_and_store, MintError};
use crate::http::serve::{self, ServeSettings};
use crate::http::{self, AppState, SharedState};
use crate::journal::postgres::{PostgresOptions, PostgresStorage};
use crate::journal::sqlite::{SqliteJournal, SqliteOptions};
use crate::journal::{JournalError, Storage};
use crate::lookup::{LookupError, LookupSettings, ProviderApi};
use crate::metrics::Metrics;
use crate::processor::Processor;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot open the journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the client for providers' APIs: {0}")]
    ProviderApi(#[from] LookupError),
    #[error("cannot set up the admin token: {0}")]
    AdminToken(#[from] MintError),
}

/// Opens (and migrates) the storage the config names; also returns the migrations applied.
pub async fn open_storage(
    config: &Config,
    clock: SharedClock,
) -> Result<(Storage, Vec<String>), JournalError> {
    match &config.database {
        DatabaseUrl::Sqlite(path) => {
            let mut options = SqliteOptions::new(path);
            options.durability = config.durability;
            // A record must fit a segment: the largest body plus headers and framing.
            options.segment_bytes = config
                .journal
                .segment_bytes
                .max(config.limits.max_body_bytes as u64 * 2 + (256 << 10));
            options.max_segments = config.journal.max_segments.max(2);
            options.dedup_window = config.journal.dedup_window;
            options.feed_retention.max_rows = config.limits.stream_retention_rows;
            SqliteJournal::open_storage(options)
        }
        DatabaseUrl::Postgres(url) => {
            let mut options = PostgresOptions::new(url.clone());
            options.feed_retention.max_rows = config.limits.stream_retention_rows;
            PostgresStorage::open(options, clock).await
        }
    }
}

/// Loads the stored admin token digests; when no token is configured and none is stored,
/// mints the first one (only its digest is stored) and returns it to be shown once.
async fn admin_tokens_at_start(state: &SharedState) -> Result<Option<SecretString>, ServerError> {
    let store = state.storage.tokens.as_ref();
    let stored = store.admin_tokens().await?;
    state.admin_tokens.set_stored(&stored);
    if state.admin_tokens.any_configured() || !stored.is_empty() {
        return Ok(None);
    }
    let minted = mint_and_store(store, "first start", state.clock.now(), true).await?;
    // Another instance may have minted the first one meanwhile: take what is stored now.
    state.admin_tokens.set_stored(&store.admin_tokens().await?);
    Ok(minted)
}

/// Who drives the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorMode {
    /// A background task processes whatever is due (production).
    Background,
    /// Only explicit `run_pending` calls process (deterministic tests).
    Manual,
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: SharedState,
    /// The admin token minted at this start (none was configured and the database held
    /// none): shown once, its digest is all that is stored.
    pub first_admin_token: Option<SecretString>,
    shutdown: CancellationToken,
    http: JoinHandle<()>,
    processor: JoinHandle<()>,
}

impl RunningServer {
    /// Binds, starts the processor (which resumes whatever a crash left pending) and serves.
    pub async fn start(config: Config, clock: SharedClock) -> Result<Self, ServerError> {
        Self::start_with(config, clock, ProcessorMode::Background).await
    }

    /// Like [`RunningServer::start`]; with [`ProcessorMode::Manual`] nothing processes until
    /// someone calls `state.processor.run_pending()`, so tests drive processing step by step.
    pub async fn start_with(
        config: Config,
        clock: SharedClock,
        mode: ProcessorMode,
    ) -> Result<Self, ServerError> {
        let (storage, _) = open_storage(&config, clock.clone()).await?;
        let names: Vec<String> = config.sources.iter().map(|s| s.name().to_owned()).collect();
        let mut metrics = Metrics::new(names.iter().map(String::as_str));
        if let Some(disk) = &storage.disk {
            metrics = metrics.with_disk(disk.clone());
        }
        let metrics = Arc::new(metrics);
        let processor = Arc::new(Processor::new(
            storage.clone(),
            config.sources.clone(),
            clock.clone(),
            config.processor.clone(),
            metrics.clone(),
            ProviderApi::new(LookupSettings::default())?.with_clock(clock.clone()),
        ));
        let state = Arc::new(AppState::new(
            &config,
            storage,
            clock,
            metrics,
            processor.clone(),
        ));
        let first_admin_token = admin_tokens_at_start(&state).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        // Live streams end with the server, so that the connections carrying them close.
        let bus = state.bus.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            bus.stop();
        });
        let processor = match mode {
            ProcessorMode::Background => {
                state
                    .storage
                    .log
                    .attempt_on_arrival(processor.first_attempts());
                tokio::spawn(processor.run(shutdown.clone()))
            }
            ProcessorMode::Manual => tokio::spawn(async {}),
        };
        let app = http::router(state.clone());
        let settings = ServeSettings::from_limits(&config.limits);
        tracing::debug!(?settings, "serving HTTP/1.1");
        let http = tokio::spawn(serve::serve(listener, app, settings, shutdown.clone()));
        Ok(Self {
            addr,
            state,
            first_admin_token,
            shutdown,
            http,
            processor,
        })
    }

    /// A token that, once cancelled, starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish, stops the processor, flushes the journal.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.stopped().await;
    }

    /// Waits until the server has stopped (after its token is cancelled), then flushes.
    pub async fn stopped(self) {
        if let Err(error) = self.http.await {
            tracing::error!(%error, "HTTP server task failed");
        }
        self.shutdown.cancel();
        let _ = self.processor.await;
        self.state.storage.log.close().await;
    }
}
