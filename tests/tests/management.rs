//! The rest of the management API: suspend/resume, restart, rewind, purge by
//! filter, wait-for-completion starts, and the keyless RPC listener.

use std::process::Command;

use durango_e2e::{durango_bin, request, wait_until, Host, HostOptions, KEY, WAIT};
use serde_json::{json, Value};

const PREFIX: &str = "/runtime/webhooks/durabletask";

fn post(host: &Host, path: &str) -> durango_e2e::Answer {
    host.call("POST", &format!("{PREFIX}{path}"), None)
}

#[test]
fn events_raised_while_suspended_are_handled_after_resume() {
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    host.wait_history(&id, "ExecutionStarted", 1);
    assert_eq!(
        post(&host, &format!("/instances/{id}/suspend?reason=hold")).status,
        202
    );
    host.wait_history(&id, "ExecutionSuspended", 1);
    let suspended = host.status(&id);
    assert_eq!(suspended.status, 202);
    assert_eq!(suspended.body["runtimeStatus"], "Suspended");

    // Held, not consumed: a raise that waits for its effect runs out of
    // time (an instance that took it would answer within milliseconds).
    let raised = host.call(
        "POST",
        &format!("{PREFIX}/instances/{id}/raiseEvent/Go?timeout=2"),
        Some("\"held\""),
    );
    assert_eq!(raised.status, 202, "{}", raised.text);
    assert!(!host.history_kinds(&id).iter().any(|k| k == "EventRaised"));
    assert_eq!(host.status(&id).body["runtimeStatus"], "Suspended");

    assert_eq!(
        post(&host, &format!("/instances/{id}/resume?reason=go")).status,
        202
    );
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], "held");
    assert_eq!(post(&host, &format!("/instances/{id}/suspend")).status, 410);
    assert_eq!(post(&host, "/instances/nobody/suspend").status, 404);
}

#[test]
fn a_suspended_instance_stays_suspended_across_a_restart() {
    let mut host = Host::start(HostOptions::default());
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    post(&host, &format!("/instances/{id}/suspend"));
    host.wait_history(&id, "ExecutionSuspended", 1);
    host.raise(&id, "Go", "\"kept\"");
    host.restart();
    assert_eq!(host.status(&id).body["runtimeStatus"], "Suspended");
    post(&host, &format!("/instances/{id}/resume"));
    assert_eq!(host.wait_finished(&id)["output"], "kept");
}

#[test]
fn restart_runs_the_orchestration_again() {
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("E1_HelloSequence", "");
    host.wait_finished(&id);
    let again = post(&host, &format!("/instances/{id}/restart"));
    assert_eq!(again.status, 202, "{}", again.text);
    let new_id = again.body["id"].as_str().unwrap();
    assert_ne!(new_id, id);
    assert_eq!(host.wait_finished(new_id)["output"][0], "Hello Tokyo!");

    let same = post(
        &host,
        &format!("/instances/{id}/restart?restartWithNewInstanceId=false"),
    );
    assert_eq!(same.status, 202);
    assert_eq!(same.body["id"], id);
    // The 202 means the new run replaced the finished one: its end is the
    // new run's, with a history of its own.
    assert_eq!(host.wait_finished(&id)["output"][2], "Hello London!");
    let kinds = host.history_kinds(&id);
    let started = kinds.iter().filter(|k| *k == "ExecutionStarted").count();
    assert_eq!(started, 1, "a fresh history: {kinds:?}");
    assert_eq!(post(&host, "/instances/nobody/restart").status, 404);
}

#[test]
fn rewind_runs_a_failed_instance_on_from_its_failure() {
    let mut host = Host::start(HostOptions::default());
    let id = host.start_orchestration("NeedsSetting", "null");
    let failed = host.wait_finished(&id);
    assert_eq!(failed["runtimeStatus"], "Failed");
    assert!(failed["output"].as_str().unwrap().contains("RewindOk"));

    // Fix the cause (the missing setting), then rewind.
    host.restart_with(|o| o.env("RewindOk", "fixed"));
    assert_eq!(
        post(&host, &format!("/instances/{id}/rewind?reason=fixed")).status,
        202
    );
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], "fixed");
    let kinds = host.history_kinds(&id);
    assert!(kinds.iter().any(|k| k == "ExecutionRewound"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "TaskFailed"), "{kinds:?}");

    let rewound_again = post(&host, &format!("/instances/{id}/rewind"));
    assert_eq!(rewound_again.status, 409, "only Failed instances rewind");
    assert_eq!(post(&host, "/instances/nobody/rewind").status, 404);
}

