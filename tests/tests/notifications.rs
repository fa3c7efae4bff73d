//! Lifecycle notifications: signed webhooks from a durable outbox.

use std::time::Duration;

use durango_e2e::{Host, HostOptions, Received, Webhook};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "webhook-signing-secret";

fn host_notifying(webhook: &Webhook) -> Host {
    Host::start(
        HostOptions::default()
            .arg("--notify-url")
            .arg(&webhook.url)
            .env("DURANGO_NOTIFY_SECRET", SECRET),
    )
}

fn events_for<'a>(received: &'a [Received], id: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.json()["instanceId"] == id)
        .collect()
}

fn has_status(received: &[Received], id: &str, status: &str) -> bool {
    events_for(received, id)
        .iter()
        .any(|r| r.json()["runtimeStatus"] == status)
}

fn assert_signed(event: &Received) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(event.body.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        event.header("X-Durango-Signature"),
        Some(format!("sha256={expected}").as_str()),
        "signature of {}",
        event.body
    );
}

#[test]
fn creation_and_completion_are_posted_signed_to_host_and_per_start_webhooks() {
    let host_wide = Webhook::start();
    let per_start = Webhook::start();
    let host = host_notifying(&host_wide);
    let callback = durango_e2e::request(
        "POST",
        &host.url(&format!(
            "/api/orchestrators/E1_HelloSequence?callbackUrl={}",
            per_start.url.replace(':', "%3A").replace('/', "%2F")
        )),
        &[("x-functions-key", durango_e2e::KEY)],
        None,
    );
    assert_eq!(callback.status, 202, "{}", callback.text);
    let id = callback.body["id"].as_str().unwrap().to_string();

    for hook in [&host_wide, &per_start] {
        let got = hook.wait_for("created and completed", |r| {
            has_status(r, &id, "Pending") && has_status(r, &id, "Completed")
        });
        let events = events_for(&got, &id);
        assert_eq!(events.len(), 2, "{events:?}");
        for event in &events {
            assert_signed(event);
            assert_eq!(event.json()["functionName"], "E1_HelloSequence");
        }
        let created = events
            .iter()
            .find(|e| e.json()["runtimeStatus"] == "Pending")
            .unwrap();
        assert_eq!(created.json()["eventType"], "Durango.Orchestration.Created");
        let completed = events
            .iter()
            .find(|e| e.json()["runtimeStatus"] == "Completed")
            .unwrap();
        assert_eq!(
            completed.json()["output"],
            json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
        );
        assert!(completed.json()["time"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn failures_and_terminations_are_posted_with_their_reason() {
    let hook = Webhook::start();
    let host = host_notifying(&hook);
    let failing = host.start_orchestration("Panics", "\"out of cheese\"");
    let waiting = host.start_orchestration("EchoAfterEvent", "\"Never\"");
    host.wait_history(&waiting, "ExecutionStarted", 1);
    host.call(
        "POST",
        &format!("/runtime/webhooks/durabletask/instances/{waiting}/terminate?reason=stop"),
        None,
    );
    let got = hook.wait_for("failed and terminated", |r| {
        has_status(r, &failing, "Failed") && has_status(r, &waiting, "Terminated")
    });
    let failed = events_for(&got, &failing)
        .into_iter()
        .find(|e| e.json()["runtimeStatus"] == "Failed")
        .unwrap()
        .json();
    assert!(
        failed["reason"].as_str().unwrap().contains("out of cheese"),
        "{failed}"
    );
    let terminated = events_for(&got, &waiting)
        .into_iter()
        .find(|e| e.json()["runtimeStatus"] == "Terminated")
        .unwrap()
        .json();
    assert_eq!(terminated["reason"], "stop");
}

/// The deliveries (tries) of `id`'s completion event.
fn completions<'a>(received: &'a [Received], id: &str) -> Vec<&'a Received> {
    events_for(received, id)
        .into_iter()
        .filter(|r| r.json()["runtimeStatus"] == "Completed")
        .collect()
}

#[test]
fn a_refused_notification_is_retried_with_back_off_under_one_delivery_id_across_kill_9() {
    let hook = Webhook::start();
    hook.set_failing(true);
    let mut host = host_notifying(&hook);
    let id = host.start_orchestration("E1_HelloSequence", "");
    host.wait_finished(&id);
    let refused = hook.wait_for("two refused tries of the completion", |r| {
        completions(r, &id).len() >= 2
    });
    let tries = completions(&refused, &id);
    assert!(tries.iter().all(|t| t.answered == 500));
    let delivery = tries[0]
        .header("X-Durango-Delivery")
        .expect("a delivery id")
        .to_string();
    assert_eq!(
        tries[1].header("X-Durango-Delivery"),
        Some(delivery.as_str())
    );
    assert!(
        tries[1].at - tries[0].at >= Duration::from_millis(1900),
        "the second try waited out the first back-off (2 s)"
    );

    // The event is in the outbox: a crash loses nothing.
    host.kill9();
    hook.set_failing(false);
    host.restart();
    let got = hook.wait_for("the completion after restart", |r| {
        completions(r, &id).iter().any(|t| t.answered == 200)
    });
    let delivered: Vec<&Received> = completions(&got, &id)
        .into_iter()
        .filter(|t| t.answered == 200)
        .collect();
    assert_eq!(delivered.len(), 1, "delivered once");
    assert_eq!(
        delivered[0].header("X-Durango-Delivery"),
        Some(delivery.as_str()),
        "under the same delivery id, so a receiver can deduplicate"
    );
    assert_signed(delivered[0]);
}
