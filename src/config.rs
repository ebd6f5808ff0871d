//! One typed configuration, resolved once at start: defaults, then `wharf.toml` (or
//! `--config FILE`), then environment variables. The environment names are a stable interface,
//! including the seeds' own (`CARTPANDA_WEBHOOK_SECRET`, `DATABASE_URL`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use thiserror::Error;

use crate::journal::sqlite::Durability;
use crate::sources::Registry;
use crate::verify::{Algorithm, Encoding, HmacScheme, SecretSet};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// A setting that cannot be used, named as the operator wrote it.
pub fn invalid(name: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name: name.into(),
        reason: reason.to_string(),
    }
}

/// Where the journal lives.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    /// Accepted in config; served by the PostgreSQL journal.
    Postgres(SecretString),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(invalid("WHARF_DATABASE", "sqlite URL has no path"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(SecretString::from(url.to_owned())));
        }
        Err(invalid(
            "WHARF_DATABASE",
            "expected sqlite://PATH or postgres://…",
        ))
    }
}

impl fmt::Debug for DatabaseUrl {
    /// Never prints a PostgreSQL password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&without_password(url.expose_secret())),
        }
    }
}

impl DatabaseUrl {
    /// What an operator may read: a SQLite file as an absolute `sqlite://` path, a PostgreSQL
    /// URL without its password (in the user part or as a `password=` parameter).
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(path) => {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("sqlite://{}", absolute.display())
            }
            Self::Postgres(url) => without_password(url.expose_secret()),
        }
    }
}

/// `postgres://user:pw@host/db?password=pw&sslmode=require` →
/// `postgres://user@host/db?sslmode=require`.
fn without_password(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let mut shown = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => {
                    let user = user_info.split(':').next().unwrap_or_default();
                    format!("{user}@{host}")
                }
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_owned(),
    };
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            shown.push('?');
            shown.push_str(&kept.join("&"));
        }
    }
    shown
}

/// A token bucket's size and refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub request_timeout: Duration,
    /// Applied to every source without its own; `None` means unlimited.
    pub rate_limit: Option<RateLimit>,
    /// From the first byte of a request head to its last: a client that trickles its headers
    /// (slowloris) is cut off after this.
    pub header_read_timeout: Duration,
    /// How long a payment callback's buyer waits for the provider's API to confirm the
    /// payment before being told it is verified in the background.
    pub inline_settle_timeout: Duration,
    /// How long a connection may wait, idle, for its next request (after connecting or after
    /// its previous response) before it is closed.
    pub idle_timeout: Duration,
    /// The request line and headers together; a larger head is answered 431 and closed.
    pub max_header_bytes: usize,
    /// Open connections at most; lowered at start to leave [`FD_RESERVE`] file descriptors of
    /// the process's limit for the journal, logs and the database pool. At the cap the
    /// longest-idle connection is closed to admit a new one.
    pub max_connections: usize,
    /// Changes the live broadcast holds for stream subscribers that are momentarily behind; a
    /// subscriber further behind is told it lagged and catches up from the database.
    pub stream_buffer: usize,
    /// Changes the feed keeps to resume streams from (older ones are pruned; a client that
    /// resumes from before the oldest is told `truncated`). It is a stream, not an archive:
    /// the deliveries and the ledger are the record.
    pub stream_retention_rows: u64,
}

/// File descriptors kept out of the connection cap: journal files, the PostgreSQL pool, the
/// listener, logs, and a margin for connections still closing.
pub const FD_RESERVE: u64 = 64;

/// The smallest head limit accepted: a request line and the usual headers fit in 1 KiB.
const MIN_HEADER_BYTES: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_json_depth: crate::sources::json::DEFAULT_MAX_DEPTH,
            request_timeout: Duration::from_secs(10),
            rate_limit: None,
            header_read_timeout: Duration::from_secs(10),
            inline_settle_timeout: Duration::from_secs(8),
            idle_timeout: Duration::from_secs(75),
            max_header_bytes: 64 * 1024,
            max_connections: 1024,
            stream_buffer: 4096,
            stream_retention_rows: crate::journal::feed::FeedRetention::default().max_rows,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Attempts before a delivery is dead.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub batch_size: usize,
    /// Longest sleep between looks for due retries when nothing wakes the processor.
    pub idle_poll: Duration,
    /// After new deliveries wake the processor, it waits this long so that one batch (one
    /// transaction) carries many deliveries instead of one commit per request.
    pub batch_window: Duration,
    /// How long a claim keeps other processors (other instances on PostgreSQL) away from a
    /// delivery; a claim held by a dead instance is taken over once it runs out.
    pub lease: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            batch_size: 512,
            idle_poll: Duration::from_secs(1),
            batch_window: Duration::from_millis(10),
            lease: Duration::from_secs(60),
        }
    }
}

