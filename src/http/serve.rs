//! The accept loop: HTTP/1.1 on hyper, with the bounds an abusive client would otherwise
//! stretch without limit.
//!
//! - **Head time.** From the first byte of a request head to its last, at most
//!   `header_read_timeout`: a client that trickles its headers (slowloris) is cut off.
//! - **Idle time.** A connection waiting for its next request (after connecting, or after its
//!   previous response) is closed after `idle_timeout`.
//! - **Head size.** Request line and headers over `max_header_bytes` are answered 431
//!   `headers_too_large` (JSON, like every error) and the connection is closed; nothing is read
//!   past the limit before a request begins, so a half-sent head holds tens of KiB, not hundreds.
//! - **Connections.** At most `cap` connections, where the cap stays [`FD_RESERVE`] below the
//!   process's open-file limit. At the cap, the connection that has waited longest for a request
//!   is closed to admit the new one, so idle sockets can never lock out `/health` or a real
//!   sender; a connection with a request in flight is never chosen. Only when every connection
//!   has a request in flight (each bounded by the request deadline) is a new one refused.
//! - **Half-close.** A client that shuts down its sending side after a full request still gets
//!   its answer, and its handler is not cancelled midway.
//!
//! The timeouts and the head size are enforced by [`WatchedIo`], which knows from the service
//! wrapper whether a request is in flight (hyper's `header_read_timeout` alone would also cut
//! idle keep-alive connections at the head timeout). Hyper's own limits are set just above ours
//! as a backstop: `header_read_timeout` (armed whenever it waits for a head) to the sum of the
//! two timeouts, `max_header_size` and `max_buf_size` a little over `max_header_bytes`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use crate::config::{Limits, FD_RESERVE};
use crate::telemetry::LogLimiter;

/// The smallest read buffer hyper accepts.
const MIN_BUF_SIZE: usize = 8192;

/// What the accept loop enforces; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// The effective cap (see [`connection_cap`]).
    pub max_connections: usize,
    /// How long a shutdown waits for requests in flight before closing their connections.
    pub drain_timeout: Duration,
}

impl ServeSettings {
    /// From the configured limits, with the connection cap lowered to fit the open-file limit
    /// (logged when it is).
    pub fn from_limits(limits: &Limits) -> Self {
        let open_files = open_file_limit();
        let max_connections = connection_cap(limits.max_connections, open_files);
        if max_connections < limits.max_connections {
            tracing::warn!(
                max_connections,
                configured = limits.max_connections,
                open_file_limit = open_files,
                reserved = FD_RESERVE,
                "connection cap lowered to fit the open-file limit (raise it with ulimit -n or \
                 LimitNOFILE=)"
            );
        }
        Self {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
            max_connections,
            drain_timeout: limits.request_timeout + Duration::from_secs(1),
        }
    }
}

/// `configured`, lowered to leave [`FD_RESERVE`] descriptors of `open_files` (at least one
/// connection either way).
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let configured = configured.max(1);
    match open_files {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
            configured.min(room.max(1))
        }
        None => configured,
    }
}

/// The soft limit on open files (`RLIMIT_NOFILE`), from `/proc/self/limits`; `None` when it is
/// unlimited or cannot be read (not Linux).
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, closes idle
/// connections, lets requests in flight finish (at most `drain_timeout`) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ServeSettings,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry::new(settings.max_connections));
    let builder = Arc::new(http1_builder(&settings));
    let service = TowerToHyperService::new(app);
    let mut connections = JoinSet::new();
    let accept_errors = LogLimiter::new();
    let refusals = LogLimiter::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors (EMFILE/ENFILE) despite the cap: something else in the
                // process holds them. Free one and try again shortly.
                let evicted = registry.evict_longest_idle();
                if let Some(suppressed) = accept_errors.allow() {
                    tracing::error!(%error, evicted, open = registry.len(), suppressed,
                        "cannot accept connections; closing the longest-idle one");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(conn) = registry.admit() else {
            if let Some(suppressed) = refusals.allow() {
                tracing::warn!(
                    cap = settings.max_connections,
                    suppressed,
                    "connection cap reached and every connection has a request in flight; \
                     refusing new connections"
                );
            }
            refuse(stream);
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            conn,
            registry.clone(),
            builder.clone(),
            service.clone(),
            settings,
            shutdown.clone(),
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "requests still in flight {:?} after shutdown began; closing their connections",
            settings.drain_timeout
        );
        connections.shutdown().await;
    }
}

fn http1_builder(settings: &ServeSettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(true)
        // `WatchedIo` answers heads over the limit (in JSON); hyper's limits, just above, are a
        // backstop that also bounds what a half-sent head holds.
        .max_header_size(settings.max_header_bytes + MIN_BUF_SIZE)
        .max_buf_size(settings.max_header_bytes.max(MIN_BUF_SIZE) + 2 * MIN_BUF_SIZE)
        .header_read_timeout(settings.idle_timeout + settings.header_read_timeout);
    builder
}

