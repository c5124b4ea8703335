//! One HTTP connection's life beyond what hyper times: how many requests it has in flight,
//! closing it once it has had none for a while, and TCP keepalive on its socket.
//!
//! hyper's HTTP/1 header-read timer covers a client that starts a request and stalls, but not
//! a socket that sends nothing at all or part of the HTTP/2 preface (hyper-util's version
//! sniffing comes first and has no timer), nor an HTTP/2 connection with no stream open. So
//! every connection counts its requests in flight (from the request's head until its response
//! body is sent or dropped) and is shut down gracefully once that count has stayed at zero for
//! `server.header_read_timeout_ms`, then dropped if it is still there as long again.
//!
//! A client can also hold its connection by taking no bytes of a response: an HTTP/1 client
//! that stops reading (pipelined requests included), an HTTP/2 client that grants no
//! flow-control window but answers pings. hyper then neither finishes nor fails the response,
//! so the connection (and its slot under `max_connections`) would live as long as the client
//! wished. So each connection watches whether it has something to send that cannot leave —
//! the socket refused a write, or a response body handed hyper a frame that hyper has not
//! come back for (an HTTP/2 window) — and how recently the socket took another
//! [`PROGRESS_BYTES`]. A connection that has wanted to send for `server.request_timeout_ms`
//! with no such progress is dropped. A slow reader keeps making progress, however large a
//! frame; a follow stream with nothing to send wants nothing (hyper is waiting on it), and
//! sends an empty line every `sse_keepalive_ms`. Does not own the limits themselves
//! (connection cap, HTTP/2 settings): `http::serve` sets them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The bytes a client must take to count as reading: the server's own HTTP/2 pings (a few
/// dozen bytes every `keepalive_ms`) are not enough to hold a connection whose responses
/// cannot move. (A client that sends its own pings or requests to make the server write 4 KiB
/// per `request_timeout_ms` can still keep one stream without a window; it holds one
/// connection slot doing so.)
pub(super) const PROGRESS_BYTES: u64 = 4096;

/// Runs one connection to its end. It is shut down gracefully (HTTP/2 GOAWAY, HTTP/1 close
/// after the current response) when the server shuts down or when it has had no request in
/// flight for `idle`, and dropped when it is still idle `idle` later (a peer that never
/// finishes the close).
/// It is also dropped at once when one of its responses has waited `stalled` for the client
/// to take a frame (see the module's comment).
pub(super) async fn drive<C: std::future::Future>(
    connection: C,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
    tracking: Tracking,
    idle: Duration,
    stalled: Duration,
    mut closed: watch::Receiver<bool>,
) {
    tokio::pin!(connection);
    let Tracking { busy, sending: watch } = tracking;
    let mut idle_wait = Box::pin(idle_for(busy.clone(), idle));
    let mut check = tokio::time::interval((stalled / 4).max(Duration::from_millis(25)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return, // ended, or failed: a client that went away
            _ = closed.wait_for(|closed| *closed), if !closing => {
                graceful_shutdown(connection.as_mut());
                closing = true;
            }
            () = idle_wait.as_mut() => {
                if closing {
                    return;
                }
                graceful_shutdown(connection.as_mut());
                closing = true;
                idle_wait = Box::pin(idle_for(busy.clone(), idle));
            }
            _ = check.tick() => {
                if let Some(waited) = watch.stalled_for().filter(|waited| *waited >= stalled) {
                    tracing::warn!(
                        waited_ms = waited.as_millis() as u64,
                        "an HTTP client took no response bytes for server.request_timeout_ms; its connection is dropped"
                    );
                    return;
                }
            }
        }
    }
}

/// Returns once `busy` (requests in flight on a connection) has stayed 0 for `idle`.
async fn idle_for(mut busy: watch::Receiver<usize>, idle: Duration) {
    loop {
        if *busy.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(idle) => return,
                changed = busy.changed() => if changed.is_err() { return },
            }
        } else if busy.changed().await.is_err() {
            return;
        }
    }
}

/// TCP keepalive on an accepted connection: a peer whose machine vanished (no FIN, no RST)
/// is found after `every` of silence plus three unanswered probes `every` apart, instead of
/// holding its connection (and any follow stream on it) forever. Keepalive probes only go
/// out on a quiet connection; while a follow's writes wait for ACKs the kernel retransmits
/// instead, for some 15 minutes by default, so `TCP_USER_TIMEOUT` gives up on unacknowledged
/// data after the same four periods.
pub(super) fn set_tcp_keepalive(stream: &tokio::net::TcpStream, every: Duration) {
    // The kernel counts in whole seconds: below one, 0 would be refused.
    let every = every.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(every).with_interval(every).with_retries(3);
    let socket = socket2::SockRef::from(stream);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::warn!(error = %e, "cannot enable TCP keepalive on an HTTP connection");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket.set_tcp_user_timeout(Some(every * 4)) {
        tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT on an HTTP connection");
    }
}

