//! Outside tools some tests install and run (the official Durable Functions
//! clients, schemathesis): a cache for their installs and a runner with a
//! deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where installs are kept: `$DURANGO_CLIENTS_DIR`, else
/// `<target dir>/official-clients`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DURANGO_CLIENTS_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("official-clients")
}

/// `pip install`, first use only.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// A `pip install --target` folder (cached as `<cache>/<name>`) holding what
/// `requirements` pins; `package` is the pinned name and `dist_info` the
/// prefix of its installed `*.dist-info` folder.
pub fn pip_install_once(
    name: &str,
    requirements: &Path,
    package: &str,
    dist_info: &str,
) -> PathBuf {
    let pins =
        read(requirements).unwrap_or_else(|| panic!("cannot read {}", requirements.display()));
    let version = pins
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{package}==")))
        .unwrap_or_else(|| panic!("{} pins no {package}", requirements.display()))
        .trim()
        .to_string();
    let ready = |dir: &Path| {
        read(&dir.join("requirements.txt")).as_deref() == Some(pins.as_str())
            && dir
                .join(format!("{dist_info}-{version}.dist-info"))
                .is_dir()
    };
    let install = |dir: &Path| {
        eprintln!("installing {package} {version} into {}", dir.display());
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "install", "--no-input", "--quiet"])
            .args(["--disable-pip-version-check", "--no-warn-script-location"])
            .arg("--target")
            .arg(dir)
            .arg("-r")
            .arg(requirements);
        let out = run(pip, INSTALL_TIMEOUT);
        assert!(out.success, "pip install failed: {}", out.text());
        std::fs::copy(requirements, dir.join("requirements.txt")).expect("copy requirements.txt");
    };
    install_once(name, ready, install)
}

/// What a finished process printed.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn text(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to the end, killing it after `timeout`.
pub fn run(mut command: Command, timeout: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} ran over {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        success: status.success(),
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Panics with a hint when `program` is not on the PATH.
pub fn require(program: &str, version_arg: &str, hint: &str) {
    let found = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "`{program}` is needed for this test: {hint}");
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Installs into `<cache>/<name>` through a fresh sibling folder renamed into
/// place, so an interrupted install is never taken for a finished one.
/// `ready` says whether a folder holds the wanted install; `install` fills one.
pub fn install_once(name: &str, ready: impl Fn(&Path) -> bool, install: impl Fn(&Path)) -> PathBuf {
    let cache = cache_dir();
    let dir = cache.join(name);
    if ready(&dir) {
        return dir;
    }
    std::fs::create_dir_all(&cache)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", cache.display()));
    let fresh = cache.join(format!("{name}.installing-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).expect("create the install folder");
    install(&fresh);
    assert!(
        ready(&fresh),
        "the install in {} is incomplete",
        fresh.display()
    );
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::fs::rename(&fresh, &dir).is_err() {
        // Another test process won the race; use its install if it is good.
        let _ = std::fs::remove_dir_all(&fresh);
        assert!(ready(&dir), "cannot install into {}", dir.display());
    }
    dir
}
