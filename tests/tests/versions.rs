//! An app's versions as things you can see and retire (`GET` and `DELETE
//! /admin/apps/{app}/versions[/{version}]`, `durango versions`), and the
//! safe rollout: a deploy that drops an orchestrator still in use says so,
//! and its instances finish on the code they started on.

use std::process::{Command, Output};

use durango_e2e::WAIT;
use durango_e2e::{cli, digest, postgres, request, wait_until, wasm, Backend, Host, HostOptions};
use serde_json::Value;

/// The app `--deploy test_guests.wasm` makes (the file stem).
const APP: &str = "test_guests";

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "durango failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A refusal: a non-zero exit and one line on stderr; that line.
fn refusal(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("durango: "), "{stderr}");
    stderr
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A custom section (id 0, size, name, payload): appended to a component,
/// the same code under another digest.
fn custom_section(payload: &[u8]) -> Vec<u8> {
    let name = b"durango-test";
    let mut content = leb128(name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(payload);
    let mut section = vec![0x00];
    section.extend(leb128(content.len()));
    section.extend(content);
    section
}

fn deploy(host: &Host, app: &str, wasm: &[u8]) -> Value {
    let answer = host.send_component("PUT", &format!("/admin/apps/{app}"), wasm);
    assert_eq!(answer.status, 201, "{}", answer.text);
    answer.body
}

fn versions(host: &Host, app: &str) -> Vec<Value> {
    let answer = host.call("GET", &format!("/admin/apps/{app}/versions"), None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body.as_array().expect("a list").clone()
}

/// The app's current version, as the deployed apps list it.
fn current_version(host: &Host, app: &str) -> String {
    let apps = host.call("GET", "/admin/apps", None);
    apps.body
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app)
        .unwrap_or_else(|| panic!("no app {app}: {}", apps.text))["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn remove(host: &Host, app: &str, prefix: &str) -> durango_e2e::Answer {
    host.call(
        "DELETE",
        &format!("/admin/apps/{app}/versions/{prefix}"),
        None,
    )
}

fn wait_running(host: &Host, id: &str) {
    wait_until(&format!("{id} to run"), WAIT, || {
        (host.status(id).body["runtimeStatus"] == "Running").then_some(())
    });
}

fn start_with_id(host: &Host, orchestrator: &str, id: &str, input: &str) {
    let answer = host.call(
        "POST",
        &format!("/api/orchestrators/{orchestrator}/{id}"),
        Some(input),
    );
    assert_eq!(answer.status, 202, "{}", answer.text);
}

/// How many rows of `app_versions` hold `version` (its wasm and code),
/// read from the database itself.
fn stored_rows(host: &Host, version: &str) -> u64 {
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
    let sql = format!("SELECT COUNT(*) FROM app_versions WHERE version = '{version}'");
    let text = match host.backend() {
        Backend::Postgres => postgres::psql(&host.db_url(), &sql),
        Backend::Sqlite => {
            let output = Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3, sys\n\
                     print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])",
                ])
                .arg(host.db())
                .arg(&sql)
                .output()
                .expect("run python3");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
    };
    text.parse().unwrap_or_else(|_| panic!("a count: {text}"))
}

