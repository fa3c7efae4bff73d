//! The management URLs handed out for an instance. They carry the key, as
//! Durable Functions' do, so the holder can use them as they are.

use axum::http::HeaderMap;
use serde::Serialize;

use super::Links;
pub use crate::paths::encode;

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
    pub fn new(origin: &str, links: &Links, id: &str) -> CheckStatus {
        let base = format!("{origin}{}/instances/{}", links.prefix, encode(id));
        // `tail("?reason={text}")` ends a URL with the key, if there is one.
        let tail = |query: &str| match (&links.key, query.is_empty()) {
            (None, _) => query.to_string(),
            (Some(key), true) => format!("?code={}", encode(key)),
            (Some(key), false) => format!("{query}&code={}", encode(key)),
        };
        CheckStatus {
            id: id.to_string(),
            status_query_get_uri: format!("{base}{}", tail("")),
            send_event_post_uri: format!("{base}/raiseEvent/{{eventName}}{}", tail("")),
            terminate_post_uri: format!("{base}/terminate{}", tail("?reason={text}")),
            purge_history_delete_uri: format!("{base}{}", tail("")),
            restart_post_uri: format!("{base}/restart{}", tail("")),
            suspend_post_uri: format!("{base}/suspend{}", tail("?reason={text}")),
            resume_post_uri: format!("{base}/resume{}", tail("?reason={text}")),
        }
    }
}
