//! Load generator: HTTP/1.1 keep-alive connections driven in a closed loop
//! (next request as soon as the previous answered) or an open loop (each
//! connection sends on a fixed schedule).
//!
//! It shares two cores with the server under test, so per-request client
//! work is kept to formatting one body, one HMAC with a pre-keyed state, and
//! pushing one `u32` latency sample. Both targets get exactly the same
//! generator, so its cost cancels out of the wharf/floor ratio.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{SIGNATURE_HEADER, WEBHOOK_PATH};

type HmacSha256 = hmac::Hmac<Sha256>;
type Sender = SendRequest<Full<Bytes>>;

/// A request still unanswered this long after the phase stopped sending is
/// abandoned (and counted as an error) so a hung server cannot hang the bench.
const STRAGGLER_GRACE: Duration = Duration::from_secs(10);
/// Pause after a failed connect so a dead server does not turn the
/// generator into a busy loop that steals CPU from everything else.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Distinct error messages kept per phase for the report.
const MAX_ERROR_SAMPLES: usize = 3;
/// JSON-safe text used to pad bodies to the requested size.
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit ";

/// One webhook body and its `X-CartPanda-Signature` value.
pub(crate) struct SignedBody {
    pub body: Bytes,
    pub signature: HeaderValue,
}

/// Produces unique, signed CartPanda `sale.approved` bodies.
///
/// Event numbers come from one counter shared by every connection and phase
/// of the run, prefixed with a random run tag, so ids never collide within a
/// run nor with an earlier run against the same database.
pub(crate) struct BodyFactory {
    key: HmacSha256,
    run_tag: String,
    counter: AtomicU64,
    padding: String,
}

impl BodyFactory {
    /// `body_bytes` is approximate: the event number's width varies.
    pub fn new(secret: &str, body_bytes: usize) -> anyhow::Result<Self> {
        let key = HmacSha256::new_from_slice(secret.as_bytes())
            .map_err(|e| anyhow::anyhow!("invalid HMAC key: {e}"))?;
        let mut factory = Self {
            key,
            run_tag: format!("{:08x}", fastrand::u32(..)),
            counter: AtomicU64::new(0),
            padding: String::new(),
        };
        // Size the padding for a typical (7-digit) event number.
        let unpadded = factory.render(1_000_000).len();
        factory.padding = FILLER
            .chars()
            .cycle()
            .take(body_bytes.saturating_sub(unpadded))
            .collect();
        Ok(factory)
    }

    /// Builds and signs the next body.
    pub fn next_body(&self) -> anyhow::Result<SignedBody> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let body = self.render(n);
        let signature = self.sign(body.as_bytes())?;
        Ok(SignedBody {
            body: Bytes::from(body),
            signature,
        })
    }

    /// Length of a body with a typical event number, for the report header.
    pub fn typical_len(&self) -> usize {
        self.render(1_000_000).len()
    }

    fn render(&self, n: u64) -> String {
        let tag = &self.run_tag;
        let notes = &self.padding;
        format!(
            r#"{{"id":"evt_{tag}_{n}","type":"sale.approved","data":{{"sale_id":"SALE_{tag}_{n}","customer":{{"email":"c{tag}_{n}@example.com","name":"John Doe"}},"product":{{"id":"PROD_1","name":"Product Name","price":99.90}},"affiliate":{{"code":"AFF123","name":"Affiliate","commission":29.97}},"payment":{{"method":"credit_card","transaction_id":"TRX_{tag}_{n}","status":"approved"}},"created_at":"2024-01-05T10:30:00Z","notes":"{notes}"}}}}"#
        )
    }

    fn sign(&self, body: &[u8]) -> anyhow::Result<HeaderValue> {
        let mut mac = self.key.clone();
        mac.update(body);
        let mut hex_sig = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex_sig)
            .context("hex-encoding signature")?;
        HeaderValue::from_bytes(&hex_sig).context("signature header value")
    }
}

/// How a phase spaces its requests.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    /// Each connection sends its next request as soon as the previous answered.
    Closed,
    /// Requests are due on a fixed schedule totalling `rate_per_sec`, spread
    /// evenly over the connections.
    Open { rate_per_sec: f64 },
}

