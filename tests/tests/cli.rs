//! The client commands of the `durango` CLI against a running host.

use std::process::{Command, Output};

use durango_e2e::cli;
use durango_e2e::{durango_bin, wait_until, wasm, Host, HostOptions, WAIT};
use serde_json::Value;

/// Starts `EchoAfterEvent` (it waits for event `Go`) through the CLI.
fn start_echo(host: &Host, id: &str) -> Value {
    json_of(&cli(
        host,
        &["start", "EchoAfterEvent", "--input", "\"Go\"", "--id", id],
    ))
}

/// Polls `durango status` until the instance reaches `status`.
fn wait_for_status(host: &Host, id: &str, status: &str) -> Value {
    wait_until(&format!("{id} to be {status}"), WAIT, || {
        let answer = json_of(&cli(host, &["status", id]));
        (answer["runtimeStatus"] == status).then_some(answer)
    })
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[test]
fn the_client_commands_drive_an_instance() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let path = wasm("test_guests");
    let deployed = json_of(&cli(
        &host,
        &["deploy", path.to_str().unwrap(), "--name", "guests"],
    ));
    assert_eq!(deployed["app"], "guests");

    let started = start_echo(&host, "cli-1");
    assert_eq!(started["id"], "cli-1");

    let listed = json_of(&cli(&host, &["list", "--status", "Running,Pending"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);

    assert!(cli(&host, &["raise", "cli-1", "Go", "\"from the cli\""])
        .status
        .success());
    let status = wait_for_status(&host, "cli-1", "Completed");
    assert_eq!(status["output"], "from the cli");

    let timeline = cli(&host, &["status", "cli-1", "--history"]);
    let text = String::from_utf8_lossy(&timeline.stdout);
    assert!(text.contains("ExecutionStarted"), "{text}");
    assert!(text.contains("EventRaised"), "{text}");
    assert!(text.contains("TaskCompleted"), "{text}");

    // --wait answers once the instance acted on the event: its status then.
    start_echo(&host, "cli-3");
    let acted = json_of(&cli(
        &host,
        &["raise", "cli-3", "Go", "\"waited\"", "--wait", "30"],
    ));
    assert_eq!(acted["instanceId"], "cli-3", "{acted}");
    let timeline = cli(&host, &["status", "cli-3", "--history"]);
    let text = String::from_utf8_lossy(&timeline.stdout);
    assert!(text.contains("EventRaised"), "consumed already: {text}");

    start_echo(&host, "cli-2");
    assert!(cli(&host, &["terminate", "cli-2", "--reason", "enough"])
        .status
        .success());
    let terminated = wait_for_status(&host, "cli-2", "Terminated");
    assert_eq!(terminated["output"], "enough");
}

#[test]
fn client_errors_are_one_line_and_exit_non_zero() {
    let host = Host::start(HostOptions::with_apps(&[]));
    for args in [
        vec!["status", "nobody"],
        vec!["start", "Nothing"],
        vec!["start", "Nothing", "--input", "{bad"],
        vec!["deploy", "/no/such/file.wasm"],
    ] {
        let output = cli(&host, &args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("durango: "), "{stderr}");
    }
    let no_key = Command::new(durango_bin())
        .args(["list"])
        .env("DURANGO_URL", &host.base)
        .env_remove("DURANGO_KEY")
        .output()
        .unwrap();
    assert!(!no_key.status.success());
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("key"));
}

#[test]
fn the_client_manages_instances_through_their_life() {
    let host = Host::start(HostOptions::default());
    start_echo(&host, "life-1");
    host.wait_history("life-1", "ExecutionStarted", 1);
    assert!(cli(&host, &["suspend", "life-1", "--reason", "hold"])
        .status
        .success());
    wait_for_status(&host, "life-1", "Suspended");
    assert!(cli(&host, &["raise", "life-1", "Go", "\"later\""])
        .status
        .success());
    assert!(cli(&host, &["resume", "life-1"]).status.success());
    let done = wait_for_status(&host, "life-1", "Completed");
    assert_eq!(done["output"], "later");

    let restarted = json_of(&cli(&host, &["restart", "life-1"]));
    let new_id = restarted["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, "life-1");
    let listed = json_of(&cli(&host, &["list", "--prefix", "life-", "--top", "5"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let purged = json_of(&cli(&host, &["purge", "life-1"]));
    assert_eq!(purged["instancesDeleted"], 1);
    assert!(
        !cli(&host, &["purge"]).status.success(),
        "purge needs an id or a time"
    );
    let by_time = cli(&host, &["purge", "--created-from", "2020-01-01T00:00:00Z"]);
    assert!(
        !by_time.status.success(),
        "nothing finished is left to purge"
    );
    assert!(String::from_utf8_lossy(&by_time.stderr).contains("404"));

    let failed = json_of(&cli(&host, &["start", "NeedsSetting", "--id", "life-2"]));
    assert_eq!(failed["id"], "life-2");
    host.wait_finished("life-2");
    let rewound = cli(&host, &["rewind", "life-2"]);
    assert!(
        rewound.status.success(),
        "{}",
        String::from_utf8_lossy(&rewound.stderr)
    );
}
