//! The JavaScript SDK beyond the sample, on `test_guests_js`: what a guest
//! hands the host (an activity's input and result, an orchestration's
//! output) arrives whole whatever its characters and size, encoded natively
//! (the SDK replaces the bindings' character-by-character encoder); and
//! `context.log` writes a line once, not again on replay.

use durango_e2e::{wait_until, Host, HostOptions, WAIT};

#[test]
fn strings_cross_to_the_host_whole_and_natively_encoded() {
    let host = Host::start(HostOptions::with_apps(&["test_guests_js"]));
    // ASCII, two- and three-byte characters, a surrogate pair (four bytes,
    // two UTF-16 units, one code point), and enough of them that the
    // strings run to a few hundred kilobytes.
    let text = format!("plain, ü, 日本語, 🦀:{}", "x🦀ü語".repeat(20_000));
    let input = serde_json::to_string(&text).unwrap();
    let id = host.start_orchestration("JsPassThrough", &input);
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{}", status["output"]);
    assert!(
        status["output"]["echoed"] == text.as_str(),
        "the string came back changed ({} bytes sent)",
        text.len()
    );
    assert_eq!(
        status["output"]["nativeStrings"], true,
        "the SDK no longer replaces the bindings' string encoder: \
         componentize-js changed it (see guest-sdk/js/durango.js)"
    );
    // The short ones too: a one-character string and an empty one.
    for short in ["\"é\"", "\"\""] {
        let id = host.start_orchestration("JsPassThrough", short);
        let status = host.wait_finished(&id);
        assert_eq!(
            status["output"]["echoed"],
            serde_json::from_str::<serde_json::Value>(short).unwrap(),
            "{status}"
        );
    }
}

#[test]
fn context_log_writes_each_line_once_with_the_instance() {
    // Without hot instances the episode after the wait replays the one
    // before it, logs included.
    let host = Host::start(HostOptions::with_apps(&["test_guests_js"]).cold());
    let id = host.start_orchestration("JsLogs", "\"log-marker\"");
    // The first episode has logged (and waits) before the event comes, so
    // the second replays it.
    wait_until("the first episode's log line", WAIT, || {
        host.log()
            .contains("before the wait: log-marker")
            .then_some(())
    });
    host.raise(&id, "Continue", "null");
    assert_eq!(host.wait_finished(&id)["output"], true);
    let log = host.log();
    for line in ["before the wait: log-marker", "a warning", "after the wait"] {
        let written: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
        assert_eq!(written.len(), 1, "{line:?} in:\n{log}");
        assert!(written[0].contains(&id), "{}", written[0]);
    }
    let warning = log.lines().find(|l| l.contains("a warning")).unwrap();
    assert!(warning.contains("WARN"), "{warning}");
}
