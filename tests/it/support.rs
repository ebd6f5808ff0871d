//! The test harness: a fresh [`TestDatabase`] on either backend, an in-process [`TestApp`] on a
//! random port with a manually driven processor, a [`BinaryServer`] that runs the real `wharf`
//! binary, and [`on_both_backends!`], which runs one story against SQLite and PostgreSQL.
//!
//! PostgreSQL comes from `WHARF_TEST_POSTGRES_URL` (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); every test gets its own database
//! `wharf_t_<pid>_<n>`. Without a reachable server the PostgreSQL variants fail loudly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use wharf::cli::READY_PREFIX;
use wharf::clock::{ManualClock, SharedClock, SystemClock, Timestamp};
use wharf::config::Config;
use wharf::server::{ProcessorMode, RunningServer};
use wharf::verify::{Algorithm, Encoding, HmacScheme};

/// Which storage engine a story runs on (the journal's own enum, so that a test can compare it
/// with `Storage::backend`).
pub use wharf::journal::Backend;

pub const SECRET: &str = "s3cret-cartpanda";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// Runs each named story, an `async fn story(backend: Backend)`, once per backend: it expands to
/// `mod story { async fn sqlite(); async fn postgres(); }`, so the test names read
/// `file::story::sqlite` and `file::story::postgres`.
macro_rules! on_both_backends {
    ($($story:ident),+ $(,)?) => {
        $(
            mod $story {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$story($crate::support::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$story($crate::support::Backend::Postgres).await
                }
            }
        )+
    };
}
pub(crate) use on_both_backends;

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

pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_seconds(seconds)
}

// ---- databases -------------------------------------------------------------------------------

const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const POSTGRES_REQUIRED: &str =
    "PostgreSQL is required for the two-backend tests: start it or set WHARF_TEST_POSTGRES_URL";

/// Databases made by this process so far (the `<n>` of `wharf_t_<pid>_<n>`).
static POSTGRES_DATABASES: AtomicUsize = AtomicUsize::new(0);
/// Set once the leftovers of earlier runs have been dropped.
static POSTGRES_SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A fresh, empty database for one test: a file in a temporary directory on SQLite, a database
/// of its own on PostgreSQL. Also runs the seeds' SQL against it, on either backend.
pub struct TestDatabase {
    url: String,
    sqlite_path: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
    postgres: tokio::sync::OnceCell<tokio_postgres::Client>,
}

impl TestDatabase {
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let temp = tempfile::tempdir().expect("temporary directory");
                let mut database = Self::sqlite_in(temp.path());
                database._temp = Some(temp);
                database
            }
            Backend::Postgres => {
                let name = create_postgres_database().await;
                Self {
                    url: with_database_name(&postgres_admin_url(), &name),
                    sqlite_path: None,
                    _temp: None,
                    postgres: tokio::sync::OnceCell::new(),
                }
            }
        }
    }

    /// A SQLite database file `wharf.db` in `dir` (which the caller keeps alive).
    pub fn sqlite_in(dir: &Path) -> Self {
        let path = dir.join("wharf.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            sqlite_path: Some(path),
            _temp: None,
            postgres: tokio::sync::OnceCell::new(),
        }
    }

    /// The `WHARF_DATABASE` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database file, on SQLite.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// Runs a query and returns every row, each value as text (`None` for NULL): PostgreSQL's
    /// text format, and on SQLite integers, reals and text rendered as text.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match &self.sqlite_path {
            Some(path) => sqlite_rows(path, sql),
            None => {
                let client = self
                    .postgres
                    .get_or_init(|| async { connect_postgres(&self.url).await })
                    .await;
                let messages = client
                    .simple_query(sql)
                    .await
                    .unwrap_or_else(|error| panic!("query failed: {sql}: {error:?}"));
                messages
                    .into_iter()
                    .filter_map(|message| match message {
                        SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|index| row.get(index).map(str::to_owned))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            }
        }
    }

    /// Runs a query that must return exactly one row.
    pub async fn one(&self, sql: &str) -> Vec<Option<String>> {
        let mut rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "expected exactly one row from: {sql}");
        rows.remove(0)
    }

    /// Runs a query whose one row holds one integer, such as `SELECT COUNT(*) …`.
    pub async fn count(&self, sql: &str) -> i64 {
        let row = self.one(sql).await;
        let value = row.first().cloned().flatten().unwrap_or_default();
        value
            .parse()
            .unwrap_or_else(|_| panic!("expected an integer from {sql}, got {value:?}"))
    }
}

