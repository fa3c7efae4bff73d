//! Who sent an event, as the orchestrator sees it: the system key, a link
//! that names its holder, or the instance's general link, which names
//! nobody. The sender is recorded with the event, so a replay from history
//! (no hot instances here) sees the same.

use std::time::Duration;

use durango_e2e::{request, wait_until, Host, HostOptions};
use serde_json::{json, Value};

/// POSTs `data` to a link and waits until the flow consumed it.
fn raise_through(link: &Value, data: &str) -> u16 {
    let url = format!("{}&timeout=30", link.as_str().unwrap());
    let answer = request(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(data.as_bytes()),
    );
    answer.status
}

#[test]
fn the_orchestrator_learns_who_sent_each_event_also_after_replay() {
    learns_who_sent_each_event("test_guests", "WhoSent");
}

#[test]
fn a_python_orchestrator_learns_who_sent_each_event_also_after_replay() {
    learns_who_sent_each_event("test_guests_py", "PyWhoSent");
}

/// `orchestrator` hands out the instance's links and links for `pat`,
/// then returns who sent each of three events.
fn learns_who_sent_each_event(app: &'static str, orchestrator: &str) {
    let host = Host::start(HostOptions::with_apps(&[app]).arg("--hot-instances=0"));
    let id = host.start_orchestration(orchestrator, "3");
    let links = wait_until("the links", Duration::from_secs(30), || {
        let status = host.status(&id).body;
        (!status["customStatus"].is_null()).then(|| status["customStatus"].clone())
    });
    // The data claims someone else each time; only the credential counts.
    let claim = r#"{"from":"someone else"}"#;
    assert_eq!(raise_through(&links["named"], claim), 200);
    assert_eq!(raise_through(&links["general"], claim), 200);
    assert_eq!(host.raise(&id, "Reply", claim).status, 202);
    let status = host.wait_finished(&id);
    assert_eq!(
        status["output"],
        json!(["holder:pat", "unnamedLink", "systemKey"]),
        "{status}"
    );
    // History names the person a link verified, and nobody else.
    let history = host.status_with_history(&id).body;
    let raised: Vec<&Value> = history["historyEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["EventType"] == "EventRaised")
        .collect();
    assert_eq!(raised.len(), 3);
    assert_eq!(raised[0]["Sender"], "pat");
    assert!(raised[1].get("Sender").is_none(), "{}", raised[1]);
    assert!(raised[2].get("Sender").is_none(), "{}", raised[2]);
    // Both status links read the status, without the input.
    for link in [&links["namedStatus"], &links["generalStatus"]] {
        let read = request("GET", link.as_str().unwrap(), &[], None);
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["runtimeStatus"], "Completed");
        assert_eq!(read.body["input"], Value::Null);
    }
}
