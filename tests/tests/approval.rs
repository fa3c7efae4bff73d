//! The approval sample: a chain with escalation on timeout, a quorum, the
//! decision trail in custom status, and approval links that speak for one
//! person, expire, and can do nothing but answer and read their instance.

use std::time::Duration;

use durango_e2e::{request, wait_until, Answer, Host, HostOptions, Received, Webhook};
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

/// Answers through the link the approver was sent (no system key), the
/// data naming `approver`.
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

/// Answers through the approver's link and waits until the flow acted on
/// it: the status then.
fn answer_and_wait(ask: &Value, approver: &str, approved: bool) -> Value {
    let link = format!("{}&timeout=30", ask["respondUrl"].as_str().unwrap());
    let answered = answer_at(&link, approver, approved);
    assert_eq!(answered.status, 200, "{}", answered.text);
    answered.body
}

/// Waits until `count` asks were sent and recorded, so the flow waits for
/// answers: an answer that came earlier would only be kept for later, and
/// what the flow makes of it would not show yet.
fn asked(host: &Host, id: &str, count: usize) {
    host.wait_history(id, "TaskCompleted", count);
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
    asked(&host, &id, 1);
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
fn a_rejection_stops_the_chain() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-3", "amount": 9000, "approvers": ["alice", "bob"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
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
fn alices_link_cannot_answer_for_bob_at_the_next_level() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-6", "amount": 9000, "approvers": ["alice", "bob"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    asked(&host, &id, 1);
    assert_eq!(
        answer_and_wait(&alice, "alice", true)["customStatus"]["waitingFor"],
        "bob"
    );
    asked(&host, &id, 2);
    // Her link still works (within its margin), but it speaks for her, and
    // she was not asked at bob's level: whatever the data says, it does not
    // decide that level.
    let status = answer_and_wait(&alice, "bob", false);
    assert_eq!(status["runtimeStatus"], "Running", "{status}");
    assert_eq!(status["customStatus"]["waitingFor"], "bob");
    assert_eq!(status["customStatus"]["trail"].as_array().unwrap().len(), 1);
    assert!(
        host.log()
            .contains("ignored an approval answer: alice was not asked at level 2"),
        "the ignored answer is logged"
    );
    let bob = ask_for(&webhook, "bob");
    assert_eq!(answer(&bob, "bob", true), 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "approved", "{status}");
    let trail = &status["output"]["trail"];
    assert_eq!(trail[1]["approver"], "bob");
    assert_eq!(trail[1]["outcome"], "approved");
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
    asked(&host, &id, 3);
    answer_and_wait(&asks[0], "alice", true);
    answer_and_wait(&asks[2], "carol", false);
    // Seen once the flow acted on it, not by luck: the status it answers
    // with is the one after the vote.
    let after_second_vote = answer_and_wait(&asks[0], "alice", true);
    assert_eq!(
        after_second_vote["runtimeStatus"], "Running",
        "a second vote from alice does not count: {after_second_vote}"
    );
    assert_eq!(answer(&asks[1], "bob", true), 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "approved");
    assert_eq!(status["output"]["trail"].as_array().unwrap().len(), 3);
}

#[test]
fn a_link_speaks_for_its_holder_whatever_the_answer_claims() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "QuorumApproval",
        json!({"requestId": "q-2", "amount": 10, "approvers": ["alice", "bob"], "required": 2, "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    asked(&host, &id, 2);
    // With only alice's link: her answer, then one that claims to be bob's.
    answer_and_wait(&alice, "alice", true);
    let status = answer_and_wait(&alice, "bob", true);
    assert_eq!(status["runtimeStatus"], "Running", "{status}");
    assert_eq!(status["customStatus"]["approvals"], 1, "{status}");
    let trail = status["customStatus"]["trail"].as_array().unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0]["approver"], "alice");
    let bob = ask_for(&webhook, "bob");
    assert_eq!(answer(&bob, "bob", true), 202);
    assert_eq!(host.wait_finished(&id)["output"]["decision"], "approved");
}