/// What one phase does.
#[derive(Clone, Debug)]
pub(crate) struct PhasePlan {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub pace: Pace,
}

/// Wall-clock span of a phase in unix microseconds, comparable with the
/// `received_at` column Wharf writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WallWindow {
    pub start_us: i64,
    pub end_us: i64,
}

impl WallWindow {
    pub fn contains(&self, unix_us: i64) -> bool {
        (self.start_us..=self.end_us).contains(&unix_us)
    }
}

/// Raw results of one phase.
#[derive(Debug, Default)]
pub(crate) struct PhaseOutcome {
    /// Latencies in µs of the 2xx answers to requests sent in the measured
    /// window (after warmup), sorted ascending.
    pub latencies_us: Vec<u32>,
    /// Every 2xx answer of the phase, warmup included: each one is a delivery
    /// the server promised to process.
    pub acked_total: u64,
    /// Non-2xx answers by status, whole phase.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Transport failures (connect, reset, abandoned), whole phase.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Length of the measured window.
    pub measured: Duration,
    /// Whole phase, warmup and stragglers included.
    pub wall: WallWindow,
}

impl PhaseOutcome {
    /// Successful requests per second over the measured window.
    pub fn rps(&self) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 {
            self.latencies_us.len() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Where to send the load.
pub(crate) struct Target {
    pub addr: SocketAddr,
    host: HeaderValue,
}

impl Target {
    pub fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        let host = HeaderValue::from_str(&addr.to_string()).context("host header")?;
        Ok(Self { addr, host })
    }
}

/// Instants shared by every connection of a phase.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    stop_sending: Instant,
    abandon_at: Instant,
}

impl Clock {
    fn starting_now(plan: &PhasePlan) -> Self {
        let start = Instant::now();
        let measure_from = start + plan.warmup;
        let stop_sending = measure_from + plan.duration;
        Self {
            start,
            measure_from,
            stop_sending,
            abandon_at: stop_sending + STRAGGLER_GRACE,
        }
    }
}

/// Runs one phase against `targets` and merges the per-connection results.
/// Connection `i` talks to `targets[i % targets.len()]`, so several
/// instances of a server share the load evenly and each connection keeps
/// its keep-alive to one of them. Must run inside the load generator's
/// runtime: connection tasks are spawned onto the current runtime.
pub(crate) async fn run_phase(
    targets: Vec<Arc<Target>>,
    factory: Arc<BodyFactory>,
    plan: PhasePlan,
) -> anyhow::Result<PhaseOutcome> {
    anyhow::ensure!(
        !targets.is_empty(),
        "a load phase needs at least one target"
    );
    let start_us = unix_micros_now();
    let clock = Clock::starting_now(&plan);
    let tasks: Vec<_> = (0..plan.connections)
        .map(|index| {
            let schedule = Schedule::new(plan.pace, index, plan.connections, clock.start);
            tokio::spawn(drive_connection(
                targets[index % targets.len()].clone(),
                factory.clone(),
                clock,
                schedule,
            ))
        })
        .collect();
    let mut total = ConnStats::default();
    for task in tasks {
        total.merge(task.await.context("load connection task failed")?);
    }
    let wall = WallWindow {
        start_us,
        end_us: unix_micros_now(),
    };
    Ok(total.into_outcome(plan.duration, wall))
}

/// When each request of one connection is due.
enum Schedule {
    Closed,
    Open {
        next_due: Instant,
        interval: Duration,
    },
}

impl Schedule {
    fn new(pace: Pace, index: usize, connections: usize, start: Instant) -> Self {
        match pace {
            Pace::Closed => Self::Closed,
            Pace::Open { rate_per_sec } => {
                let per_connection = (rate_per_sec / connections as f64).max(f64::MIN_POSITIVE);
                let interval = Duration::from_secs_f64((1.0 / per_connection).min(3600.0));
                // Stagger connections so requests arrive evenly, not in bursts.
                let offset = interval.mul_f64(index as f64 / connections as f64);
                Self::Open {
                    next_due: start + offset,
                    interval,
                }
            }
        }
    }

