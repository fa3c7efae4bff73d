//! Guests that misbehave fail their own instance with a clear message.

use durango_e2e::{Host, HostOptions};

#[test]
fn a_non_deterministic_orchestrator_fails_naming_the_step() {
    // Without hot instances every episode replays history, so the guest's
    // change of path shows at once.
    let host = Host::start(HostOptions::default().cold());
    let id = host.start_orchestration("NonDeterministic", "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(
        message.contains("step 0: history has activity Echo, code asked for timer"),
        "{message}"
    );
}

#[test]
fn a_panicking_orchestrator_fails_with_its_message() {
    let host = Host::start(HostOptions::default());
    let id = host.start_orchestration("Panics", "\"the guest gave up\"");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("the guest gave up"), "{message}");
    // The host is fine: other instances still run.
    let other = host.start_orchestration("E1_HelloSequence", "");
    assert_eq!(host.wait_finished(&other)["runtimeStatus"], "Completed");
}

#[test]
fn a_failing_activity_is_retried_per_its_policy() {
    let host = Host::start(HostOptions::default());
    let enough = host.start_orchestration("Retries", "3");
    let status = host.wait_finished(&enough);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], 3, "the third attempt succeeded");

    let too_few = host.start_orchestration("Retries", "2");
    let status = host.wait_finished(&too_few);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("attempt 2 failed on purpose"), "{message}");
}

#[test]
fn a_redeploy_does_not_change_running_instances() {
    let mut host = Host::start(HostOptions::with_apps(&["test_guests"]));
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    host.wait_history(&id, "ExecutionStarted", 1);
    let before = host.status(&id).body;
    // The app "test_guests" now becomes different code: the hello sequence,
    // which has no EchoAfterEvent at all.
    let other = std::fs::read(durango_e2e::wasm("hello_sequence")).unwrap();
    let deployed = durango_e2e::request(
        "PUT",
        &host.url("/admin/apps/test_guests"),
        &[("x-functions-key", durango_e2e::KEY)],
        Some(&other),
    );
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    assert_eq!(
        host.call("POST", "/api/orchestrators/EchoAfterEvent", Some("\"Go\""))
            .status,
        400,
        "new instances get the new code"
    );
    // The running instance keeps its version, also after a restart (which
    // deploys nothing, so the app's current code stays the new one).
    host.restart_with(|o| HostOptions { apps: vec![], ..o });
    assert_eq!(
        host.status(&id).body["runtimeStatus"],
        before["runtimeStatus"]
    );
    host.raise(&id, "Go", "\"still the old code\"");
    assert_eq!(host.wait_finished(&id)["output"], "still the old code");
}

#[test]
fn a_non_deterministic_javascript_orchestrator_fails_with_the_same_step_check() {
    non_deterministic_guest_fails_with_the_step_check(
        "test_guests_js",
        "JsNonDeterministic",
        "JsEcho",
    );
}

#[test]
fn a_non_deterministic_python_orchestrator_fails_with_the_same_step_check() {
    non_deterministic_guest_fails_with_the_step_check(
        "test_guests_py",
        "PyNonDeterministic",
        "PyEcho",
    );
}

/// `orchestrator` calls `activity` first, and asks for a timer instead
/// when it replays.
fn non_deterministic_guest_fails_with_the_step_check(
    app: &'static str,
    orchestrator: &str,
    activity: &str,
) {
    let host = Host::start(HostOptions::with_apps(&[app]).cold());
    let id = host.start_orchestration(orchestrator, "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Failed", "{status}");
    let message = status["output"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "step 0: history has activity {activity}, code asked for timer"
        )),
        "{message}"
    );
}