/// The embedded journal's delivery log: segment files of `segment_bytes`, at most
/// `max_segments` of them (the most SQLite may fall behind by), and how many recent keys are
/// answered as duplicates from memory.
#[derive(Debug, Clone, Copy)]
pub struct JournalSettings {
    pub segment_bytes: u64,
    pub max_segments: usize,
    pub dedup_window: usize,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            segment_bytes: 16 << 20,
            max_segments: 64,
            dedup_window: 1 << 18,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJournal {
    segment_bytes: Option<u64>,
    max_segments: Option<usize>,
    dedup_window: Option<usize>,
}

/// Everything the server needs, validated.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub durability: Durability,
    /// The embedded journal's delivery log.
    pub journal: JournalSettings,
    pub admin_token: Option<SecretString>,
    /// More admin tokens (`admin_tokens = [...]` in the file), accepted beside `admin_token`.
    pub admin_tokens: Vec<SecretString>,
    pub limits: Limits,
    pub processor: ProcessorSettings,
    pub sources: Registry,
    /// Per-source rate limits overriding `limits.rate_limit`.
    pub source_rate_limits: BTreeMap<String, RateLimit>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("durability", &self.durability)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("admin_tokens", &self.admin_tokens.len())
            .field("limits", &self.limits)
            .field("processor", &self.processor)
            .field(
                "sources",
                &self
                    .sources
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

// ---- the file format -------------------------------------------------------------------------

/// The file's top level. Besides these keys, each provider may have its own section
/// (`[cartpanda]`), read by the provider; any other key is an error.
#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    listen: Option<String>,
    database: Option<String>,
    durability: Option<Durability>,
    #[serde(default)]
    journal: FileJournal,
    admin_token: Option<String>,
    #[serde(default)]
    admin_tokens: Vec<String>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    processor: FileProcessor,
    #[serde(default)]
    sources: BTreeMap<String, toml::Table>,
    /// Provider sections, and mistakes.
    #[serde(flatten)]
    providers: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_json_depth: Option<usize>,
    request_timeout_ms: Option<u64>,
    rate_limit: Option<RateLimit>,
    header_read_timeout_ms: Option<u64>,
    inline_settle_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    stream_buffer: Option<usize>,
    stream_retention_rows: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProcessor {
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    batch_size: Option<usize>,
    batch_window_ms: Option<u64>,
    lease_ms: Option<u64>,
    idle_poll_ms: Option<u64>,
}

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_FILE: &str = "wharf.toml";

/// Reads environment variables; a trait so tests can pass a map instead of the process env.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;

    /// The names of the variables set (non-empty), to find settings meant for nothing.
    fn names(&self) -> Vec<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }

    fn names(&self) -> Vec<String> {
        std::env::vars_os()
            .filter(|(_, value)| !value.is_empty())
            .filter_map(|(name, _)| name.into_string().ok())
            .collect()
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|value| !value.is_empty())
    }

    fn names(&self) -> Vec<String> {
        self.iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Config {
    /// Loads `path` if given (it must exist), else `./wharf.toml` if present, then applies `env`.
    pub fn load(path: Option<&Path>, env: &dyn Environment) -> Result<Self, ConfigError> {
        let file = match Self::file_to_read(path) {
            Some(path) => read_file(&path)?,
            None => FileConfig::default(),
        };
        resolve(file, env)
    }

    /// The file [`Config::load`] reads: `path` when given, else `./wharf.toml` when it exists;
    /// `None` means the configuration comes from the environment alone.
    pub fn file_to_read(path: Option<&Path>) -> Option<PathBuf> {
        match path {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|path| path.exists()),
        }
    }

    /// Parses TOML text (no file involved) and applies `env`; for tests and tools.
    pub fn from_toml(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let file = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            source,
        })?;
        resolve(file, env)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Secrets from a comma-separated variable: several at once during a rotation.
