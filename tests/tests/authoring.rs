//! `durango new` and `durango build` as a user outside this repository runs
//! them: a new app in a temporary folder, built by the real binary, deployed
//! with `durango deploy` to a real host, its orchestrator started over HTTP.
//!
//! The toolchains are shared across the run, as `durango build` lets users
//! share them: `DURANGO_TOOLCHAIN_DIR` names the target folder, where the
//! Makefile installed componentize-js and componentize-py for the samples,
//! and Rust apps build in one target folder of their own, so that the SDK's
//! dependencies compile once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use durango_e2e::{cli, durango_bin, target_dir, Host, HostOptions};
use serde_json::json;

/// `durango ARGS` in `dir`, with the run's shared toolchains.
fn durango(dir: &Path, args: &[&str]) -> Output {
    Command::new(durango_bin())
        .args(args)
        .current_dir(dir)
        .env("DURANGO_TOOLCHAIN_DIR", target_dir())
        .env("CARGO_TARGET_DIR", target_dir().join("tmp/authoring-rust"))
        .output()
        .expect("run durango")
}

fn succeeded(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The reason a refused command gave: one line on stderr, exit status
/// non-zero.
fn refused(output: &Output) -> String {
    assert!(!output.status.success(), "not refused");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// New app `name` in `lang`, built, deployed and run: its orchestrator
/// returns the three greetings.
fn new_build_deploy_start(lang: &str, name: &str, prefix: &str) {
    let folder = tempfile::tempdir().unwrap();
    let created = succeeded(
        &durango(folder.path(), &["new", "--lang", lang, name]),
        "new",
    );
    let orchestrator = format!("{prefix}_HelloSequence");
    assert!(created.contains(&orchestrator), "{created}");

    let app = folder.path().join(name);
    let built = succeeded(&durango(&app, &["build"]), "build");
    let component = app.join(format!("{name}.wasm"));
    assert_eq!(built.trim(), component.display().to_string());

    let host = Host::start(HostOptions::with_apps(&[]));
    succeeded(
        &cli(&host, &["deploy", component.to_str().unwrap()]),
        "deploy",
    );
    let id = host.start_orchestration(&orchestrator, "null");
    let status = host.wait_finished(&id);
    assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    assert_eq!(
        status["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
}

#[test]
fn a_new_rust_app_builds_deploys_and_runs() {
    new_build_deploy_start("rust", "greeter-rs", "GreeterRs");
}

#[test]
fn a_new_javascript_app_builds_deploys_and_runs() {
    new_build_deploy_start("js", "greeter-js", "GreeterJs");
}

#[test]
fn a_new_python_app_builds_deploys_and_runs() {
    new_build_deploy_start("python", "greeter_py", "GreeterPy");
}

#[test]
fn refusals_are_one_line_and_non_zero() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();

    let reason = refused(&durango(dir, &["new", "--lang", "go", "app"]));
    assert!(reason.contains("unknown language"), "{reason}");

    for bad in ["App", "../app", "my app", "1app"] {
        let reason = refused(&durango(dir, &["new", "--lang", "rust", bad]));
        assert!(reason.contains("is not an app name"), "{reason}");
    }

    std::fs::create_dir(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/keep.txt"), "mine").unwrap();
    let reason = refused(&durango(dir, &["new", "--lang", "js", "taken"]));
    assert!(reason.contains("already exists"), "{reason}");
    assert_eq!(
        std::fs::read_dir(dir.join("taken")).unwrap().count(),
        1,
        "the folder is left as it was"
    );

    let reason = refused(&durango(dir, &["build"]));
    assert!(reason.contains("not a function app"), "{reason}");
    assert!(!dir.join("app").exists() && !dir.join("App").exists());
}

/// A missing toolchain is named with what to install, before anything runs.
#[test]
fn missing_tools_are_named() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path();
    for (lang, name) in [("rust", "tools-rs"), ("js", "tools-js")] {
        succeeded(&durango(dir, &["new", "--lang", lang, name]), "new");
    }

    // A rustc whose sysroot has no wasm32-wasip2 standard library, ahead of
    // the real cargo on PATH.
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let rustc = bin.join("rustc");
    std::fs::write(&rustc, "#!/bin/sh\necho /nonexistent-sysroot\n").unwrap();
    std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(durango_bin())
        .arg("build")
        .current_dir(dir.join("tools-rs"))
        .env("PATH", &path)
        .output()
        .unwrap();
    let reason = refused(&output);
    assert!(
        reason.contains("rustup target add wasm32-wasip2"),
        "{reason}"
    );

    // No node on PATH at all.
    let output = Command::new(durango_bin())
        .arg("build")
        .current_dir(dir.join("tools-js"))
        .env("PATH", &bin)
        .env("DURANGO_TOOLCHAIN_DIR", target_dir())
        .output()
        .unwrap();
    let reason = refused(&output);
    assert!(
        reason.contains("node was not found: install Node.js"),
        "{reason}"
    );
}
