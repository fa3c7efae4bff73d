//! The throwaway PostgreSQL server the hosts run on with
//! `DURANGO_TEST_DB=postgres`: it starts, hands out databases of their own,
//! keeps fsync on, runs as a user other than root, and goes away with the
//! test process even when that process is killed.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use durango_e2e::{postgres, wait_until, WAIT};

#[test]
fn each_fresh_database_is_its_own() {
    let (a, b) = (postgres::fresh_database(), postgres::fresh_database());
    assert_ne!(a, b);
    for url in [&a, &b] {
        let name = url.strip_prefix(&format!("{}/", postgres::server()));
        assert!(name.is_some_and(|n| !n.is_empty()), "{url}");
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
    }
    postgres::psql(&a, "CREATE TABLE only_in_a (x int)");
    let tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'";
    assert_eq!(postgres::psql(&a, tables), "1");
    assert_eq!(postgres::psql(&b, tables), "0");
}

#[test]
fn the_server_syncs_to_disk() {
    assert_eq!(
        postgres::psql(&postgres::fresh_database(), "SHOW fsync"),
        "on"
    );
}

/// The server's data folder, as the server says.
fn data_directory() -> PathBuf {
    PathBuf::from(postgres::psql(
        &postgres::fresh_database(),
        "SHOW data_directory",
    ))
}

/// The server's process id, from its data folder.
fn postmaster_pid(data: &Path) -> String {
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().to_string()
}

/// Whether process `pid` runs (a zombie no longer does).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| !status.contains("State:\tZ"))
}

#[test]
fn the_server_runs_as_a_user_other_than_root() {
    let pid = postmaster_pid(&data_directory());
    let owner = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_ne!(owner, 0, "the server (pid {pid}) runs as root");
}

const CHILD: &str = "DURANGO_E2E_PG_CHILD";
/// Before the data folder in the child's output (libtest prints the test's
/// name at the start of that line).
const DATA: &str = "server data folder: ";

/// The process the next test kills: starts the server, prints its data
/// folder, and waits. Does nothing unless that test runs it.
#[test]
#[ignore = "run by a_killed_test_process_leaves_no_server_behind"]
fn holds_a_server_until_killed() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    println!("{DATA}{}", data_directory().display());
    std::io::stdin().read_line(&mut String::new()).unwrap();
}

#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "holds_a_server_until_killed"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let data = lines
        .map_while(Result::ok)
        .find_map(|line| line.split_once(DATA).map(|(_, path)| PathBuf::from(path)))
        .expect("the child's server");
    let pid = postmaster_pid(&data);
    assert!(alive(&pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let folder = data.parent().unwrap();
    wait_until("the server to stop and its folder to go", WAIT, || {
        (!alive(&pid) && !folder.exists()).then_some(())
    });
}
