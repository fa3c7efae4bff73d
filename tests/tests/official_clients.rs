//! The official Durable Functions client libraries, unmodified, against the
//! real host: the npm package `durable-functions` (its `DurableClient`,
//! through the management-URL templates on the main listener and through
//! `rpcBaseUrl`) and the PyPI package `azure-functions-durable` (its
//! `DurableOrchestrationClient`, through `rpcBaseUrl`).
//!
//! The versions are pinned in `tests/clients/package.json` (+ its lock file)
//! and `tests/clients/requirements.txt`. They are installed on first use into
//! `$DURANGO_CLIENTS_DIR`, else `<target dir>/official-clients`, and reused
//! while the pins are unchanged. This needs `node` + `npm` and `python3` with
//! `pip`, and the npm registry and PyPI for the first install.
//!
//! The scripts `tests/clients/js_client.js` and `tests/clients/py_client.py`
//! make the calls and print one JSON object with what they observed; the
//! assertions are here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use durango_e2e::tools::{install_once, pip_install_once, read, require, run, INSTALL_TIMEOUT};
use durango_e2e::{Host, HostOptions, KEY};
use serde_json::{json, Value};

/// A script's whole run; its own waits have 30-second deadlines.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn clients_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// `node_modules` holding the pinned `durable-functions`.
fn js_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require("node", "--version", "install Node.js (18 or later) and npm");
        require("npm", "--version", "install npm");
        let src = clients_src();
        let manifest = read(&src.join("package.json")).expect("tests/clients/package.json");
        let lock = read(&src.join("package-lock.json")).expect("tests/clients/package-lock.json");
        let pinned: Value = serde_json::from_str(&manifest).expect("package.json is JSON");
        let version = pinned["dependencies"]["durable-functions"]
            .as_str()
            .expect("package.json pins durable-functions")
            .to_string();
        let ready = |dir: &Path| {
            let installed = read(&dir.join("node_modules/durable-functions/package.json"))
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            read(&dir.join("package.json")).as_deref() == Some(manifest.as_str())
                && read(&dir.join("package-lock.json")).as_deref() == Some(lock.as_str())
                && installed.is_some_and(|p| p["version"] == version.as_str())
        };
        let install = |dir: &Path| {
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(src.join(file), dir.join(file)).expect("copy the npm manifest");
            }
            eprintln!(
                "installing durable-functions {version} into {}",
                dir.display()
            );
            let mut npm = Command::new("npm");
            npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir);
            let out = run(npm, INSTALL_TIMEOUT);
            assert!(
                out.success,
                "npm ci failed ({:?}):\n{}\n{}",
                out.code, out.stdout, out.stderr
            );
        };
        install_once("js", ready, install).join("node_modules")
    })
}

/// A `--target` folder holding the pinned `azure-functions-durable`.
fn py_packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require("python3", "--version", "install Python 3.9 or later");
        pip_install_once(
            "py",
            &clients_src().join("requirements.txt"),
            "azure-functions-durable",
            "azure_functions_durable",
        )
    })
}

fn start_host() -> Host {
    let host = Host::start(
        HostOptions::with_apps(&["test_guests"])
            .arg("--rpc-listen")
            .arg("127.0.0.1:0"),
    );
    assert!(
        host.rpc_base.is_some(),
        "the host printed no `rpc listening on` line; its log:\n{}",
        host.log()
    );
    host
}

/// Runs a client script against `host` and returns the JSON it printed.
fn run_script(host: &Host, mut command: Command, run_id: &str) -> Value {
    command
        .env("DURANGO_URL", &host.base)
        .env("DURANGO_KEY", KEY)
        .env("DURANGO_RPC_URL", host.rpc_base.as_deref().unwrap_or(""))
        .env("DURANGO_ORCH", "EchoAfterEvent")
        .env("DURANGO_RUN", run_id)
        .current_dir(clients_src());
    let out = run(command, SCRIPT_TIMEOUT);
    let report = || {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\nhost log:\n{}",
            out.code,
            out.stdout,
            out.stderr,
            host.log()
        )
    };
    let observed: Value = out
        .stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the client printed no JSON; {}", report()));
    assert!(
        out.success && observed.get("error").is_none(),
        "the client failed: {}",
        report()
    );
    let mut shown = observed.clone();
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("wire");
    }
    eprintln!("{run_id} observed: {shown}");
    observed
}

