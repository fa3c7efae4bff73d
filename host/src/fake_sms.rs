//! `durango fake-sms`: a stand-in for Twilio's Messages API on loopback, so
//! the phone-verification sample runs (and is tested) without an account.
//! It speaks the REST shape the sample uses, checks basic auth when given
//! credentials, prints each message, and lists them at `GET /messages`.
//! Like Twilio, it sends a message once per `I-Twilio-Idempotency-Token`:
//! a request that repeats a token gets the first message back and sends
//! nothing (the listed message counts the `requests` it took). Like many
//! gateways, it refuses a body sent without `Content-Length` (`411`).
//! It also takes any JSON posted to `/webhook` (approval requests, lifecycle
//! notifications) and lists it there too, for the walk-throughs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct FakeSmsArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7072")]
    pub listen: SocketAddr,
    /// Require this account SID in basic auth.
    #[arg(long)]
    pub account_sid: Option<String>,
    /// Require this auth token in basic auth.
    #[arg(long)]
    pub auth_token: Option<String>,
    /// Answer each message this long after taking it, as a slow provider
    /// would: a sender that crashes meanwhile has sent a message it never
    /// heard back about.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

#[derive(Clone)]
struct Fake {
    credentials: Option<(String, String)>,
    delay: Duration,
    /// Every message sent and webhook taken, in arrival order.
    messages: Arc<Mutex<Vec<Value>>>,
}

pub async fn run(args: FakeSmsArgs) -> anyhow::Result<()> {
    let fake = Fake {
        credentials: args.account_sid.zip(args.auth_token),
        delay: Duration::from_millis(args.delay_ms),
        messages: Arc::default(),
    };
    let app = Router::new()
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(send))
        .route("/webhook", post(webhook))
        .route("/messages", get(list))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn send(
    State(fake): State<Fake>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refusal) = length_required(&headers) {
        return refusal;
    }
    let auth = basic_auth(&headers);
    if let Some(expected) = &fake.credentials {
        if auth.as_ref() != Some(expected) || sid != expected.0 {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 20003, "message": "Authenticate"})),
            )
                .into_response();
        }
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let idempotency = headers
        .get("i-twilio-idempotency-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (index, message) = {
        let mut messages = fake.messages.lock().expect("message log");
        let repeated = idempotency.as_ref().and_then(|token| {
            messages
                .iter()
                .position(|m| m["idempotency_token"].as_str() == Some(token))
        });
        if let Some(index) = repeated {
            // Sent already: the first message again, nothing sent.
            let first = &mut messages[index];
            first["requests"] = json!(first["requests"].as_u64().unwrap_or(1) + 1);
            println!(
                "SMS to {} repeated under its token: not sent again",
                first["to"]
            );
            return (StatusCode::CREATED, Json(answer(first))).into_response();
        }
        let message = json!({
            "sid": format!("SM{:032x}", messages.len() + 1),
            "account_sid": sid,
            "to": field("To"),
            "from": field("From"),
            "body": field("Body"),
            "status": "queued",
            "auth_user": auth.map(|(user, _)| user),
            "idempotency_token": idempotency,
            "traceparent": headers.get("traceparent").and_then(|v| v.to_str().ok()),
            "requests": 1,
            "answered": false,
        });
        messages.push(message.clone());
        (messages.len() - 1, message)
    };
    println!("SMS to {}: {}", field("To"), field("Body"));
    // Taken (and listed) first, answered after: the message counts as sent
    // even if the sender never reads the answer.
    tokio::time::sleep(fake.delay).await;
    fake.messages.lock().expect("message log")[index]["answered"] = json!(true);
    (StatusCode::CREATED, Json(answer(&message))).into_response()
}

/// A message as Twilio answers it: without this stand-in's bookkeeping.
fn answer(message: &Value) -> Value {
    let mut answer = message.clone();
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("requests");
        fields.remove("answered");
        fields.remove("traceparent");
    }
    answer
}

/// A `411` for a request whose body comes without `Content-Length`
/// (chunked), as many servers and gateways answer.
fn length_required(headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key(header::CONTENT_LENGTH) {
        return None;
    }
    Some(
        (
            StatusCode::LENGTH_REQUIRED,
            Json(json!({"code": 411, "message": "Content-Length required"})),
        )
            .into_response(),
    )
}

async fn webhook(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = length_required(&headers) {
        return refusal;
    }
    println!("webhook: {body}");
    fake.messages
        .lock()
        .expect("message log")
        .push(json!({"webhook": body}));
    StatusCode::OK.into_response()
}

async fn list(State(fake): State<Fake>) -> Json<Vec<Value>> {
    Json(fake.messages.lock().expect("message log").clone())
}
