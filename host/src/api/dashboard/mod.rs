//! The web dashboard at `/dashboard`: its page and assets (built into the
//! binary), its login, and the data only it needs (counts, one instance's
//! timeline and what it waits for, live changes). Everything else the page
//! does goes through the management and admin routes, with the session
//! cookie in place of the key (see `auth`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::auth::{has_session, same, SESSION_COOKIE};
use super::{ApiError, ApiState};
use crate::engine::history::RuntimeStatus;
use crate::engine::timeline::Timeline;
use crate::store::{now_ms, InstanceRow};

const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Pages may load only the host's own scripts and styles, and talk only to
/// the host; no other site may frame them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The page, its assets and its login: open to anyone, for they hold no
/// data (the page shows the login form until the session cookie is set).
pub fn pages() -> Router<ApiState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
}

/// The page's own data, behind the key or the session like every route.
pub fn data() -> Router<ApiState> {
    Router::new()
        .route("/summary", get(summary))
        .route("/instances/{id}", get(instance))
        .route("/waiting", get(waiting_of_many))
        .route("/events", get(events))
}

fn guarded(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn html(body: String) -> Response {
    guarded("text/html; charset=utf-8", body)
}

async fn page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if has_session(&headers, &state.session) {
        html(PAGE.to_string())
    } else {
        html(LOGIN.replace("{{error}}", ""))
    }
}

async fn script() -> Response {
    guarded("text/javascript; charset=utf-8", SCRIPT.to_string())
}

async fn style() -> Response {
    guarded("text/css; charset=utf-8", STYLE.to_string())
}

#[derive(Deserialize)]
struct Credentials {
    key: String,
}

/// The login form's post: the right key sets the session cookie.
async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    form: Result<Form<Credentials>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            "the login form must be posted from this host's own page",
        );
    }
    let key = form.map(|Form(c)| c.key).unwrap_or_default();
    if key.is_empty() || !same(key.trim().as_bytes(), state.key.as_bytes()) {
        return refused(StatusCode::UNAUTHORIZED, "that is not the system key");
    }
    let secure = if forwarded_https(&headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        state.session
    );
    see_dashboard(cookie)
}

async fn logout() -> Response {
    see_dashboard(format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

fn see_dashboard(cookie: String) -> Response {
    let cookie = HeaderValue::from_str(&cookie).expect("hex and ASCII make a header");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static("/dashboard")),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// The login page again, saying why.
fn refused(status: StatusCode, why: &str) -> Response {
    let mut response = html(LOGIN.replace("{{error}}", why));
    *response.status_mut() = status;
    response
}

/// A post from another site's page (login CSRF) names that site as its
/// origin; browsers always send `Origin` on a form's post.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// How many instances have each status, and the orchestrators deployed.
async fn summary(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let counts: serde_json::Map<String, Value> = state
        .host
        .store
        .count_by_status()
        .await?
        .into_iter()
        .map(|(status, n)| (status.as_str().to_string(), json!(n)))
        .collect();
    Ok(Json(json!({
        "counts": counts,
        "orchestrators": state.host.catalog.orchestrators(),
    })))
}

/// JSON text as a value (stored inputs and outputs are JSON; anything
/// else shows as a string).
fn parsed(text: Option<&str>) -> Value {
    text.map_or(Value::Null, |t| {
        serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.into()))
    })
}

/// What an unfinished instance waits for now, with each open activity's
/// attempts; its timeline with cancelled timers marked. A finished
/// instance waits for nothing.
async fn waiting_for(
    state: &ApiState,
    row: &InstanceRow,
) -> Result<(Timeline, Vec<Value>), ApiError> {
    let store = &state.host.store;
    let history = store.history(row.id.clone()).await?;
    let mut timeline = Timeline::of(&history);
    let mut waiting = Vec::new();
    match row.status {
        // A finished instance's timers are gone: cancelled when it ended.
        status if status.is_terminal() => timeline.cancel_timers_not_in(&[], row.updated_at),
        RuntimeStatus::Pending => waiting.push(json!({"step": "start", "since": row.created_at})),
        status => {
            let work = store.pending_work(row.pk).await?;
            let timers: Vec<u32> = work.timers.iter().map(|(seq, _)| *seq).collect();
            timeline.cancel_timers_not_in(&timers, row.updated_at);
            if status == RuntimeStatus::Suspended {
                waiting.push(json!({"step": "resume", "since": row.updated_at}));
            }
            for open in &timeline.open {
                let mut entry = serde_json::to_value(open).expect("serializes");
                if let Some((_, made, run_at)) =
                    work.activities.iter().find(|(seq, ..)| *seq == open.seq)
                {
                    entry["attemptsMade"] = json!(made);
                    entry["nextAttemptAt"] = json!(run_at);
                }
                waiting.push(entry);
            }
        }
    }
    Ok((timeline, waiting))
}

/// One instance: its row, its history as a timeline, and what it waits for
/// now.
async fn instance(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(row) = state.host.store.instance(id.clone()).await? else {
        return Err(ApiError::not_found(format!("no instance {id}")));
    };
    let (timeline, waiting) = waiting_for(&state, &row).await?;
    Ok(Json(json!({
        "id": row.id,
        "name": row.name,
        "app": state.host.catalog.app_of(&row.name),
        "version": row.version,
        "status": row.status.as_str(),
        "input": parsed(Some(&row.input)),
        "output": parsed(row.output.as_deref()),
        "customStatus": parsed(row.custom_status.as_deref()),
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "timeline": timeline.entries,
        "waiting": waiting,
        "now": now_ms(),
    })))
}

/// A page of the list asks at most this many at once.
const WAITING_BATCH: usize = 100;

/// What each of the instances `?id=A&id=B…` waits for (the list's column);
/// an id with no instance is left out.
async fn waiting_of_many(
    State(state): State<ApiState>,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
        .collect();
    if ids.len() > WAITING_BATCH {
        return Err(ApiError::bad_request(format!(
            "ask for at most {WAITING_BATCH} instances at once"
        )));
    }
    // The instances' reads go out together, not one after another.
    let answers = futures_util::future::try_join_all(ids.into_iter().map(|id| {
        let state = &state;
        async move {
            let Some(row) = state.host.store.instance(id.clone()).await? else {
                return Ok::<_, ApiError>(None);
            };
            Ok(Some((id, json!(waiting_for(state, &row).await?.1))))
        }
    }))
    .await?;
    Ok(Json(Value::Object(answers.into_iter().flatten().collect())))
}

/// Live updates for the page: an event per committed change of any
/// instance, from the host's own signals (the database is not polled). A
/// page that fell behind is told to read everything again. The stream ends
/// when the host stops.
async fn events(
    State(state): State<ApiState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = state.live_pages.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard pages are following live changes; close some and retry",
        )
        .retry_after(5)
    })?;
    let changes = state.host.signals.watch_changes();
    let stopping = Box::pin(state.host.signals.stopping());
    let live = stream::unfold(
        (changes, stopping, permit),
        |(mut changes, mut stopping, permit)| async move {
            let event = tokio::select! {
                () = &mut stopping => return None,
                change = changes.recv() => match change {
                    Ok(change) => Event::default().event("changed").data(
                        json!({
                            "id": &*change.instance_id,
                            "status": change.status.map(RuntimeStatus::as_str),
                        })
                        .to_string(),
                    ),
                    Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (changes, stopping, permit)))
        },
    );
    Ok(Sse::new(live).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