/// Starts `orchestrator`, which fails for want of the setting `RewindOk`;
/// fixes the setting (a restart) and rewinds it. Returns the instance id
/// and how it ended then.
fn fail_fix_and_rewind(host: &mut Host, orchestrator: &str, input: &str) -> (String, Value) {
    let id = host.start_orchestration(orchestrator, input);
    let failed = host.wait_finished(&id);
    assert_eq!(failed["runtimeStatus"], "Failed", "{failed}");
    host.restart_with(|o| o.env("RewindOk", "fixed"));
    assert_eq!(post(host, &format!("/instances/{id}/rewind")).status, 202);
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    (id, status)
}

#[test]
fn rewinding_a_parent_whose_child_failed_rewinds_the_child_and_completes() {
    let mut host = Host::start(HostOptions::default());
    let (_, status) = fail_fix_and_rewind(&mut host, "ParentOfNeedsSetting", "null");
    assert_eq!(status["output"], "fixed", "the child's output");
}

#[test]
fn an_instance_that_failed_with_a_timer_pending_waits_for_it_again_once_rewound() {
    let mut host = Host::start(HostOptions::default());
    let (id, _) = fail_fix_and_rewind(&mut host, "TimerThenSetting", "2");
    let kinds = host.history_kinds(&id);
    assert!(kinds.iter().any(|k| k == "TimerFired"), "{kinds:?}");
}

