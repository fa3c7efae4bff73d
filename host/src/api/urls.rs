//! The management URLs handed out for an instance. They carry the key, as
//! Durable Functions' do, so the holder can use them as they are.

use axum::http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use super::PREFIX;

/// Everything but the unreserved characters of RFC 3986.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// `http://host:port` as the client addressed us.
pub fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub id: String,
    pub status_query_get_uri: String,
    pub send_event_post_uri: String,
    pub terminate_post_uri: String,
    pub purge_history_delete_uri: String,
    pub restart_post_uri: String,
    pub suspend_post_uri: String,
    pub resume_post_uri: String,
}

impl CheckStatus {
    pub fn new(origin: &str, id: &str, key: &str) -> CheckStatus {
        let base = format!("{origin}{PREFIX}/instances/{}", encode(id));
        let code = format!("code={}", encode(key));
        CheckStatus {
            id: id.to_string(),
            status_query_get_uri: format!("{base}?{code}"),
            send_event_post_uri: format!("{base}/raiseEvent/{{eventName}}?{code}"),
            terminate_post_uri: format!("{base}/terminate?reason={{text}}&{code}"),
            purge_history_delete_uri: format!("{base}?{code}"),
            restart_post_uri: format!("{base}/restart?{code}"),
            suspend_post_uri: format!("{base}/suspend?reason={{text}}&{code}"),
            resume_post_uri: format!("{base}/resume?reason={{text}}&{code}"),
        }
    }
}
