//! The HTTP endpoint: `GET /metrics` (OpenMetrics text) and a small index page, served by our
//! own accept loop so that idle and slow clients are bounded (`connections`).
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connections::{Admission, ConnState, Registry, ServerLimits, Watched};
use super::exposition::CONTENT_TYPE;
use super::log::Logger;
use super::sampler::MetricsClient;

/// A scrape waits at most this long for the sampler (a map read takes milliseconds; this
/// only trips if the sampler is stuck, and then the scraper gets a 503 instead of hanging).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the kernel completes and queues until we accept them. std's 128 overflows when
/// a flood of connections meets a busy machine, and each dropped SYN costs the client behind
/// it (a scrape, perhaps) a 1 s retransmission; a queued connection holds no descriptor of
/// ours. tokio's own `TcpListener::bind` uses 1024 too.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Bind now (before the slow probe attach), so a taken port or bad address fails fast.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (is another vmap-trace daemon or exporter running? choose another port with --listen)",
            std::io::ErrorKind::AddrNotAvailable => " (no local interface has this address)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })?;
    // Linux adjusts the backlog of a socket that is already listening.
    // SAFETY: listen(2) on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("cannot set the listen backlog on {addr}: {e}");
    }
    listener
        .set_nonblocking(true)
        .context("cannot make the listening socket non-blocking")?;
    Ok(listener)
}

pub fn router(client: MetricsClient) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(client)
}

async fn metrics(State(client): State<MetricsClient>) -> Response {
    match tokio::time::timeout(SCRAPE_TIMEOUT, client.metrics()).await {
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            text.as_str().to_owned(),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("vmap-trace: {e:#}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "vmap-trace: timed out reading the kernel maps\n",
        )
            .into_response(),
    }
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>vmap-trace</title></head><body><h1>vmap-trace daemon</h1>\
         <p><a href=\"/metrics\">/metrics</a>: vmap allocator activity and lock contention \
         (OpenMetrics text).</p></body></html>\n",
    )
}

/// In-flight requests get this long to finish at shutdown (the handler gives up after
/// [`SCRAPE_TIMEOUT`]); connections still open then are closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(11);

/// After an accept error that is not about one connection (EMFILE, ENOBUFS), wait this long
/// before the next accept, so a full descriptor table is not a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serve until `shutdown` resolves, with at most `limits.max_connections` connections (see
/// [`connections`](super::connections) for the deadlines); in-flight requests finish first.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    limits: ServerLimits,
    log: Logger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot hand the socket to tokio")?;
    let (stop, stopping) = watch::channel(false);
    let server = Server {
        router,
        limits,
        stopping,
        registry: Arc::new(Mutex::new(Registry::default())),
        pressure: Pressure::new(log),
    };
    let tasks = server.accept_until(&listener, shutdown).await;
    drop(listener);
    let _ = stop.send(true);
    drain(tasks).await;
    Ok(())
}

/// The accept loop's state.
struct Server {
    router: Router,
    limits: ServerLimits,
    stopping: watch::Receiver<bool>,
    registry: Arc<Mutex<Registry>>,
    pressure: Pressure,
}

impl Server {
    async fn accept_until(
        mut self,
        listener: &tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return tasks,
                // Reap finished connections (their results are ()).
                Some(_) = tasks.join_next() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if self.admit(stream, &mut tasks) {
                            // Let the evicted connection's task be dropped (its socket closed)
                            // before the next accept, so open sockets stay at the cap.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => self.accept_failed(e).await,
                },
            }
        }
    }

    /// Accept always: at the cap the oldest idle connection makes room, so idle or slow
    /// clients can delay a scrape by one accept at most, never refuse it. Returns whether a
    /// connection was closed to make room.
    fn admit(&mut self, stream: tokio::net::TcpStream, tasks: &mut JoinSet<()>) -> bool {
        let state = ConnState::new(Instant::now());
        let (admission, evicted) = {
            let mut registry = lock(&self.registry);
            let before = registry.evicted();
            let admission = registry.admit(state.clone(), self.limits.max_connections);
            (
                admission,
                (registry.evicted() > before).then(|| registry.evicted()),
            )
        };
        if let Some(total) = evicted {
            self.pressure.at_cap(self.limits.max_connections, total);
        }
        let Admission::Admitted(id) = admission else {
            return false; // dropping the stream closes it
        };
        let registered = Registered {
            registry: self.registry.clone(),
            id,
        };
        let abort = tasks.spawn(serve_connection(
            stream,
            state,
            self.router.clone(),
            self.limits,
            self.stopping.clone(),
            registered,
        ));
        lock(&self.registry).set_abort(id, abort);
        evicted.is_some()
    }

    async fn accept_failed(&mut self, e: std::io::Error) {
        use std::io::ErrorKind::*;
        // Errors about the one connection being accepted: the next accept is unaffected.
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused
        ) {
            return;
        }
        // Out of descriptors (someone else's, or a reserve overrun): free one if we can.
        lock(&self.registry).evict_oldest_idle();
        self.pressure.accept_error(&e);
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).remove(self.id);
    }
}