fn js(host: &Host, mode: &str) -> Value {
    let mut node = Command::new("node");
    node.arg(clients_src().join("js_client.js"))
        .env("NODE_PATH", js_modules())
        .env("DURANGO_MODE", mode);
    run_script(host, node, &format!("js-{mode}"))
}

fn python(host: &Host) -> Value {
    let mut python = Command::new("python3");
    python
        .arg(clients_src().join("py_client.py"))
        .env("PYTHONPATH", py_packages())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run_script(host, python, "py")
}

fn sorted(ids: &[&str]) -> Value {
    let mut ids: Vec<&str> = ids.to_vec();
    ids.sort_unstable();
    json!(ids)
}

/// What every client must have seen: `data` is the event data the first
/// instance got (and so its output).
fn assert_common(observed: &Value, run_id: &str, data: &str, host: &Host) {
    let ids = &observed["ids"];
    let generated = ids["generated"].as_str().expect("a generated id");
    let explicit = format!("{run_id}-explicit");
    let doomed = format!("{run_id}-doomed");
    assert_eq!(generated.len(), 32, "a generated id: {generated}");
    assert_eq!(
        ids["explicit"],
        explicit.as_str(),
        "the explicit id is kept"
    );
    assert_eq!(ids["doomed"], doomed.as_str());

    // The orchestrations completed with the raised data, echoed by the activity.
    assert_eq!(observed["completed"]["runtimeStatus"], "Completed");
    assert_eq!(observed["completed"]["output"], data);
    assert_eq!(observed["explicitCompleted"], "second");

    // The status read with history.
    let status = &observed["withHistory"];
    assert_eq!(status["name"], "EchoAfterEvent");
    assert_eq!(status["instanceId"], generated);
    assert_eq!(status["runtimeStatus"], "Completed");
    assert_eq!(status["output"], data);

    assert_eq!(observed["doomedBefore"], "Running");
    assert_eq!(
        observed["unknownRaiseError"]
            .as_str()
            .map(|e| e.contains("-nobody")),
        Some(true)
    );

    // Terminated; terminating again answers 410, which the clients accept.
    assert_eq!(observed["terminated"]["runtimeStatus"], "Terminated");
    assert_eq!(observed["terminated"]["output"], "no longer needed");
    assert_eq!(observed["terminateAgain"], Value::Null);

    // Listing, unfiltered and filtered by created time and status.
    let everyone = sorted(&[generated, &explicit, &doomed]);
    assert_eq!(observed["all"], everyone);
    assert_eq!(observed["byCompleted"], sorted(&[generated, &explicit]));
    assert_eq!(observed["byTerminated"], sorted(&[&doomed]));
    assert_eq!(observed["byBoth"], everyone);
    assert_eq!(observed["byRunning"], json!([]));
    assert_eq!(
        observed["byPast"],
        json!([]),
        "nothing was created back then"
    );

    // Purged: the host agrees.
    assert_eq!(observed["allAfterPurge"], json!([]));
    for id in [generated, &explicit, &doomed] {
        assert_eq!(host.status(id).status, 404, "{id} is purged");
    }
}

/// The history events the host sent for the first instance, in order.
fn assert_history(events: &Value, data_on_the_wire: &Value, data: &str) {
    let events = events
        .as_array()
        .unwrap_or_else(|| panic!("no history events: {events}"));
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["EventType"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "ExecutionStarted",
            "EventRaised",
            "TaskCompleted",
            "ExecutionCompleted"
        ],
        "{events:?}"
    );
    assert_eq!(events[0]["FunctionName"], "EchoAfterEvent");
    assert_eq!(events[1]["Name"], "Go");
    assert_eq!(&events[1]["Input"], data_on_the_wire);
    assert_eq!(events[2]["FunctionName"], "Echo");
    // showHistoryOutput=true: the results are there.
    assert_eq!(events[2]["Result"], data);
    assert_eq!(events[3]["Result"], data);
}

