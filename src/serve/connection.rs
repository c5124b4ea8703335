//! One HTTP connection's life beyond what hyper times: how many requests it has in flight,
//! closing it once it has had none for a while, and TCP keepalive on its socket.
//!
//! hyper's HTTP/1 header-read timer covers a client that starts a request and stalls, but not
//! a socket that sends nothing at all or part of the HTTP/2 preface (hyper-util's version
//! sniffing comes first and has no timer), nor an HTTP/2 connection with no stream open. So
//! every connection counts its requests in flight (from the request's head until its response
//! body is sent or dropped) and is shut down gracefully once that count has stayed at zero for
//! `server.header_read_timeout_ms`, then dropped if it is still there as long again. Does not
//! own the limits themselves (connection cap, HTTP/2 settings): `http::serve` sets them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use tokio::sync::watch;

/// Runs one connection to its end. It is shut down gracefully (HTTP/2 GOAWAY, HTTP/1 close
/// after the current response) when the server shuts down or when it has had no request in
/// flight for `idle`, and dropped when it is still idle `idle` later (a peer that never
/// finishes the close).
pub(super) async fn drive<C: std::future::Future>(
    connection: C,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
    mut busy: watch::Receiver<usize>,
    idle: Duration,
    mut closed: watch::Receiver<bool>,
) {
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return, // ended, or failed: a client that went away
            _ = closed.wait_for(|closed| *closed), if !closing => {
                graceful_shutdown(connection.as_mut());
                closing = true;
            }
            () = idle_for(&mut busy, idle) => {
                if closing {
                    return;
                }
                graceful_shutdown(connection.as_mut());
                closing = true;
            }
        }
    }
}

/// Returns once `busy` (requests in flight on a connection) has stayed 0 for `idle`.
async fn idle_for(busy: &mut watch::Receiver<usize>, idle: Duration) {
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
/// holding its connection (and any follow stream on it) forever.
pub(super) fn set_tcp_keepalive(stream: &tokio::net::TcpStream, every: Duration) {
    // The kernel counts in whole seconds: below one, 0 would be refused.
    let every = every.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(every).with_interval(every).with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::warn!(error = %e, "cannot enable TCP keepalive on an HTTP connection");
    }
}

/// `router` as one connection's service, and the count of its requests in flight: from a
/// request's head until its response body has been sent or dropped.
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
    watch::Receiver<usize>,
) {
    let (busy, watched) = watch::channel(0usize);
    let busy = Arc::new(busy);
    let service = hyper_util::service::TowerToHyperService::new(router);
    let tracked = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        busy.send_modify(|n| *n += 1);
        let in_flight = InFlight(busy.clone());
        let call = hyper::service::Service::call(&service, request);
        async move {
            let response = call.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }))
        }
    });
    (tracked, watched)
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped.
pub(super) struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}