#[test]
fn purge_by_filter_needs_a_start_time_and_deletes_finished_instances() {
    let host = Host::start(HostOptions::default());
    let done: Vec<String> = (0..3)
        .map(|_| host.start_orchestration("E1_HelloSequence", ""))
        .collect();
    for id in &done {
        host.wait_finished(id);
    }
    let running = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    let missing = host.call("DELETE", &format!("{PREFIX}/instances"), None);
    assert_eq!(missing.status, 400);
    let not_finished = host.call(
        "DELETE",
        &format!("{PREFIX}/instances?createdTimeFrom=2020-01-01T00:00:00Z&runtimeStatus=Running"),
        None,
    );
    assert_eq!(not_finished.status, 400);
    let purged = host.call(
        "DELETE",
        &format!("{PREFIX}/instances/?createdTimeFrom=2020-01-01T00:00:00.000Z"),
        None,
    );
    assert_eq!(purged.status, 200, "{}", purged.text);
    assert_eq!(purged.body["instancesDeleted"], 3);
    for id in &done {
        assert_eq!(host.status(id).status, 404);
    }
    assert_eq!(
        host.status(&running).status,
        202,
        "running instances are kept"
    );
    let again = host.call(
        "DELETE",
        &format!("{PREFIX}/instances?createdTimeFrom=2020-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(again.status, 404);
}

#[test]
fn a_start_can_wait_for_completion() {
    let host = Host::start(HostOptions::default());
    let done = host.call(
        "POST",
        "/api/orchestrators/E1_HelloSequence?timeout=20&pollingInterval=1",
        None,
    );
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(
        done.body,
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );

    let waiting = host.call(
        "POST",
        "/api/orchestrators/EchoAfterEvent?timeout=0.2",
        Some("\"Go\""),
    );
    assert_eq!(waiting.status, 202);
    assert!(waiting.body["statusQueryGetUri"].is_string());

    let bad = host.call(
        "POST",
        "/api/orchestrators/E1_HelloSequence?timeout=soon",
        None,
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn the_rpc_listener_serves_the_same_routes_without_a_key() {
    let host = Host::start(
        HostOptions::default()
            .arg("--rpc-listen")
            .arg("127.0.0.1:0"),
    );
    let rpc = host.rpc_base.clone().expect("the RPC listener's URL");
    assert!(rpc.ends_with("/durabletask/"), "{rpc}");
    let started = request(
        "POST",
        &format!("{rpc}orchestrators/EchoAfterEvent"),
        &[],
        Some(b"\"Go\""),
    );
    assert_eq!(started.status, 202, "{}", started.text);
    let status_uri = started.body["statusQueryGetUri"].as_str().unwrap();
    assert!(status_uri.starts_with(&rpc), "{status_uri}");
    assert!(
        !status_uri.contains("code="),
        "no key on RPC URLs: {status_uri}"
    );
    let id = started.body["id"].as_str().unwrap();
    let raised = request(
        "POST",
        &format!("{rpc}instances/{id}/raiseEvent/Go"),
        &[],
        Some(b"\"rpc\""),
    );
    assert_eq!(raised.status, 202);
    assert_eq!(host.wait_finished(id)["output"], "rpc");
    let listed = request("GET", &format!("{rpc}instances/"), &[], None);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    // The admin routes are not on it.
    assert_eq!(
        request("PUT", &format!("{rpc}../admin/apps/x"), &[], Some(b"x")).status,
        404
    );
}

#[test]
fn the_rpc_listener_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(durango_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--rpc-listen",
            "0.0.0.0:0",
            "--db",
        ])
        .arg(dir.path().join("d.db"))
        .env("DURANGO_KEY", KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn an_activity_that_finishes_while_its_instance_is_suspended_waits_in_the_inbox() {
    let hook = durango_e2e::Webhook::start();
    let mut host = Host::start(HostOptions::default());
    let input = json!({"millis": 300, "url": hook.url}).to_string();
    let id = host.start_orchestration("SlowStep", &input);
    host.wait_history(&id, "ExecutionStarted", 1);
    assert_eq!(post(&host, &format!("/instances/{id}/suspend")).status, 202);
    host.wait_history(&id, "ExecutionSuspended", 1);
    hook.wait_for("the activity to finish", |r| r.len() == 1);
    // The outcome is held on disk, not only in memory, so a restart keeps
    // it and the activity does not run again.
    wait_until("the outcome to be stored", WAIT, || {
        (host.stored_inbox_len(&id) == 1).then_some(())
    });
    host.restart();
    assert_eq!(host.status(&id).body["runtimeStatus"], "Suspended");
    assert_eq!(post(&host, &format!("/instances/{id}/resume")).status, 202);
    assert_eq!(host.wait_finished(&id)["runtimeStatus"], "Completed");
    let kinds = host.history_kinds(&id);
    let at = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert!(
        at("ExecutionSuspended") < at("ExecutionResumed")
            && at("ExecutionResumed") < at("TaskCompleted"),
        "{kinds:?}"
    );
    assert_eq!(hook.received().len(), 1, "the activity ran once");
    assert_eq!(host.stored_inbox_len(&id), 0);
}

#[test]
fn terminating_while_an_activity_runs_ignores_its_result() {
    let hook = durango_e2e::Webhook::start();
    let host = Host::start(HostOptions::default());
    let input = json!({"millis": 700, "url": hook.url}).to_string();
    let id = host.start_orchestration("SlowStep", &input);
    host.wait_history(&id, "ExecutionStarted", 1);
    assert_eq!(
        post(&host, &format!("/instances/{id}/terminate?reason=enough")).status,
        202
    );
    assert_eq!(host.wait_finished(&id)["runtimeStatus"], "Terminated");
    // The activity still finishes (it was already running), and its result,
    // once it comes back, is dropped rather than recorded.
    hook.wait_for("the activity to finish", |r| !r.is_empty());
    wait_until("the late result to be dropped", WAIT, || {
        host.log()
            .contains("an activity's result came after its instance finished; dropped")
            .then_some(())
    });
    let kinds = host.history_kinds(&id);
    assert!(!kinds.iter().any(|k| k == "TaskCompleted"), "{kinds:?}");
    assert_eq!(host.status(&id).body["runtimeStatus"], "Terminated");
}