/// What `drive` watches on one connection: its requests in flight, and what it sends.
pub(super) struct Tracking {
    busy: watch::Receiver<usize>,
    sending: Arc<Sending>,
}

/// What one connection has to send and how its client takes it. Times are kept as 1 + the
/// milliseconds since `epoch` (0: not set).
pub(super) struct Sending {
    epoch: Instant,
    /// Bytes the socket has taken.
    written: AtomicU64,
    /// When the socket last took the [`PROGRESS_BYTES`]-th byte since the one before (or the
    /// connection opened).
    progressed_at: AtomicU64,
    /// Since when the socket has refused writes (0: it took the last one).
    blocked_since: AtomicU64,
    /// The live response bodies, each with when it handed hyper a frame that hyper has not
    /// come back for (0: none).
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Sending {
    fn new() -> Sending {
        let sending = Sending {
            epoch: Instant::now(),
            written: AtomicU64::new(0),
            progressed_at: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
        };
        sending.progressed_at.store(sending.now(), Ordering::Relaxed);
        sending
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A new body's clock (see `bodies`).
    fn register(&self) -> Arc<AtomicU64> {
        let waiting = Arc::new(AtomicU64::new(0));
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        bodies.retain(|body| body.strong_count() > 0);
        bodies.push(Arc::downgrade(&waiting));
        waiting
    }

    fn wrote(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.blocked_since.store(0, Ordering::Relaxed);
        let before = self.written.fetch_add(n as u64, Ordering::Relaxed);
        if before / PROGRESS_BYTES != (before + n as u64) / PROGRESS_BYTES {
            self.progressed_at.store(self.now(), Ordering::Relaxed);
        }
    }

    fn refused(&self) {
        let _ = self.blocked_since.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long the connection has wanted to send (a refused write, a frame hyper holds)
    /// without its client taking [`PROGRESS_BYTES`]; `None` when it wants nothing.
    fn stalled_for(&self) -> Option<Duration> {
        let blocked = Some(self.blocked_since.load(Ordering::Relaxed)).filter(|since| *since != 0);
        let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        let waiting = bodies
            .iter()
            .filter_map(|body| body.upgrade())
            .map(|waiting| waiting.load(Ordering::Relaxed))
            .filter(|since| *since != 0)
            .min();
        let wanting_since = blocked.into_iter().chain(waiting).min()?;
        let since = wanting_since.max(self.progressed_at.load(Ordering::Relaxed));
        Some(Duration::from_millis(self.now().saturating_sub(since)))
    }
}

/// A connection's socket, counting what it takes and noting when it refuses a write.
pub(super) struct Watched<S> {
    socket: S,
    sending: Arc<Sending>,
}

impl<S> Watched<S> {
    /// `socket` counted into `tracking`'s watch.
    pub(super) fn new(socket: S, tracking: &Tracking) -> Watched<S> {
        Watched { socket, sending: tracking.sending.clone() }
    }

    fn note(&self, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match &written {
            Poll::Ready(Ok(n)) => self.sending.wrote(*n),
            Poll::Pending => self.sending.refused(),
            Poll::Ready(Err(_)) => {}
        }
        written
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.note(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        self.note(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// `router` as one connection's service, and what `drive` watches: the count of its requests
/// in flight (from a request's head until its response body has been sent or dropped) and its
/// response bodies.
pub(super) fn tracked(
    router: Router,
) -> (
    impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<Tracked>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Send
    + 'static,
    Tracking,
) {
    let (busy, watched) = watch::channel(0usize);
    let busy = Arc::new(busy);
    let sending = Arc::new(Sending::new());
    let service = hyper_util::service::TowerToHyperService::new(router);
    let bodies = sending.clone();
    let tracked = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        busy.send_modify(|n| *n += 1);
        let in_flight = InFlight(busy.clone());
        let call = hyper::service::Service::call(&service, request);
        let bodies = bodies.clone();
        async move {
            let response = call.await?;
            let waiting = bodies.register();
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
                waiting,
                sending: bodies,
            }))
        }
    });
    (tracked, Tracking { busy: watched, sending })
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped.
/// It also notes when it hands hyper a frame and when hyper comes back for the next.
pub(super) struct Tracked {
    body: Body,
    _in_flight: InFlight,
    waiting: Arc<AtomicU64>,
    sending: Arc<Sending>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        self.waiting.store(0, Ordering::Relaxed);
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &frame {
            self.waiting.store(self.sending.now(), Ordering::Relaxed);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn accepted_sockets_give_up_on_unacknowledged_data_after_four_keepalive_periods() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        set_tcp_keepalive(&accepted, Duration::from_secs(30));
        let socket = socket2::SockRef::from(&accepted);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(120)));
        assert!(socket.keepalive().unwrap());
        drop(client);
    }
}
