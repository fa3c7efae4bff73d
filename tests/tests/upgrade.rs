//! Changing code under running instances: before a deploy, `durango deploy
//! --check` (and `POST /admin/apps/{app}/check`) replays every unfinished
//! instance of the app on the new component and says which could move to
//! it and where the others diverge, writing nothing. The app `Versioned`
//! comes in three builds (orchestrators/versioned): v2 adds a step after
//! every point a v1 instance can wait at; v3 drops an activity that
//! instances past their first `Go` already ran.

use durango_e2e::{cli, digest, wasm, Host, HostOptions};
use serde_json::Value;

const APP: &str = "versioned";
/// Instances parked at each of v1's two waits.
const PER_WAIT: usize = 25;

fn component(version: &str) -> Vec<u8> {
    std::fs::read(wasm(&format!("versioned_{version}"))).expect("read the component")
}

fn deploy(host: &Host, version: &str) {
    let answer = host.send_component("PUT", &format!("/admin/apps/{APP}"), &component(version));
    assert_eq!(answer.status, 201, "{}", answer.text);
}

fn check(host: &Host, version: &str) -> Value {
    let answer = host.send_component(
        "POST",
        &format!("/admin/apps/{APP}/check"),
        &component(version),
    );
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// v1 deployed; `PER_WAIT` instances waiting at the first `Go` (history:
/// Step one, the wait) and as many at the second (…, Go, Step two, the
/// wait); one more finished. Returns (first, second, finished).
fn park(host: &Host) -> (Vec<String>, Vec<String>, String) {
    deploy(host, "v1");
    let ids: Vec<String> = (0..2 * PER_WAIT + 1)
        .map(|_| host.start_orchestration("Versioned", "null"))
        .collect();
    for id in &ids {
        host.wait_history(id, "TaskCompleted", 1);
    }
    let (first, rest) = ids.split_at(PER_WAIT);
    for id in rest {
        assert_eq!(host.raise(id, "Go", "null").status, 202);
    }
    for id in rest {
        host.wait_history(id, "TaskCompleted", 2);
    }
    let (second, finished) = rest.split_at(PER_WAIT);
    let finished = finished[0].clone();
    assert_eq!(host.raise(&finished, "Go", "null").status, 202);
    host.wait_finished(&finished);
    (first.to_vec(), second.to_vec(), finished)
}

fn verdict<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["instanceId"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the report: {report}"))
}

#[test]
fn the_check_tells_which_instances_a_new_version_could_take_and_writes_nothing() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let (first, second, finished) = park(&host);

    // v2 only adds a step after the last wait: everyone could move.
    let report = check(&host, "v2");
    assert_eq!(report["app"], APP);
    assert_eq!(report["version"], digest(&component("v2")));
    assert_eq!(
        (
            &report["unfinished"],
            &report["compatible"],
            &report["diverging"]
        ),
        (
            &Value::from(2 * PER_WAIT),
            &Value::from(2 * PER_WAIT),
            &Value::from(0)
        ),
        "{report}"
    );
    assert!(report["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .all(|i| i["instanceId"] != finished.as_str()));

    // v3 dropped `Step("two")`: those past it diverge at that step.
    let report = check(&host, "v3");
    assert_eq!(
        (&report["compatible"], &report["diverging"]),
        (&Value::from(PER_WAIT), &Value::from(PER_WAIT)),
        "{report}"
    );
    for id in &first {
        assert_eq!(verdict(&report, id)["compatible"], true);
    }
    for id in &second {
        let v = verdict(&report, id);
        assert_eq!(v["compatible"], false, "{v}");
        assert_eq!(v["step"], 2, "{v}");
        assert_eq!(v["history"], "activity Step", "{v}");
        assert_eq!(v["code"], "wait for event Go", "{v}");
        assert!(
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("non-deterministic orchestrator")),
            "{v}"
        );
        assert_eq!(v["version"], digest(&component("v1")));
    }

    // The same through the CLI: a line per instance, then the counts.
    let v3 = wasm("versioned_v3");
    let output = cli(
        &host,
        &[
            "deploy",
            v3.to_str().expect("path"),
            "--name",
            APP,
            "--check",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    for id in &second {
        assert!(
            printed.contains(&format!(
                "{id}  Versioned  diverges at step 2: history has activity Step, the new code asked for wait for event Go"
            )),
            "{printed}"
        );
    }
    for id in &first {
        assert!(
            printed.contains(&format!("{id}  Versioned  compatible")),
            "{printed}"
        );
    }
    assert!(
        printed.contains(&format!(
            "{} unfinished: {PER_WAIT} compatible, {PER_WAIT} diverging",
            2 * PER_WAIT
        )),
        "{printed}"
    );

    // Nothing moved: the app still serves v1, and every instance finishes
    // as v1 does (v2 would add "did three"; v3 would fail the second half).
    let apps = host.call("GET", "/admin/apps", None);
    let versioned = apps
        .body
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["app"] == APP);
    assert_eq!(
        versioned.expect("the app")["version"],
        digest(&component("v1"))
    );
    for id in &first {
        assert_eq!(host.raise(id, "Go", "null").status, 202);
    }
    for id in first.iter().chain(&second) {
        host.wait_history(id, "TaskCompleted", 2);
        assert_eq!(host.raise(id, "Go", "null").status, 202);
    }
    for id in first.iter().chain(&second) {
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{done}");
        assert_eq!(done["output"], serde_json::json!(["did one", "did two"]));
    }
}

#[test]
fn a_check_of_bytes_that_are_no_component_is_refused() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let path = format!("/admin/apps/{APP}/check");
    let answer = host.send_component("POST", &path, b"not wasm");
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(answer.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("not a valid WebAssembly component")));
    let answer = host.send_component("POST", &path, b"");
    assert_eq!(answer.status, 400, "{}", answer.text);
    let answer = host.send_component("POST", "/admin/apps/no%20spaces/check", &component("v1"));
    assert_eq!(answer.status, 400, "{}", answer.text);
    // An app with no instances: nothing to replay.
    let report = check(&host, "v1");
    assert_eq!(report["unfinished"], 0, "{report}");
}

