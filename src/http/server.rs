//! The HTTP server loop. axum's `serve` offers neither a header read timeout nor a connection
//! cap, so connections are served here with hyper directly (HTTP/1.1):
//! - a connection that completes no request for `idle_timeout` — idle between requests, silent
//!   after connecting, or dripping its headers — is closed. Each connection has one watchdog
//!   tick per `idle_timeout` that checks whether a request started or is in flight, so it is cut
//!   off after one to two periods. (hyper's own `header_read_timeout` arms a timer per request,
//!   which on this 2-core machine cost the create route a third of its throughput and put its
//!   p99 at 200+ ms.)
//! - at most `max_connections` are open at once; beyond that the next connection waits in the
//!   listen backlog until one closes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What one client connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the requests in flight; idle connections are closed at once.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let http = http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // E.g. out of file descriptors: wait for some to be freed.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = Tracked {
            router: router.clone(),
            activity: activity.clone(),
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let period = limits.idle_timeout;
            let mut watchdog =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            let mut seen = 0;
            loop {
                tokio::select! {
                    // A client that breaks off is its own business; nothing to report.
                    _ = &mut connection => break,
                    _ = watchdog.tick() => {
                        let started = activity.started.load(Ordering::Relaxed);
                        if started == seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
                            break; // dropping the connection closes it
                        }
                        seen = started;
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Requests of one connection: how many started (their headers were complete) and how many
/// are being answered.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    in_flight: AtomicUsize,
}

/// The router, counting the connection's requests for its watchdog.
struct Tracked {
    router: Router,
    activity: Arc<Activity>,
}

/// Marks a request finished when its answer is ready (or the request was dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(self.activity.clone());
        let answer = self.router.clone().oneshot(request.map(Body::new));
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}
