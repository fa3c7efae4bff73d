//! The Python SDK's model beyond the sample, on `test_guests_py`: retries,
//! continue-as-new, fan-out with `task_all`, sub-orchestrations, a failed
//! task caught as `TaskFailedError`, `function_name` (an event's sender:
//! links.rs).

use durango_e2e::{Host, HostOptions};
use serde_json::json;

fn host() -> Host {
    Host::start(HostOptions::with_apps(&["test_guests_py"]))
}

#[test]
fn a_failing_activity_is_retried_per_its_retry_options() {
    let host = host();
    let enough = host.start_orchestration("PyRetries", "3");
    let status = host.wait_finished(&enough);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], 3, "the third attempt succeeded");

    let too_few = host.start_orchestration("PyRetries", "2");
    let status = host.wait_finished(&too_few);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("attempt 2 failed on purpose"), "{message}");
}

#[test]
fn continue_as_new_starts_the_next_round_with_its_input() {
    let host = host();
    let id = host.start_orchestration("PyCounter", "0");
    host.wait_history(&id, "ExecutionStarted", 1);
    for add in [1, 2, 3, 4] {
        assert_eq!(host.raise(&id, "Add", &add.to_string()).status, 202);
    }
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(status["output"], 10);
    assert_eq!(status["input"], 10, "the last round's input");
    assert_eq!(status["customStatus"], 10);
}

#[test]
fn task_all_sub_orchestrations_and_a_caught_failure() {
    let host = host();
    let id = host.start_orchestration("PyFanOut", r#"["tokyo","seattle","london"]"#);
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(
        status["output"]["echoes"],
        json!(["TOKYO", "SEATTLE", "LONDON"])
    );
    assert_eq!(status["output"]["child"], 3);
    let caught = status["output"]["caught"].as_str().unwrap();
    assert!(caught.contains("attempt 2 failed on purpose"), "{caught}");
    let failing = host.status(&format!("{id}-failing")).body;
    assert_eq!(failing["runtimeStatus"], "Failed", "{failing}");
}
