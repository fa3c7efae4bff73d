//! Guests that misbehave fail their own instance with a clear message.

use durango_e2e::{Host, HostOptions};

#[test]
fn a_non_deterministic_orchestrator_fails_naming_the_step() {
    // Without hot instances every episode replays history, so the guest's
    // change of path shows at once.
    let host = Host::start(HostOptions::default().arg("--hot-instances").arg("0"));
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
