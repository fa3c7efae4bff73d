//! `durango bench` runs every scenario and reports its figures (tiny sizes:
//! this checks the benchmark works, not how fast the machine is).

use std::process::Command;

use durango_e2e::durango_bin;
use serde_json::Value;

/// `durango bench` on the suite's guests and compile cache, traces
/// exported only where a test sets the endpoint.
fn bench() -> Command {
    let wasm_dir = durango_e2e::wasm("test_guests")
        .parent()
        .unwrap()
        .to_path_buf();
    let mut command = Command::new(durango_bin());
    command
        .arg("bench")
        .env("DURANGO_WASM_DIR", wasm_dir)
        .env("DURANGO_COMPILE_CACHE", durango_e2e::compile_cache())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    command
}

#[test]
fn every_benchmark_scenario_runs_and_reports() {
    let output = bench()
        .args([
            "--orchestrations",
            "20",
            "--concurrency",
            "4",
            "--interaction",
            "20",
            "--interaction-samples",
            "5",
            "--timers",
            "50",
            "--timer-window-ms",
            "500",
            "--history",
            "61",
            "--parked",
            "50",
            "--check-instances",
            "30",
        ])
        .output()
        .expect("run durango bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scenarios: Vec<&str> = reports
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        [
            "E1_HelloSequence",
            "E1_HelloSequenceJs",
            "E1_HelloSequencePy",
            "HelloFive",
            "interaction",
            "interaction-js",
            "interaction-py",
            "timers",
            "replay",
            "replay-js",
            "replay-py",
            "parked",
            "parked-js",
            "check"
        ]
    );
    for report in &reports {
        assert!(report["cores"].as_u64().unwrap() >= 1);
        assert_eq!(report["durability"], "full");
        let command = report["command"].as_str().unwrap();
        assert!(
            command.starts_with("durango bench --orchestrations 20 --concurrency 4"),
            "{command}"
        );
    }
    assert!(
        stdout.starts_with("durango bench --orchestrations 20"),
        "the command comes first: {stdout}"
    );
    let report = |scenario: &str| {
        reports
            .iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} report"))
    };
    assert_eq!(report("E1_HelloSequence")["orchestrations"], 20);
    assert_eq!(report("E1_HelloSequenceJs")["orchestrations"], 20);
    assert_eq!(report("E1_HelloSequencePy")["orchestrations"], 20);
    // Each orchestration commits its start and three more episodes: the
    // group commits carry at least those, however they were grouped.
    let hello = report("E1_HelloSequence");
    let commits = hello["group_commits"].as_u64().unwrap();
    let carried = commits as f64 * hello["transactions_per_commit"].as_f64().unwrap();
    assert!(commits >= 1 && carried >= 80.0 - 1e-6, "{hello}");
    for scenario in ["interaction", "interaction-js", "interaction-py"] {
        let interaction = report(scenario);
        assert!(interaction["p99_ms"].as_f64().is_some(), "{interaction}");
        assert_eq!(interaction["samples"], 5, "{interaction}");
        assert_eq!(interaction["burst"], 15, "{interaction}");
    }
    // Lateness is signed: early firings are counted, not clamped away.
    let timers = report("timers");
    assert!(timers["early"].as_u64().is_some(), "{timers}");
    assert!(timers["earliest_ms"].as_f64().is_some());
    // Exactly the history asked for, though 61 is no multiple of 3.
    for scenario in ["replay", "replay-js", "replay-py"] {
        assert_eq!(report(scenario)["history_events"], 61, "{scenario}");
    }
    for scenario in ["parked", "parked-js"] {
        let parked = report(scenario);
        assert_eq!(parked["parked"], 50, "{parked}");
        assert!(parked["rss_mb"].as_f64().unwrap() > 0.0, "{parked}");
        // The restart is a new process; the page cache was left alone.
        assert!(
            parked["restart_ready_ms"].as_f64().unwrap() > 0.0,
            "{parked}"
        );
        assert_eq!(parked["restart_cold_cache"], false, "{parked}");
    }
}

