//! A JavaScript app: `index.js` and the SDK `durango.js`, bundled into one
//! module by esbuild and made a component of the `function-app` world by
//! componentize-js, both at the versions `guest-sdk/js`'s lock file pins.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::{embed, run, AppFile, Embedded, Names};

pub(super) const SDK: &[Embedded] = embed!("guest-sdk/js/durango.js");

/// The pinned toolchain: written into every app, and into a shared
/// toolchain folder as is.
const PACKAGE: &str = include_str!("../../../guest-sdk/js/package.json");
const LOCK: &str = include_str!("../../../guest-sdk/js/package-lock.json");
const TOOLCHAIN_NAME: &str = "\"name\": \"durango-js-toolchain\"";

pub(super) fn files(names: &Names) -> Vec<AppFile> {
    // npm ci checks the lock against package.json's dependencies, not its
    // name: the app's copies are named after the app.
    let named = |text: &str| text.replace(TOOLCHAIN_NAME, &format!("\"name\": \"{}\"", names.app));
    let mut files = vec![
        AppFile::new(
            "index.js",
            names.fill(include_str!("templates/index.js.in")),
        ),
        AppFile::new("package.json", named(PACKAGE)),
        AppFile::new("package-lock.json", named(LOCK)),
    ];
    files.extend(AppFile::vendored(SDK, "guest-sdk/js/", ""));
    files
}

pub(super) fn build(dir: &Path, name: &str, out: &Path) -> anyhow::Result<()> {
    super::require(
        "node",
        "Node.js and npm (Debian: apt-get install nodejs npm)",
    )?;
    let tools = toolchain(dir)?;
    let bin = tools.join("node_modules/.bin");
    let work = dir.join(".durango");
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let bundle = work.join(format!("{name}.bundle.js"));
    // componentize-js takes one module: the app's, with the SDK, in one
    // file; the host's interfaces stay imports.
    run(
        "esbuild",
        Command::new(bin.join("esbuild"))
            .arg("index.js")
            .args(["--bundle", "--format=esm", "--external:durango:*"])
            .arg("--log-level=warning")
            .arg(format!("--outfile={}", bundle.display()))
            .current_dir(dir),
    )?;
    run(
        "componentize-js",
        Command::new("node")
            .arg(bin.join("componentize-js"))
            .args(["--wit", "wit", "--world-name", "function-app", "-o"])
            .arg(out)
            .arg(&bundle)
            .current_dir(dir),
    )
}

/// The folder whose `node_modules` holds the toolchain, installed with
/// `npm ci` on first use: the app's own, or the shared one.
fn toolchain(dir: &Path) -> anyhow::Result<PathBuf> {
    let Some(shared) = super::shared_toolchain("js-toolchain") else {
        if !dir.join("node_modules/.bin/componentize-js").exists() {
            npm_ci(dir)?;
        }
        return Ok(dir.to_owned());
    };
    if !super::installed(&shared, "package-lock.json", LOCK) {
        std::fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
        let _ = std::fs::remove_file(shared.join(".installed"));
        std::fs::write(shared.join("package.json"), PACKAGE)?;
        std::fs::write(shared.join("package-lock.json"), LOCK)?;
        npm_ci(&shared)?;
        std::fs::write(shared.join(".installed"), "")?;
    }
    Ok(shared)
}

fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    super::require("npm", "npm (Debian: apt-get install npm)")?;
    eprintln!(
        "durango: installing the JavaScript toolchain in {}",
        dir.display()
    );
    run(
        "npm ci",
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )
}
