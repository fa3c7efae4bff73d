//! Property-based fuzzing of the HTTP API against its OpenAPI description,
//! `openapi.yaml` at the top of the workspace, with schemathesis.
//!
//! schemathesis (pinned in `tests/fuzz/requirements.txt`) is installed on
//! first use into `$DURANGO_CLIENTS_DIR/schemathesis`, else
//! `<target dir>/official-clients/schemathesis`, and reused while the pin is
//! unchanged. This needs `python3` (3.11 or later) with `pip`, and PyPI for
//! the first install.
//!
//! It runs every phase (the examples, the coverage of boundary and invalid
//! values, random fuzzing, and stateful sequences that follow the links in
//! the description) against a fresh host with the sample apps and the test
//! guests deployed, and a few instances started beforehand that wait for
//! events (`SEEDED`). Its settings are in `tests/fuzz/schemathesis.toml`:
//! about 30 cases per operation and phase, the values it draws names and ids
//! from half the time, and the checks that must hold for every answer: no
//! `5xx`, every status code, content type, header and body as documented,
//! the key enforced, `405` with `Allow` for other methods, and a purged
//! instance gone. `tests/fuzz/hooks.py` keeps generated requests from
//! starting the test guests that spin, hoard or wait forever. Afterwards the
//! host must still be up, answer, and have logged no panic, and the run must
//! have started no other orchestrators than it was allowed to.
//!
//! To run it by hand against a host on port 7071 (as `make demo` serves it;
//! the `instances` it knows are then simply unknown ids):
//!
//! ```sh
//! DURANGO_FUZZ_KEY=$KEY SCHEMATHESIS_HOOKS=tests/fuzz/hooks.py \
//!   schemathesis --config-file tests/fuzz/schemathesis.toml \
//!   run openapi.yaml --url http://127.0.0.1:7071
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use durango_e2e::tools::{pip_install_once, read, run};
use durango_e2e::{request, Host, HostOptions, KEY};
use serde_json::Value;

/// The whole schemathesis run; it takes well under a minute.
const RUN_TIMEOUT: Duration = Duration::from_secs(110);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fuzz_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// A `--target` folder holding the pinned schemathesis.
fn schemathesis() -> PathBuf {
    let python = Command::new("python3")
        .args(["-c", "import sys; assert sys.version_info >= (3, 11)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python,
        "`python3` 3.11 or later with pip is needed for this test"
    );
    pip_install_once(
        "schemathesis",
        &fuzz_src().join("requirements.txt"),
        "schemathesis",
        "schemathesis",
    )
}

/// The lines of the host's log (its stderr) where one of its threads
/// panicked. (A guest's panic is captured into its instance's status.)
fn panics(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.starts_with("thread '") && l.contains(" panicked at "))
        .collect()
}

/// Instances started before the run, under the ids of the `instances`
/// dictionary of `schemathesis.toml`: (id, orchestrator, input). They wait
/// for events (or have failed), so that suspend, resume, raise, terminate,
/// rewind, restart and purge also meet instances that take them.
const SEEDED: [(&str, &str, &str); 6] = [
    ("fuzz-echo-1", "EchoAfterEvent", "\"Go\""),
    ("fuzz-echo-2", "EchoAfterEvent", "\"Go\""),
    ("fuzz-counter-1", "Counter", "0"),
    ("fuzz-counter-2", "Counter", "0"),
    ("fuzz-clock", "StdClockAndRandom", "null"),
    ("fuzz-failed", "Panics", "\"on purpose\""),
];

/// The values of dictionary `name` in `schemathesis.toml` (a one-line
/// `values = ["a", "b"]` under `[dictionaries.NAME]`).
fn dictionary(config: &str, name: &str) -> Vec<String> {
    let header = format!("[dictionaries.{name}]");
    let line = config
        .lines()
        .skip_while(|l| l.trim() != header)
        .find(|l| l.trim_start().starts_with("values"))
        .unwrap_or_else(|| panic!("schemathesis.toml has no {header} values"));
    let list = line.split_once('=').expect("values = [...]").1.trim();
    serde_json::from_str(list).unwrap_or_else(|e| panic!("{header} values: {e}"))
}

