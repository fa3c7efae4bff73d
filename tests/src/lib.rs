//! Harness for the end-to-end tests: starts the real `durango` binary (and
//! its fake SMS endpoint) as processes on loopback, and talks HTTP to them.
//!
//! The Makefile points `DURANGO_BIN` at the binary and `DURANGO_WASM_DIR` at
//! the components built from `orchestrators/`. `DURANGO_TEST_DB` picks the
//! database the hosts run on: `sqlite` (the default, a file per host) or
//! `postgres` (a database per host on a throwaway server, see `postgres`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod postgres;
pub mod tools;

pub const KEY: &str = "e2e-system-key-3b1f";
pub const TWILIO_SID: &str = "AC0123456789";
pub const TWILIO_TOKEN: &str = "twilio-secret-token-9f8e7d";
pub const TWILIO_FROM: &str = "+15005550006";

/// Generous: a first deploy compiles the component.
const START_TIMEOUT: Duration = Duration::from_secs(120);
pub const WAIT: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target folder: where the Makefile builds and installs the
/// toolchains (`js-toolchain`, `py-toolchain`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The compile cache the suites' hosts share: each component is compiled
/// once a run (a JavaScript app's interpreter takes tens of seconds).
pub fn compile_cache() -> PathBuf {
    target_dir().join("tmp/compile-cache")
}

pub fn durango_bin() -> PathBuf {
    std::env::var_os("DURANGO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/durango"))
}

/// A command running `durango` under these resource limits (`("RLIMIT_AS",
/// bytes)`, as Python's `resource` names them), or plainly without any.
pub fn durango_command(limits: &[(&str, u64)]) -> Command {
    if limits.is_empty() {
        return Command::new(durango_bin());
    }
    let limits: Vec<String> = limits
        .iter()
        .map(|(name, limit)| format!("{name}={limit}"))
        .collect();
    // Writes past a file size limit then fail with EFBIG instead of
    // killing the process with SIGXFSZ, as writes to a full disk fail.
    let mut wrapper = Command::new("python3");
    wrapper.args([
        "-c",
        "import os, resource, signal, sys\n\
         signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n\
         for limit in sys.argv[1].split(','):\n\
         \x20   name, value = limit.split('=')\n\
         \x20   resource.setrlimit(getattr(resource, name), (int(value), int(value)))\n\
         os.execv(sys.argv[2], sys.argv[2:])",
        &limits.join(","),
    ]);
    wrapper.arg(durango_bin());
    wrapper
}

/// `durango ARGS` as a client of `host` (its URL and the system key in the
/// environment).
pub fn cli(host: &Host, args: &[&str]) -> std::process::Output {
    Command::new(durango_bin())
        .args(args)
        .env("DURANGO_URL", &host.base)
        .env("DURANGO_KEY", KEY)
        .output()
        .expect("run durango")
}

/// A component built from `orchestrators/`, e.g. `wasm("phone_verification")`.
pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("DURANGO_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/guest"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `make test`",
        path.display()
    );
    path
}