#[test]
fn compatible_instances_move_and_each_finishes_on_its_version_across_a_restart() {
    let mut host = Host::start(HostOptions::with_apps(&[]));
    let (first, second, finished) = park(&host);
    let (v1, v3) = (digest(&component("v1")), digest(&component("v3")));

    // v3 with --upgrade compatible: those at their first `Go` move, those
    // past `Step("two")` stay on v1.
    let file = wasm("versioned_v3");
    let output = cli(
        &host,
        &[
            "deploy",
            file.to_str().expect("path"),
            "--name",
            APP,
            "--upgrade",
            "compatible",
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("the deploy answer");
    assert_eq!(answer["version"], v3);
    assert_eq!(
        answer["upgrade"],
        serde_json::json!({"moved": PER_WAIT, "stayed": PER_WAIT, "changedMeanwhile": 0}),
        "{answer}"
    );
    for id in &first {
        let moves = host.history_events(id, "VersionChanged");
        assert_eq!(moves.len(), 1, "{id}: {moves:?}");
        assert_eq!(
            (&moves[0]["From"], &moves[0]["To"]),
            (&v1.clone().into(), &v3.clone().into())
        );
    }
    for id in second.iter().chain([&finished]) {
        assert!(host.history_events(id, "VersionChanged").is_empty());
    }

    host.restart();

    // On v3, a moved instance skips `Step("two")`; on v1, the others run it.
    for id in &first {
        for _ in 0..2 {
            assert_eq!(host.raise(id, "Go", "null").status, 202);
        }
    }
    for id in &second {
        assert_eq!(host.raise(id, "Go", "null").status, 202);
    }
    for id in &first {
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{done}");
        assert_eq!(done["output"], serde_json::json!(["did one"]), "{id}");
    }
    for id in &second {
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{done}");
        assert_eq!(
            done["output"],
            serde_json::json!(["did one", "did two"]),
            "{id}"
        );
    }
}

#[test]
fn one_instance_moves_when_it_replays_and_is_refused_when_it_diverges() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let (first, second, finished) = park(&host);
    // v3 serves new starts; nobody moves by itself.
    deploy(&host, "v3");

    let output = cli(&host, &["upgrade", &first[0]]);
    assert!(output.status.success(), "{output:?}");
    let moved: Value = serde_json::from_slice(&output.stdout).expect("the answer");
    assert_eq!(moved["from"], digest(&component("v1")));
    assert_eq!(moved["to"], digest(&component("v3")));
    assert_eq!(host.history_events(&first[0], "VersionChanged").len(), 1);

    let output = cli(&host, &["upgrade", &second[0]]);
    assert!(!output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.contains("diverges on the current version at step 2: history has activity Step, the new code asked for wait for event Go"),
        "{said}"
    );
    assert!(host.history_events(&second[0], "VersionChanged").is_empty());

    let path = |id: &str| format!("/admin/instances/{id}/upgrade");
    assert_eq!(host.call("POST", &path(&finished), None).status, 409);
    let unknown = host.call("POST", &path("no-such-instance"), None);
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(unknown.body["error"].is_string());

    // The moved one finishes as v3 does, the refused one as v1 does.
    for _ in 0..2 {
        assert_eq!(host.raise(&first[0], "Go", "null").status, 202);
    }
    assert_eq!(host.raise(&second[0], "Go", "null").status, 202);
    assert_eq!(
        host.wait_finished(&first[0])["output"],
        serde_json::json!(["did one"])
    );
    assert_eq!(
        host.wait_finished(&second[0])["output"],
        serde_json::json!(["did one", "did two"])
    );
}

#[test]
fn a_deploy_with_an_unknown_upgrade_is_refused() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let answer = host.send_component(
        "PUT",
        &format!("/admin/apps/{APP}?upgrade=everything"),
        &component("v1"),
    );
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(answer.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("none or compatible")));
}