/// Every instance the host holds, through all pages of the list.
fn all_instances(host: &Host) -> Vec<Value> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut headers = vec![("x-functions-key", KEY)];
        if let Some(token) = &token {
            headers.push(("x-ms-continuation-token", token));
        }
        let url = host.url("/runtime/webhooks/durabletask/instances?showInput=false");
        let page = request("GET", &url, &headers, None);
        assert_eq!(page.status, 200, "{}", page.text);
        all.extend(page.body.as_array().cloned().unwrap_or_default());
        match page.header("x-ms-continuation-token") {
            Some(next) => token = Some(next.to_string()),
            None => return all,
        }
    }
}

#[test]
fn the_api_answers_generated_requests_as_its_openapi_description_says() {
    let packages = schemathesis();
    let fuzz = fuzz_src();
    let config = read(&fuzz.join("schemathesis.toml")).expect("tests/fuzz/schemathesis.toml");
    let allowed = dictionary(&config, "orchestrators");
    let seeded_ids: Vec<&str> = SEEDED.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        dictionary(&config, "instances"),
        seeded_ids,
        "the `instances` dictionary of schemathesis.toml and SEEDED differ"
    );

    let host = Host::start(HostOptions::default());
    for (id, orchestrator, input) in SEEDED {
        let path = format!("/api/orchestrators/{orchestrator}/{id}");
        let answer = host.call("POST", &path, Some(input));
        assert_eq!(answer.status, 202, "start {id}: {}", answer.text);
    }
    let apps = host.call("GET", "/admin/apps", None);
    assert_eq!(apps.status, 200, "{}", apps.text);
    let deployed: Vec<&str> = apps
        .body
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|app| app["functions"].as_array().into_iter().flatten())
        .filter(|f| f["kind"] == "orchestrator")
        .filter_map(|f| f["name"].as_str())
        .collect();
    for name in &allowed {
        assert!(deployed.contains(&name.as_str()), "{name} is not deployed");
    }

    // schemathesis keeps its state (`.hypothesis`, `.schemathesis`) in the
    // working directory: a scratch one, not the source tree.
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let mut command = Command::new("python3");
    command
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        ])
        .arg("--config-file")
        .arg(fuzz.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(workspace().join("openapi.yaml"))
        .arg("--url")
        .arg(&host.base)
        .env("PYTHONPATH", &packages)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SCHEMATHESIS_HOOKS", fuzz.join("hooks.py"))
        .env("DURANGO_FUZZ_KEY", KEY)
        .env("DURANGO_FUZZ_ALLOWED", allowed.join(","))
        .env("DURANGO_FUZZ_DEPLOYED", deployed.join(","))
        .current_dir(scratch.path());
    let started = Instant::now();
    let out = run(command, RUN_TIMEOUT);
    let took = started.elapsed();
    assert!(
        out.success,
        "schemathesis found failures after {took:.1?}: {}\nhost log panics: {:?}",
        out.text(),
        panics(&host.log())
    );
    eprintln!("{}", out.stdout);
    eprintln!("schemathesis ran for {took:.1?}");

    // The host lived through it: it still answers (on the port its process
    // bound at start), and it never panicked on the way.
    let list = host.call("GET", "/runtime/webhooks/durabletask/instances", None);
    assert_eq!(list.status, 200, "{}", list.text);
    assert!(list.body.is_array(), "{}", list.text);
    let log = host.log();
    assert!(panics(&log).is_empty(), "the host panicked:\n{log}");

    // The run stayed within bounds: it started no orchestrator but the
    // allowed ones (and restarted the seeded ones).
    let mut started_names: Vec<String> = all_instances(&host)
        .iter()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    started_names.sort();
    started_names.dedup();
    let seeded: Vec<&str> = SEEDED.iter().map(|(_, name, _)| *name).collect();
    for name in &started_names {
        assert!(
            allowed.contains(name) || seeded.contains(&name.as_str()),
            "the run started {name}, which it should have left alone"
        );
    }
}
