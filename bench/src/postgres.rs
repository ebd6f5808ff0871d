//! `wharf-bench --postgres URL`: phase 2 again (closed loop at full load,
//! then drain) against Wharf on PostgreSQL, first with one instance, then
//! with three sharing one database, in the same run and with the same load
//! generator and bodies as the SQLite phases, so the figures compare.
//!
//! Each run gets a fresh scratch database, created through the admin URL
//! and dropped at the end whatever happened, so runs never see each other's
//! rows and nothing is left behind on the server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;
use tokio_postgres::Client;
use wharf::journal::postgres::tls;

use super::child::ChildServer;
use super::load::{BodyFactory, Pace};
use super::report::{combine_idle, PostgresCounts, PostgresRun, PostgresSection};
use super::{
    measure_phase, wait_idle, wharf_command, BenchOptions, DatabaseProcesses, LoadRuntime,
};

/// Instances sharing one database in the scale-out run.
pub(crate) const SCALE_OUT_INSTANCES: usize = 3;
/// Idle poll of the scale-out instances, in ms. An instance is woken by its
/// own appends only: it must poll to pick up work its peers received (and
/// to notice the shared backlog emptied, which is what the drain waits for).
pub(crate) const SCALE_OUT_IDLE_POLL_MS: u64 = 200;
/// A PostgreSQL that does not answer within this is not one to bench.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the PostgreSQL server's admin database, used to create
/// and drop the scratch databases.
pub(crate) struct Admin {
    client: Client,
    url: SecretString,
    /// `host:port`, credentials left out, for the report and errors.
    server: String,
}

impl Admin {
    /// Connects to `url` (an admin URL such as
    /// `postgres://postgres@127.0.0.1:5432/postgres`).
    pub(crate) async fn connect(url: &SecretString) -> anyhow::Result<Self> {
        let text = url.expose_secret();
        // Fail now on a URL the scratch databases' URLs cannot be made from.
        database_url(text, "probe")?;
        let server = server_of(text);
        let client = connect(text)
            .await
            .with_context(|| format!("--postgres: cannot reach PostgreSQL at {server}"))?;
        Ok(Self {
            client,
            url: url.clone(),
            server,
        })
    }

    async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("creating database {name} on {}", self.server))
    }

    /// Pids of the PostgreSQL processes working for `database` now: the
    /// backends connected to it, and the WAL writer, checkpointer and
    /// background writer, which write its WAL and pages (shared with any
    /// other database, idle during a bench). None if they cannot be listed
    /// (the CPU split and costs are then without the database's share).
    pub(crate) async fn server_pids(&self, database: &str) -> Vec<u32> {
        let rows = self
            .client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
                 OR backend_type IN ('walwriter', 'checkpointer', 'background writer')",
                &[&database],
            )
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|row| row.try_get::<_, i32>(0).ok())
            .filter_map(|pid| u32::try_from(pid).ok())
            .collect()
    }

    /// `WITH (FORCE)` also ends connections a killed instance left open.
    async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.client
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .with_context(|| format!("dropping database {name} on {}", self.server))
    }
}

/// Measures one instance, then [`SCALE_OUT_INSTANCES`]. Never fails: the
/// SQLite figures are already in hand, so a failure here is reported beside
/// them (and the next run skipped, as it would most likely fail alike).
pub(crate) async fn measure(
    opts: &BenchOptions,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    secret: &str,
    admin_token: &str,
    admin: &Admin,
) -> PostgresSection {
    let mut section = PostgresSection {
        server: admin.server.clone(),
        ..PostgresSection::default()
    };
    for instances in [1, SCALE_OUT_INSTANCES] {
        let env = ServeEnv {
            opts,
            secret,
            admin_token,
            instances,
        };
        match measure_on_fresh_database(&env, load, factory, admin).await {
            Ok(run) => section.runs.push(run),
            Err(error) => {
                section.failure = Some(format!("postgres ({instances}): {error:#}"));
                break;
            }
        }
    }
    section
}

/// How to start the instances of one run.
struct ServeEnv<'a> {
    opts: &'a BenchOptions,
    secret: &'a str,
    admin_token: &'a str,
    instances: usize,
}

impl ServeEnv<'_> {
    fn command(&self, database_url: &str) -> Command {
        let mut command = wharf_command(
            &self.opts.wharf_bin,
            database_url,
            self.secret,
            self.admin_token,
        );
        if self.instances > 1 {
            command.env("WHARF_IDLE_POLL_MS", SCALE_OUT_IDLE_POLL_MS.to_string());
        }
        command
    }
}

/// Creates the run's database, measures, and drops the database whether or
/// not measuring worked.
async fn measure_on_fresh_database(
    env: &ServeEnv<'_>,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    admin: &Admin,
) -> anyhow::Result<PostgresRun> {
    let name = format!("wharf_bench_{}_{}", std::process::id(), env.instances);
    let url = database_url(admin.url.expose_secret(), &name)?;
    admin.create_database(&name).await?;
    let measured = measure_instances(env, load, factory, admin, &url, &name).await;
    let dropped = admin.drop_database(&name).await;
    match (measured, dropped) {
        (Ok(mut run), dropped) => {
            run.cleanup_error = dropped.err().map(|error| format!("{error:#}"));
            Ok(run)
        }
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(drop_error)) => {
            Err(error.context(format!("and then {drop_error:#}; drop it by hand")))
        }
    }
}