#[test]
fn one_person_cannot_reach_a_quorum_of_two() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "QuorumApproval",
        json!({"requestId": "q-3", "amount": 10, "approvers": ["alice", "bob", "carol"], "required": 2, "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    asked(&host, &id, 3);
    for _ in 0..3 {
        let status = answer_and_wait(&alice, "alice", true);
        assert_eq!(status["runtimeStatus"], "Running", "{status}");
        assert_eq!(status["customStatus"]["approvals"], 1, "{status}");
    }
    assert!(host
        .log()
        .contains("ignored an approval answer: alice answered already"));
    assert_eq!(host.status(&id).body["runtimeStatus"], "Running");
}

#[test]
fn an_operator_with_the_system_key_answers_for_the_approver_it_names() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-7", "amount": 1, "approvers": ["alice"], "timeoutSeconds": 300}),
    );
    ask_for(&webhook, "alice");
    asked(&host, &id, 1);
    let path =
        format!("/runtime/webhooks/durabletask/instances/{id}/raiseEvent/ApprovalEvent?timeout=30");
    let nobody = host.call("POST", &path, Some(r#"{"approved":true}"#));
    assert_eq!(nobody.status, 200, "{}", nobody.text);
    assert_eq!(
        nobody.body["runtimeStatus"], "Running",
        "names no approver: ignored"
    );
    let for_alice = host.call(
        "POST",
        &path,
        Some(r#"{"approved":true,"approver":"alice"}"#),
    );
    assert_eq!(for_alice.status, 200, "{}", for_alice.text);
    let status = host.wait_finished(&id);
    assert_eq!(status["output"]["decision"], "approved", "{status}");
    assert_eq!(status["output"]["trail"][0]["approver"], "alice");
    assert_eq!(status["output"]["trail"][0]["onBehalf"], true);
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
    let respond = alice["respondUrl"].as_str().unwrap();
    let token = |url: &str| url.split("token=").nth(1).unwrap().to_string();
    let (respond_token, status_token) = (token(respond), token(status_url));
    let base = format!("{}/runtime/webhooks/durabletask/instances", host.base);
    let forbidden = [
        (
            "POST",
            format!("{base}/{id}/terminate?token={respond_token}"),
        ),
        ("DELETE", format!("{base}/{id}?token={respond_token}")),
        ("GET", format!("{base}/{other}?token={respond_token}")),
        (
            "POST",
            format!("{base}/{other}/raiseEvent/ApprovalEvent?token={respond_token}"),
        ),
        // Another event than the one it names.
        (
            "POST",
            format!("{base}/{id}/raiseEvent/OtherEvent?token={respond_token}"),
        ),
        (
            "POST",
            format!("{base}/{id}/raiseEvent/approvalevent?token={respond_token}"),
        ),
        // A status link raises nothing.
        (
            "POST",
            format!("{base}/{id}/raiseEvent/ApprovalEvent?token={status_token}"),
        ),
        ("GET", format!("{base}?token={respond_token}")),
    ];
    for (method, url) in forbidden {
        let answer = request(method, &url, &[], Some(b"{}"));
        assert_eq!(answer.status, 403, "{method} {url}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{}", answer.text);
    }
    // A token that was changed, or made up, is no link at all: zoe's
    // claims under alice's signature, alice's with a byte more, garbage.
    let zoe = token(ask_for(&webhook, "zoe")["respondUrl"].as_str().unwrap());
    let (payload, mac) = respond_token.split_once('.').unwrap();
    let zoe_payload = zoe.split_once('.').unwrap().0;
    let attempts = [
        (&other, format!("{zoe_payload}.{mac}")),
        (&id, format!("{payload}A.{mac}")),
        (&id, "garbage".to_string()),
        (&id, String::new()),
        (&id, ".".to_string()),
    ];
    for (instance, bad) in attempts {
        let url = format!("{base}/{instance}/raiseEvent/ApprovalEvent?token={bad}");
        let answer = request("POST", &url, &[], Some(b"{}"));
        assert_eq!(answer.status, 401, "token {bad:?}: {}", answer.text);
    }
    let genuine = format!("{base}/{other}?token={zoe}");
    assert_eq!(request("GET", &genuine, &[], None).status, 202);
    assert_eq!(answer(&alice, "alice", true), 202);
    assert_eq!(host.wait_finished(&id)["output"]["decision"], "approved");
}

#[test]
fn a_link_reads_the_status_but_never_the_history_or_input() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let id = start(
        &host,
        "ApprovalWorkflow",
        json!({"requestId": "r-8", "amount": 77, "approvers": ["alice"], "timeoutSeconds": 300}),
    );
    let alice = ask_for(&webhook, "alice");
    assert_eq!(host.status(&id).body["input"]["requestId"], "r-8");
    for link in [&alice["statusUrl"], &alice["respondUrl"]] {
        let status_url = link.as_str().unwrap();
        let status_url = match status_url.find("/raiseEvent/") {
            Some(at) => format!(
                "{}?{}",
                &status_url[..at],
                status_url.split_once('?').unwrap().1
            ),
            None => status_url.to_string(),
        };
        for query in ["", "&showInput=true"] {
            let read = request("GET", &format!("{status_url}{query}"), &[], None);
            assert_eq!(read.status, 202, "{}", read.text);
            assert_eq!(read.body["runtimeStatus"], "Running");
            assert_eq!(read.body["input"], Value::Null, "{}", read.text);
            assert!(read.body.get("historyEvents").is_none());
        }
        for query in [
            "&showHistory=true",
            "&showHistory=true&showHistoryOutput=true",
        ] {
            let read = request("GET", &format!("{status_url}{query}"), &[], None);
            assert_eq!(read.status, 403, "{}", read.text);
            assert!(read.text.contains("not its history"), "{}", read.text);
        }
    }
    // Nor does the status an answer waits for carry the input.
    let status = answer_and_wait(&alice, "alice", true);
    assert_eq!(status["input"], Value::Null, "{status}");
    assert_eq!(host.wait_finished(&id)["output"]["decision"], "approved");
}

#[test]
fn an_expired_link_is_refused() {
    let webhook = Webhook::start();
    // Links expire at the wait's deadline, without the usual margin.
    let host = Host::start(
        HostOptions::with_apps(&["approval"])
            .env("ApprovalWebhookUrl", &webhook.url)
            .env("ApprovalLinkMarginSeconds", "0"),
    );
    let id = start(
        &host,
        "QuorumApproval",
        json!({"requestId": "q-4", "amount": 1, "approvers": ["alice"], "timeoutSeconds": 2}),
    );
    let alice = ask_for(&webhook, "alice");
    let status_url = alice["statusUrl"].as_str().unwrap();
    assert_eq!(
        request("GET", status_url, &[], None).status,
        202,
        "fresh, it works"
    );
    assert_eq!(host.wait_finished(&id)["output"]["decision"], "expired");
    let refused = wait_until("the link to expire", Duration::from_secs(10), || {
        let answer = answer_at(alice["respondUrl"].as_str().unwrap(), "alice", true);
        (answer.status != 410).then_some(answer)
    });
    assert_eq!(refused.status, 401, "{}", refused.text);
    let error = refused.body["error"].as_str().unwrap();
    assert!(error.starts_with("this link expired at "), "{error}");
    let read = request("GET", status_url, &[], None);
    assert_eq!(read.status, 401, "{}", read.text);
    assert!(read.text.contains("expired"), "{}", read.text);
}

#[test]
fn a_link_does_not_reach_an_instance_started_again_under_its_id() {
    let webhook = Webhook::start();
    let host = approval_host(&webhook);
    let input =
        json!({"requestId": "r-9", "amount": 1, "approvers": ["alice"], "timeoutSeconds": 300});
    let path = "/runtime/webhooks/durabletask/orchestrators/ApprovalWorkflow/reused-1";
    assert_eq!(
        host.call("POST", path, Some(&input.to_string())).status,
        202
    );
    let old = ask_for(&webhook, "alice");
    host.start_again_under_its_id("reused-1");
    // The first run's links are for the first run only.
    let refused = answer_at(old["respondUrl"].as_str().unwrap(), "alice", true);
    assert_eq!(refused.status, 410, "{}", refused.text);
    let read = request("GET", old["statusUrl"].as_str().unwrap(), &[], None);
    assert_eq!(read.status, 410, "{}", read.text);
    // The new run asks again, with links of its own.
    let asks = webhook.wait_for("a second ask to alice", |r| {
        messages(r, "approvalRequested").len() >= 2
    });
    let new = messages(&asks, "approvalRequested").pop().unwrap();
    assert_ne!(new["respondUrl"], old["respondUrl"]);
    assert_eq!(answer(&new, "alice", true), 202);
    assert_eq!(
        host.wait_finished("reused-1")["output"]["decision"],
        "approved"
    );
}
