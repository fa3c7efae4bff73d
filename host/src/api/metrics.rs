//! `/metrics` (on the main listener behind the key, and on the keyless
//! `--metrics-listen` address), and the HTTP request metrics every route
//! records.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{ApiError, ApiState};
use crate::host::Host;
use crate::metrics::Metrics;

/// The route label of a request that matched no route (a 404, or refused
/// before routing): never its raw path.
const UNMATCHED: &str = "unmatched";

/// The metrics, as Prometheus scrapes them.
async fn scrape(host: &Host) -> Response {
    match host.metrics_text().await {
        Ok(text) => ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /metrics` on the main listener.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    scrape(&state.host).await
}

/// The `--metrics-listen` listener: `/metrics` alone, without a key.
pub fn metrics_router(host: Arc<Host>) -> Router {
    let metrics = host.metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(|State(host): State<Arc<Host>>| async move { scrape(&host).await }),
        )
        .fallback(super::no_route)
        .layer(axum::middleware::from_fn_with_state(metrics, record))
        .layer(axum::middleware::from_fn(super::json_errors))
        .with_state(host)
}

/// Counts and times each request by its method, route template and answer.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, |r| r.as_str());
    metrics.http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        began.elapsed(),
    );
    response
}
