//! `durango fake-sms`: a stand-in for Twilio's Messages API on loopback, so
//! the phone-verification sample runs (and is tested) without an account.
//! It speaks the REST shape the sample uses, checks basic auth when given
//! credentials, prints each message, and lists them at `GET /messages`.
//! It also takes any JSON posted to `/webhook` (approval requests, lifecycle
//! notifications) and lists it there too, for the walk-throughs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
    let message = {
        let mut messages = fake.messages.lock().expect("message log");
        let message = json!({
            "sid": format!("SM{:032x}", messages.len() + 1),
            "account_sid": sid,
            "to": field("To"),
            "from": field("From"),
            "body": field("Body"),
            "status": "queued",
            "auth_user": auth.map(|(user, _)| user),
            "idempotency_token": idempotency,
        });
        messages.push(message.clone());
        message
    };
    println!("SMS to {}: {}", field("To"), field("Body"));
    // Taken (and listed) first, answered after: the message counts as sent
    // even if the sender never reads the answer.
    tokio::time::sleep(fake.delay).await;
    (StatusCode::CREATED, Json(message)).into_response()
}

async fn webhook(State(fake): State<Fake>, Json(body): Json<Value>) -> StatusCode {
    println!("webhook: {body}");
    fake.messages
        .lock()
        .expect("message log")
        .push(json!({"webhook": body}));
    StatusCode::OK
}

async fn list(State(fake): State<Fake>) -> Json<Vec<Value>> {
    Json(fake.messages.lock().expect("message log").clone())
}
