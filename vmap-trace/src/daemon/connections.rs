//! Connection bookkeeping for the HTTP server: what each connection is doing, when it must be
//! closed, and which one to close when the connection cap is reached.
//!
//! Two deadlines, distinct on purpose (hyper's own header timeout starts when a connection goes
//! idle, so it cannot keep a connection alive between scrapes yet cut a dribbled header fast):
//! - idle: a connection with no request in flight and no partial request is closed
//!   `idle_timeout` after it was accepted or answered its last request;
//! - header: once the first byte of a request has arrived, the whole head must arrive within
//!   `header_timeout` (slowloris, a request line that never ends).
//!
//! A request in flight has no deadline here: the handler bounds it (`SCRAPE_TIMEOUT`).
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The server's limits (`--max-connections`, `--header-timeout`, `--idle-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Prometheus needs one connection, a person with curl a few more; far below the 1024 file
/// descriptors a systemd service gets by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// A scraper sends its request head in one segment; 10 s is Prometheus' default scrape timeout.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the usual scrape intervals (15 to 60 s), so keep-alive between scrapes works;
/// Go's HTTP client (Prometheus) drops idle connections after 90 s itself.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request since this instant (accept or the last response).
    Idle(Instant),
    /// The first byte of a request head arrived at this instant.
    Head(Instant),
    /// This many requests are being answered.
    Busy(usize),
}

/// One connection's phase, shared by its I/O wrapper, its service and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (its deadline may have moved).
    pub changed: Notify,
}

impl ConnState {
    pub fn new(now: Instant) -> Arc<Self> {
        Arc::new(ConnState {
            phase: Mutex::new(Phase::Idle(now)),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // A panic elsewhere cannot leave a Phase half-written: it is Copy.
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_one();
    }

    /// Bytes were read: while idle, they start a request head (bytes read while busy are a
    /// body or the next pipelined request, bounded once the current one is answered).
    pub fn bytes_arrived(&self, now: Instant) {
        let idle = matches!(*self.phase(), Phase::Idle(_));
        if idle {
            self.set(Phase::Head(now));
        }
    }

    /// A request head is complete and handed to the handler; busy until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        let busy = match *self.phase() {
            Phase::Busy(n) => n + 1,
            _ => 1,
        };
        self.set(Phase::Busy(busy));
        InFlight(self.clone())
    }

    fn request_finished(&self, now: Instant) {
        let next = match *self.phase() {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(now),
        };
        self.set(next);
    }

    pub fn in_flight(&self) -> bool {
        matches!(*self.phase(), Phase::Busy(_))
    }

    /// When this connection must be closed if nothing changes; None while a request is served.
    pub fn deadline(&self, limits: &ServerLimits) -> Option<Instant> {
        match *self.phase() {
            Phase::Idle(since) => Some(since + limits.idle_timeout),
            Phase::Head(since) => Some(since + limits.header_timeout),
            Phase::Busy(_) => None,
        }
    }
}

/// A request being answered; dropping it (response produced, or the connection gone) ends it.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// A socket whose reads are reported to the connection's state.
pub struct Watched<T> {
    io: T,
    state: Arc<ConnState>,
}

impl<T> Watched<T> {
    pub fn new(io: T, state: Arc<ConnState>) -> Self {
        Watched { io, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_arrived(Instant::now());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The open connections, oldest first, with a way to close each.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: u64,
    conns: BTreeMap<u64, Entry>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    state: Arc<ConnState>,
    abort: Option<AbortHandle>,
}

/// What happened to a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Admitted under this id (after closing the oldest idle connection if at the cap).
    Admitted(u64),
    /// At the cap with every connection answering a request: the new one is closed.
    Refused,
}

impl Registry {
    /// Admit a connection, closing the oldest one with no request in flight if `cap` are open.
    pub fn admit(&mut self, state: Arc<ConnState>, cap: usize) -> Admission {
        if self.conns.len() >= cap && !self.evict_oldest_idle() {
            return Admission::Refused;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(id, Entry { state, abort: None });
        Admission::Admitted(id)
    }

    /// The handle that closes connection `id` (its task), once spawned.
    pub fn set_abort(&mut self, id: u64, abort: AbortHandle) {
        match self.conns.get_mut(&id) {
            Some(entry) => entry.abort = Some(abort),
            // Already finished: nothing to close.
            None => abort.abort(),
        }
    }

    /// Close the oldest connection that has no request in flight; false if there is none.
    pub fn evict_oldest_idle(&mut self) -> bool {
        let Some(id) = self
            .conns
            .iter()
            .find(|(_, e)| !e.state.in_flight())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(abort) = self.conns.remove(&id).and_then(|e| e.abort) {
            abort.abort();
        }
        self.evicted += 1;
        true
    }

    pub fn remove(&mut self, id: u64) {
        self.conns.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections closed to make room since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerLimits {
        ServerLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let t0 = Instant::now();
        let conn = ConnState::new(t0);
        assert_eq!(conn.deadline(&limits()), Some(t0 + Duration::from_secs(30)));
        let t1 = t0 + Duration::from_secs(5);
        conn.bytes_arrived(t1);
        assert_eq!(
            conn.deadline(&limits()),
            Some(t1 + Duration::from_secs(2)),
            "a started head has the header deadline, from its first byte"
        );
        conn.bytes_arrived(t1 + Duration::from_secs(1));
        assert_eq!(
            conn.deadline(&limits()),
            Some(t1 + Duration::from_secs(2)),
            "later bytes do not extend it"
        );
        let busy = conn.request_started();
        assert!(conn.in_flight());
        assert_eq!(conn.deadline(&limits()), None);
        conn.bytes_arrived(t1 + Duration::from_secs(3));
        assert!(conn.in_flight(), "a body does not end the request");
        let answered = Instant::now();
        drop(busy);
        assert!(!conn.in_flight());
        let deadline = conn.deadline(&limits()).unwrap();
        assert!(
            deadline >= answered + Duration::from_secs(30),
            "idle again, from the answer"
        );
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_goes_and_busy_ones_stay() {
        let mut registry = Registry::default();
        let now = Instant::now();
        let (a, b) = (ConnState::new(now), ConnState::new(now));
        assert_eq!(registry.admit(a.clone(), 2), Admission::Admitted(0));
        assert_eq!(registry.admit(b.clone(), 2), Admission::Admitted(1));
        let _a_busy = a.request_started();
        // a is older but busy: b is closed for c.
        assert_eq!(
            registry.admit(ConnState::new(now), 2),
            Admission::Admitted(2)
        );
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.evicted(), 1);
        assert!(registry.conns.contains_key(&0) && !registry.conns.contains_key(&1));
        // Every connection busy: the new one is refused rather than a request cut.
        let _c_busy = registry.conns[&2].state.request_started();
        assert_eq!(registry.admit(ConnState::new(now), 2), Admission::Refused);
        assert_eq!(registry.len(), 2);
        registry.remove(0);
        assert_eq!(
            registry.admit(ConnState::new(now), 2),
            Admission::Admitted(3)
        );
    }
}