/// A comma-separated list of secrets from one environment variable.
pub fn secrets_from_env(value: Option<String>) -> Option<Vec<String>> {
    value.map(|list| {
        list.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn parse_env<T: std::str::FromStr>(
    env: &dyn Environment,
    name: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    env.var(name)
        .map(|value| value.parse::<T>().map_err(|error| invalid(name, error)))
        .transpose()
}

fn resolve(file: FileConfig, env: &dyn Environment) -> Result<Config, ConfigError> {
    let journal_defaults = JournalSettings::default();
    let listen_text = env
        .var("WHARF_LISTEN")
        .or(file.listen)
        .unwrap_or_else(|| "0.0.0.0:8000".to_owned());
    let listen = listen_text
        .parse()
        .map_err(|error| invalid("WHARF_LISTEN", error))?;
    let database_text = env
        .var("WHARF_DATABASE")
        .or_else(|| env.var("DATABASE_URL"))
        .or(file.database)
        .unwrap_or_else(|| "sqlite://./wharf.db".to_owned());
    let durability = match env.var("WHARF_DURABILITY").as_deref() {
        Some("fsync") => Durability::Fsync,
        Some("os") => Durability::Os,
        Some(other) => {
            return Err(invalid(
                "WHARF_DURABILITY",
                format!("{other:?} is not fsync or os"),
            ))
        }
        None => file.durability.unwrap_or(Durability::Fsync),
    };
    let defaults = Limits::default();
    let limits = Limits {
        max_body_bytes: parse_env(env, "WHARF_MAX_BODY_BYTES")?
            .or(file.limits.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes),
        // serde_json's own limit is below anything deeper (see `json::MAX_DEPTH`).
        max_json_depth: file
            .limits
            .max_json_depth
            .unwrap_or(defaults.max_json_depth)
            .min(crate::sources::json::MAX_DEPTH),
        request_timeout: file
            .limits
            .request_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.request_timeout),
        rate_limit: file.limits.rate_limit,
        header_read_timeout: parse_env(env, "WHARF_HEADER_READ_TIMEOUT_MS")?
            .or(file.limits.header_read_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.header_read_timeout)
            .max(Duration::from_millis(1)),
        // Below the request deadline, so the buyer always gets the callback's own answer.
        inline_settle_timeout: parse_env(env, "WHARF_INLINE_SETTLE_TIMEOUT_MS")?
            .or(file.limits.inline_settle_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.inline_settle_timeout),
        idle_timeout: parse_env(env, "WHARF_IDLE_TIMEOUT_MS")?
            .or(file.limits.idle_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(defaults.idle_timeout)
            .max(Duration::from_millis(1)),
        max_header_bytes: parse_env(env, "WHARF_MAX_HEADER_BYTES")?
            .or(file.limits.max_header_bytes)
            .unwrap_or(defaults.max_header_bytes)
            .max(MIN_HEADER_BYTES),
        max_connections: parse_env(env, "WHARF_MAX_CONNECTIONS")?
            .or(file.limits.max_connections)
            .unwrap_or(defaults.max_connections)
            .max(1),
        stream_buffer: parse_env(env, "WHARF_STREAM_BUFFER")?
            .or(file.limits.stream_buffer)
            .unwrap_or(defaults.stream_buffer)
            .max(1),
        stream_retention_rows: parse_env(env, "WHARF_STREAM_RETENTION_ROWS")?
            .or(file.limits.stream_retention_rows)
            .unwrap_or(defaults.stream_retention_rows)
            .max(1),
    };
    let processor_defaults = ProcessorSettings::default();
    let processor = ProcessorSettings {
        max_attempts: parse_env(env, "WHARF_MAX_ATTEMPTS")?
            .or(file.processor.max_attempts)
            .unwrap_or(processor_defaults.max_attempts)
            .max(1),
        backoff_base: file
            .processor
            .backoff_base_ms
            .map(Duration::from_millis)
            .unwrap_or(processor_defaults.backoff_base),
        backoff_max: file
            .processor
            .backoff_max_ms
            .map(Duration::from_millis)
            .unwrap_or(processor_defaults.backoff_max),
        batch_size: file
            .processor
            .batch_size
            .unwrap_or(processor_defaults.batch_size)
            .max(1),
        idle_poll: parse_env(env, "WHARF_IDLE_POLL_MS")?
            .or(file.processor.idle_poll_ms)
            .map(Duration::from_millis)
            .unwrap_or(processor_defaults.idle_poll),
        lease: parse_env(env, "WHARF_LEASE_MS")?
            .or(file.processor.lease_ms)
            .map(Duration::from_millis)
            .unwrap_or(processor_defaults.lease)
            .max(Duration::from_millis(100)),
        batch_window: file
            .processor
            .batch_window_ms
            .map(Duration::from_millis)
            .unwrap_or(processor_defaults.batch_window),
    };
    let (sources, source_rate_limits) = build_sources(file.providers, file.sources, env)?;
    Ok(Config {
        listen,
        database: DatabaseUrl::parse(&database_text)?,
        durability,
        journal: JournalSettings {
            segment_bytes: parse_env(env, "WHARF_LOG_SEGMENT_BYTES")?
                .or(file.journal.segment_bytes)
                .unwrap_or(journal_defaults.segment_bytes),
            max_segments: parse_env(env, "WHARF_LOG_MAX_SEGMENTS")?
                .or(file.journal.max_segments)
                .unwrap_or(journal_defaults.max_segments),
            dedup_window: file
                .journal
                .dedup_window
                .unwrap_or(journal_defaults.dedup_window),
        },
        admin_token: env
            .var("WHARF_ADMIN_TOKEN")
            .or(file.admin_token)
            .map(SecretString::from),
        admin_tokens: file
            .admin_tokens
            .into_iter()
            .map(SecretString::from)
            .collect(),
        limits,
        processor,
        sources,
        source_rate_limits,
    })
}

/// Every provider's built-in source, then the declared ones, with their rate limits.
fn build_sources(
    mut sections: BTreeMap<String, toml::Value>,
    declared: BTreeMap<String, toml::Table>,
    env: &dyn Environment,
) -> Result<(Registry, BTreeMap<String, RateLimit>), ConfigError> {
    let mut sources = Registry::new();
    let mut rate_limits = BTreeMap::new();
    for provider in crate::sources::PROVIDERS {
        let kind = provider.kind();
        let mut section = match sections.remove(kind) {
            None => toml::Table::new(),
            Some(toml::Value::Table(table)) => table,
            Some(_) => return Err(invalid(kind, "must be a table")),
        };
        let rate_limit = take_rate_limit(kind, &mut section)?;
        if let Some(source) = provider.builtin(section, env)? {
            if let Some(limit) = rate_limit {
                rate_limits.insert(source.name().to_owned(), limit);
            }
            sources.insert(source);
        }
    }
    if let Some(unknown) = sections.keys().next() {
        let kinds: Vec<_> = crate::sources::PROVIDERS.iter().map(|p| p.kind()).collect();
        return Err(invalid(
            unknown.as_str(),
            format!(
                "is not a setting nor a provider (providers: {})",
                kinds.join(", ")
            ),
        ));
    }
    for (name, mut section) in declared {
        let context = format!("sources.{name}");
        if sources.get(&name).is_some() || !valid_source_name(&name) {
            return Err(invalid(
                context,
                "source names are 1-64 of [a-z0-9_-] and not a built-in source's name",
            ));
        }
        let kind = match section.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            _ => return Err(invalid(format!("{context}.kind"), "is required (a string)")),
        };
        let provider = crate::sources::provider(&kind).ok_or_else(|| {
            let kinds: Vec<_> = crate::sources::PROVIDERS
                .iter()
                .map(|p| format!("{:?}", p.kind()))
                .collect();
            invalid(
                format!("{context}.kind"),
                format!("{kind:?} is not one of {}", kinds.join(", ")),
            )
        })?;
        let rate_limit = take_rate_limit(&context, &mut section)?;
        let file_secrets: Vec<String> = match section.remove("secrets") {
            None => Vec::new(),
            Some(value) => value
                .try_into()
                .map_err(|error| invalid(format!("{context}.secrets"), error))?,
        };
        let env_name = source_secret_variable(&name);
        let secrets = SecretSet::new(secrets_from_env(env.var(&env_name)).unwrap_or(file_secrets));
        sources.insert(provider.configured(&name, section, secrets)?);
        if let Some(limit) = rate_limit {
            rate_limits.insert(name, limit);
        }
    }
    let mut routes = std::collections::BTreeSet::new();
    for source in sources.iter() {
        for route in source.routes() {
            if !routes.insert((route.path.clone(), route.method.to_string())) {
                return Err(invalid(
                    source.name(),
                    format!(
                        "{} {} is already another source's route",
                        route.method, route.path
                    ),
                ));
            }
        }
    }
    Ok((sources, rate_limits))
}

/// `rate_limit`, which every source may have and the ingress applies.
fn take_rate_limit(
    context: &str,
    section: &mut toml::Table,
) -> Result<Option<RateLimit>, ConfigError> {
    section
        .remove("rate_limit")
        .map(|value| {
            value
                .try_into()
                .map_err(|error| invalid(format!("{context}.rate_limit"), error))
        })
        .transpose()
}

/// The variable holding a declared source's secrets: `WHARF_SOURCE_<NAME>_SECRET`, the name
/// upper-cased with `-` as `_`.
pub fn source_secret_variable(name: &str) -> String {
    format!(
        "WHARF_SOURCE_{}_SECRET",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An HMAC scheme from its settings, named under `context` in errors.
pub fn hmac_scheme(
    context: &str,
    algorithm: Option<&str>,
    encoding: Option<&str>,
    prefix: Option<&str>,
    default_prefix: Option<&str>,
) -> Result<HmacScheme, ConfigError> {
    Ok(HmacScheme {
        algorithm: algorithm
            .unwrap_or("sha256")
            .parse::<Algorithm>()
            .map_err(|error| invalid(format!("{context}.algorithm"), error))?,
        encoding: encoding
            .unwrap_or("hex")
            .parse::<Encoding>()
            .map_err(|error| invalid(format!("{context}.encoding"), error))?,
        prefix: prefix
            .or(default_prefix)
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_need_no_configuration() {
        let config = Config::from_toml("", &env(&[])).expect("config");
        assert_eq!(config.listen, "0.0.0.0:8000".parse().expect("addr"));
        assert!(
            matches!(config.database, DatabaseUrl::Sqlite(ref p) if p == Path::new("./wharf.db"))
        );
        assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
        assert!(config.sources.get("cartpanda").is_some());
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::from_toml(
            "listen = \"127.0.0.1:1\"\ndatabase = \"sqlite://a.db\"",
            &env(&[
                ("WHARF_LISTEN", "127.0.0.1:2"),
                ("DATABASE_URL", "sqlite://b.db"),
            ]),
        )
        .expect("config");
        assert_eq!(config.listen.port(), 2);
        assert!(matches!(config.database, DatabaseUrl::Sqlite(ref p) if p == Path::new("b.db")));
    }

    #[test]
    fn configured_sources_are_built_with_env_secrets() {
        let text = r#"
            [sources.billing]
            kind = "standard-webhooks"
            [sources.shop]
            kind = "hmac"
            signature_header = "X-Sig"
            algorithm = "sha1"
            encoding = "base64"
            dedup_pointer = "/id"
        "#;
        let config = Config::from_toml(text, &env(&[("WHARF_SOURCE_BILLING_SECRET", "whsec_abc")]))
            .expect("config");
        assert_eq!(
            config.sources.get("billing").map(|s| s.kind()),
            Some("standard-webhooks")
        );
        assert_eq!(config.sources.get("shop").map(|s| s.kind()), Some("hmac"));
    }

    #[test]
    fn connection_limits_have_defaults_and_come_from_file_or_env() {
        let config = Config::from_toml("", &env(&[])).expect("config");
        assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.limits.max_header_bytes, 64 * 1024);
        assert_eq!(config.limits.max_connections, 1024);
        let text = "[limits]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 500\n\
                    max_header_bytes = 10\nmax_connections = 50";
        let config =
            Config::from_toml(text, &env(&[("WHARF_MAX_CONNECTIONS", "7")])).expect("config");
        assert_eq!(
            config.limits.header_read_timeout,
            Duration::from_millis(300)
        );
        assert_eq!(config.limits.idle_timeout, Duration::from_millis(500));
        assert_eq!(
            config.limits.max_header_bytes, 1024,
            "raised to the minimum"
        );
        assert_eq!(config.limits.max_connections, 7);
    }

    #[test]
    fn unknown_keys_and_kinds_are_errors() {
        assert!(Config::from_toml("lisen = \"x\"", &env(&[])).is_err());
        assert!(Config::from_toml("[sources.x]\nkind = \"magic\"", &env(&[])).is_err());
        assert!(Config::from_toml("[sources.Bad]\nkind = \"hmac\"", &env(&[])).is_err());
    }

    #[test]
    fn postgres_url_debug_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://wharf:hunter2@db:5432/wharf").expect("url");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db:5432/wharf"));
        assert_eq!(url.shown(), "postgres://wharf@db:5432/wharf");
        let in_query =
            DatabaseUrl::parse("postgres://db/w?password=hunter2&sslmode=require").expect("url");
        assert_eq!(in_query.shown(), "postgres://db/w?sslmode=require");
    }

    #[test]
    fn a_sqlite_path_is_shown_absolute() {
        let shown = DatabaseUrl::parse("sqlite://./wharf.db")
            .expect("url")
            .shown();
        let path = shown.strip_prefix("sqlite://").expect("scheme");
        assert!(Path::new(path).is_absolute(), "{shown}");
        assert!(path.ends_with("wharf.db"), "{shown}");
    }
}
