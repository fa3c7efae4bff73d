//! Authoring: `durango new` writes a function app that builds as is, and
//! `durango build` compiles the app in a folder to a component.
//!
//! The user has no Durango checkout, so an app carries everything it needs:
//! the SDK of its language and the WIT files are compiled into this binary
//! (`include_str!`) and written into the app, with the toolchain pinned as
//! this repository pins it. Each language's files and build are in a module
//! of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

mod js;
mod python;
mod rust;

/// A file of this repository compiled into the binary: its path in the
/// repository and its text.
type Embedded = (&'static str, &'static str);

/// Embeds repository files, listed by their path from the workspace root.
macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../../", $path)))),*]
    };
}
use embed;

/// The WIT package every app is built against (all languages).
const WIT: &[Embedded] = embed!(
    "wit/durango.wit",
    "wit/deps/cli.wit",
    "wit/deps/clocks.wit",
    "wit/deps/filesystem.wit",
    "wit/deps/http.wit",
    "wit/deps/io.wit",
    "wit/deps/random.wit",
    "wit/deps/sockets.wit",
);

/// The languages an app can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    fn parse(lang: &str) -> anyhow::Result<Lang> {
        match lang {
            "rust" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" | "py" => Ok(Lang::Python),
            other => bail!("unknown language {other:?}: use rust, js or python"),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        }
    }

    /// The language of the app in `dir`, by the file its toolchain starts
    /// from.
    fn of(dir: &Path) -> Option<Lang> {
        [
            (Lang::Rust, "Cargo.toml"),
            (Lang::Js, "package.json"),
            (Lang::Python, "function_app.py"),
        ]
        .into_iter()
        .find(|(_, marker)| dir.join(marker).is_file())
        .map(|(lang, _)| lang)
    }
}

/// A file of a new app: its path in the app's folder and its text.
struct AppFile {
    path: String,
    text: String,
}

impl AppFile {
    fn new(path: impl Into<String>, text: impl Into<String>) -> AppFile {
        AppFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Embedded files, each at its repository path with `from` replaced by
    /// `to` (e.g. `guest-sdk/js/` by nothing).
    fn vendored(files: &[Embedded], from: &str, to: &str) -> Vec<AppFile> {
        files
            .iter()
            .map(|(path, text)| {
                let rest = path.strip_prefix(from).expect("an embedded path");
                AppFile::new(format!("{to}{rest}"), *text)
            })
            .collect()
    }
}

/// What the templates are filled in with.
struct Names<'a> {
    /// The app's name: its folder, its component's file stem.
    app: &'a str,
    /// What its functions' names start with, so they do not clash with
    /// another app's on the same host: `my-app` gives `MyApp_HelloSequence`.
    prefix: String,
}

impl Names<'_> {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{{name}}", self.app)
            .replace("{{prefix}}", &self.prefix)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    }
}

/// An app's name is its folder's, its component's and (with `_` for `-`)
/// its Rust crate's: lower-case so that it is one for Cargo and npm too.
const MAX_NAME: usize = 64;

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if !ok {
        bail!(
            "{name:?} is not an app name: 1 to {MAX_NAME} characters, a lower-case letter then \
             lower-case letters, digits, '-' or '_'"
        );
    }
    Ok(())
}