fn sqlite_rows(path: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("database opens");
    let mut statement = conn
        .prepare(sql)
        .unwrap_or_else(|error| panic!("query failed: {sql}: {error}"));
    let columns = statement.column_count();
    let rows = statement
        .query_map([], |row| {
            (0..columns)
                .map(|index| {
                    row.get_ref(index).map(|value| match value {
                        ValueRef::Null => None,
                        ValueRef::Integer(integer) => Some(integer.to_string()),
                        ValueRef::Real(real) => Some(real.to_string()),
                        ValueRef::Text(text) | ValueRef::Blob(text) => {
                            Some(String::from_utf8_lossy(text).into_owned())
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|error| panic!("query failed: {sql}: {error}"));
    rows.collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("query failed: {sql}: {error}"))
}

fn postgres_admin_url() -> String {
    std::env::var("WHARF_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_ADMIN_URL.to_owned())
}

/// The same server and user as `url`, another database.
fn with_database_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    match url.rfind('@') {
        Some(at) if at > scheme_end => match url[scheme_end..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

async fn connect_postgres(url: &str) -> tokio_postgres::Client {
    let connected =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls)).await;
    match connected {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Ok(Err(error)) => panic!(
            "\n\n{POSTGRES_REQUIRED}\n(cannot connect to {}: {error:?})\n\n",
            redacted(url)
        ),
        Err(_) => panic!(
            "\n\n{POSTGRES_REQUIRED}\n(connecting to {} timed out)\n\n",
            redacted(url)
        ),
    }
}

/// Creates `wharf_t_<pid>_<n>`; the first call in a process first drops what earlier runs left.
async fn create_postgres_database() -> String {
    let admin = connect_postgres(&postgres_admin_url()).await;
    POSTGRES_SWEPT
        .get_or_init(|| drop_leftover_databases(&admin))
        .await;
    let name = format!(
        "wharf_t_{}_{}",
        std::process::id(),
        POSTGRES_DATABASES.fetch_add(1, Ordering::SeqCst)
    );
    let mut tries = 0;
    loop {
        match admin.simple_query(&format!("CREATE DATABASE {name}")).await {
            Ok(_) => return name,
            // Concurrent CREATE DATABASE may find the template busy for a moment.
            Err(error)
                if tries < 20 && error.to_string().contains("being accessed by other users") =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("CREATE DATABASE {name} failed: {error:?}"),
        }
    }
}

/// Drops `wharf_t_<pid>_<n>` databases of earlier runs: any whose pid is not this process and
/// not a process still running (a concurrent test run keeps its databases).
async fn drop_leftover_databases(admin: &tokio_postgres::Client) {
    let ours = std::process::id().to_string();
    let listed = admin
        .simple_query(r"SELECT datname FROM pg_database WHERE datname LIKE 'wharf\_t\_%'")
        .await
        .expect("list test databases");
    for message in listed {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let Some(name) = row.get(0) else { continue };
        let Some(pid) = name
            .strip_prefix("wharf_t_")
            .and_then(|rest| rest.split('_').next())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if pid == ours || alive || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Err(error) = admin
            .simple_query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
        {
            eprintln!("could not drop leftover test database {name}: {error}");
        }
    }
}

// ---- the in-process server -------------------------------------------------------------------

pub struct TestAppBuilder {
    toml: String,
    env: BTreeMap<String, String>,
    clock: Option<ManualClock>,
    backend: Backend,
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

    /// The storage engine (SQLite unless told).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// SQLite only: keep the database in `dir` (e.g. a small tmpfs) instead of a fresh
    /// temporary directory.
    pub fn database_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let database = match &self.dir {
            Some(dir) => {
                assert_eq!(
                    self.backend,
                    Backend::Sqlite,
                    "database_dir is for SQLite only"
                );
                TestDatabase::sqlite_in(dir)
            }
            None => TestDatabase::fresh(self.backend).await,
        };
        let mut env = self.env;
        env.insert("WHARF_LISTEN".into(), "127.0.0.1:0".into());
        // Small log segments: each test server preallocates a couple of them.
        env.entry("WHARF_LOG_SEGMENT_BYTES".into())
            .or_insert_with(|| "1048576".into());
        env.insert("WHARF_DATABASE".into(), database.url().to_owned());
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
            database,
        }
    }
}

pub struct TestApp {
    pub base: String,
    server: Option<RunningServer>,
    pub client: reqwest::Client,
    database: TestDatabase,
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
            backend: Backend::Sqlite,
            dir: None,
        }
    }

    /// The default app on SQLite.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// The default app on `backend`.
    pub async fn spawn_on(backend: Backend) -> Self {
        Self::builder().backend(backend).spawn().await
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    /// The admin token the server minted at start (none was configured), if it did.
    pub fn first_admin_token(&self) -> Option<String> {
        use secrecy::ExposeSecret as _;
        self.server()
            .first_admin_token
            .as_ref()
            .map(|token| token.expose_secret().to_owned())
    }

    pub fn state(&self) -> &wharf::http::SharedState {
        &self.server().state
    }

    /// See [`TestDatabase::rows`].
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.settle().await;
        self.database.rows(sql).await
    }

    /// See [`TestDatabase::one`].
    pub async fn one(&self, sql: &str) -> Vec<Option<String>> {
        self.settle().await;
        self.database.one(sql).await
    }

    /// See [`TestDatabase::count`].
    pub async fn count(&self, sql: &str) -> i64 {
        self.settle().await;
        self.database.count(sql).await
    }

    /// The test's database (its path or URL).
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// Reads follow acks: on SQLite an ack comes from the delivery log, a moment before the
    /// tables show it.
    async fn settle(&self) {
        if let Some(server) = &self.server {
            server.state.storage.read.await_visible().await;
        }
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

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
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

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

// ---- the real binary -------------------------------------------------------------------------

/// `wharf serve` on `database_url`, on a random port, with the test secrets.
pub fn serve_command(database_url: &str, extra_env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command
        .arg("serve")
        .env("WHARF_LISTEN", "127.0.0.1:0")
        .env("WHARF_LOG_SEGMENT_BYTES", "1048576")
        .env("WHARF_DATABASE", database_url)
        .env("CARTPANDA_WEBHOOK_SECRET", SECRET)
        .env("WHARF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command
}

/// The real binary, started with `wharf serve`; its address comes from the ready line.
pub struct BinaryServer {
    pub child: Child,
    pub base: String,
}

impl BinaryServer {
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut child = serve_command(database_url, extra_env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wharf binary starts");
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

#[test]
fn a_database_name_replaces_the_admin_urls() {
    assert_eq!(
        with_database_name("postgres://postgres@127.0.0.1:5432/postgres", "wharf_t_1_0"),
        "postgres://postgres@127.0.0.1:5432/wharf_t_1_0"
    );
    assert_eq!(
        with_database_name("postgresql://u:p@db/admin?sslmode=disable", "t"),
        "postgresql://u:p@db/t?sslmode=disable"
    );
    assert_eq!(
        with_database_name("postgres://db:5433", "t"),
        "postgres://db:5433/t"
    );
    assert_eq!(
        redacted("postgres://u:hunter2@db/x"),
        "postgres://u:***@db/x"
    );
}

// ---- bursts of unique deliveries ---------------------------------------------------------------

/// How a burst treats a 503 (backpressure): a failure of the test, or a delivery not acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On503 {
    Fail,
    NotAcked,
}

/// Workers posting unique signed sales (`{label}-W{worker}-{index}`), worker `i` to
/// `bases[i % n]`, until each has sent `per_worker` or its server is gone; records what was
/// acked so a test can kill a server mid-burst and then check every ack.
pub struct Burst {
    acked: Arc<parking_lot::Mutex<Vec<String>>>,
    acks: tokio::sync::watch::Receiver<usize>,
    workers: tokio::task::JoinSet<()>,
}

impl Burst {
    pub fn start(bases: &[String], workers: usize, per_worker: usize, label: &str) -> Self {
        Self::start_with(bases, workers, per_worker, label, On503::Fail)
    }

    pub fn start_with(
        bases: &[String],
        workers: usize,
        per_worker: usize,
        label: &str,
        on_503: On503,
    ) -> Self {
        let client = reqwest::Client::new();
        let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (progress, acks) = tokio::sync::watch::channel(0usize);
        let progress = Arc::new(progress);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let base = bases[worker % bases.len()].clone();
            let (client, acked, progress) = (client.clone(), acked.clone(), progress.clone());
            let label = label.to_owned();
            tasks.spawn(async move {
                for index in 0..per_worker {
                    let sale = format!("{label}-W{worker}-{index}");
                    let body = sale_body(&format!("evt_{sale}"), &sale, "sale.approved");
                    let sent = client
                        .post(format!("{base}/webhook/cartpanda"))
                        .header("content-type", "application/json")
                        .header("x-cartpanda-signature", sign(body.as_bytes()))
                        .body(body)
                        .send()
                        .await;
                    match sent.map(|response| response.status().as_u16()) {
                        Ok(200) => {
                            acked.lock().push(sale);
                            progress.send_modify(|n| *n += 1);
                        }
                        Ok(503) if on_503 == On503::NotAcked => {}
                        Ok(status) => panic!("unexpected status {status} during the burst"),
                        Err(_) => return, // this worker's server is gone
                    }
                }
            });
        }
        Self {
            acked,
            acks,
            workers: tasks,
        }
    }

    /// Returns once at least `count` deliveries were acked.
    pub async fn acked_at_least(&mut self, count: usize) {
        self.acks
            .wait_for(|acked| *acked >= count)
            .await
            .expect("acks arrive");
    }

    /// Waits for every worker to stop; returns the sale ids that were acked.
    pub async fn finish(self) -> Vec<String> {
        self.workers.join_all().await;
        let acked = self.acked.lock().clone();
        acked
    }
}
