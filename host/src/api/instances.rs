//! Instance routes: start, status, list, raise event, terminate, purge.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use super::auth::{Link, Session};
use super::body::json_text;
use super::history::history_events;
use super::urls::{origin, CheckStatus};
use super::{ApiError, ApiState, Links};
use crate::engine::history::{Message, RuntimeStatus};
use crate::host::{RewindError, StartError};
use crate::store::{format_time, EnqueueOutcome, InstanceFilter, InstanceRow};
use crate::trace;

/// Longest instance id accepted (as Durable Functions).
const MAX_ID_LEN: usize = 100;
const CONTINUATION: &str = "x-ms-continuation-token";

/// A start's options: wait for completion (`timeout`, in seconds), and a
/// webhook for this instance's lifecycle events (`callbackUrl`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StartQuery {
    timeout: Option<String>,
    callback_url: Option<String>,
    // `pollingInterval` is accepted and ignored, like every unknown
    // parameter: completion wakes the waiter directly.
}

/// Longest wait the start and raise routes accept.
const MAX_WAIT_SECONDS: f64 = 3600.0;

/// A route's `timeout` parameter: how long to wait for the outcome.
fn parse_wait(timeout: Option<&str>) -> Result<Option<Duration>, ApiError> {
    match timeout.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= MAX_WAIT_SECONDS)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                ApiError::bad_request(format!("timeout must be 0 to {MAX_WAIT_SECONDS} seconds"))
            }),
    }
}

pub async fn start(
    State(state): State<ApiState>,
    session: Option<Extension<Session>>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = json_text(&headers, body, "the orchestration input")?;
    let links = state.links.for_session(session.is_some());
    start_instance(&state, &links, &name, None, input, &query, &headers).await
}

pub async fn start_with_id(
    State(state): State<ApiState>,
    session: Option<Extension<Session>>,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = json_text(&headers, body, "the orchestration input")?;
    let links = state.links.for_session(session.is_some());
    start_instance(&state, &links, &name, Some(id), input, &query, &headers).await
}

async fn start_instance(
    state: &ApiState,
    links: &Links,
    name: &str,
    id: Option<String>,
    input: String,
    query: &StartQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let wait = parse_wait(query.timeout.as_deref())?;
    let callback = query
        .callback_url
        .as_deref()
        .map(validate_callback)
        .transpose()?;
    let id = match id {
        Some(id) => validate_id(&id)?,
        None => new_instance_id(),
    };
    state
        .host
        .start_instance(name, id.clone(), input, callback, trace::incoming(headers))
        .await
        .map_err(|e| match e {
            StartError::UnknownOrchestrator(name) => ApiError::bad_request(format!(
                "no orchestrator named {name} is deployed (deployed: {})",
                state.host.catalog.orchestrators().join(", ")
            )),
            StartError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, message),
            StartError::Store(error) => error.into(),
        })?;
    if let Some(wait) = wait {
        if let Some(row) = state.host.wait_finished(&id, wait).await? {
            return Ok(finished_response(&row));
        }
    }
    check_status_response(links, &id, headers)
}

/// 202 with `Location`, `Retry-After` and the management URLs.
fn check_status_response(
    links: &Links,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let payload = CheckStatus::new(&origin(headers), links, id);
    let location = HeaderValue::from_str(&payload.status_query_get_uri)
        .map_err(|_| ApiError::bad_request("the Host header cannot form a URL"))?;
    Ok((
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, location),
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
        ],
        Json(payload),
    )
        .into_response())
}

/// What a start that waited answers once the instance finished: the output
/// when it completed, else its status.
fn finished_response(row: &InstanceRow) -> Response {
    let body = if row.status == RuntimeStatus::Completed {
        json_or_null(row.output.as_deref())
    } else {
        serde_json::to_value(instance_status(row, true)).expect("status serializes")
    };
    (StatusCode::OK, Json(body)).into_response()
}

fn no_instance(id: &str) -> ApiError {
    ApiError::not_found(format!("no instance with id {id}"))
}