#[test]
fn a_patched_orchestrator_takes_the_new_branch_only_where_history_lets_it() {
    let host = Host::start(HostOptions::with_apps(&[]));
    let (first, second, _) = park(&host);
    let (v1, v2) = (digest(&component("v1")), digest(&component("v2")));
    // v2 puts `StepB("two-b")` behind patch `two-b`, after the first `Go`.
    let answer = host.send_component(
        "PUT",
        &format!("/admin/apps/{APP}?upgrade=compatible"),
        &component("v2"),
    );
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(
        answer.body["upgrade"]["moved"],
        2 * PER_WAIT,
        "{}",
        answer.text
    );
    let fresh = host.start_orchestration("Versioned", "null");

    // Those at their first `Go` reach the patch on v2; those at their
    // second went past it on v1, so replay says no and they go on as v1
    // did; a new instance is all v2.
    for id in first.iter().chain([&fresh]) {
        for _ in 0..2 {
            assert_eq!(host.raise(id, "Go", "null").status, 202);
        }
    }
    for id in &second {
        assert_eq!(host.raise(id, "Go", "null").status, 202);
    }
    let finished = |id: &String| {
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{done}");
        (done["output"].clone(), done["customStatus"].clone())
    };
    for id in &first {
        assert_eq!(
            finished(id),
            (
                serde_json::json!(["did one", "did two-b", "did three"]),
                v1.clone().into()
            ),
            "{id}"
        );
    }
    for id in &second {
        assert_eq!(
            finished(id),
            (
                serde_json::json!(["did one", "did two", "did three"]),
                v1.clone().into()
            ),
            "{id}"
        );
    }
    assert_eq!(
        finished(&fresh),
        (
            serde_json::json!(["did one", "did two-b", "did three"]),
            v2.into()
        )
    );
}
