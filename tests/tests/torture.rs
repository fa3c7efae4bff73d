//! Crash torture: many phone-verification and approval flows run while the
//! host is killed with SIGKILL at random moments and restarted on the same
//! database. Every flow must end as its answers call for, every event the
//! API acknowledged must be handled, nothing may be stuck, and a person
//! never notices a crash: each gets one SMS, and its code works.
//!
//! The fake SMS provider answers each message a while after taking it, and
//! the first kill waits for such a moment, so kills land inside SMS sends:
//! the message is out, the activity's result not yet committed, and the
//! activity runs again after the restart. Like Twilio, the provider sends
//! nothing for a repeated idempotency token; the re-run must draw the same
//! code, or the person's code would not be the one the flow expects.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use durango_e2e::{challenge_code, request, Backend, FakeSms, Host, HostOptions, Rng, Webhook};
use serde_json::{json, Value};

const PHONE_FLOWS: usize = 40;
const APPROVAL_FLOWS: usize = 20;
const KILLS: usize = 12;
const DEADLINE: Duration = Duration::from_secs(100);
/// How long the fake SMS provider takes to answer a message.
const SMS_DELAY: Duration = Duration::from_millis(250);
const PREFIX: &str = "/runtime/webhooks/durabletask";

#[derive(Clone, Copy, Debug, PartialEq)]
enum PhonePlan {
    Right,
    WrongThenRight,
    FourWrong,
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ApprovalPlan {
    ApproveAll,
    RejectFirst,
    Expire,
}

/// A flow not started yet: orchestrator, input and plan.
type Planned = (
    String,
    String,
    Option<(PhonePlan, String)>,
    Option<ApprovalPlan>,
);

struct Flow {
    id: String,
    phone: Option<(PhonePlan, String)>,
    approval: Option<ApprovalPlan>,
    /// Events the host acknowledged with 202.
    acked: usize,
    /// Answers still to send, in order (phone codes or approval decisions).
    sent_wrong: usize,
    answered: Vec<String>,
    done: Option<Value>,
}

impl Flow {
    fn expected(&self) -> Value {
        match (&self.phone, self.approval) {
            (Some((PhonePlan::Right | PhonePlan::WrongThenRight, _)), _) => json!(true),
            (Some(_), _) => json!(false),
            (_, Some(ApprovalPlan::ApproveAll)) => json!("approved"),
            (_, Some(ApprovalPlan::RejectFirst)) => json!("rejected"),
            (_, Some(ApprovalPlan::Expire)) => json!("expired"),
            _ => unreachable!(),
        }
    }
}

fn is_up(host: &Host) -> bool {
    !host.base.is_empty()
}

/// The challenge code the instance committed (from its history), if any.
fn committed_code(host: &Host, id: &str) -> Option<u64> {
    let history = host.status_with_history(id).body;
    history["historyEvents"]
        .as_array()?
        .iter()
        .find(|e| e["EventType"] == "TaskCompleted")
        .and_then(|e| e["Result"].as_u64())
}

/// The SMS sent to `phone`, as the provider lists them.
fn sent_to<'a>(messages: &'a [Value], phone: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["to"] == phone).collect()
}

/// A send the provider has taken but not answered: a kill now lands
/// inside it.
fn a_send_in_flight(sms: &FakeSms) -> bool {
    sms.messages().iter().any(|m| m["answered"] == false)
}

fn raise(host: &Host, flow: &mut Flow, event: &str, data: &str) {
    if host.raise(&flow.id, event, data).status == 202 {
        flow.acked += 1;
    }
}

