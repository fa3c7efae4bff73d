//! The approval sample: a chain with escalation on timeout, a quorum, the
//! decision trail in custom status, and approval links that can do nothing
//! but answer their own instance.

use durango_e2e::{request, Answer, Host, HostOptions, Received, Webhook};
use serde_json::{json, Value};

fn approval_host(webhook: &Webhook) -> Host {
    Host::start(HostOptions::with_apps(&["approval"]).env("ApprovalWebhookUrl", &webhook.url))
}

/// The webhook messages of `kind` for `approver` (or any approver).
fn messages(received: &[Received], kind: &str) -> Vec<Value> {
    received
        .iter()
        .map(Received::json)
        .filter(|m| m["kind"] == kind)
        .collect()
}

fn ask_for(webhook: &Webhook, approver: &str) -> Value {
    let got = webhook.wait_for(&format!("an approval request to {approver}"), |r| {
        messages(r, "approvalRequested")
            .iter()
            .any(|m| m["approver"] == approver)
    });
    messages(&got, "approvalRequested")
        .into_iter()
        .find(|m| m["approver"] == approver)
        .unwrap()
}

/// Answers through the link the approver was sent: no system key.
fn answer(ask: &Value, approver: &str, approved: bool) -> u16 {
    answer_at(ask["respondUrl"].as_str().unwrap(), approver, approved).status
}

fn answer_at(url: &str, approver: &str, approved: bool) -> Answer {
    let body = json!({"approved": approved, "approver": approver, "comment": "ok"}).to_string();
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

fn start(host: &Host, orchestrator: &str, input: Value) -> String {
    host.start_orchestration(orchestrator, &input.to_string())
}

#[test]
fn each_level_approves_in_turn_and_the_request_is_processed() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-1", "amount": 1200, "approvers": ["alice", "bob"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    assert_eq!(alice["instanceId"], id);
    assert_eq!(alice["amount"], 1200.0);
    // The link may wait for the answer's effect: alice sees at once that
    // the request moved on to bob, with the trail so far.
    let link = format!("{}&timeout=30", alice["respondUrl"].as_str().unwrap());
    let answered = answer_at(&link, "alice", true);
    assert_eq!(answered.status, 200, "{}", answered.text);
    assert_eq!(answered.body["runtimeStatus"], "Running");
    assert_eq!(answered.body["customStatus"]["waitingFor"], "bob");
    assert_eq!(
        answered.body["customStatus"]["trail"][0]["outcome"],
        "approved"
    );

    let bob = ask_for(&webhook, "bob");
    assert_eq!(answer(&bob, "bob", true), 202);

    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "approved", "{status}");
    assert_eq!(status["output"]["trail"].as_array().unwrap().len(), 2);
    let processed = webhook.wait_for("processing", |r| !messages(r, "processed").is_empty());
    assert_eq!(messages(&processed, "processed")[0]["requestId"], "r-1");
}

#[test]
fn a_timeout_escalates_to_the_next_level_and_the_last_one_expires() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-2", "amount": 50, "approvers": ["alice", "bob"], "timeoutSeconds": 1}),
    );
    // Nobody answers: alice's level times out and escalates to bob, whose
    // level times out in turn.
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "expired", "{status}");
    let trail = &status["output"]["trail"];
    assert_eq!(trail[0]["approver"], "alice");
    assert_eq!(trail[0]["outcome"], "timed out");
    assert_eq!(trail[1]["approver"], "bob");
    assert_eq!(trail[1]["outcome"], "timed out");
    let received = webhook.received();
    let escalations = messages(&received, "escalated");
    assert_eq!(
        escalations.len(),
        1,
        "the last level has nobody to escalate to"
    );
    assert_eq!(escalations[0]["from"], "alice");
    assert_eq!(escalations[0]["to"], "bob");
    assert_eq!(messages(&received, "approvalRequested").len(), 2);
    assert!(messages(&received, "processed").is_empty());
}

#[test]
fn a_rejection_stops_the_chain_and_answers_from_others_are_ignored() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-3", "amount": 9000, "approvers": ["alice", "bob"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    assert_eq!(
        answer(&alice, "mallory", true),
        202,
        "accepted, but not alice's decision"
    );
    assert_eq!(answer(&alice, "alice", false), 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "rejected");
    assert_eq!(status["output"]["trail"].as_array().unwrap().len(), 1);
    let received = webhook.received();
    assert!(messages(&received, "approvalRequested")
        .iter()
        .all(|m| m["approver"] != "bob"));
    assert!(messages(&received, "processed").is_empty());
}

#[test]
fn a_quorum_decides_once_enough_approvers_agree() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "QuorumApproval",
        json!({"requestId": "q-1", "amount": 10, "approvers": ["alice", "bob", "carol"], "required": 2, "timeoutSeconds": 300}),
    );
    let asks: Vec<Value> = ["alice", "bob", "carol"]
        .iter()
        .map(|a| ask_for(&webhook, a))
        .collect();
    assert_eq!(answer(&asks[0], "alice", true), 202);
    assert_eq!(answer(&asks[2], "carol", false), 202);
    assert_eq!(
        answer(&asks[0], "alice", true),
        202,
        "a second vote from alice does not count"
    );
    assert_eq!(host.status(&id).body["runtimeStatus"], "Running");
    assert_eq!(answer(&asks[1], "bob", true), 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "approved");
    assert_eq!(status["output"]["trail"].as_array().unwrap().len(), 3);
}

#[test]
fn an_approval_link_can_answer_and_read_its_instance_and_nothing_else() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-4", "amount": 1, "approvers": ["alice"], "timeoutSeconds": 300}),
    );
    let other = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-5", "amount": 1, "approvers": ["zoe"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    let status_url = alice["statusUrl"].as_str().unwrap();
    assert_eq!(request("GET", status_url, &[], None).status, 202);
    let token = status_url.split("token=").nth(1).unwrap();
    let base = format!("{}/runtime/webhooks/durabletask/instances", host.base);
    let forbidden = [
        ("POST", format!("{base}/{id}/terminate?token={token}")),
        ("DELETE", format!("{base}/{id}?token={token}")),
        ("GET", format!("{base}/{other}?token={token}")),
        (
            "POST",
            format!("{base}/{other}/raiseEvent/ApprovalEvent?token={token}"),
        ),
        ("GET", format!("{base}?token={token}")),
    ];
    for (method, url) in forbidden {
        let answer = request(method, &url, &[], Some(b"{}"));
        assert_eq!(answer.status, 403, "{method} {url}");
    }
    assert_eq!(answer(&alice, "alice", true), 202);
    assert_eq!(host.wait_finished(&id)["output"]["decision"], "approved");
}