/// The database the hosts run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a `--db` value.
    pub fn of(db: &str) -> Backend {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// The backend `DURANGO_TEST_DB` asks for (`sqlite` unless set).
pub fn backend() -> Backend {
    match std::env::var("DURANGO_TEST_DB").as_deref() {
        Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("DURANGO_TEST_DB={other}: expected sqlite or postgres"),
    }
}

/// For tests of SQLite itself (its file, its locks, a full disk): whether
/// to run, i.e. whether the backend is SQLite; if not, says the test is
/// skipped and why (`if !sqlite_only("...") { return; }`).
pub fn sqlite_only(why: &str) -> bool {
    let sqlite = backend() == Backend::Sqlite;
    if !sqlite {
        eprintln!("skipped: DURANGO_TEST_DB is not sqlite, and this test {why}");
    }
    sqlite
}

/// Polls `check` until it yields a value or `timeout` passes.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns a server process and waits for its `listening on http://ADDR`
/// line; also returns the lines printed before it.
fn spawn_listening(mut command: Command, log: &Path) -> (Child, String, Vec<String>) {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log file");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut before = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("listening on ") {
                let _ = tx.send((address.trim().to_string(), before));
                break;
            }
            before.push(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines.map_while(Result::ok) {}
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok((base, before)) => (child, base, before),
        Err(_) => {
            let _ = child.kill();
            let mut text = String::new();
            let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
            panic!("server did not start listening; its log:\n{text}");
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Answers come back as the host gave them: errors and redirects included.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// One HTTP request; `url` is absolute.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    let agent = agent();
    let result = match method {
        "GET" | "DELETE" => {
            let mut req = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        _ => {
            let mut req = match method {
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                _ => agent.post(url),
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            match body {
                Some(bytes) => req.send(bytes),
                None => req.send_empty(),
            }
        }
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// A connection written to byte for byte, for requests no HTTP client
/// would send.
pub struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(host: &Host) -> Raw {
        let stream = TcpStream::connect(host.base.trim_start_matches("http://")).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// The next answer on the connection (its body sized by Content-Length).
    pub fn answer(&mut self) -> Answer {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("a header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header field");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("a length"));
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("the body");
        let text = String::from_utf8_lossy(&body).into_owned();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// Whether the host closed the connection (after what was read).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

/// How to run a host.
#[derive(Clone)]
pub struct HostOptions {
    pub apps: Vec<&'static str>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Largest file the host may write, in bytes (RLIMIT_FSIZE): a full disk
    /// as the host sees it.
    pub file_size_limit: Option<u64>,
    /// Most address space the host may map, in bytes (RLIMIT_AS, `ulimit
    /// -v`).
    pub address_space_limit: Option<u64>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            apps: vec!["phone_verification", "hello_sequence", "test_guests"],
            env: Vec::new(),
            args: Vec::new(),
            file_size_limit: None,
            address_space_limit: None,
        }
    }
}

impl HostOptions {
    /// The default options with only these apps deployed.
    pub fn with_apps(apps: &[&'static str]) -> Self {
        HostOptions {
            apps: apps.to_vec(),
            ..HostOptions::default()
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// No hot instances: every episode first replays the instance's
    /// history into a guest (the cold path, as after an eviction).
    pub fn cold(self) -> Self {
        self.arg("--hot-instances").arg("0")
    }

    /// Twilio settings pointing at `sms`, the token marked secret.
    pub fn twilio(self, sms: &FakeSms) -> Self {
        self.env("TwilioAccountSid", TWILIO_SID)
            .env("TwilioAuthToken", TWILIO_TOKEN)
            .env("TwilioPhoneNumber", TWILIO_FROM)
            .env("TwilioBaseUrl", &sms.base)
            .env("DURANGO_SECRET_SETTINGS", "TwilioAuthToken")
    }
}

/// A running `durango serve`, its log in its own temporary folder.
pub struct Host {
    child: Option<Child>,
    /// The `--db` value.
    db: String,
    pub base: String,
    /// The keyless RPC base URL (`.../durabletask/`), with `--rpc-listen`.
    pub rpc_base: Option<String>,
    /// The keyless metrics URL (`http://ADDR/metrics`), with
    /// `--metrics-listen`.
    pub metrics_url: Option<String>,
    pub dir: tempfile::TempDir,
    options: HostOptions,
}

impl Host {
    /// A host on a database of its own: a file in its temporary folder on
    /// SQLite, a fresh database on PostgreSQL (as `backend()` says).
    pub fn start(options: HostOptions) -> Host {
        let dir = tempfile::tempdir().expect("temporary folder");
        let db = match backend() {
            Backend::Sqlite => dir.path().join("durango.db").display().to_string(),
            Backend::Postgres => postgres::fresh_database(),
        };
        Host::launched(db, dir, options)
    }

    /// A host on the database `db` (a `--db` value), which other hosts may
    /// share: `Host::start_on(&first.db_url(), options)`.
    pub fn start_on(db: &str, options: HostOptions) -> Host {
        let dir = tempfile::tempdir().expect("temporary folder");
        Host::launched(db.to_string(), dir, options)
    }

    fn launched(db: String, dir: tempfile::TempDir, options: HostOptions) -> Host {
        let mut host = Host {
            child: None,
            db,
            base: String::new(),
            rpc_base: None,
            metrics_url: None,
            dir,
            options,
        };
        host.launch();
        host
    }

    /// The `--db` value: the SQLite file's path, or a PostgreSQL URL.
    pub fn db_url(&self) -> String {
        self.db.clone()
    }

    pub fn backend(&self) -> Backend {
        Backend::of(&self.db)
    }

    /// The SQLite file, for tests of the file itself (see `sqlite_only`).
    pub fn db(&self) -> PathBuf {
        assert_eq!(
            self.backend(),
            Backend::Sqlite,
            "Host::db() is the SQLite file; this host runs on {}",
            self.db
        );
        PathBuf::from(&self.db)
    }

    /// All the database holds, as bytes to search (for a secret, say): the
    /// SQLite file and its write-ahead log, or a `pg_dump` of the host's
    /// PostgreSQL database.
    pub fn dump_database(&self) -> Vec<u8> {
        match self.backend() {
            Backend::Sqlite => {
                let mut bytes = std::fs::read(&self.db).expect("read the database file");
                bytes.extend(std::fs::read(format!("{}-wal", self.db)).unwrap_or_default());
                bytes
            }
            Backend::Postgres => postgres::dump(&self.db),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("host.log")
    }

    /// Everything the host wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) {
        let limits: Vec<(&str, u64)> = [
            ("RLIMIT_FSIZE", self.options.file_size_limit),
            ("RLIMIT_AS", self.options.address_space_limit),
        ]
        .into_iter()
        .filter_map(|(name, limit)| Some((name, limit?)))
        .collect();
        let mut command = durango_command(&limits);
        command
            .arg("serve")
            .arg("--db")
            .arg(&self.db)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("DURANGO_KEY", KEY)
            // Each suite's many hosts compile each component once (a
            // JavaScript app's interpreter takes tens of seconds).
            .env("DURANGO_COMPILE_CACHE", compile_cache())
            .env("RUST_LOG", "info")
            .env_remove("DURANGO_DB")
            .env_remove("DURANGO_LISTEN");
        for app in &self.options.apps {
            command.arg("--deploy").arg(wasm(app));
        }
        command.args(&self.options.args);
        for (k, v) in &self.options.env {
            command.env(k, v);
        }
        let (child, base, before) = spawn_listening(command, &self.log_path());
        self.child = Some(child);
        self.base = base;
        self.rpc_base = before
            .iter()
            .find_map(|line| line.strip_prefix("rpc listening on "))
            .map(|url| url.trim().to_string());
        self.metrics_url = before
            .iter()
            .find_map(|line| line.strip_prefix("metrics listening on "))
            .map(|url| url.trim().to_string());
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the host");
            child.wait().expect("reap the host");
        }
    }

    /// `SIGTERM`, as an operator stops a host: it finishes what it is
    /// answering and exports its last spans; waits until it has exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("a running host");
        wait_until("the host to exit after SIGTERM", WAIT, || {
            child.try_wait().expect("wait for the host")
        })
    }

    /// `SIGSTOP`: the process stops where it is, as a host does in a long
    /// pause (a stalled VM, a debugger); `resume` continues it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running host").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Starts the host again on the same database (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Restarts with changed options (new settings, say), same database.
    pub fn restart_with(&mut self, change: impl FnOnce(HostOptions) -> HostOptions) {
        self.options = change(self.options.clone());
        self.restart();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the system key in the `x-functions-key` header.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        request(
            method,
            &self.url(path),
            &[
                ("x-functions-key", KEY),
                ("content-type", "application/json"),
            ],
            body.map(str::as_bytes),
        )
    }

    /// The value of one sample of `/metrics`, named with its labels as the
    /// text format writes them (`durango_x_total{role="activity"}`).
    pub fn metric(&self, sample: &str) -> f64 {
        let answer = self.call("GET", "/metrics", None);
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer
            .text
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{}", answer.text))
    }

    /// Starts an orchestration; panics unless it answers 202.
    pub fn start_orchestration(&self, name: &str, input: &str) -> String {
        let answer = self.call("POST", &format!("/api/orchestrators/{name}"), Some(input));
        assert_eq!(answer.status, 202, "start {name}: {}", answer.text);
        answer.body["id"]
            .as_str()
            .expect("an instance id")
            .to_string()
    }

    pub fn status(&self, id: &str) -> Answer {
        self.call(
            "GET",
            &format!("/runtime/webhooks/durabletask/instances/{id}"),
            None,
        )
    }

    pub fn status_with_history(&self, id: &str) -> Answer {
        self.call(
            "GET",
            &format!("/runtime/webhooks/durabletask/instances/{id}?showHistory=true&showHistoryOutput=true"),
            None,
        )
    }

    pub fn raise(&self, id: &str, event: &str, data: &str) -> Answer {
        self.call(
            "POST",
            &format!("/runtime/webhooks/durabletask/instances/{id}/raiseEvent/{event}"),
            Some(data),
        )
    }

    /// Terminates instance `id` and starts it again under the same id (a
    /// new execution), as `restart?restartWithNewInstanceId=false` does.
    pub fn start_again_under_its_id(&self, id: &str) {
        let instance = format!("/runtime/webhooks/durabletask/instances/{id}");
        let terminated = self.call("POST", &format!("{instance}/terminate"), None);
        assert_eq!(terminated.status, 202, "{}", terminated.text);
        self.wait_finished(id);
        let again = self.call(
            "POST",
            &format!("{instance}/restart?restartWithNewInstanceId=false"),
            None,
        );
        assert_eq!(again.status, 202, "{}", again.text);
    }

    /// The person answers a phone verification with `code` (the raise must
    /// be acknowledged); returns the instance's status once it finished.
    pub fn answer_code(&self, id: &str, code: u32) -> Value {
        let answer = self.raise(id, "SmsChallengeResponse", &code.to_string());
        assert_eq!(answer.status, 202, "{}", answer.text);
        self.wait_finished(id)
    }

    /// Waits until the instance has finished; returns its status body.
    pub fn wait_finished(&self, id: &str) -> Value {
        wait_until(&format!("instance {id} to finish"), WAIT, || {
            let answer = self.status(id);
            (answer.status == 200).then_some(answer.body)
        })
    }

    /// Messages waiting in the instance's inbox, read from the database
    /// itself (what a restart would find there).
    pub fn stored_inbox_len(&self, id: &str) -> usize {
        // `durango inbox` reads the database itself, either backend.
        let output = Command::new(durango_bin())
            .args(["inbox", id, "--db", &self.db])
            .env_remove("DURANGO_DB")
            .output()
            .expect("durango inbox");
        assert!(
            output.status.success(),
            "durango inbox failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).lines().count()
    }

    /// The `EventType` of each event in the instance's history, in order.
    pub fn history_kinds(&self, id: &str) -> Vec<String> {
        let history = self.status_with_history(id).body;
        history["historyEvents"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| e["EventType"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The events of `kind` in the instance's history, in order.
    pub fn history_events(&self, id: &str, kind: &str) -> Vec<Value> {
        events_of_kind(&self.status_with_history(id).body, kind)
    }

    /// Waits until the instance's history holds `count` events of `kind`.
    pub fn wait_history(&self, id: &str, kind: &str, count: usize) -> Value {
        wait_until(&format!("{count} {kind} events in {id}"), WAIT, || {
            let answer = self.status_with_history(id);
            let seen = events_of_kind(&answer.body, kind).len();
            (seen >= count).then_some(answer.body)
        })
    }

    /// Sends a component (`application/wasm`) with the system key, as a
    /// deploy or a check does.
    pub fn send_component(&self, method: &str, path: &str, wasm: &[u8]) -> Answer {
        request(
            method,
            &self.url(path),
            &[
                ("x-functions-key", KEY),
                ("content-type", "application/wasm"),
            ],
            Some(wasm),
        )
    }
}

fn events_of_kind(status: &Value, kind: &str) -> Vec<Value> {
    status["historyEvents"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["EventType"] == kind)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A component's version: the sha256 of its bytes, in hex.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A webhook receiver on loopback that records every request; it answers
/// 500 while `failing` is set, 200 otherwise.
pub struct Webhook {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: std::sync::Arc<tiny_http::Server>,
}

/// One request a webhook received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status the webhook answered.
    pub answered: u16,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

impl Webhook {
    pub fn start() -> Webhook {
        use std::sync::atomic::Ordering;
        let server =
            std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind a webhook"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (srv, log, fail) = (server.clone(), received.clone(), failing.clone());
        std::thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let failing = fail.load(Ordering::SeqCst);
                let status = if failing { 500 } else { 200 };
                log.lock().unwrap().push(Received {
                    path: request.url().to_string(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                    answered: status,
                    at: Instant::now(),
                });
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Webhook {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
            failing,
            server,
        }
    }

    /// Answer 500 while `failing` (the request is still recorded, with the
    /// status it got).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request taken, refused ones included, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered 200.
    pub fn delivered(&self) -> Vec<Received> {
        let mut received = self.received();
        received.retain(|r| r.answered == 200);
        received
    }

    /// The events received for `instance` once `predicate` holds for them.
    pub fn wait_for(&self, what: &str, predicate: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        wait_until(what, WAIT, || {
            let got = self.received();
            predicate(&got).then_some(got)
        })
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The phone-verification sample in one language: its app and its
/// orchestrator's name. Scenarios take one and run against each
/// (`in_every_language!`).
#[derive(Clone, Copy, Debug)]
pub struct PhoneSample {
    pub app: &'static str,
    pub orchestrator: &'static str,
}

pub const RUST_PHONE: PhoneSample = PhoneSample {
    app: "phone_verification",
    orchestrator: "E4_SmsPhoneVerification",
};

pub const JS_PHONE: PhoneSample = PhoneSample {
    app: "phone_verification_js",
    orchestrator: "E4_SmsPhoneVerificationJs",
};

pub const PY_PHONE: PhoneSample = PhoneSample {
    app: "phone_verification_py",
    orchestrator: "E4_SmsPhoneVerificationPy",
};

impl PhoneSample {
    /// A host serving this sample, its SMS going to `sms`.
    pub fn options(&self, sms: &FakeSms) -> HostOptions {
        HostOptions::with_apps(&[self.app]).twilio(sms)
    }

    /// Starts a verification of `phone` with a window of `timeout_seconds`.
    pub fn start(&self, host: &Host, phone: &str, timeout_seconds: u64) -> String {
        let input = serde_json::json!({ "phoneNumber": phone, "timeoutSeconds": timeout_seconds });
        host.start_orchestration(self.orchestrator, &input.to_string())
    }
}

/// A test per scenario and language, `rust::SCENARIO`, `js::SCENARIO` and
/// `py::SCENARIO`: each scenario is a function of the `PhoneSample` it runs
/// against.
#[macro_export]
macro_rules! in_every_language {
    // One module of tests per language, then the rest of the languages.
    (@each [$language:ident $sample:ident $(, $languages:ident $samples:ident)*] $($scenario:ident),*) => {
        mod $language {
            $( #[test] fn $scenario() { super::$scenario($crate::$sample) } )*
        }
        $crate::in_every_language!(@each [$($languages $samples),*] $($scenario),*);
    };
    (@each [] $($scenario:ident),*) => {};
    ($($scenario:ident),* $(,)?) => {
        $crate::in_every_language!(@each [rust RUST_PHONE, js JS_PHONE, py PY_PHONE] $($scenario),*);
    };
}

/// `durango fake-sms`: a Twilio stand-in on loopback.
pub struct FakeSms {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl FakeSms {
    pub fn start() -> FakeSms {
        FakeSms::answering_after(Duration::ZERO)
    }

    /// A slow provider: each message is listed at once and answered after
    /// `delay`.
    pub fn answering_after(delay: Duration) -> FakeSms {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut command = Command::new(durango_bin());
        command.args([
            "fake-sms",
            "--listen",
            "127.0.0.1:0",
            "--account-sid",
            TWILIO_SID,
            "--auth-token",
            TWILIO_TOKEN,
            "--delay-ms",
            &delay.as_millis().to_string(),
        ]);
        let (child, base, _) = spawn_listening(command, &dir.path().join("sms.log"));
        FakeSms {
            child,
            base,
            _dir: dir,
        }
    }

    pub fn messages(&self) -> Vec<Value> {
        let answer = request("GET", &format!("{}/messages", self.base), &[], None);
        answer.body.as_array().cloned().unwrap_or_default()
    }

    /// Messages sent to `to`, once there are at least `count`.
    pub fn wait_messages_to(&self, to: &str, count: usize) -> Vec<Value> {
        wait_until(&format!("{count} SMS to {to}"), WAIT, || {
            let sent: Vec<Value> = self
                .messages()
                .into_iter()
                .filter(|m| m["to"] == to)
                .collect();
            (sent.len() >= count).then_some(sent)
        })
    }

    /// The code in the (first) SMS sent to `to`.
    pub fn code_sent_to(&self, to: &str) -> u32 {
        challenge_code(&self.wait_messages_to(to, 1)[0])
    }
}

/// The code in a phone-verification SMS as the fake provider lists it.
pub fn challenge_code(message: &Value) -> u32 {
    let body = message["body"].as_str().expect("an SMS body");
    body.strip_prefix("Your verification code is ")
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("unexpected SMS body {body:?}"))
}

impl Drop for FakeSms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift: enough randomness for a test, and a seed to replay a run.
pub struct Rng {
    state: u64,
    pub seed: u64,
}

impl Rng {
    /// Seeded from the environment variable `var` when set (to replay a
    /// run), else from the clock; the seed is printed either way.
    pub fn seeded(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("seed {seed} ({var}={seed} replays it)");
        Rng { state: seed, seed }
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % n
    }
}
