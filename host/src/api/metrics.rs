//! `/metrics` (on the main listener behind the key, and on the keyless
//! `--metrics-listen` address), and the HTTP request metrics every route
//! records.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
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

/// A request's method as a label: the standard ones by name, any other
/// (a client may send any token) as `other`.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Counts and times each request by its method, route template and answer.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, |r| r.as_str());
    metrics.http_request(method, route, response.status().as_u16(), began.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_outside_the_standard_ones_is_labelled_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let made_up = Method::from_bytes(b"FROBNICATE-0b1c").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }
}
