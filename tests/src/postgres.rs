//! A throwaway PostgreSQL server for the end-to-end tests that run the host
//! on PostgreSQL (`DURANGO_TEST_DB=postgres`): one per test process, started
//! the first time a test asks for it, stopped and deleted when the process
//! ends, however it ends (a panic, `kill -9`).
//!
//! The binaries are Debian's `postgresql` package (or those `pg_config
//! --bindir` names). PostgreSQL refuses to run as root, and CI runs as
//! root: then the server runs as the `postgres` system user the package
//! creates. The server keeps fsync on, as production would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Owns the server: `$1` is its (empty) folder, `$2` the binaries. It
/// initializes the cluster and answers `initialized`; then each line read
/// is a port to start the server on, answered `started` or `failed`. When
/// its input ends, which happens when the test process ends since that
/// process holds the other end of the pipe, it stops the server and
/// deletes the folder.
const KEEPER: &str = r#"
set -u
dir=$1 bin=$2 as=
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as="runuser -u postgres --"
fi
if $as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync \
     >"$dir/initdb.log" 2>&1 </dev/null; then
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
EOF
  echo initialized
else
  echo "initdb failed"
fi
while read -r port; do
  # -w: returns once the server accepts connections, or has exited.
  if $as "$bin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" -o "-p $port" \
       >/dev/null 2>&1 </dev/null; then
    echo started
  else
    echo failed
  fi
done
$as "$bin/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1 </dev/null
rm -rf "$dir"
"#;

struct Server {
    bin: PathBuf,
    port: u16,
    /// The keeper's input, kept open for as long as this process lives
    /// (statics are never dropped): the kernel closes it at exit.
    _keeper: ChildStdin,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn running() -> &'static Server {
    SERVER.get_or_init(start)
}

/// The server's base URL, `postgres://postgres@127.0.0.1:PORT` (no
/// database); starts the server on first use.
pub fn server() -> String {
    format!("postgres://postgres@127.0.0.1:{}", running().port)
}

/// A new, empty database of its own on the server; its URL,
/// `postgres://postgres@127.0.0.1:PORT/NAME`.
pub fn fresh_database() -> String {
    static CREATED: AtomicUsize = AtomicUsize::new(0);
    let name = format!("durango_{}", CREATED.fetch_add(1, Ordering::Relaxed));
    psql(
        &format!("{}/postgres", server()),
        &format!("CREATE DATABASE {name}"),
    );
    format!("{}/{name}", server())
}

/// Runs `sql` on the database at `url`; what psql printed, unaligned and
/// without headers (`-At`), trimmed. Panics if it fails.
pub fn psql(url: &str, sql: &str) -> String {
    let output = tool("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql:?} on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `pg_dump` of the database at `url`, in the form that shows stored text
/// most as it is, for tests that search it: rows as `INSERT`s (COPY's text
/// format would double every backslash), `bytea` in the escape format (in
/// the default hex format a secret stored as bytes would never match).
pub fn dump(url: &str) -> Vec<u8> {
    let output = tool("pg_dump")
        .args(["--inserts", "-d", url])
        .env("PGOPTIONS", "-c bytea_output=escape")
        .output()
        .expect("run pg_dump");
    assert!(
        output.status.success(),
        "pg_dump {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn tool(name: &str) -> Command {
    Command::new(running().bin.join(name))
}

fn start() -> Server {
    let bin = binaries();
    let dir = tempfile::Builder::new()
        .prefix("durango-pg-")
        .tempdir()
        .expect("a temporary folder")
        .keep();
    #[expect(
        clippy::zombie_processes,
        reason = "never waited for: the keeper outlives this process, to clean up after it"
    )]
    let mut keeper = Command::new("sh")
        .args(["-c", KEEPER, "pg-keeper"])
        .arg(&dir)
        .arg(&bin)
        // PostgreSQL's tools fail in a working directory they cannot enter.
        .current_dir(&dir)
        // Out of the test's process group, so that a Ctrl-C on the test run
        // does not kill the keeper before it cleans up.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let mut input = keeper.stdin.take().expect("piped stdin");
    let mut answers = BufReader::new(keeper.stdout.take().expect("piped stdout")).lines();
    let mut answer = || answers.next().and_then(Result::ok).unwrap_or_default();
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let initialized = answer();
    assert_eq!(initialized, "initialized", "{}", log("initdb.log"));
    // Another process may take the free port before the server binds it.
    for _ in 0..5 {
        let port = free_port();
        writeln!(input, "{port}").expect("write to the keeper");
        if answer() == "started" {
            return Server {
                bin,
                port,
                _keeper: input,
            };
        }
    }
    panic!("PostgreSQL did not start; its log:\n{}", log("server.log"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `pg_config --bindir` if the server is there (pg_config also comes with
/// the client library's headers alone), else the newest
/// `/usr/lib/postgresql/VERSION/bin`.
fn binaries() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let configured = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = configured.filter(|dir| has_server(dir)) {
        return dir;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .max_by_key(|(version, _)| *version)
        .map(|(_, dir)| dir)
        .expect(
            "no PostgreSQL server (pg_config --bindir, /usr/lib/postgresql/*/bin): \
             install Debian's postgresql package",
        )
}