/// A link reaches only the instance it was made for, not one started again
/// under its id since.
fn replaced(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        format!("this link was made for an earlier instance under id {id}, which is gone"),
    )
}

/// The instance's row, or 404.
async fn instance(state: &ApiState, id: &str) -> Result<InstanceRow, ApiError> {
    state
        .host
        .store
        .instance(id.to_string())
        .await?
        .ok_or_else(|| no_instance(id))
}

fn validate_callback(url: &str) -> Result<String, ApiError> {
    let url = url.trim();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.parse::<axum::http::Uri>().is_err() {
        return Err(ApiError::bad_request(format!(
            "callbackUrl must be an http or https URL, not {url:?}"
        )));
    }
    Ok(url.to_string())
}

fn validate_id(id: &str) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "an instance id must have 1 to {MAX_ID_LEN} characters"
        )));
    }
    if id
        .chars()
        .any(|c| c.is_control() || matches!(c, '/' | '\\' | '#' | '?'))
    {
        return Err(ApiError::bad_request(
            "an instance id may not contain '/', '\\', '#', '?' or control characters",
        ));
    }
    Ok(id.to_string())
}

fn new_instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    show_history: Option<String>,
    show_history_output: Option<String>,
    show_input: Option<String>,
}

fn flag(value: &Option<String>, default: bool) -> bool {
    match value.as_deref().map(str::trim) {
        None | Some("") => default,
        Some(v) => !v.eq_ignore_ascii_case("false") && v != "0",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceStatus {
    name: String,
    instance_id: String,
    runtime_status: &'static str,
    input: Value,
    custom_status: Value,
    output: Value,
    created_time: String,
    last_updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_events: Option<Vec<Value>>,
}

fn json_or_null(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn parse_time(text: &str, what: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::bad_request(format!("{what} is not an ISO 8601 time: {e}")))
}

fn instance_status(row: &InstanceRow, show_input: bool) -> InstanceStatus {
    InstanceStatus {
        name: row.name.clone(),
        instance_id: row.id.clone(),
        runtime_status: row.status.as_str(),
        input: if show_input {
            json_or_null(Some(&row.input))
        } else {
            Value::Null
        },
        custom_status: json_or_null(row.custom_status.as_deref()),
        output: json_or_null(row.output.as_deref()),
        created_time: format_time(row.created_at),
        last_updated_time: format_time(row.updated_at),
        history_events: None,
    }
}

/// 202 while the instance runs, 200 once it finished.
fn status_code(status: RuntimeStatus) -> StatusCode {
    if status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

/// A link reads the status only: never the input (whatever `showInput`
/// says) nor the history.
pub async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<StatusQuery>,
    link: Option<Extension<Link>>,
) -> Result<Response, ApiError> {
    let show_history = flag(&query.show_history, false);
    if link.is_some() && show_history {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a link reads the instance's status, not its history",
        ));
    }
    let row = instance(&state, &id).await?;
    if Link::execution(link.as_deref()).is_some_and(|execution| execution != row.pk) {
        return Err(replaced(&id));
    }
    let mut body = instance_status(&row, link.is_none() && flag(&query.show_input, true));
    if show_history {
        let history = state.host.store.history(id).await?;
        body.history_events = Some(history_events(
            &history,
            &row,
            flag(&query.show_history_output, false),
        ));
    }
    Ok((status_code(row.status), Json(body)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    runtime_status: Option<String>,
    created_time_from: Option<String>,
    created_time_to: Option<String>,
    instance_id_prefix: Option<String>,
    /// The orchestrator's name (not a Durable Functions filter; the
    /// dashboard's).
    name: Option<String>,
    /// Newest first (the dashboard's order; Durable Functions lists oldest
    /// first).
    newest_first: Option<String>,
    top: Option<String>,
    show_input: Option<String>,
}

const MAX_PAGE: usize = 1000;

pub async fn list(
    State(state): State<ApiState>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut filter = InstanceFilter {
        limit: MAX_PAGE,
        ..InstanceFilter::default()
    };
    if let Some(statuses) = &query.runtime_status {
        filter.statuses = parse_statuses(statuses)?;
    }
    if let Some(from) = &query.created_time_from {
        filter.created_from = Some(parse_time(from, "createdTimeFrom")?);
    }
    if let Some(to) = &query.created_time_to {
        filter.created_to = Some(parse_time(to, "createdTimeTo")?);
    }
    filter.id_prefix = query.instance_id_prefix.clone().filter(|p| !p.is_empty());
    filter.name = query.name.clone().filter(|n| !n.is_empty());
    filter.newest_first = flag(&query.newest_first, false);
    if let Some(top) = &query.top {
        let top: usize = top
            .trim()
            .parse()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ApiError::bad_request("top must be a positive number"))?;
        filter.limit = top.min(MAX_PAGE);
    }
    if let Some(token) = headers.get(CONTINUATION).and_then(|v| v.to_str().ok()) {
        if !token.is_empty() && token != "null" {
            filter.after = Some(decode_token(token)?);
        }
    }
    let limit = filter.limit;
    let rows = state.host.store.list_instances(filter).await?;
    let show_input = flag(&query.show_input, true);
    let body: Vec<InstanceStatus> = rows
        .iter()
        .map(|r| instance_status(r, show_input))
        .collect();
    let mut response = Json(body).into_response();
    if rows.len() == limit {
        let last = rows.last().expect("a full page has a last row");
        let token = encode_token(last.created_at, &last.id);
        response.headers_mut().insert(
            CONTINUATION,
            HeaderValue::from_str(&token).expect("hex is a valid header"),
        );
    }
    Ok(response)
}

fn encode_token(created_at: i64, id: &str) -> String {
    format!("{created_at}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = || ApiError::bad_request("the continuation token is not valid");
    if !token.len().is_multiple_of(2) {
        return Err(invalid());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (time, id) = text.split_once(':').ok_or_else(invalid)?;
    Ok((time.parse().map_err(|_| invalid())?, id.to_string()))
}

/// A raise's option: wait (`timeout`, in seconds) until the episode that
/// consumed the event has committed, and answer with the status then.
#[derive(Deserialize, Default)]
pub struct RaiseQuery {
    timeout: Option<String>,
}

/// The event carries its verified sender (see `Link::sender`); what the
/// data says about who sent it is only data.
pub async fn raise_event(
    State(state): State<ApiState>,
    Path((id, event)): Path<(String, String)>,
    Query(query): Query<RaiseQuery>,
    link: Option<Extension<Link>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let wait = parse_wait(query.timeout.as_deref())?;
    let input = json_text(&headers, body, "the event data")?;
    let message = Message::EventRaised {
        name: event,
        input,
        sender: Link::sender(link.as_deref()),
    };
    let execution = Link::execution(link.as_deref());
    let Some(wait) = wait else {
        let outcome = state.host.send_to(&id, execution, message).await?;
        return delivered(&id, outcome);
    };
    match state
        .host
        .send_and_wait(&id, execution, message, wait)
        .await?
    {
        (EnqueueOutcome::Queued(_), Some(row)) => {
            Ok((StatusCode::OK, Json(instance_status(&row, false))).into_response())
        }
        (outcome, _) => delivered(&id, outcome),
    }
}

#[derive(Deserialize, Default)]
pub struct ReasonQuery {
    reason: Option<String>,
}

/// `terminate`, `suspend` and `resume`: a message with an optional reason.
pub async fn control(
    State(state): State<ApiState>,
    Path((id, operation)): Path<(String, String)>,
    Query(query): Query<ReasonQuery>,
) -> Result<Response, ApiError> {
    let reason = query.reason.unwrap_or_default();
    let message = match operation.as_str() {
        "terminate" => Message::Terminate { reason },
        "suspend" => Message::Suspend { reason },
        "resume" => Message::Resume { reason },
        _ => {
            return Err(ApiError::not_found(format!(
                "no instance operation {operation}"
            )))
        }
    };
    deliver(&state, &id, message).await
}

pub async fn rewind(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ReasonQuery>,
) -> Result<Response, ApiError> {
    let reason = query.reason.unwrap_or_default();
    match state.host.rewind(&id, reason).await {
        Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
        Err(RewindError::NotFound) => Err(no_instance(&id)),
        Err(RewindError::NotFailed(status)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "only Failed instances can be rewound; {id} is {}",
                status.as_str()
            ),
        )),
        Err(RewindError::Store(error)) => Err(error.into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartQuery {
    restart_with_new_instance_id: Option<String>,
}

/// Starts the instance's orchestrator again with the same input, under a
/// new id unless `restartWithNewInstanceId=false`.
pub async fn restart(
    State(state): State<ApiState>,
    session: Option<Extension<Session>>,
    Path(id): Path<String>,
    Query(query): Query<RestartQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let row = instance(&state, &id).await?;
    let new_id = flag(&query.restart_with_new_instance_id, true).then(new_instance_id);
    let target = new_id.unwrap_or(id);
    let options = StartQuery {
        callback_url: row.callback_url,
        ..StartQuery::default()
    };
    start_instance(
        &state,
        &state.links.for_session(session.is_some()),
        &row.name,
        Some(target),
        row.input,
        &options,
        &headers,
    )
    .await
}

/// 202 once the message is committed; 404 or 410 when nobody will read it.
async fn deliver(state: &ApiState, id: &str, message: Message) -> Result<Response, ApiError> {
    delivered(id, state.host.send(id, message).await?)
}

/// What a delivery's outcome answers.
fn delivered(id: &str, outcome: EnqueueOutcome) -> Result<Response, ApiError> {
    match outcome {
        EnqueueOutcome::Queued(_) => Ok(StatusCode::ACCEPTED.into_response()),
        EnqueueOutcome::NotFound => Err(no_instance(id)),
        EnqueueOutcome::Replaced => Err(replaced(id)),
        EnqueueOutcome::Terminal(status) => Err(ApiError::new(
            StatusCode::GONE,
            format!(
                "instance {id} is {} and takes no more messages",
                status.as_str()
            ),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PurgeQuery {
    runtime_status: Option<String>,
    created_time_from: Option<String>,
    created_time_to: Option<String>,
}

/// Purges finished instances by creation time (`createdTimeFrom` required)
/// and status (Completed, Failed, Terminated; all three by default).
pub async fn purge_many(
    State(state): State<ApiState>,
    Query(query): Query<PurgeQuery>,
) -> Result<Response, ApiError> {
    let from = query
        .created_time_from
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("createdTimeFrom is required to purge by filter"))?;
    let from = parse_time(from, "createdTimeFrom")?;
    let to = query
        .created_time_to
        .as_deref()
        .map(|t| parse_time(t, "createdTimeTo"))
        .transpose()?;
    let statuses = match &query.runtime_status {
        None => RuntimeStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect(),
        Some(list) => parse_statuses(list)?,
    };
    if let Some(running) = statuses.iter().find(|s| !s.is_terminal()) {
        return Err(ApiError::bad_request(format!(
            "only finished instances can be purged by filter, not {}",
            running.as_str()
        )));
    }
    let deleted = state.host.store.purge_finished(from, to, statuses).await?;
    if deleted == 0 {
        return Err(ApiError::not_found("no instances matched"));
    }
    Ok(Json(serde_json::json!({ "instancesDeleted": deleted })).into_response())
}

fn parse_statuses(list: &str) -> Result<Vec<RuntimeStatus>, ApiError> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|name| {
            RuntimeStatus::parse(name)
                .ok_or_else(|| ApiError::bad_request(format!("unknown runtimeStatus {name}")))
        })
        .collect()
}

pub async fn purge(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.host.purge(&id).await? {
        Ok(Json(serde_json::json!({ "instancesDeleted": 1 })).into_response())
    } else {
        Err(no_instance(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip() {
        let token = encode_token(1234, "abc:def");
        assert_eq!(decode_token(&token).unwrap(), (1234, "abc:def".to_string()));
        assert!(decode_token("zz").is_err());
    }

    #[test]
    fn instance_ids_are_checked() {
        assert!(validate_id("abc-123").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(&"x".repeat(101)).is_err());
    }

    #[test]
    fn times_use_the_durable_functions_format() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
    }
}