/// Errors of one connection that does not affect the next.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Best effort: a 503 the client may read before the socket closes.
fn refuse(stream: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"too_many_connections","message":"every connection is busy; retry"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Best effort, like hyper's own automatic answers: the 431 in the API's JSON, written straight
/// to the socket before the connection is closed.
fn refuse_head(stream: &TcpStream, limit: usize) {
    let body = format!(
        r#"{{"error":{{"code":"headers_too_large","message":"the request line and headers are larger than {limit} bytes"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Runs one connection until it ends, is evicted, or the server shuts down.
async fn serve_connection(
    stream: TcpStream,
    conn: Arc<ConnState>,
    registry: Arc<Registry>,
    builder: Arc<http1::Builder>,
    service: TowerToHyperService<Router>,
    settings: ServeSettings,
    shutdown: CancellationToken,
) {
    let _registered = Registered {
        registry,
        conn: conn.clone(),
    };
    let io = TokioIo::new(WatchedIo::new(stream, conn.clone(), &settings));
    let service = Tracked {
        inner: service,
        conn: conn.clone(),
    };
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = conn.evict.notified(), if !closing => {}
            () = shutdown.cancelled(), if !closing => {}
        }
        // Evicted or shutting down. A connection that never began a request owes no answer:
        // close it now (hyper would wait for the rest of a half-sent first head). Otherwise
        // let hyper finish a request in flight and close at once if idle.
        if conn.started.load(Ordering::Acquire) == 0 {
            return;
        }
        connection.as_mut().graceful_shutdown();
        closing = true;
    }
}

/// One connection's shared state: what the accept loop needs to choose whom to evict, and what
/// [`WatchedIo`] needs to know which timeout applies.
#[derive(Debug)]
struct ConnState {
    id: u64,
    /// The registry's epoch, which `idle_since_ms` counts from.
    epoch: Instant,
    /// Requests handed to the router.
    started: AtomicU64,
    /// Requests the router has answered.
    finished: AtomicU64,
    /// When the connection last began waiting for a request (accepted, or answered its last),
    /// in milliseconds since the registry's epoch.
    idle_since_ms: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
    /// Switched protocols (WebSocket): busy until it closes.
    upgraded: AtomicBool,
}

impl ConnState {
    fn in_flight(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
            || self.started.load(Ordering::Acquire) != self.finished.load(Ordering::Acquire)
    }
}

/// The open connections.
struct Registry {
    epoch: Instant,
    cap: usize,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    cap_log: LogLimiter,
}

impl Registry {
    fn new(cap: usize) -> Self {
        Self {
            epoch: Instant::now(),
            cap,
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            cap_log: LogLimiter::new(),
        }
    }

    fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// Registers a new connection, evicting the longest-idle one if at the cap; `None` when at
    /// the cap with every connection busy.
    fn admit(&self) -> Option<Arc<ConnState>> {
        let conn = Arc::new(ConnState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.epoch)),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            upgraded: AtomicBool::new(false),
        });
        let mut live = self.live.lock();
        // Connections already told to close are on their way out; they do not count.
        let open = live
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed))
            .count();
        if open >= self.cap {
            let evicted = Self::evict_from(&live);
            if let Some(suppressed) = self.cap_log.allow() {
                if evicted {
                    tracing::warn!(
                        cap = self.cap,
                        suppressed,
                        "connection cap reached; closing the longest-idle connection to admit \
                         a new one"
                    );
                }
            }
            if !evicted {
                return None;
            }
        }
        live.insert(conn.id, conn.clone());
        Some(conn)
    }

    /// Tells the connection that has waited longest for a request to close; false when every
    /// connection has a request in flight.
    fn evict_longest_idle(&self) -> bool {
        Self::evict_from(&self.live.lock())
    }

    fn evict_from(live: &HashMap<u64, Arc<ConnState>>) -> bool {
        let victim = live
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed) && !c.in_flight())
            .min_by_key(|c| c.idle_since_ms.load(Ordering::Relaxed));
        match victim {
            Some(victim) => {
                victim.evicted.store(true, Ordering::Relaxed);
                victim.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered {
    registry: Arc<Registry>,
    conn: Arc<ConnState>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.live.lock().remove(&self.conn.id);
    }
}

/// The router, counting requests in and out for the connection.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    conn: Arc<ConnState>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.conn.started.fetch_add(1, Ordering::AcqRel);
        let answered = Answered(self.conn.clone());
        let response = self.inner.call(request);
        let conn = self.conn.clone();
        Box::pin(async move {
            let response = response.await?;
            Ok(keep_open_while_streaming(response, answered, &conn))
        })
    }
}

