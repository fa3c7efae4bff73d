//! Serving a router on a listener: our own accept loop over hyper's HTTP/1
//! connections, so that each connection's request heads pass the gate
//! (`gate.rs`) before hyper sees them. Both listeners (main and RPC) run
//! through here.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::gate::{self, Gate, Refusal};

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// open connections finish what they are answering.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(gate::MAX_HEADERS);
    let graceful = GracefulShutdown::new();
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
        let refusal = Refusal::default();
        let io = TokioIo::new(Gate::new(stream, refusal.clone()));
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // Only the gate's stand-in takes the refusal it stands for.
            let refused = request
                .headers()
                .contains_key(gate::STAND_IN_MARKER)
                .then(|| refusal.lock().expect("refusal").take())
                .flatten();
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(match refused {
                    Some(error) => error.into_response(),
                    None => router.oneshot(request).await?,
                })
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
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
