//! Misbehaving guests fail their own instance, with a message that says
//! why, while the host and other instances carry on.

use durango_e2e::{durango_command, Host, HostOptions};

/// A host with tight guest limits. Only the runaway test needs the short
/// step limit: a guest that allocates or recurses must meet its own limit
/// first however slow the machine is.
fn limited_host(step_ms: &str) -> Host {
    Host::start(
        HostOptions::default()
            .arg("--orchestrator-step-ms")
            .arg(step_ms)
            .arg("--guest-memory-mb")
            .arg("64"),
    )
}

const SHORT_STEP_MS: &str = "300";
const AMPLE_STEP_MS: &str = "60000";

fn failure(host: &Host, orchestrator: &str, input: &str) -> String {
    let id = host.start_orchestration(orchestrator, input);
    let status = host.wait_finished(&id);
    assert_eq!(
        status["runtimeStatus"], "Failed",
        "{orchestrator}: {status}"
    );
    status["output"].as_str().unwrap().to_string()
}

#[test]
fn runaway_guests_are_stopped_and_fail_their_instance_only() {
    let host = limited_host(SHORT_STEP_MS);
    let spinning = host.start_orchestration("Spins", "null");
    // While one guest spins, the host keeps serving others.
    let other = host.start_orchestration("E1_HelloSequence", "");
    assert_eq!(host.wait_finished(&other)["runtimeStatus"], "Completed");
    let status = host.wait_finished(&spinning);
    assert_eq!(status["runtimeStatus"], "Failed");
    let message = status["output"].as_str().unwrap();
    assert!(message.contains("time limit"), "{message}");
}

#[test]
fn a_guest_that_allocates_without_end_hits_the_memory_limit() {
    let host = limited_host(AMPLE_STEP_MS);
    let message = failure(&host, "Hoards", "null");
    let reached: usize = message
        .split("failed after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(reached < 64, "the 64 MiB limit held: {message}");
}

/// Where the address space cannot give every guest memory a 4 GiB
/// reservation (here `ulimit -v` at 2 TiB; the guarded layout takes ~10
/// TiB), the host reserves each memory's limit and compiles bounds checks
/// in: guests run as before, and one that allocates without end still
/// meets its memory limit.
#[test]
fn guests_run_with_bounds_checks_where_the_address_space_is_short() {
    let host = Host::start(HostOptions {
        address_space_limit: Some(2 << 40),
        ..HostOptions::default()
            .arg("--guest-memory-mb")
            .arg("64")
            .arg("--orchestrator-step-ms")
            .arg(AMPLE_STEP_MS)
    });
    assert!(
        host.log().contains("they reserve 64 MiB and check bounds"),
        "{}",
        host.log()
    );
    let id = host.start_orchestration("E1_HelloSequence", "");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    let message = failure(&host, "Hoards", "null");
    assert!(message.contains("failed after "), "{message}");
}

/// With too little address space even for that, the host stops at start
/// and says what it could not have.
#[test]
fn too_little_address_space_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let output = durango_command(&[("RLIMIT_AS", 16 << 30)])
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("durango.db"))
        .output()
        .expect("run durango serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reserve the guests' memory (is `ulimit -v` too low?)"),
        "{stderr}"
    );
}

#[test]
fn a_stack_overflow_fails_the_instance() {
    let host = limited_host(AMPLE_STEP_MS);
    let message = failure(&host, "Overflows", "100000000");
    assert!(message.contains("stack"), "{message}");
}

#[test]
fn an_activity_past_its_time_limit_is_retried_then_fails() {
    let host = limited_host(AMPLE_STEP_MS);
    let message = failure(&host, "SpinningActivity", "2");
    assert!(message.contains("exceeded its time limit"), "{message}");
    assert!(
        host.log().contains("attempt=1"),
        "the first attempt was retried"
    );
}