/// Starts the instances on `url`, runs the closed-loop phase with the
/// connections spread over them, waits until all are idle, and counts.
async fn measure_instances(
    env: &ServeEnv<'_>,
    load: &LoadRuntime,
    factory: &Arc<BodyFactory>,
    admin: &Admin,
    url: &str,
    database: &str,
) -> anyhow::Result<PostgresRun> {
    let mut servers = Vec::with_capacity(env.instances);
    for _ in 0..env.instances {
        servers.push(ChildServer::spawn(env.command(url), "wharf serve (postgres)").await?);
    }
    let plan = env.opts.plan(Pace::Closed);
    let processes = DatabaseProcesses::Postgres { admin, database };
    let measured = measure_phase(&mut servers, processes, load, factory, plan).await?;
    let drain = combine_idle(
        join_all(
            servers
                .iter()
                .map(|server| wait_idle(server.addr, env.admin_token)),
        )
        .await,
    );
    let drained = processes.sample(&servers).await;
    let counts = count_outcomes(url)
        .await
        .map_err(|error| format!("{error:#}"));
    let stderr = stderr_lines(&servers);
    for server in servers {
        server.stop().await;
    }
    Ok(PostgresRun {
        instances: env.instances,
        database: database.to_owned(),
        load: measured.stats(Some(&drained)),
        drain,
        counts,
        stderr,
        cleanup_error: None,
    })
}

/// The instances' last stderr lines, prefixed with the instance number when
/// there are several.
fn stderr_lines(servers: &[ChildServer]) -> Vec<String> {
    if let [server] = servers {
        return server.stderr_lines();
    }
    servers
        .iter()
        .enumerate()
        .flat_map(|(index, server)| {
            server
                .stderr_lines()
                .into_iter()
                .map(move |line| format!("[{index}] {line}"))
        })
        .collect()
}

/// What the drained database holds; see [`PostgresCounts`].
async fn count_outcomes(url: &str) -> anyhow::Result<PostgresCounts> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'processed'), \
                    (SELECT COUNT(*) FROM attempts WHERE outcome = 'processed'), \
                    (SELECT COUNT(*) FROM sales), \
                    pg_database_size(current_database())",
            &[],
        )
        .await
        .context("counting processed deliveries, attempts and sales, sizing the database")?;
    let count = |index: usize| -> anyhow::Result<u64> {
        let value: i64 = row.try_get(index).context("reading a count")?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    Ok(PostgresCounts {
        processed: count(0)?,
        processed_attempts: count(1)?,
        sales: count(2)?,
        size_bytes: count(3)?,
    })
}

/// Connects the way Wharf's journal does (libpq's `sslmode` honoured), so
/// any URL Wharf accepts works here too.
async fn connect(url: &str) -> anyhow::Result<Client> {
    let (url, tls_choice) = tls::split_url(url);
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|error| anyhow::anyhow!("PostgreSQL URL: {error}"))?;
    config.ssl_mode(tls_choice.mode);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("wharf-bench");
    let connector = tls::connector(&tls_choice)?;
    let (client, connection) = config
        .connect(connector)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `admin_url` with its database replaced by `name`: same scheme, user,
/// password, host, port and options.
fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let Some((scheme, rest)) = base.split_once("://") else {
        bail!("--postgres needs a URL like postgres://USER@HOST:PORT/DB");
    };
    if scheme != "postgres" && scheme != "postgresql" {
        bail!("--postgres needs a postgres:// URL, not {scheme}://");
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// `host:port` of a PostgreSQL URL, without user or password.
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_database_urls_keep_everything_but_the_database() {
        assert_eq!(
            database_url(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "wharf_bench_1_3"
            )
            .expect("url"),
            "postgres://postgres@127.0.0.1:5432/wharf_bench_1_3"
        );
        assert_eq!(
            database_url("postgresql://u:p%2Fw@db:6543?sslmode=require", "x").expect("url"),
            "postgresql://u:p%2Fw@db:6543/x?sslmode=require"
        );
        assert_eq!(
            database_url("postgres://u@h/app?application_name=a", "x").expect("url"),
            "postgres://u@h/x?application_name=a"
        );
        assert!(database_url("sqlite:///tmp/db", "x").is_err());
        assert!(database_url("host=localhost user=postgres", "x").is_err());
    }

    #[test]
    fn server_is_shown_without_credentials() {
        assert_eq!(
            server_of("postgres://u:secret@127.0.0.1:5432/postgres?sslmode=disable"),
            "127.0.0.1:5432"
        );
        assert_eq!(server_of("postgres://db.example/app"), "db.example");
    }
}
