//! Orchestration patterns beyond the sample: sub-orchestrations, eternal
//! orchestrations (continue-as-new), durable HTTP, the custom-status limit.

use std::collections::HashSet;

use durango_e2e::{Host, HostOptions, Webhook};
use serde_json::json;

#[test]
fn a_sub_orchestration_has_its_own_status_and_returns_to_its_parent() {
    let host = Host::start(HostOptions::default());
    let parent = host.start_orchestration("ParentOfEcho", "\"Reply\"");
    let child = format!("{parent}-child");
    let running = durango_e2e::wait_until("the child to start", durango_e2e::WAIT, || {
        let answer = host.status(&child);
        (answer.status == 202).then_some(answer.body)
    });
    assert_eq!(running["name"], "EchoAfterEvent");
    assert_eq!(host.status(&parent).body["runtimeStatus"], "Running");
    host.raise(&child, "Reply", "\"from the child\"");
    assert_eq!(host.wait_finished(&child)["output"], "from the child");
    let status = host.wait_finished(&parent);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], "from the child");
}

#[test]
fn a_failing_sub_orchestration_fails_its_task_in_the_parent() {
    let host = Host::start(HostOptions::default());
    let parent = host.start_orchestration("ParentOfEcho", "\"Reply\"");
    let child = format!("{parent}-child");
    durango_e2e::wait_until("the child to start", durango_e2e::WAIT, || {
        (host.status(&child).status == 202).then_some(())
    });
    host.call(
        "POST",
        &format!("/runtime/webhooks/durabletask/instances/{child}/terminate?reason=cut"),
        None,
    );
    let status = host.wait_finished(&parent);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("terminated: cut"), "{message}");
}

#[test]
fn continue_as_new_keeps_history_bounded_and_carries_events_over() {
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("Counter", "0");
    host.wait_history(&id, "ExecutionStarted", 1);
    // Raised back to back: later ones arrive before the next round waits,
    // and must carry over, not be dropped.
    for add in [1, 2, 3, 4] {
        assert_eq!(host.raise(&id, "Add", &add.to_string()).status, 202);
    }
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], 10);
    assert_eq!(status["input"], 10, "the last round's input");
    let history = host.status_with_history(&id).body;
    let events = history["historyEvents"].as_array().unwrap();
    assert!(events.len() <= 3, "only the last round is kept: {events:?}");
}

#[test]
fn a_monitor_polls_over_durable_http_until_done() {
    let endpoint = Webhook::start();
    let host = Host::start(HostOptions::with_apps(&["monitor"]));
    let input = json!({"url": endpoint.url, "intervalSeconds": 0, "maxChecks": 3});
    let id = host.start_orchestration("JobMonitor", &input.to_string());
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(
        status["output"],
        json!({"done": false, "checks": 3, "lastStatus": 200})
    );
    let received = endpoint.received();
    assert_eq!(received.len(), 3, "one request per check, none on replay");
    // Each round is a new generation whose step numbers carry on, so each
    // call has its own idempotency key.
    let keys: HashSet<&str> = received
        .iter()
        .map(|r| r.header("idempotency-key").expect("an Idempotency-Key"))
        .collect();
    assert_eq!(keys.len(), 3, "a key per call: {keys:?}");
    assert!(keys.iter().all(|key| key.starts_with(&format!("{id}:"))));
}

#[test]
fn a_new_generation_never_sees_the_late_outcomes_of_the_one_before() {
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("Generations", "0");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], "generation 1");
}

#[test]
fn a_custom_status_over_16_kb_fails_the_instance() {
    let host = Host::start(HostOptions::default());
    let small = host.start_orchestration("HugeStatus", "1000");
    let big = host.start_orchestration("HugeStatus", "20000");
    let failed = host.wait_finished(&big);
    assert_eq!(failed["runtimeStatus"], "Failed");
    assert!(failed["output"]
        .as_str()
        .unwrap()
        .contains("the limit is 16384"));
    let running = host.status(&small).body;
    assert_eq!(running["customStatus"].as_str().unwrap().len(), 1000);
}

/// With no instance kept in memory, every round reads the store; it must
/// wait for the instance's last commit, still on its way to disk when the
/// activity that commit started reports back (else the round met a history
/// without the step, dropped the outcome, and the chain stopped there).
#[test]
fn a_chain_of_activities_finishes_with_no_hot_instances() {
    let host = Host::start(HostOptions::default().cold());
    let ids: Vec<String> = (0..10)
        .flat_map(|_| {
            [
                host.start_orchestration("HelloFive", "null"),
                host.start_orchestration("E1_HelloSequence", "null"),
            ]
        })
        .collect();
    for id in &ids {
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{done}");
        assert!(
            matches!(done["output"].as_array(), Some(steps) if steps.len() >= 3),
            "{done}"
        );
    }
}