/// A live stream is a request in flight until its body ends, not an idle connection: the idle
/// timeout and eviction must leave it alone. An upgraded connection (WebSocket) stays in flight
/// for good. Other responses are answered as soon as their head is ready (their bodies are
/// written at once), and are passed through untouched.
fn keep_open_while_streaming(
    response: Response<Body>,
    answered: Answered,
    conn: &ConnState,
) -> Response<Body> {
    if response.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        conn.upgraded.store(true, Ordering::Release);
        return response;
    }
    let streaming = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return response;
    }
    response.map(|body| {
        Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
            let _held_until_the_body_ends = &answered;
            frame
        }))
    })
}

/// Marks a request answered (or abandoned) when dropped.
struct Answered(Arc<ConnState>);

impl Drop for Answered {
    fn drop(&mut self) {
        let conn = &self.0;
        conn.idle_since_ms
            .store(millis_since(conn.epoch), Ordering::Relaxed);
        conn.finished.fetch_add(1, Ordering::AcqRel);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a connection is doing, as far as its timeouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request: `idle_timeout` runs.
    Idle,
    /// A request head has begun: `header_read_timeout` runs.
    Head,
    /// A request is in flight: the request deadline of the router applies, not ours.
    Busy,
}

/// The TCP stream with the head and idle timeouts. Reads are where hyper waits for a client, so
/// that is where the deadlines are checked: a read that would block past the deadline fails
/// with `TimedOut` and hyper closes the connection.
struct WatchedIo {
    stream: TcpStream,
    conn: Arc<ConnState>,
    phase: Phase,
    /// `conn.finished` when the current wait began; a change means another request was
    /// answered since.
    finished_seen: u64,
    deadline: Pin<Box<Sleep>>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Bytes of the current request head read so far (0 while idle or busy).
    head_bytes: usize,
    max_header_bytes: usize,
}

impl WatchedIo {
    fn new(stream: TcpStream, conn: Arc<ConnState>, settings: &ServeSettings) -> Self {
        Self {
            stream,
            conn,
            phase: Phase::Idle,
            finished_seen: 0,
            deadline: Box::pin(tokio::time::sleep(settings.idle_timeout)),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            head_bytes: 0,
            max_header_bytes: settings.max_header_bytes,
        }
    }

    /// Pending until the current deadline passes, then the error that ends the connection.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.deadline.as_mut().poll(cx));
        let what = match self.phase {
            Phase::Head => "the request head took longer than header_read_timeout",
            _ => "the connection was idle longer than idle_timeout",
        };
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
    }

    /// Catches up with the requests begun and answered since the last read.
    fn observe(&mut self) {
        let started = self.conn.started.load(Ordering::Acquire);
        let finished = self.conn.finished.load(Ordering::Acquire);
        if started != finished || self.conn.upgraded.load(Ordering::Acquire) {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy || finished != self.finished_seen {
            self.finished_seen = finished;
            self.phase = Phase::Idle;
            self.head_bytes = 0;
            let now = tokio::time::Instant::now();
            self.deadline.as_mut().reset(now + self.idle_timeout);
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.observe();
        if this.phase == Phase::Busy {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        // Hyper reads before a request only while the head it holds is incomplete: holding
        // `max_header_bytes` already, the head is too large.
        if this.head_bytes >= this.max_header_bytes {
            refuse_head(&this.stream, this.max_header_bytes);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request head is larger than max_header_bytes",
            )));
        }
        // Never read past the limit before a request has begun, so that the check above sees
        // exactly what hyper holds (a copy only near the limit; hyper reads 8 KiB at a time).
        let allowed = this.max_header_bytes - this.head_bytes;
        let before = buf.filled().len();
        let polled = if buf.remaining() <= allowed {
            Pin::new(&mut this.stream)
                .poll_read(cx, buf)
                .map_ok(|()| buf.filled().len() - before)
        } else {
            let mut chunk = [0u8; MIN_BUF_SIZE];
            let size = allowed.min(chunk.len());
            let mut limited = ReadBuf::new(&mut chunk[..size]);
            Pin::new(&mut this.stream)
                .poll_read(cx, &mut limited)
                .map_ok(|()| {
                    buf.put_slice(limited.filled());
                    limited.filled().len()
                })
        };
        let Poll::Ready(read) = polled else {
            return this.poll_deadline(cx);
        };
        match read {
            Ok(0) => Poll::Ready(Ok(())),
            Ok(n) => {
                if this.phase == Phase::Idle {
                    this.phase = Phase::Head;
                    let now = tokio::time::Instant::now();
                    this.deadline.as_mut().reset(now + this.header_read_timeout);
                }
                this.head_bytes += n;
                Poll::Ready(Ok(()))
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63459                63459                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
        assert_eq!(parse_open_file_limit(""), None);
    }

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(connection_cap(1024, Some(256)), 256 - FD_RESERVE as usize);
        assert_eq!(connection_cap(100, Some(1_048_576)), 100);
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(10)), 1);
        assert_eq!(connection_cap(0, None), 1);
    }
}