/// One step of a phone flow: the person answers once the SMS reached them,
/// with the code it carries.
fn drive_phone(host: &Host, sms: &FakeSms, flow: &mut Flow) {
    let Some((plan, phone)) = flow.phone.clone() else {
        return;
    };
    if plan == PhonePlan::Timeout || !flow.answered.is_empty() {
        return;
    }
    let messages = sms.messages();
    let Some(received) = sent_to(&messages, &phone).first().copied() else {
        return;
    };
    let code = u64::from(challenge_code(received));
    let wrong = |n: u64| ((code + n) % 10_000).to_string();
    let wrong_count = match plan {
        PhonePlan::FourWrong => 4,
        PhonePlan::WrongThenRight => 2,
        _ => 0,
    };
    while flow.sent_wrong < wrong_count {
        let before = flow.acked;
        raise(
            host,
            flow,
            "SmsChallengeResponse",
            &wrong(flow.sent_wrong as u64 + 1),
        );
        if flow.acked == before {
            return; // try again next round
        }
        flow.sent_wrong += 1;
    }
    if plan != PhonePlan::FourWrong {
        let before = flow.acked;
        raise(host, flow, "SmsChallengeResponse", &code.to_string());
        if flow.acked == before {
            return;
        }
    }
    flow.answered.push("done".into());
}

/// One step of an approval flow: answer each approver once asked.
fn drive_approval(host: &Host, hook: &Webhook, flow: &mut Flow) {
    let Some(plan) = flow.approval else { return };
    if plan == ApprovalPlan::Expire {
        return;
    }
    let asks: Vec<Value> = hook
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|m| m["kind"] == "approvalRequested" && m["instanceId"] == flow.id)
        .collect();
    for ask in asks {
        let approver = ask["approver"].as_str().unwrap().to_string();
        if flow.answered.contains(&approver) {
            continue;
        }
        let approved = plan == ApprovalPlan::ApproveAll;
        // The link names the host as it was; talk to it where it is now.
        let link = ask["respondUrl"].as_str().unwrap();
        let path = &link[link.find(PREFIX).unwrap()..];
        // Each approver answers through the link made for them: the link
        // says who answers, so the data need not (and cannot) say it.
        let body = json!({"approved": approved}).to_string();
        let answer = request(
            "POST",
            &host.url(path),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        );
        if answer.status == 202 {
            flow.acked += 1;
            flow.answered.push(approver);
        }
    }
}