/// Interrupted (Ctrl-C), the benchmark still removes its databases, says
/// why it stopped, and exits non-zero.
#[test]
fn an_interrupted_benchmark_removes_its_databases() {
    let tmp = tempfile::tempdir().expect("temporary folder");
    let mut bench = bench()
        .args(["--scenario", "parked", "--parked", "100000000"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run durango bench");
    let folder = tmp.path().join(format!("durango-bench-{}", bench.id()));
    // A file in its folder: the first scenario has begun, after the handler.
    durango_e2e::wait_until("the benchmark's database", durango_e2e::WAIT, || {
        std::fs::read_dir(&folder)
            .ok()
            .and_then(|mut entries| entries.next())
            .map(|_| ())
    });
    let interrupted = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .expect("run kill");
    assert!(interrupted.success());
    let exit = durango_e2e::wait_until("the benchmark to stop", durango_e2e::WAIT, || {
        bench.try_wait().expect("wait for durango bench")
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(bench.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!exit.success(), "{stderr}");
    assert!(stderr.contains("durango: interrupted"), "{stderr}");
    assert!(!folder.exists(), "{} is left behind", folder.display());
}

/// `durango bench --scenario hello` with `extra`, and `env`.
fn bench_hello(extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    bench()
        .args(["--scenario", "hello"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("run durango bench")
}

#[test]
fn traces_toggled_in_a_run_report_each_state_and_only_on_phases_export() {
    let collector = durango_e2e::Webhook::start();
    let endpoint = collector.url.trim_end_matches("/hook").to_string();
    let orchestrations = 5000;
    let output = bench_hello(
        &[
            "--orchestrations",
            &orchestrations.to_string(),
            "--concurrency",
            "8",
            "--toggle-traces-ms",
            "100",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("traces toggled every 100 ms"), "{stdout}");
    let report: Value = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a report");
    let toggled = &report["traces_toggled"];
    assert_eq!(toggled["phase_ms"], 100, "{toggled}");
    // A debug build runs 5,000 orchestrations in seconds: phases of both
    // states, each "on" one set against "off" ones either side.
    let ratios = toggled["on_off"].as_array().unwrap();
    assert!(!ratios.is_empty(), "{toggled}");
    assert_eq!(toggled["on_phases"], ratios.len(), "{toggled}");
    for ratio in ratios {
        let ratio = ratio.as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{toggled}");
    }
    for measure in ["on_per_second", "off_per_second", "on_cpu_us", "off_cpu_us"] {
        assert!(toggled[measure].as_f64().unwrap() > 0.0, "{toggled}");
    }
    let cpu = toggled["cpu_on_off_median"].as_f64().unwrap();
    assert!(cpu.is_finite() && cpu > 0.0, "{toggled}");
    // Every phase, on and off in turn, with its bounds on the monotonic
    // clock (ascending, apart) and what finished in it.
    let phases = toggled["phases"].as_array().unwrap();
    assert!(phases.len() > ratios.len(), "{toggled}");
    let mut end = 0;
    for (i, phase) in phases.iter().enumerate() {
        assert_eq!(phase["on"], i % 2 == 0, "{toggled}");
        let (from, to) = (
            phase["from_ns"].as_u64().unwrap(),
            phase["to_ns"].as_u64().unwrap(),
        );
        assert!(end < from && from < to, "{toggled}");
        end = to;
        assert!(phase["orchestrations"].as_u64().is_some(), "{toggled}");
    }

    // The process exported everything before it exited: start spans for
    // the instances started while traces were on, none for the others.
    let starts: usize = collector
        .received()
        .iter()
        .map(|request| {
            request.json()["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|span| span["name"] == "start")
                .count()
        })
        .sum();
    assert!(
        starts > 0 && starts < orchestrations,
        "{starts} start spans"
    );
}

#[test]
fn toggling_traces_needs_them_exported_and_phases_of_100_ms_or_more() {
    let output = bench_hello(&["--toggle-traces-ms", "500"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--toggle-traces-ms needs traces exported"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let output = bench_hello(&["--toggle-traces-ms", "50"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("50 is not in 100.."), "{stderr}");
}