/// The checks both JavaScript modes share; `origin` is where every request
/// of the mode must have gone.
fn assert_js(observed: &Value, run_id: &str, host: &Host, origin: &str, with_key: bool) {
    let data = "hello from js";
    assert_common(observed, run_id, data, host);
    assert_eq!(observed["completed"]["input"], "Go");
    let status = &observed["withHistory"];
    assert_eq!(status["input"], "Go");
    assert!(status["createdTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    // The v3 client keeps a `history` field, but the extension (and Durango)
    // send `historyEvents`: the client drops them, so read them off the wire.
    assert_eq!(status["clientHistory"], Value::Null);
    assert_history(&status["wireHistoryEvents"], &json!(data), data);

    // An event for a finished instance: 410, which this client accepts.
    assert_eq!(observed["raiseAfterCompletion"], Value::Null);
    let unknown = observed["unknownStatusError"].as_str().unwrap_or_default();
    assert!(unknown.contains("HTTP 404"), "{unknown}");
    let after_purge = observed["statusAfterPurge"].as_str().unwrap_or_default();
    assert!(after_purge.contains("HTTP 404"), "{after_purge}");

    assert_eq!(observed["purgeOne"], json!({"instancesDeleted": 1}));
    assert_eq!(observed["purgeOneAgain"], json!({"instancesDeleted": 0}));
    assert_eq!(observed["purgeByPast"], json!({"instancesDeleted": 0}));
    assert_eq!(observed["purgeBy"], json!({"instancesDeleted": 2}));

    // Every request went where the mode says, with the key or without.
    let wire = observed["wire"].as_array().expect("the wire log");
    assert!(wire.len() > 20, "{wire:?}");
    for exchange in wire {
        let url = exchange["url"].as_str().unwrap_or_default();
        assert!(url.starts_with(origin), "{url} is not under {origin}");
        assert_eq!(url.contains(&format!("code={KEY}")), with_key, "{url}");
        let status = exchange["status"].as_u64().unwrap_or_default();
        assert!(status < 500, "{exchange}");
    }
}

#[test]
fn js_durable_client_through_the_management_url_templates() {
    let host = start_host();
    let observed = js(&host, "template");
    let origin = format!("{}/runtime/webhooks/durabletask/", host.base);
    assert_js(&observed, "js-template", &host, &origin, true);
}

#[test]
fn js_durable_client_through_rpc_base_url() {
    let host = start_host();
    let observed = js(&host, "rpc");
    let origin = host.rpc_base.clone().expect("an rpc base URL");
    assert_js(&observed, "js-rpc", &host, &origin, false);
}

#[test]
fn python_durable_orchestration_client_through_rpc_base_url() {
    let host = start_host();
    let observed = python(&host);
    let data = "hello from py";
    assert_common(&observed, "py", data, &host);

    // The Python client JSON-encodes the input and event data twice: the
    // host keeps the JSON string it was sent, which the guest SDK decodes as
    // the inner JSON (so the orchestration waited for "Go", got the data and
    // echoed it). Reading the status back shows the string as sent.
    assert_eq!(observed["completed"]["input"], "\"Go\"");
    let status = &observed["withHistory"];
    assert_eq!(status["input"], "\"Go\"");
    assert!(status["createdTime"].as_str().is_some());
    assert_history(
        &status["historyEvents"],
        &json!(format!("\"{data}\"")),
        data,
    );

    // This client raises on 410 (only 202 counts as success), and reads an
    // unknown instance as an empty status.
    let late = observed["raiseAfterCompletion"]
        .as_str()
        .unwrap_or_default();
    assert!(late.contains("is gone"), "{late}");
    assert_eq!(
        observed["unknownStatus"],
        json!({"truthy": false, "runtimeStatus": null})
    );
    assert_eq!(observed["statusAfterPurge"], false);

    assert_eq!(observed["purgeOne"], 1);
    assert_eq!(observed["purgeOneAgain"], 0);
    assert_eq!(observed["purgeByPast"], 0);
    assert_eq!(observed["purgeBy"], 2);
}
