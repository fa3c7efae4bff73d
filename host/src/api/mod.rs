//! The HTTP API: the Durable Functions management routes, the HTTP starter
//! and the admin routes, all behind the system key (or, for a status read
//! or a raised event, a person's link).

mod admin;
mod auth;
mod body;
mod dashboard;
mod gate;
mod history;
mod instances;
pub mod listen;
mod metrics;
mod urls;

pub use metrics::metrics_router;
pub use urls::encode;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use crate::host::Host;
use crate::store::StoreError;

pub use crate::paths::PREFIX;
/// The same routes on the keyless loopback RPC listener (`rpcBaseUrl`).
pub const RPC_PREFIX: &str = "/durabletask";

#[derive(Clone)]
pub struct ApiState {
    pub host: Arc<Host>,
    /// The system key the main listener requires.
    pub key: Arc<str>,
    /// The dashboard's session cookie value for that key.
    pub session: Arc<str>,
    /// How handed-out URLs look on this listener.
    pub links: Links,
    /// Dashboard pages following live changes: each holds a stream open.
    pub live_pages: Arc<Semaphore>,
}

/// Dashboard pages that may follow live changes at once.
const LIVE_PAGES: usize = 64;

impl ApiState {
    /// A listener's state: its URLs under `prefix`, carrying the key when
    /// the listener requires it.
    fn new(host: Arc<Host>, prefix: &'static str, keyed: bool) -> ApiState {
        let key: Arc<str> = host.key.clone().into();
        ApiState {
            session: auth::session_token(&key).into(),
            links: Links {
                prefix,
                key: keyed.then(|| key.clone()),
            },
            key,
            host,
            live_pages: Arc::new(Semaphore::new(LIVE_PAGES)),
        }
    }
}

/// The shape of the management URLs a listener hands out.
#[derive(Clone)]
pub struct Links {
    pub prefix: &'static str,
    /// Appended as `code=KEY`; none on the RPC listener.
    pub key: Option<Arc<str>>,
}

impl Links {
    /// The URLs for a request with the dashboard's session leave the key
    /// out: the page's scripts never see it.
    pub fn for_session(&self, session: bool) -> Links {
        Links {
            prefix: self.prefix,
            key: self.key.clone().filter(|_| !session),
        }
    }
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds, for a `Retry-After` header.
    retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(%error, "storage unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storage unavailable: {error}"),
            )
        } else {
            tracing::error!(%error, "storage failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storage failure: {error}"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // `Message` and `ExceptionMessage` are what the Durable Functions
        // clients read from an error (the Python client fails without them).
        let body = serde_json::json!({
            "error": self.message,
            "Message": self.message,
            "ExceptionMessage": self.message,
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Components can be large; everything else is small JSON.
const DEPLOY_BODY_LIMIT: usize = 128 << 20;

/// The management routes, relative to their prefix.
fn management() -> Router<ApiState> {
    Router::new()
        .route("/orchestrators/{name}", post(instances::start))
        .route("/orchestrators/{name}/{id}", post(instances::start_with_id))
        .route(
            "/instances",
            get(instances::list).delete(instances::purge_many),
        )
        // The official clients ask for `instances/` with the slash.
        .route(
            "/instances/",
            get(instances::list).delete(instances::purge_many),
        )
        .route(
            "/instances/{id}",
            get(instances::status).delete(instances::purge),
        )
        .route(
            "/instances/{id}/raiseEvent/{event}",
            post(instances::raise_event),
        )
        // terminate, suspend, resume; the fixed routes around it win.
        .route("/instances/{id}/{operation}", post(instances::control))
        .route("/instances/{id}/restart", post(instances::restart))
        .route("/instances/{id}/rewind", post(instances::rewind))
}

/// The main listener: management routes, the HTTP starter and the admin
/// routes, every one behind the system key.
pub fn router(host: Arc<Host>, body_limit: usize) -> Router {
    let state = ApiState::new(host, PREFIX, true);
    let starter = Router::new()
        .route("/orchestrators/{name}", post(instances::start))
        .route("/orchestrators/{name}/{id}", post(instances::start_with_id));
    let admin = Router::new()
        .route("/apps", get(admin::list))
        .route("/apps/{app}", put(admin::deploy))
        .route("/apps/{app}/check", post(admin::check))
        .route("/instances/{id}/upgrade", post(admin::upgrade_instance))
        .route("/apps/{app}/versions", get(admin::versions))
        .route(
            "/apps/{app}/versions/{version}",
            delete(admin::remove_version),
        )
        .layer(DefaultBodyLimit::max(DEPLOY_BODY_LIMIT));
    let recorded = state.host.metrics.clone();
    let keyed = Router::new()
        .nest(
            PREFIX,
            management().layer(DefaultBodyLimit::max(body_limit)),
        )
        .nest("/api", starter.layer(DefaultBodyLimit::max(body_limit)))
        .nest("/admin", admin)
        .nest("/dashboard/api", dashboard::data())
        .route("/metrics", get(metrics::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(axum::middleware::from_fn(json_errors));
    // The dashboard's page and login hold no data and answer in HTML.
    dashboard::pages()
        .merge(keyed)
        .layer(axum::middleware::from_fn_with_state(
            recorded,
            metrics::record,
        ))
        .with_state(state)
}

/// The RPC listener: the management routes under `/durabletask/`, without a
/// key. It only ever binds loopback (see `serve`).
pub fn rpc_router(host: Arc<Host>, body_limit: usize) -> Router {
    let state = ApiState::new(host, RPC_PREFIX, false);
    let recorded = state.host.metrics.clone();
    Router::new()
        .nest(
            RPC_PREFIX,
            management().layer(DefaultBodyLimit::max(body_limit)),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            recorded,
            metrics::record,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Any error answer that is not already JSON (axum's own rejections of a bad
/// path or query, say) becomes `{"error": ...}`, so every 4xx speaks the same
/// shape.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    ApiError::new(status, text).into_response()
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
