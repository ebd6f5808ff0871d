//! The test harness: an in-process [`TestApp`] on a random port with a temporary database and
//! a manually driven processor, and a [`BinaryServer`] that runs the real `wharf` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wharf::cli::READY_PREFIX;
use wharf::clock::{ManualClock, SharedClock, SystemClock, Timestamp};
use wharf::config::Config;
use wharf::server::{ProcessorMode, RunningServer};
use wharf::verify::{Algorithm, Encoding, HmacScheme};

pub const SECRET: &str = "s3cret-cartpanda";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

pub fn sign(body: &[u8]) -> String {
    HmacScheme {
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: None,
    }
    .sign(SECRET.as_bytes(), body)
}

/// A seed-000 sale with the given ids, as raw JSON.
pub fn sale_body(event_id: &str, sale_id: &str, event_type: &str) -> String {
    format!(
        r#"{{"id":"{event_id}","type":"{event_type}","data":{{"sale_id":"{sale_id}","customer":{{"email":"c@example.com","name":"John Doe"}},"product":{{"id":"PROD_123","name":"Product Name","price":99.90}},"affiliate":{{"code":"AFF123","name":"Affiliate Name","commission":29.97}},"payment":{{"method":"credit_card","transaction_id":"TRX_{sale_id}","status":"approved"}},"created_at":"2024-01-05T10:30:00Z"}}}}"#
    )
}

pub struct TestAppBuilder {
    toml: String,
    env: BTreeMap<String, String>,
    clock: Option<ManualClock>,
    dir: Option<PathBuf>,
}

impl TestAppBuilder {
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml = toml.to_owned();
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn without_env(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    pub fn manual_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keep the database in `dir` (e.g. a small tmpfs) instead of a fresh temporary directory.
    pub fn database_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let temp = tempfile::tempdir().expect("temporary directory");
        let dir = self.dir.clone().unwrap_or_else(|| temp.path().to_owned());
        let db_path = dir.join("wharf.db");
        let mut env = self.env;
        env.insert("WHARF_LISTEN".into(), "127.0.0.1:0".into());
        env.insert(
            "WHARF_DATABASE".into(),
            format!("sqlite://{}", db_path.display()),
        );
        let config = Config::from_toml(&self.toml, &env).expect("test config");
        let clock: SharedClock = match &self.clock {
            Some(clock) => Arc::new(clock.clone()),
            None => Arc::new(SystemClock),
        };
        let server = RunningServer::start_with(config, clock, ProcessorMode::Manual)
            .await
            .expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr),
            server: Some(server),
            client: reqwest::Client::new(),
            db_path,
            _temp: temp,
        }
    }
}

pub struct TestApp {
    pub base: String,
    server: Option<RunningServer>,
    pub client: reqwest::Client,
    pub db_path: PathBuf,
    _temp: tempfile::TempDir,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            toml: String::new(),
            env: BTreeMap::from([
                ("CARTPANDA_WEBHOOK_SECRET".to_owned(), SECRET.to_owned()),
                ("WHARF_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            ]),
            clock: None,
            dir: None,
        }
    }

    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// Drives the processor until nothing is due; returns how many deliveries it attempted.
    pub async fn run_pending(&self) -> usize {
        self.server()
            .state
            .processor
            .run_pending()
            .await
            .expect("processor runs")
    }

    pub async fn post_cartpanda(&self, body: impl Into<Vec<u8>>) -> reqwest::Response {
        let body = body.into();
        let signature = sign(&body);
        self.client
            .post(format!("{}/webhook/cartpanda", self.base))
            .header("content-type", "application/json")
            .header("x-cartpanda-signature", signature)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// A plain GET, without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// A read-only connection to the database, for the seeds' own SQL.
    pub fn db(&self) -> Connection {
        open_read_only(&self.db_path)
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

pub fn open_read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("database opens")
}

pub fn count(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |row| row.get(0))
        .expect("count query")
}

pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(seconds)
}

/// The real binary, started with `wharf serve`; its address comes from the ready line.
pub struct BinaryServer {
    pub child: Child,
    pub base: String,
}

impl BinaryServer {
    pub async fn start(db_path: &Path, extra_env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command
            .arg("serve")
            .env("WHARF_LISTEN", "127.0.0.1:0")
            .env("WHARF_DATABASE", format!("sqlite://{}", db_path.display()))
            .env("CARTPANDA_WEBHOOK_SECRET", SECRET)
            .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("wharf binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await
                .expect("stdout readable")
                .expect("wharf printed its ready line before exiting");
            if let Some(addr) = line.strip_prefix(READY_PREFIX) {
                break addr.to_owned();
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill_9(mut self) {
        self.child.kill().await.expect("killed");
    }

    /// Waits until nothing is due for processing.
    pub async fn await_idle(&self, client: &reqwest::Client) {
        let response = client
            .get(format!(
                "{}/api/admin/processor/idle?timeout_ms=60000",
                self.base
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("idle request");
        assert_eq!(response.status(), 200, "processor did not become idle");
    }
}

impl TestApp {
    pub fn state(&self) -> &wharf::http::SharedState {
        &self.server().state
    }
}
