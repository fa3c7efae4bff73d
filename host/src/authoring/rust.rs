//! A Rust app: a cdylib crate with the SDK as a path dependency
//! (`durango-sdk/`, which finds the WIT files in `../wit`), built with
//! `cargo build --target wasm32-wasip2 --release`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use super::{embed, run, AppFile, Embedded, Names};

const TARGET: &str = "wasm32-wasip2";

pub(super) const SDK: &[Embedded] = embed!(
    "guest-sdk/src/activity.rs",
    "guest-sdk/src/context.rs",
    "guest-sdk/src/error.rs",
    "guest-sdk/src/executor.rs",
    "guest-sdk/src/http.rs",
    "guest-sdk/src/json.rs",
    "guest-sdk/src/lib.rs",
    "guest-sdk/src/registry.rs",
    "guest-sdk/src/task.rs",
);

pub(super) fn files(names: &Names) -> Vec<AppFile> {
    let mut files = vec![
        AppFile::new(
            "Cargo.toml",
            names.fill(include_str!("templates/Cargo.toml.in")),
        ),
        AppFile::new(
            "src/lib.rs",
            names.fill(include_str!("templates/lib.rs.in")),
        ),
        // The repository's manifest inherits from its workspace; the app's
        // copy stands alone.
        AppFile::new(
            "durango-sdk/Cargo.toml",
            names.fill(include_str!("templates/sdk-Cargo.toml.in")),
        ),
    ];
    files.extend(AppFile::vendored(SDK, "guest-sdk/", "durango-sdk/"));
    files
}

pub(super) fn build(dir: &Path, out: &Path) -> anyhow::Result<()> {
    super::require("cargo", "Rust (https://rustup.rs)")?;
    check_target()?;
    run(
        "cargo build",
        Command::new("cargo")
            .args(["build", "--release", "--target", TARGET])
            .current_dir(dir),
    )?;
    let built = artifact(dir)?;
    std::fs::copy(&built, out)
        .with_context(|| format!("copy {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// Without the target's standard library cargo fails with a page about
/// `core`; say what to do instead.
fn check_target() -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("rustc was not found: install Rust (https://rustup.rs)")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        bail!("the {TARGET} target is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}

/// The component cargo wrote: the app's library in its target folder,
/// wherever `CARGO_TARGET_DIR` or cargo's configuration put that.
fn artifact(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let output = Command::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir)
        .output()
        .context("run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = dir.join("Cargo.toml");
    let library = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| package["manifest_path"].as_str() == manifest.to_str())
        .flat_map(|package| package["targets"].as_array().into_iter().flatten())
        .find(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"))
        })
        .and_then(|target| target["name"].as_str())
        .context("Cargo.toml has no library with crate-type cdylib")?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata named no target folder")?;
    Ok(Path::new(target_dir)
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", library.replace('-', "_"))))
}