fn is_time(text: &str) -> bool {
    // yyyy-MM-ddTHH:mm:ssZ
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn a_version_is_listed_and_removed_only_once_no_instance_uses_it() {
    let host = Host::start(HostOptions::with_apps(&[APP]));
    let original = std::fs::read(wasm(APP)).unwrap();
    let v1 = current_version(&host, APP);
    assert_eq!(v1, digest(&original));

    // On v1: one waiting, one failed (a rewind would replay it there), one
    // terminated (holds nothing).
    start_with_id(&host, "EchoAfterEvent", "old-waiting", "\"Go\"");
    wait_running(&host, "old-waiting");
    start_with_id(&host, "Panics", "old-failed", "\"on purpose\"");
    assert_eq!(host.wait_finished("old-failed")["runtimeStatus"], "Failed");
    start_with_id(&host, "EchoAfterEvent", "old-terminated", "\"Go\"");
    let terminated = host.call(
        "POST",
        "/runtime/webhooks/durabletask/instances/old-terminated/terminate?reason=enough",
        None,
    );
    assert_eq!(terminated.status, 202, "{}", terminated.text);
    assert_eq!(
        host.wait_finished("old-terminated")["runtimeStatus"],
        "Terminated"
    );

    // v2: the same code under another digest. Every orchestrator stays, so
    // nothing is reported pinned.
    let mut changed = original.clone();
    changed.extend(custom_section(b"version two"));
    let deployed = deploy(&host, APP, &changed);
    let v2 = deployed["version"].as_str().unwrap().to_string();
    assert_eq!(v2, digest(&changed));
    assert_ne!(v1, v2);
    assert!(
        deployed["pinned"].as_array().is_none_or(Vec::is_empty),
        "{deployed}"
    );
    start_with_id(&host, "EchoAfterEvent", "new-1", "\"Go\"");
    start_with_id(&host, "EchoAfterEvent", "new-2", "\"Go\"");
    wait_running(&host, "new-1");
    wait_running(&host, "new-2");

    // Newest first, with their unfinished instances and the current flag.
    let listed = versions(&host, APP);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["version"], v2.as_str());
    assert_eq!(listed[0]["unfinished"], 2);
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["version"], v1.as_str());
    assert_eq!(
        listed[1]["unfinished"], 1,
        "Failed and Terminated are finished"
    );
    assert_eq!(listed[1]["current"], false);
    for v in &listed {
        assert!(is_time(v["deployedTime"].as_str().unwrap()), "{v}");
    }

    // The CLI: one version a line.
    let text = stdout(&cli(&host, &["versions", APP]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields: Vec<&str> = lines[0].split("  ").collect();
    assert_eq!(fields.len(), 3, "{text}");
    assert_eq!(fields[0], v2);
    assert!(is_time(fields[1]), "{text}");
    assert_eq!(fields[2], "2 unfinished (current)");
    assert_eq!(
        lines[1],
        format!(
            "{v1}  {}  1 unfinished",
            listed[1]["deployedTime"].as_str().unwrap()
        )
    );

    // v1 is in use: by the waiting instance and by the failed one.
    let refused = remove(&host, APP, &v1[..8]);
    assert_eq!(refused.status, 409, "{}", refused.text);
    let error = refused.body["error"].as_str().unwrap();
    assert!(error.contains("in use by 2 instances"), "{error}");
    assert!(error.contains("1 unfinished"), "{error}");
    assert!(error.contains("1 failed"), "{error}");
    assert!(error.contains("must finish, be purged"), "{error}");
    let said = refusal(&cli(&host, &["versions", APP, "--remove", &v1[..12]]));
    assert!(said.contains("409") && said.contains("in use"), "{said}");
    assert_eq!(stored_rows(&host, &v1), 1);

    // The waiting instance finishes on v1; the failed one still holds it.
    let raised = host.raise("old-waiting", "Go", "\"finished on v1\"");
    assert_eq!(raised.status, 202, "{}", raised.text);
    let finished = host.wait_finished("old-waiting");
    assert_eq!(finished["runtimeStatus"], "Completed", "{finished}");
    assert_eq!(finished["output"], "finished on v1");
    let refused = remove(&host, APP, &v1);
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("1 failed"), "{}", refused.text);
    let purged = host.call(
        "DELETE",
        "/runtime/webhooks/durabletask/instances/old-failed",
        None,
    );
    assert_eq!(purged.status, 200, "{}", purged.text);

    // Now nothing uses v1: it goes, wasm and compiled code.
    let removed = stdout(&cli(&host, &["versions", APP, "--remove", &v1[..12]]));
    assert_eq!(removed.trim(), format!("removed version {v1} of app {APP}"));
    let listed = versions(&host, APP);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["version"], v2.as_str());
    assert_eq!(stored_rows(&host, &v1), 0, "v1's row is gone");
    assert_eq!(stored_rows(&host, &v2), 1);
    // What ran on it can still be read.
    let status = host.status("old-waiting");
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.body["output"], "finished on v1");
    assert_eq!(host.status("old-terminated").status, 200);
    assert_eq!(remove(&host, APP, &v1).status, 404);

    // The current version stays, in use or not.
    let refused = remove(&host, APP, &v2);
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("current version"), "{}", refused.text);
    let said = refusal(&cli(&host, &["versions", APP, "--remove", &v2]));
    assert!(said.contains("current version"), "{said}");

    // v2's instances run on.
    for id in ["new-1", "new-2"] {
        host.raise(id, "Go", "\"on v2\"");
        assert_eq!(host.wait_finished(id)["output"], "on v2");
    }
}

