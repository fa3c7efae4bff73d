//! Lifecycle notifications, as Durable Functions publishes them to Event
//! Grid: when an instance is created, completes, fails or is terminated, the
//! host POSTs a JSON event to the configured webhooks (host-wide, and the
//! `callbackUrl` given at start). The event is written to the `outbox` in the
//! same transaction as the change it reports, then delivered with retries and
//! back-off, so a crash or restart loses none. Each POST carries
//! `X-Durango-Signature: sha256=HEX`, the HMAC-SHA256 of the body under the
//! signing secret, so the receiver can trust it.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;

use crate::engine::history::RuntimeStatus;
use crate::store::{format_time, now_ms, Notification, Outbox, OutboxRow};

pub const SIGNATURE_HEADER: &str = "X-Durango-Signature";
/// Deliveries are given up a day after the event, as Event Grid does.
const GIVE_UP_AFTER_MS: i64 = 24 * 3600 * 1000;
const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: usize = 100;

/// Where lifecycle events go and how they are signed.
pub struct Notifier {
    urls: Vec<String>,
    secret: String,
    /// Wakes the delivery task when new events are committed.
    pending: Notify,
}

/// What an event reports.
pub struct Change<'a> {
    pub instance_id: &'a str,
    pub name: &'a str,
    pub status: RuntimeStatus,
    /// The output (Completed) or the reason (Failed, Terminated), as JSON.
    pub detail: Option<&'a str>,
    pub callback_url: Option<&'a str>,
}

impl Notifier {
    pub fn new(urls: Vec<String>, secret: String) -> Notifier {
        Notifier {
            urls,
            secret,
            pending: Notify::new(),
        }
    }

    /// The outbox rows for a change: one per webhook.
    pub fn notifications(&self, change: &Change<'_>) -> Vec<Notification> {
        let targets: Vec<&str> = self
            .urls
            .iter()
            .map(String::as_str)
            .chain(change.callback_url)
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let detail = change
            .detail
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut body = json!({
            "eventType": format!("Durango.Orchestration.{}", event_name(change.status)),
            "instanceId": change.instance_id,
            "functionName": change.name,
            "runtimeStatus": change.status.as_str(),
            "time": format_time(now_ms()),
        });
        let key = if change.status == RuntimeStatus::Completed {
            "output"
        } else {
            "reason"
        };
        if !detail.is_null() {
            body[key] = detail;
        }
        let body = body.to_string();
        targets
            .into_iter()
            .map(|url| Notification {
                url: url.to_string(),
                body: body.clone(),
            })
            .collect()
    }

    /// New events were committed.
    pub fn wake(&self) {
        self.pending.notify_one();
    }

    fn sign(&self, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }
}

fn event_name(status: RuntimeStatus) -> &'static str {
    match status {
        RuntimeStatus::Pending => "Created",
        other => other.as_str(),
    }
}

/// Delivers the outbox, oldest first; sleeps until the next retry is due or
/// new events arrive.
pub async fn deliver(outbox: Arc<dyn Outbox>, notifier: Arc<Notifier>) {
    loop {
        let woken = notifier.pending.notified();
        let now = now_ms();
        let (due, next) = match outbox.outbox_due(now, BATCH).await {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, "cannot read the notification outbox; retrying in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let full_batch = due.len() == BATCH;
        for row in due {
            send(outbox.as_ref(), &notifier, row).await;
        }
        if full_batch {
            continue;
        }
        match next {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64);
                let _ = tokio::time::timeout(wait, woken).await;
            }
            None => woken.await,
        }
    }
}

/// When to try again after `attempts` failed deliveries of an event
/// created at `created_at`: the wait doubles from 2 s up to 5 minutes;
/// `None` once the event is a day old.
fn retry_at(attempts: u32, created_at: i64, now: i64) -> Option<i64> {
    if now - created_at > GIVE_UP_AFTER_MS {
        return None;
    }
    let backoff = (1000i64 << attempts.min(20)).min(MAX_BACKOFF_MS);
    Some(now + backoff)
}

async fn send(outbox: &dyn Outbox, notifier: &Notifier, row: OutboxRow) {
    let signature = notifier.sign(&row.body);
    let (url, body) = (row.url.clone(), row.body.clone());
    let sent = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SEND_TIMEOUT))
            .build()
            .new_agent();
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header("X-Durango-Delivery", row.id.to_string())
            .send(body.as_bytes())
            .map(|response| response.status().as_u16())
    })
    .await;
    let outcome = match sent {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    let attempts = row.attempts + 1;
    let result = match (outcome, retry_at(attempts, row.created_at, now_ms())) {
        (Ok(()), _) => outbox.outbox_delivered(row.id).await,
        (Err(reason), None) => {
            tracing::error!(url = %row.url, %reason, "giving up on a lifecycle notification after a day");
            outbox.outbox_delivered(row.id).await
        }
        (Err(reason), Some(at)) => {
            tracing::warn!(url = %row.url, %reason, attempts, "lifecycle notification not delivered; will retry");
            outbox.outbox_retry(row.id, attempts, at).await
        }
    };
    if let Err(error) = result {
        tracing::error!(%error, "cannot record a notification delivery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_to_five_minutes_and_stop_after_a_day() {
        let waits: Vec<i64> = (1..=10)
            .map(|attempts| retry_at(attempts, 0, 1_000).unwrap() - 1_000)
            .collect();
        assert_eq!(
            waits,
            [2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000]
        );
        assert_eq!(retry_at(u32::MAX, 0, 1_000), Some(301_000), "no overflow");
        assert!(
            retry_at(3, 0, GIVE_UP_AFTER_MS).is_some(),
            "a day to the ms"
        );
        assert_eq!(retry_at(3, 0, GIVE_UP_AFTER_MS + 1), None, "then given up");
    }
}
