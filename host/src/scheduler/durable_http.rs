//! The built-in durable HTTP step (`ctx.call_http` in the SDK): an activity
//! the host runs itself. The orchestrator records the response like any
//! activity result, so replay never calls the endpoint again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The activity name the guest SDK uses for durable HTTP calls.
pub const BUILTIN_HTTP: &str = "durango.http";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    status_code: u16,
    headers: Vec<(String, String)>,
    content: String,
}

/// The header that carries the call's idempotency key, so the endpoint can
/// tell a re-run (after a crash, a retry) from a new call.
const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Makes the request; any HTTP answer is a result (the orchestrator looks at
/// the status), a transport failure is an error (and is retried per policy).
pub async fn call(
    input: &str,
    idempotency_key: &str,
    limit: Duration,
    parent: Option<&crate::trace::Parent>,
) -> Result<String, String> {
    let mut request: Request = serde_json::from_str(input)
        .map_err(|e| format!("durable HTTP request is not valid: {e}"))?;
    let keyed = request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(IDEMPOTENCY_HEADER));
    if !keyed {
        request
            .headers
            .push((IDEMPOTENCY_HEADER.into(), idempotency_key.into()));
    }
    // The attempt's span is the called service's parent, unless the
    // orchestrator named one.
    if let Some(parent) = parent {
        let traced = request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("traceparent"));
        if !traced {
            request
                .headers
                .push(("traceparent".into(), parent.traceparent()));
        }
    }
    tokio::task::spawn_blocking(move || send(request, limit))
        .await
        .map_err(|e| format!("durable HTTP call stopped: {e}"))?
}

fn send(request: Request, limit: Duration) -> Result<String, String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(limit))
        .build()
        .new_agent();
    let method: ureq::http::Method = request
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown HTTP method {}", request.method))?;
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let http_request = builder
        .body(request.content.unwrap_or_default())
        .map_err(|e| format!("durable HTTP request to {} is not valid: {e}", request.url))?;
    let mut response = agent
        .run(http_request)
        .map_err(|e| format!("durable HTTP request to {} failed: {e}", request.url))?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let content = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the response of {} failed: {e}", request.url))?;
    let answer = Response {
        status_code: response.status().as_u16(),
        headers,
        content,
    };
    Ok(serde_json::to_string(&answer).expect("responses serialize"))
}