#[test]
fn flows_survive_random_kill_9_and_end_as_their_answers_call_for() {
    let mut rng = Rng::seeded("TORTURE_SEED");
    let seed = rng.seed;
    let sms = FakeSms::answering_after(SMS_DELAY);
    let hook = Webhook::start();
    let mut host = Host::start(
        HostOptions::with_apps(&["phone_verification", "approval"])
            .twilio(&sms)
            .env("ApprovalWebhookUrl", &hook.url),
    );

    // The flows start one per round, so kills land among starts, SMS sends,
    // timers and answers alike.
    let mut pending: Vec<Planned> = Vec::new();
    for i in 0..PHONE_FLOWS {
        let plan = [
            PhonePlan::Right,
            PhonePlan::WrongThenRight,
            PhonePlan::FourWrong,
            PhonePlan::Timeout,
        ][i % 4];
        let phone = format!("+1425555{i:04}");
        let timeout = if plan == PhonePlan::Timeout { 2 } else { 300 };
        let input = json!({"phoneNumber": phone, "timeoutSeconds": timeout}).to_string();
        pending.push((
            "E4_SmsPhoneVerification".into(),
            input,
            Some((plan, phone)),
            None,
        ));
    }
    for i in 0..APPROVAL_FLOWS {
        let plan = [
            ApprovalPlan::ApproveAll,
            ApprovalPlan::RejectFirst,
            ApprovalPlan::Expire,
        ][i % 3];
        let timeout = if plan == ApprovalPlan::Expire { 2 } else { 300 };
        let input = json!({"requestId": format!("t-{i}"), "amount": i, "approvers": ["ann", "ben"], "timeoutSeconds": timeout});
        pending.push((
            "ApprovalWorkflow".into(),
            input.to_string(),
            None,
            Some(plan),
        ));
    }
    // Interleave the two kinds.
    for i in (1..pending.len()).rev() {
        pending.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut flows: Vec<Flow> = Vec::new();

    let started = Instant::now();
    let mut kills = 0;
    let mut next_kill = Duration::from_millis(100 + rng.below(500));
    while !pending.is_empty() || flows.iter().any(|f| f.done.is_none()) {
        if let Some((orchestrator, input, phone, approval)) = pending.pop() {
            let id = host.start_orchestration(&orchestrator, &input);
            flows.push(Flow {
                id,
                phone,
                approval,
                acked: 0,
                sent_wrong: 0,
                answered: vec![],
                done: None,
            });
        }
        assert!(
            started.elapsed() < DEADLINE,
            "stuck: {:?}",
            flows
                .iter()
                .filter(|f| f.done.is_none())
                .map(|f| &f.id)
                .collect::<Vec<_>>()
        );
        // The first kill waits for a send in flight; the others fall where
        // they fall.
        if kills < KILLS && started.elapsed() >= next_kill && (kills > 0 || a_send_in_flight(&sms))
        {
            host.restart();
            kills += 1;
            assert!(is_up(&host));
            next_kill = started.elapsed() + Duration::from_millis(200 + rng.below(700));
        }
        for flow in flows.iter_mut().filter(|f| f.done.is_none()) {
            let status = host.status(&flow.id);
            if status.status == 200 {
                flow.done = Some(status.body);
                continue;
            }
            drive_phone(&host, &sms, flow);
            drive_approval(&host, &hook, flow);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut wrong = Vec::new();
    for flow in &flows {
        let status = flow.done.as_ref().unwrap();
        let output = if flow.approval.is_some() {
            &status["output"]["decision"]
        } else {
            &status["output"]
        };
        if status["runtimeStatus"] != "Completed" || *output != flow.expected() {
            wrong.push(format!(
                "{} {:?}{:?}: {status}",
                flow.id, flow.phone, flow.approval
            ));
        }
        let history = host.status_with_history(&flow.id).body;
        let handled = history["historyEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["EventType"] == "EventRaised")
            .count();
        assert!(
            handled >= flow.acked,
            "{}: {} events acknowledged, {handled} handled",
            flow.id,
            flow.acked
        );
    }
    assert!(
        wrong.is_empty(),
        "flows that ended wrong:\n{}",
        wrong.join("\n")
    );

    // Each person got one SMS, whatever the crashes: a send the host
    // repeated after a kill inside it went out under the same token (the
    // provider counts its `requests`) and, drawing the same code, matched
    // what the flow committed. At least one kill landed inside a send, or
    // this run proved nothing about re-runs.
    let messages = sms.messages();
    let mut tokens = HashSet::new();
    let mut repeated_sends = 0;
    for flow in &flows {
        let Some((_, phone)) = &flow.phone else {
            continue;
        };
        let sent = sent_to(&messages, phone);
        assert_eq!(sent.len(), 1, "{}: one SMS per person: {sent:?}", flow.id);
        assert_eq!(
            committed_code(&host, &flow.id),
            Some(u64::from(challenge_code(sent[0]))),
            "{}: the committed code is the one the person received: {sent:?}",
            flow.id
        );
        tokens.insert(sent[0]["idempotency_token"].to_string());
        repeated_sends += usize::from(sent[0]["requests"].as_u64().unwrap_or(1) > 1);
    }
    assert_eq!(tokens.len(), PHONE_FLOWS, "one token per flow");
    assert!(
        repeated_sends >= 1,
        "no kill landed inside an SMS send ({kills} kills)"
    );

    // The SQLite file survived the kills whole.
    if host.backend() == Backend::Sqlite {
        let integrity = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"])
            .arg(host.db())
            .output()
            .expect("python3 for the integrity check");
        assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
    }
    println!(
        "torture: {} flows ({PHONE_FLOWS} phone, {APPROVAL_FLOWS} approval), {kills} kills, \
         {repeated_sends} SMS sends repeated and deduplicated, {:.1}s, seed {seed}",
        flows.len(),
        started.elapsed().as_secs_f64()
    );
}