#[test]
fn bad_version_requests_are_refused_with_the_reason() {
    let host = Host::start(HostOptions::with_apps(&[APP]));
    let original = std::fs::read(wasm(APP)).unwrap();
    let v1 = current_version(&host, APP);

    // Two more versions whose digests share their first 4 hex digits:
    // found by trying payloads (a collision of 16 bits takes a few hundred).
    let mut seen: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let (a, b) = (0u32..)
        .find_map(|n| {
            let mut bytes = original.clone();
            bytes.extend(custom_section(format!("payload {n}").as_bytes()));
            let d = digest(&bytes);
            if d[..4] == v1[..4] {
                return None;
            }
            seen.insert(d[..4].to_string(), bytes.clone())
                .map(|other| (other, bytes))
        })
        .unwrap();
    let va = deploy(&host, APP, &a)["version"]
        .as_str()
        .unwrap()
        .to_string();
    let vb = deploy(&host, APP, &b)["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(va[..4], vb[..4]);
    assert_eq!(versions(&host, APP).len(), 3);

    // Ambiguous: 400, naming both.
    let answer = remove(&host, APP, &va[..4]);
    assert_eq!(answer.status, 400, "{}", answer.text);
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.contains(&va) && error.contains(&vb), "{error}");
    let said = refusal(&cli(&host, &["versions", APP, "--remove", &va[..4]]));
    assert!(said.contains("more than one version"), "{said}");

    // Malformed: 400.
    for bad in [
        "abc".to_string(),
        va[..8].to_uppercase(),
        "xyz0".to_string(),
        format!("{va}0"),
    ] {
        let answer = remove(&host, APP, &bad);
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{}", answer.text);
    }

    // Unknown: 404 (a version of no app, or of another app; an unknown app).
    let unused: String = (0..16)
        .map(|i| {
            let taken = [&v1, &va, &vb].map(|v| v.as_bytes()[i]);
            *b"0123456789abcdef"
                .iter()
                .find(|c| !taken.contains(c))
                .unwrap() as char
        })
        .collect();
    let answer = remove(&host, APP, &unused);
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert!(answer.body["error"].is_string(), "{}", answer.text);
    refusal(&cli(&host, &["versions", APP, "--remove", &unused]));
    assert_eq!(remove(&host, "no_such_app", &va).status, 404);
    let answer = host.call("GET", "/admin/apps/no_such_app/versions", None);
    assert_eq!(answer.status, 404, "{}", answer.text);
    assert!(answer.body["error"].is_string(), "{}", answer.text);
    refusal(&cli(&host, &["versions", "no_such_app"]));

    // The key is required.
    let keyless = request(
        "GET",
        &host.url(&format!("/admin/apps/{APP}/versions")),
        &[],
        None,
    );
    assert_eq!(keyless.status, 401);
    let keyless = request(
        "DELETE",
        &host.url(&format!("/admin/apps/{APP}/versions/{va}")),
        &[],
        None,
    );
    assert_eq!(keyless.status, 401);
    assert_eq!(stored_rows(&host, &va), 1);

    // A version nothing ever ran on goes at once, by its full digest.
    let answer = remove(&host, APP, &va);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["app"], APP);
    assert_eq!(answer.body["version"], va.as_str());
    assert_eq!(stored_rows(&host, &va), 0);
    // Now the 4 digits name one version: the current one.
    let answer = remove(&host, APP, &vb[..4]);
    assert_eq!(answer.status, 409, "{}", answer.text);
    let listed: Vec<Value> = versions(&host, APP);
    let digests: Vec<&str> = listed
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [vb.as_str(), v1.as_str()]);
}

#[test]
fn a_deploy_that_drops_an_orchestrator_in_use_keeps_its_instances_on_their_version() {
    // No hot instances: every episode replays from the database, so the
    // old code is loaded by its version, not found through the catalog.
    let host = Host::start(HostOptions::with_apps(&[APP]).cold());
    let v1 = current_version(&host, APP);
    for id in ["roll-1", "roll-2"] {
        start_with_id(&host, "EchoAfterEvent", id, "\"Go\"");
        wait_running(&host, id);
    }
    // Finished instances of a dropped orchestrator are not reported.
    start_with_id(&host, "Panics", "roll-failed", "\"on purpose\"");
    assert_eq!(host.wait_finished("roll-failed")["runtimeStatus"], "Failed");

    // The app becomes the hello sequence: no EchoAfterEvent any more.
    let hello = wasm("hello_sequence");
    let output = cli(&host, &["deploy", hello.to_str().unwrap(), "--name", APP]);
    let deployed: Value = serde_json::from_str(&stdout(&output)).expect("JSON on stdout");
    assert_eq!(
        deployed["pinned"],
        serde_json::json!([{"orchestrator": "EchoAfterEvent", "version": v1, "unfinished": 2}]),
        "{deployed}"
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        said.trim(),
        format!(
            "durango: EchoAfterEvent is not in the new version: its 2 unfinished instances stay on version {v1}"
        )
    );

    // New instances get the new code; the old ones keep theirs.
    let refused = host.call("POST", "/api/orchestrators/EchoAfterEvent", Some("\"Go\""));
    assert_eq!(refused.status, 400, "{}", refused.text);
    let listed = versions(&host, APP);
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["version"], v1.as_str());
    assert_eq!(listed[1]["unfinished"], 2);
    for id in ["roll-1", "roll-2"] {
        let raised = host.raise(id, "Go", "\"old code\"");
        assert_eq!(raised.status, 202, "{}", raised.text);
        let finished = host.wait_finished(id);
        assert_eq!(finished["runtimeStatus"], "Completed", "{finished}");
        assert_eq!(finished["output"], "old code");
    }
    // (Started only: with no hot instances a chain of activities stalls
    // after its first one, before this branch too; see its report.)
    host.start_orchestration("E1_HelloSequence", "");

    // Deploying again with nothing left on v1: nothing pinned.
    let again = deploy(&host, APP, &std::fs::read(&hello).unwrap());
    assert!(
        again["pinned"].as_array().is_none_or(Vec::is_empty),
        "{again}"
    );
}
