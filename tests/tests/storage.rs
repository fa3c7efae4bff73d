//! Storage faults: the host says so clearly, refuses writes with 503, and
//! loses nothing it acknowledged.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use durango_e2e::{durango_bin, sqlite_only, Host, HostOptions, KEY};

#[test]
fn a_database_locked_by_another_process_stops_the_start_with_a_clear_message() {
    if !sqlite_only("locks the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    BufReader::new(locker.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "locked");

    let output = Command::new(durango_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("DURANGO_KEY", KEY)
        .output()
        .unwrap();
    let _ = locker.stdin.take().unwrap().write_all(b"");
    let _ = locker.kill();
    let _ = locker.wait();
    assert!(
        !output.status.success(),
        "the host must not start on a locked database"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("locked"), "{stderr}");
    assert!(stderr.contains("locked.db"), "names the file: {stderr}");
}

/// A host killed while one instance waits for an event; its database stays.
fn stopped_with_a_waiting_instance() -> (Host, String) {
    let mut host = Host::start(HostOptions::with_apps(&["test_guests"]));
    let id = host.start_orchestration("EchoAfterEvent", "\"Go\"");
    host.wait_history(&id, "ExecutionStarted", 1);
    host.kill9();
    (host, id)
}

#[test]
fn a_full_disk_answers_503_for_writes_and_loses_nothing_acknowledged() {
    if !sqlite_only("fills the disk under the SQLite file") {
        return;
    }
    let (mut host, first) = stopped_with_a_waiting_instance();
    let size = |path: std::path::PathBuf| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let largest = size(host.db()).max(size(host.db().with_extension("db-wal")));
    // Restart (apps already stored) with room for only a little more.
    host.restart_with(|o| HostOptions {
        apps: vec![],
        file_size_limit: Some(largest + 96 * 1024),
        ..o
    });

    let mut acknowledged = vec![first.clone()];
    let mut refused = None;
    for _ in 0..5000 {
        let answer = host.call("POST", "/api/orchestrators/EchoAfterEvent", Some("\"Go\""));
        match answer.status {
            202 => acknowledged.push(
                answer.body["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a 202 without an instance id: {}", answer.text))
                    .to_string(),
            ),
            _ => {
                refused = Some(answer);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.body["error"]
        .as_str()
        .unwrap()
        .contains("storage unavailable"));
    // Reads still work while writes are refused.
    assert_eq!(host.status(&first).status, 202);

    // Room again: everything acknowledged is there, and runs on.
    host.restart_with(|o| HostOptions {
        file_size_limit: None,
        ..o
    });
    for id in &acknowledged {
        assert_ne!(
            host.status(id).status,
            404,
            "acknowledged instance {id} was lost"
        );
    }
    host.raise(&first, "Go", "\"after the disk was full\"");
    assert_eq!(
        host.wait_finished(&first)["output"],
        "after the disk was full"
    );
    println!("disk full after {} acknowledged starts", acknowledged.len());
}

/// Makes a file immutable (even for root) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: std::path::PathBuf) -> Immutable {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .expect("chattr");
        assert!(status.success(), "chattr +i {}", path.display());
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_database_stops_the_start_with_a_clear_message() {
    if !sqlite_only("makes the SQLite file read-only") {
        return;
    }
    let (mut host, id) = stopped_with_a_waiting_instance();
    let _guard = Immutable::new(host.db());
    let output = Command::new(durango_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(host.db())
        .env("DURANGO_KEY", KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("read-only"), "{stderr}");
    drop(_guard);
    // Writable again: nothing was lost.
    host.restart();
    host.raise(&id, "Go", "\"writable again\"");
    assert_eq!(host.wait_finished(&id)["output"], "writable again");
}

#[test]
fn the_compile_cache_is_filled_on_deploy_and_a_damaged_entry_is_compiled_again() {
    let cache = tempfile::tempdir().unwrap();
    let with_cache = || {
        HostOptions::with_apps(&["hello_sequence"])
            .arg("--compile-cache")
            .arg(cache.path().to_str().unwrap())
    };
    let first = Host::start(with_cache());
    let digest = durango_e2e::digest(&std::fs::read(durango_e2e::wasm("hello_sequence")).unwrap());
    let kept: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let name = kept[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with(&digest) && name.ends_with(".cwasm"),
        "kept by digest: {name}"
    );
    let id = first.start_orchestration("E1_HelloSequence", "null");
    let finished = first.wait_finished(&id);
    drop(first);

    // A damaged entry (a disk error, a half-copied folder) is not loaded:
    // the next deploy compiles again and the app runs as before.
    std::fs::write(&kept[0], b"not a compiled component").unwrap();
    let second = Host::start(with_cache());
    let id = second.start_orchestration("E1_HelloSequence", "null");
    assert_eq!(second.wait_finished(&id)["output"], finished["output"]);
    assert!(
        std::fs::read(&kept[0]).unwrap().len() > 1000,
        "the entry was written again"
    );
}

/// A version whose stored compiled code another engine made (here: the
/// bounds-checked memory layout a host falls back to under `ulimit -v`)
/// is compiled again once, and the new code stored in its place: the next
/// start loads it as it is.
#[test]
fn compiled_code_from_another_engine_is_compiled_again_once_and_stored() {
    let mut host = Host::start(HostOptions::with_apps(&["hello_sequence"]));
    let id = host.start_orchestration("E1_HelloSequence", "null");
    let finished = host.wait_finished(&id);
    // Restart without deploying again: the stored version is loaded.
    host.restart_with(|o| HostOptions {
        apps: vec![],
        address_space_limit: Some(2 << 40),
        ..o
    });
    let compiled_again = |host: &Host| host.log().matches("compiled again").count();
    let id = host.start_orchestration("E1_HelloSequence", "null");
    assert_eq!(host.wait_finished(&id)["output"], finished["output"]);
    assert_eq!(compiled_again(&host), 1, "{}", host.log());

    host.restart();
    let id = host.start_orchestration("E1_HelloSequence", "null");
    assert_eq!(host.wait_finished(&id)["output"], finished["output"]);
    assert_eq!(compiled_again(&host), 1, "loaded as stored: {}", host.log());
}
