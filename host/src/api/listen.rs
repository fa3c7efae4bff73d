//! Serving a router on a listener: our own accept loop over hyper's HTTP/1
//! connections, so that each connection's request heads pass the gate
//! (`gate.rs`) before hyper sees them. Both listeners (main and RPC) run
//! through here, and share one cap on open connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::gate::{self, Gate, Shared};
use super::ApiError;

pub use super::gate::Timeouts;

/// What a client's connections may take of the host, on every listener.
#[derive(Clone)]
pub struct Connections {
    /// One permit per connection that may still open.
    open: Arc<Semaphore>,
    max: usize,
    timeouts: Timeouts,
}

impl Connections {
    pub fn new(max: usize, timeouts: Timeouts) -> Self {
        Connections {
            open: Arc::new(Semaphore::new(max)),
            max,
            timeouts,
        }
    }

    /// Past the cap, a connection is answered at once (see
    /// `Gate::refusing`), which ends it within the gate's linger.
    fn full(&self) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the host has {} open connections, its limit (--max-connections); retry later",
                self.max
            ),
        )
        .retry_after(1)
    }
}

/// At most one warning this often while connections are refused.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// open connections finish what they are answering.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The gate times request heads, and answers when they are late.
    http.max_headers(gate::MAX_HEADERS)
        .header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    // Refused connections since the last warning about them.
    let mut refusals = 0u64;
    let mut warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    // Out of file descriptors, say: retrying at once would
                    // spin; a connection that failed on its own does not.
                    if !is_connection_error(&error) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let shared = Shared::default();
        let permit = connections.open.clone().try_acquire_owned().ok();
        let gate = match permit {
            Some(_) => Gate::new(stream, shared.clone(), connections.timeouts),
            None => {
                refusals += 1;
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        max = connections.max,
                        refused = refusals,
                        "connection limit reached: refused new connections"
                    );
                    warned = Some(Instant::now());
                    refusals = 0;
                }
                let full = connections.full();
                Gate::refusing(stream, shared.clone(), connections.timeouts, full)
            }
        };
        let io = TokioIo::new(gate);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // Only the gate's stand-in takes the refusal it stands for.
            let refused = request
                .headers()
                .contains_key(gate::STAND_IN_MARKER)
                .then(|| shared.lock().expect("exchange").refusal.take())
                .flatten();
            let router = router.clone();
            let shared = shared.clone();
            async move {
                Ok::<_, Infallible>(match refused {
                    Some(error) => error.into_response(),
                    None => {
                        let response = router.oneshot(request).await?;
                        shared.lock().expect("exchange").answered();
                        response
                    }
                })
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            // The connection's descriptor is closed: another may open.
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