/// `my-app_2` → `MyApp2`.
fn pascal_case(name: &str) -> String {
    name.split(['-', '_'])
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// `durango new --lang LANG NAME`: writes the app into a new folder `NAME`
/// under `parent`.
pub fn new(parent: &Path, lang: &str, name: &str) -> anyhow::Result<()> {
    let lang = Lang::parse(lang)?;
    check_name(name)?;
    let dir = parent.join(name);
    if dir.symlink_metadata().is_ok() {
        bail!("{} already exists", dir.display());
    }
    let names = Names {
        app: name,
        prefix: pascal_case(name),
    };
    let mut files = match lang {
        Lang::Rust => rust::files(&names),
        Lang::Js => js::files(&names),
        Lang::Python => python::files(&names),
    };
    files.extend(AppFile::vendored(WIT, "wit/", "wit/"));
    files.push(AppFile::new(
        "README.md",
        names
            .fill(include_str!("templates/README.md.in"))
            .replace("{{language}}", lang.title())
            .replace("{{sources}}", sources_note(lang)),
    ));
    files.push(AppFile::new(".gitignore", gitignore(lang)));

    // Written into a hidden sibling first and renamed: a failure half-way
    // leaves no half-made app under the name.
    let staging = parent.join(format!(".{name}.durango-new"));
    let _ = std::fs::remove_dir_all(&staging);
    let written = write_files(&staging, &files).and_then(|()| {
        std::fs::rename(&staging, &dir).with_context(|| format!("create {}", dir.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written?;

    let orchestrator = format!("{}_HelloSequence", names.prefix);
    println!(
        "created {} ({} function app: orchestrator {orchestrator}, activity {}_SayHello)",
        dir.display(),
        lang.title(),
        names.prefix
    );
    println!("next, with a host running (durango serve):");
    println!("  cd {}", dir.display());
    println!("  durango build");
    println!("  durango deploy {name}.wasm");
    println!("  durango start {orchestrator}");
    Ok(())
}

fn write_files(dir: &Path, files: &[AppFile]) -> anyhow::Result<()> {
    for file in files {
        let path = dir.join(&file.path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("create {}", folder.display()))?;
        }
        std::fs::write(&path, &file.text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn sources_note(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => {
            "The app is `src/lib.rs`; `durango-sdk/` is Durango's Rust SDK and `wit/` its \
             interface, as this version of durango wrote them. The build needs the \
             wasm32-wasip2 target: `rustup target add wasm32-wasip2`."
        }
        Lang::Js => {
            "The app is `index.js`; `durango.js` is Durango's JavaScript SDK and `wit/` its \
             interface. `package.json` pins the toolchain (esbuild, componentize-js); the \
             build needs Node.js and npm."
        }
        Lang::Python => {
            "The app is `function_app.py`; `durango/` is Durango's Python SDK and `wit/` its \
             interface. `requirements.txt` pins the toolchain (componentize-py); the build \
             needs python3 with venv."
        }
    }
}

fn gitignore(lang: Lang) -> String {
    let own = match lang {
        Lang::Rust => "/target\n",
        Lang::Js => "/node_modules\n",
        Lang::Python => "__pycache__/\n",
    };
    format!("/.durango\n/*.wasm\n{own}")
}

/// `durango build`: compiles the app in `dir` to `dir/NAME.wasm`, NAME
/// being the folder's name, and prints the component's path.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("open {}", dir.display()))?;
    let Some(lang) = Lang::of(&dir) else {
        bail!(
            "{} is not a function app (no Cargo.toml, package.json or function_app.py): \
             make one with `durango new --lang rust|js|python NAME`",
            dir.display()
        );
    };
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("the app's folder has no name")?
        .to_owned();
    let out = dir.join(format!("{name}.wasm"));
    match lang {
        Lang::Rust => rust::build(&dir, &out)?,
        Lang::Js => js::build(&dir, &name, &out)?,
        Lang::Python => python::build(&dir, &out)?,
    }
    println!("{}", out.display());
    Ok(())
}

/// Where `durango build` keeps a toolchain (`js-toolchain`,
/// `py-toolchain`): under `$DURANGO_TOOLCHAIN_DIR` when set, so that apps
/// share one install (the Makefile's target folder has this layout), else
/// in the app's own folder.
fn shared_toolchain(kind: &str) -> Option<PathBuf> {
    std::env::var_os("DURANGO_TOOLCHAIN_DIR")
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join(kind))
}

/// Whether the toolchain in `dir` was installed completely (the stamp is
/// written last) from exactly this pin.
fn installed(dir: &Path, pin_file: &str, pin: &str) -> bool {
    dir.join(".installed").is_file()
        && std::fs::read_to_string(dir.join(pin_file)).is_ok_and(|text| text == pin)
}

/// Fails, naming what to install, when `program` cannot be run.
fn require(program: &str, install: &str) -> anyhow::Result<()> {
    match Command::new(program).arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("{program} was not found: install {install}"),
    }
}

/// Runs a step of a build with its output on our stderr (the user reads
/// the toolchain's errors there; stdout is the component's path alone, for
/// scripts); fails with a one-line reason.
fn run(what: &str, command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("{what}: could not run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the SDKs and the WIT package is embedded: a file added
    /// to the repository but not to a list would leave new apps without it.
    #[test]
    fn every_sdk_and_wit_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (folder, embedded, extension) in [
            ("wit", WIT, "wit"),
            ("wit/deps", WIT, "wit"),
            ("guest-sdk/src", rust::SDK, "rs"),
            ("guest-sdk/js", js::SDK, "js"),
            ("guest-sdk/python/durango", python::SDK, "py"),
        ] {
            for entry in std::fs::read_dir(root.join(folder)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|ext| ext == extension) {
                    let file = format!("{folder}/{}", path.file_name().unwrap().to_str().unwrap());
                    assert!(
                        embedded.iter().any(|(p, _)| *p == file),
                        "{file} is not embedded in host/src/authoring"
                    );
                }
            }
        }
    }

    #[test]
    fn names() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("my-app_2").is_ok());
        for bad in ["", "Greeter", "2fa", "a.b", "a b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(pascal_case("my-app_2"), "MyApp2");
        assert_eq!(pascal_case("greeter"), "Greeter");
    }
}
