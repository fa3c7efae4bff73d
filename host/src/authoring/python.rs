//! A Python app: `function_app.py` and the SDK package `durango/`, made a
//! component by the componentize-py that `guest-sdk/python`'s
//! requirements pin, installed in a venv.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::{embed, run, AppFile, Embedded, Names};

pub(super) const SDK: &[Embedded] = embed!(
    "guest-sdk/python/durango/__init__.py",
    "guest-sdk/python/durango/activity.py",
    "guest-sdk/python/durango/http.py",
    "guest-sdk/python/durango/orchestration.py",
);

/// componentize-py's entry point, as its console script calls it.
const COMPONENTIZE_PY: &str =
    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())";

const REQUIREMENTS: &str = include_str!("../../../guest-sdk/python/requirements.txt");

pub(super) fn files(names: &Names) -> Vec<AppFile> {
    let mut files = vec![
        AppFile::new(
            "function_app.py",
            names.fill(include_str!("templates/function_app.py.in")),
        ),
        AppFile::new("requirements.txt", REQUIREMENTS),
    ];
    files.extend(AppFile::vendored(SDK, "guest-sdk/python/", ""));
    files
}

pub(super) fn build(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let venv = toolchain(dir)?;
    // Through the venv's python rather than its `bin/componentize-py`: that
    // script names its interpreter by absolute path, so it breaks when the
    // folder is moved or renamed, the venv's python does not. The world is
    // function-app with wasi:http named, so that the SDK gets bindings for
    // its activities' outbound HTTP.
    run(
        "componentize-py",
        Command::new(venv.join("bin/python"))
            .args(["-c", COMPONENTIZE_PY])
            .args(["-d", "wit", "-w", "function-app-http", "componentize"])
            .args(["function_app", "-p", ".", "-o"])
            .arg(out)
            .current_dir(dir),
    )
}

/// The venv holding componentize-py, made on first use (and again when the
/// pin changed): the app's own under `.durango/venv`, or the shared one.
fn toolchain(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = super::shared_toolchain("py-toolchain").unwrap_or_else(|| dir.join(".durango/venv"));
    if super::installed(&venv, "requirements.txt", REQUIREMENTS) {
        return Ok(venv);
    }
    let ready = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output();
    if !ready.is_ok_and(|output| output.status.success()) {
        anyhow::bail!(
            "python3 with venv was not found: install Python 3 (Debian: apt-get install \
             python3 python3-venv)"
        );
    }
    eprintln!(
        "durango: installing the Python toolchain in {}",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(&venv);
    run(
        "python3 -m venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)
        .with_context(|| format!("write {}", requirements.display()))?;
    run(
        "pip install",
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    std::fs::write(venv.join(".installed"), "")?;
    Ok(venv)
}