    /// Waits for the next request's turn and returns when it was due, or
    /// `None` once the phase has stopped sending.
    async fn next_turn(&mut self, stop_sending: Instant) -> Option<Instant> {
        match self {
            Self::Closed => {
                let now = Instant::now();
                (now < stop_sending).then_some(now)
            }
            Self::Open { next_due, interval } => {
                let due = *next_due;
                if due >= stop_sending {
                    return None;
                }
                *next_due += *interval;
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                Some(due)
            }
        }
    }
}

/// Per-connection tallies, merged at the end of the phase so the hot path
/// shares nothing between connections but the body counter.
#[derive(Default)]
struct ConnStats {
    latencies_us: Vec<u32>,
    acked_total: u64,
    non_2xx: BTreeMap<u16, u64>,
    errors: u64,
    error_samples: Vec<String>,
}

impl ConnStats {
    fn record_response(&mut self, status: StatusCode, measured: Option<Duration>) {
        if !status.is_success() {
            *self.non_2xx.entry(status.as_u16()).or_default() += 1;
            return;
        }
        self.acked_total += 1;
        if let Some(latency) = measured {
            let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
            self.latencies_us.push(micros);
        }
    }

    fn record_error(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        self.keep_sample(format!("{error:#}"));
    }

    fn keep_sample(&mut self, message: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn merge(&mut self, other: ConnStats) {
        self.latencies_us.extend(other.latencies_us);
        self.acked_total += other.acked_total;
        for (status, count) in other.non_2xx {
            *self.non_2xx.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        for message in other.error_samples {
            self.keep_sample(message);
        }
    }

    fn into_outcome(mut self, measured: Duration, wall: WallWindow) -> PhaseOutcome {
        self.latencies_us.sort_unstable();
        PhaseOutcome {
            latencies_us: self.latencies_us,
            acked_total: self.acked_total,
            non_2xx: self.non_2xx,
            errors: self.errors,
            error_samples: self.error_samples,
            measured,
            wall,
        }
    }
}

/// One keep-alive connection's request loop.
async fn drive_connection(
    target: Arc<Target>,
    factory: Arc<BodyFactory>,
    clock: Clock,
    mut schedule: Schedule,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut sender: Option<Sender> = None;
    let abandon = tokio::time::sleep_until(clock.abandon_at);
    tokio::pin!(abandon);
    // End of the previous request had the generator sent everything on time.
    let mut virtual_done = clock.start;
    while let Some(due) = schedule.next_turn(clock.stop_sending).await {
        let connection = match ready_sender(&mut sender, &target).await {
            Ok(connection) => connection,
            Err(error) => {
                stats.record_error(&error);
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        let request = match factory.next_body() {
            Ok(signed) => webhook_request(&target, signed),
            Err(error) => {
                stats.record_error(&error);
                continue;
            }
        };
        let sent = Instant::now();
        let result = tokio::select! {
            biased;
            result = exchange(connection, request) => result,
            () = &mut abandon => {
                stats.record_error(&anyhow::anyhow!("no answer {STRAGGLER_GRACE:?} after the phase ended"));
                break;
            }
        };
        let latency = corrected_latency(due, sent, Instant::now(), virtual_done);
        virtual_done = due + latency;
        match result {
            Ok(status) => {
                let measured = (due >= clock.measure_from).then_some(latency);
                stats.record_response(status, measured);
            }
            Err(error) => {
                sender = None;
                stats.record_error(&anyhow::Error::from(error));
            }
        }
    }
    stats
}

/// Latency of one request, corrected for coordinated omission.
///
/// Replays the connection on a virtual timeline where the generator sends
/// every request exactly when due: a request queues behind the previous one
/// when that one (virtually) finished after this one's due time, then takes
/// the response time actually observed. Waiting caused by slow answers is
/// therefore charged to the server, but the generator's own lateness (tokio
/// timers wake on 1 ms ticks, shorter than the per-connection interval at
/// high rates) is not. In a closed loop `due == sent` and the previous
/// request is done before the next is sent, so this is plain send → response.
fn corrected_latency(
    due: Instant,
    sent: Instant,
    done: Instant,
    virtual_prev_done: Instant,
) -> Duration {
    virtual_prev_done.saturating_duration_since(due) + done.saturating_duration_since(sent)
}

/// Returns a connection ready for the next request, reconnecting if the
/// server closed the previous one.
async fn ready_sender<'a>(
    slot: &'a mut Option<Sender>,
    target: &Target,
) -> anyhow::Result<&'a mut Sender> {
    let reusable = match slot.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *slot = None;
        let mut fresh = connect(target.addr).await?;
        fresh.ready().await.context("new connection not ready")?;
        *slot = Some(fresh);
    }
    slot.as_mut().context("connection slot unexpectedly empty")
}

fn webhook_request(target: &Target, signed: SignedBody) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(signed.body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static(WEBHOOK_PATH);
    let headers = request.headers_mut();
    headers.insert(HOST, target.host.clone());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(HeaderName::from_static(SIGNATURE_HEADER), signed.signature);
    request
}

/// Sends one request and reads the whole answer: the body must be drained
/// for keep-alive reuse, and latency is send → full response.
async fn exchange(sender: &mut Sender, request: Request<Full<Bytes>>) -> hyper::Result<StatusCode> {
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Opens an HTTP/1.1 connection with Nagle disabled (small requests on a
/// keep-alive connection would otherwise wait for delayed ACKs).
async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    // Connection errors also surface on the sender, where they are counted.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One authenticated GET on a fresh connection (for admin endpoints).
pub(crate) async fn get(
    addr: SocketAddr,
    path_and_query: &str,
    bearer_token: &str,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(addr).await?;
    let request = Request::get(path_and_query)
        .header(HOST, addr.to_string())
        .header(AUTHORIZATION, format!("Bearer {bearer_token}"))
        .body(Full::new(Bytes::new()))
        .context("building GET request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {path_and_query}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading answer to GET {path_and_query}"))?
        .to_bytes();
    Ok((status, body))
}

/// Current wall-clock time in unix microseconds (Wharf's timestamp unit).
pub(crate) fn unix_micros_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_unique_signed_json_of_about_the_requested_size() {
        let factory = BodyFactory::new("s3cret", 1024).expect("factory");
        let first = factory.next_body().expect("body");
        let second = factory.next_body().expect("body");
        assert_ne!(first.body, second.body);
        let len = first.body.len();
        assert!((1000..=1050).contains(&len), "len {len}");

        let json: serde_json::Value = serde_json::from_slice(&first.body).expect("valid JSON");
        assert_eq!(json["type"], "sale.approved");
        let id = json["id"].as_str().expect("id");
        let sale = json["data"]["sale_id"].as_str().expect("sale_id");
        assert_eq!(
            id.trim_start_matches("evt_"),
            sale.trim_start_matches("SALE_")
        );
        assert_eq!(json["data"]["payment"]["status"], "approved");

        let mut mac = HmacSha256::new_from_slice(b"s3cret").expect("key");
        mac.update(&first.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(first.signature.to_str().expect("ascii"), expected);
    }

    #[test]
    fn small_body_request_is_not_padded() {
        let factory = BodyFactory::new("k", 0).expect("factory");
        let body = factory.next_body().expect("body").body;
        assert!(body.ends_with(br#""notes":""}}"#));
    }

    #[test]
    fn latency_charges_queueing_behind_slow_answers_but_not_generator_lateness() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Closed loop: plain response time.
        assert_eq!(corrected_latency(t0, t0, t0 + ms(2), t0 - ms(1)), ms(2));
        // Sent 3 ms late by the generator, previous request long done: 1 ms.
        assert_eq!(
            corrected_latency(t0, t0 + ms(3), t0 + ms(4), t0 - ms(1)),
            ms(1)
        );
        // Previous answer (virtually) finished 5 ms after this one was due.
        assert_eq!(
            corrected_latency(t0, t0 + ms(6), t0 + ms(7), t0 + ms(5)),
            ms(6)
        );
    }

    #[tokio::test]
    async fn open_schedule_spaces_requests_evenly() {
        let start = Instant::now();
        let mut schedule = Schedule::new(
            Pace::Open {
                rate_per_sec: 100.0,
            },
            1,
            2,
            start,
        );
        let stop = start + Duration::from_millis(100);
        let mut dues = Vec::new();
        while let Some(due) = schedule.next_turn(stop).await {
            dues.push(due - start);
        }
        // 50/s per connection: every 20 ms, offset by half an interval.
        let expected: Vec<_> = (0..5).map(|i| Duration::from_millis(10 + 20 * i)).collect();
        assert_eq!(dues, expected);
    }
}