/// The service hyper calls for each request head: the router, with the request counted as
/// in flight until its response is produced.
trait HyperService:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + 'static
{
}

impl<T> HyperService for T where
    T: hyper::service::Service<
            Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

fn tracked(router: Router, state: Arc<ConnState>) -> impl HyperService {
    let router = TowerToHyperService::new(router);
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = state.request_started();
        let response = hyper::service::Service::call(&router, request);
        async move {
            let response = response.await;
            drop(busy);
            response
        }
    })
}

/// Serve one connection until the client leaves, a deadline passes, or shutdown (which waits
/// for a request in flight, not for an idle client).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    state: Arc<ConnState>,
    router: Router,
    limits: ServerLimits,
    mut stopping: watch::Receiver<bool>,
    _registered: Registered,
) {
    let io = TokioIo::new(Watched::new(stream, state.clone()));
    let http = hyper::server::conn::http1::Builder::new()
        // Our watchdog keeps the header and idle deadlines (hyper's would be one for both).
        .header_read_timeout(None)
        .serve_connection(io, tracked(router, state.clone()));
    tokio::pin!(http);
    let mut draining = false;
    loop {
        let deadline = state.deadline(&limits);
        tokio::select! {
            _ = http.as_mut() => return,
            _ = sleep_until(deadline) => {
                if state.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
            _ = state.changed.notified() => {}
            _ = stopping.changed(), if !draining => {
                if !state.in_flight() {
                    return;
                }
                draining = true;
                http.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Wait for in-flight requests, at most [`DRAIN_TIMEOUT`]; dropping the set closes the rest.
async fn drain(mut tasks: JoinSet<()>) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Log lines about connection pressure, at most one per [`PRESSURE_LOG_EVERY`].
struct Pressure {
    log: Logger,
    last: Option<Instant>,
}

const PRESSURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl Pressure {
    fn new(log: Logger) -> Self {
        Pressure { log, last: None }
    }

    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|t| t.elapsed() >= PRESSURE_LOG_EVERY);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }

    fn at_cap(&mut self, cap: usize, evicted: u64) {
        if self.due() {
            self.log.warning(format!(
                "{cap} connections open (--max-connections): closing the oldest idle ones to \
                 admit new ones ({evicted} closed so far)"
            ));
        }
    }

    fn accept_error(&mut self, e: &std::io::Error) {
        if self.due() {
            self.log.warning(format!(
                "cannot accept a connection: {e}; closing an idle one"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::exposition::MetricsOptions;
    use crate::daemon::log::{LogFormat, Logger};
    use crate::daemon::sampler::{tests::fake, Sampler, SamplerOptions};
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;

    #[test]
    fn bind_errors_are_clear() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(taken.local_addr().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("cannot listen on 127.0.0.1:") && err.contains("--listen"),
            "{err}"
        );
        // TEST-NET-1: not a local address.
        let err = bind("192.0.2.1:9464".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot listen on 192.0.2.1:9464"), "{err}");
    }

    /// A server over a fake source on a thread of its own, stopped on drop.
    struct TestServer {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<Result<()>>>,
        sampler: Option<Sampler>,
    }

    impl TestServer {
        fn start(limits: ServerLimits) -> TestServer {
            let (source, _, _) = fake();
            let options = SamplerOptions {
                metrics: MetricsOptions::default(),
                recording: None,
            };
            let log = Logger::new(LogFormat::Plain);
            let sampler = Sampler::spawn(move || Ok(source), options, log).unwrap();
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let app = router(sampler.client());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(serve(listener, app, limits, log, async {
                        let _ = stopped.await;
                    }))
            });
            TestServer {
                addr,
                stop: Some(stop),
                thread: Some(thread),
                sampler: Some(sampler),
            }
        }

        /// Stop and return how long serve() took to return.
        fn stop(mut self) -> Duration {
            let started = Instant::now();
            self.stop.take().unwrap().send(()).unwrap();
            self.thread.take().unwrap().join().unwrap().unwrap();
            let took = started.elapsed();
            self.sampler.take().unwrap().shutdown().unwrap();
            took
        }

        fn connect(&self) -> TcpStream {
            let s = TcpStream::connect(self.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        }

        fn scrape(&self) -> reqwest::blocking::Response {
            reqwest::blocking::Client::new()
                .get(format!("http://{}/metrics", self.addr))
                .timeout(Duration::from_secs(5))
                .send()
                .unwrap()
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// Whether the server has closed `s` (EOF or reset); false while the read would block.
    fn closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue, // a response: keep reading to the end
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    /// Poll `s` until the server closes it, at most `within`; how long that took from `since`.
    fn closed_after(s: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
        while since.elapsed() < within {
            if closed(s) {
                return Some(since.elapsed());
            }
        }
        None
    }

    fn limits(max_connections: usize, header_ms: u64, idle_ms: u64) -> ServerLimits {
        ServerLimits {
            max_connections,
            header_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    #[test]
    fn the_kernel_queues_a_flood_of_connections_until_they_are_accepted() {
        // Nothing accepts: with std's backlog of 128 the 130th connection would not complete.
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued: Vec<TcpStream> = (0..400)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} not queued: {e}"))
            })
            .collect();
        assert_eq!(queued.len(), 400);
    }

    #[test]
    fn serves_metrics_over_http() {
        let server = TestServer::start(ServerLimits::default());
        let addr = server.addr;
        let http = reqwest::blocking::Client::new();
        let response = server.scrape();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = response.text().unwrap();
        assert!(
            body.contains("vmap_trace_vmalloc_allocs_total 1000"),
            "{body}"
        );
        assert_eq!(
            http.get(format!("http://{addr}/nope"))
                .send()
                .unwrap()
                .status(),
            404
        );
        assert!(http
            .get(format!("http://{addr}/"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .contains("/metrics"));
        // Keep-alive: two requests on one connection.
        let mut s = server.connect();
        for _ in 0..2 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while !got.ends_with(b"# EOF\n") {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                    other => panic!("connection ended: {other:?}"),
                }
            }
            assert!(got.starts_with(b"HTTP/1.1 200"));
        }
        // An idle client does not hold the shutdown up.
        assert!(server.stop() < Duration::from_secs(2));
    }

    #[test]
    fn idle_connections_are_closed_at_the_idle_timeout() {
        let server = TestServer::start(limits(16, 5000, 400));
        let opened = Instant::now();
        let mut s = server.connect();
        let took = closed_after(&mut s, opened, Duration::from_secs(5)).expect("closed");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
            "idle connection closed after {took:?}, timeout 400 ms"
        );
        // Also after a request: kept alive, then closed once idle for the timeout.
        let mut s = server.connect();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let answered = Instant::now();
        let took = closed_after(&mut s, answered, Duration::from_secs(5)).expect("closed");
        assert!(took >= Duration::from_millis(300), "kept alive {took:?}");
        server.stop();
    }

    #[test]
    fn a_dribbled_header_is_cut_at_the_header_timeout() {
        // The idle timeout is long: only the header deadline can close this connection.
        let server = TestServer::start(limits(16, 600, 30_000));
        let mut s = server.connect();
        let request =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let first = Instant::now();
        let mut cut = None;
        for byte in request.iter().cycle().take(200) {
            if s.write_all(&[*byte]).is_err() || closed(&mut s) {
                cut = Some(first.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let cut = cut.expect("a slowloris client was never cut off");
        assert!(
            cut >= Duration::from_millis(550) && cut < Duration::from_millis(2000),
            "cut after {cut:?}, header timeout 600 ms"
        );
        server.stop();
    }

    #[test]
    fn unfinished_requests_are_cut() {
        let server = TestServer::start(limits(16, 500, 30_000));
        // A request line without its end, and a head without the blank line.
        for partial in [
            &b"GET /metrics HTTP/1.1"[..],
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        ] {
            let mut s = server.connect();
            s.write_all(partial).unwrap();
            let sent = Instant::now();
            let took = closed_after(&mut s, sent, Duration::from_secs(5)).expect("closed");
            assert!(
                took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
                "{:?} closed after {took:?}",
                String::from_utf8_lossy(partial)
            );
        }
        // A declared body never sent: answered (the handler reads no body), then closed
        // rather than waiting for the body.
        let mut s = server.connect();
        s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
        let sent = Instant::now();
        let took = closed_after(&mut s, sent, Duration::from_secs(5)).expect("closed");
        assert!(took < Duration::from_millis(1500), "closed after {took:?}");
        server.stop();
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room_for_a_scrape() {
        let server = TestServer::start(limits(4, 30_000, 30_000));
        let mut idle: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
        // Let the server accept them all before the scrape arrives.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            server.scrape().status(),
            200,
            "a scrape at the cap is served"
        );
        std::thread::sleep(Duration::from_millis(200));
        let open: Vec<bool> = idle.iter_mut().map(|s| !closed(s)).collect();
        assert_eq!(
            open,
            [false, true, true, true],
            "the oldest idle connection, and only it, was closed"
        );
        // Many more idle clients than the cap: scrapes still answer.
        let _more: Vec<TcpStream> = (0..20).map(|_| server.connect()).collect();
        assert_eq!(server.scrape().status(), 200);
        server.stop();
    }
}
