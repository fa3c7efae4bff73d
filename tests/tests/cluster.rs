//! Several hosts on one PostgreSQL database (a throwaway server of the
//! tests' own, whatever `DURANGO_TEST_DB` says): any host takes any request,
//! a message for another host's instance wakes it there, a killed or
//! paused host's instances go on elsewhere once its leases run out, and a
//! host that joins takes its share.

use std::collections::HashSet;
use std::time::Duration;

use durango_e2e::{postgres, wait_until, FakeSms, Host, HostOptions, Rng};
use serde_json::{json, Value};

/// Short leases, so takeovers happen within the tests' time.
const LEASE_MS: &str = "1500";

fn cluster(db: &str, count: usize, sms: &FakeSms) -> Vec<Host> {
    (0..count)
        .map(|_| {
            let options = HostOptions::with_apps(&["phone_verification", "test_guests"])
                .twilio(sms)
                .arg("--lease-ms")
                .arg(LEASE_MS);
            Host::start_on(db, options)
        })
        .collect()
}

/// Hosts holding an unexpired lease.
fn lease_holders(db: &str) -> usize {
    postgres::psql(
        db,
        "SELECT count(DISTINCT owner) FROM partitions WHERE expires_at > clock_timestamp()",
    )
    .parse()
    .expect("a count")
}

/// Partitions under an unexpired lease.
fn leased_partitions(db: &str) -> usize {
    postgres::psql(
        db,
        "SELECT count(*) FROM partitions WHERE expires_at > clock_timestamp()",
    )
    .parse()
    .expect("a count")
}

/// `rng.below(n)` as an index.
fn pick(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn phone(n: usize) -> String {
    format!("+1425555{n:04}")
}

fn raise(host: &Host, id: &str, event: &str, data: &str) -> u16 {
    host.call(
        "POST",
        &format!("/runtime/webhooks/durabletask/instances/{id}/raiseEvent/{event}"),
        Some(data),
    )
    .status
}

#[test]
fn three_hosts_finish_every_verification_while_two_are_killed() {
    const FLOWS: usize = 120;
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let mut hosts = cluster(&db, 3, &sms);
    let mut dice = Rng::seeded("DURANGO_TEST_SEED");
    // Two kills, each at a random moment of the run (counted in requests),
    // each host restarted a little later: hosts 0 and 1, or 1 and 2, ...
    let first = pick(&mut dice, 3);
    let victims = [first, (first + 1 + pick(&mut dice, 2)) % 3];
    let kill_at = [pick(&mut dice, FLOWS), FLOWS + pick(&mut dice, FLOWS)];
    let mut down: Option<(usize, usize)> = None; // (host, restart at step)
    let mut ids = Vec::new();
    let mut step = 0;
    let chaos = |hosts: &mut Vec<Host>, step: usize, down: &mut Option<(usize, usize)>| {
        if let Some((host, at)) = *down {
            if step >= at {
                hosts[host].restart();
                *down = None;
            }
        }
        for (k, at) in kill_at.iter().enumerate() {
            if step == *at && down.is_none() {
                hosts[victims[k]].kill9();
                *down = Some((victims[k], step + 10 + FLOWS / 8));
            }
        }
    };
    let live = |down: &Option<(usize, usize)>, pick: usize| -> usize {
        match down {
            Some((dead, _)) if *dead == pick % 3 => (pick + 1) % 3,
            _ => pick % 3,
        }
    };
    for n in 0..FLOWS {
        chaos(&mut hosts, step, &mut down);
        step += 1;
        let host = &hosts[live(&down, pick(&mut dice, 3))];
        let input = json!({ "phoneNumber": phone(n), "timeoutSeconds": 600 });
        ids.push(host.start_orchestration("E4_SmsPhoneVerification", &input.to_string()));
    }
    for (n, id) in ids.iter().enumerate() {
        chaos(&mut hosts, step, &mut down);
        step += 1;
        let code = sms.code_sent_to(&phone(n));
        let host = &hosts[live(&down, pick(&mut dice, 3))];
        assert_eq!(
            raise(host, id, "SmsChallengeResponse", &code.to_string()),
            202
        );
    }
    if let Some((host, _)) = down.take() {
        hosts[host].restart();
    }
    for (n, id) in ids.iter().enumerate() {
        let host = &hosts[pick(&mut dice, 3)];
        let done = host.wait_finished(id);
        assert_eq!(done["runtimeStatus"], "Completed", "{id}: {done}");
        assert_eq!(done["output"], json!(true), "flow {n} verified");
    }
    // One SMS per person: a send repeated after a kill carried the same
    // idempotency token and was deduplicated.
    let messages = sms.messages();
    let people: HashSet<&str> = messages.iter().filter_map(|m| m["to"].as_str()).collect();
    assert_eq!(messages.len(), FLOWS, "one message each");
    assert_eq!(people.len(), FLOWS);
    println!("cluster: {FLOWS} flows, hosts {victims:?} killed at steps {kill_at:?}");
}

/// The partitions' owners as the hosts hold them now.
fn spread_over(db: &str, hosts: usize) {
    wait_until(
        &format!("partitions spread over {hosts} hosts"),
        Duration::from_secs(30),
        || (lease_holders(db) == hosts && leased_partitions(db) == 16).then_some(()),
    );
}

fn echo_flows(host: &Host, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let id = format!("{prefix}{n}");
            let answer = host.call(
                "POST",
                &format!("/api/orchestrators/EchoAfterEvent/{id}"),
                Some("\"Go\""),
            );
            assert_eq!(answer.status, 202, "{}", answer.text);
            id
        })
        .collect()
}

fn assert_echoed_once(host: &Host, id: &str, reply: &str) {
    let done: Value = host.wait_finished(id);
    assert_eq!(done["runtimeStatus"], "Completed", "{id}: {done}");
    assert_eq!(done["output"], json!(reply), "{id}");
    assert_eq!(
        host.history_events(id, "EventRaised").len(),
        1,
        "{id}: one event"
    );
    assert_eq!(
        host.history_events(id, "TaskCompleted").len(),
        1,
        "{id}: one echo"
    );
    assert_eq!(
        host.history_events(id, "ExecutionCompleted").len(),
        1,
        "{id}: one end"
    );
}

#[test]
fn a_joining_host_takes_its_share_and_the_waiting_instances_go_on() {
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let mut hosts = cluster(&db, 1, &sms);
    spread_over(&db, 1);
    let ids = echo_flows(&hosts[0], "join-", 24);
    hosts.extend(cluster(&db, 1, &sms));
    spread_over(&db, 2);
    // Every answer goes through the new host; half the instances are now
    // its own, the others it wakes on the first host through the database.
    for id in &ids {
        assert_eq!(raise(&hosts[1], id, "Go", "\"hi\""), 202);
    }
    for id in &ids {
        assert_echoed_once(&hosts[0], id, "hi");
    }
}

#[test]
fn a_paused_host_writes_nothing_after_its_leases_ran_out() {
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let hosts = cluster(&db, 2, &sms);
    spread_over(&db, 2);
    let ids = echo_flows(&hosts[0], "pause-", 24);
    hosts[0].pause();
    // The paused host's partitions go to the other once its leases ran out.
    spread_over(&db, 1);
    let (early, late) = ids.split_at(ids.len() / 2);
    for id in early {
        assert_eq!(raise(&hosts[1], id, "Go", "\"early\""), 202);
    }
    for id in early {
        assert_echoed_once(&hosts[1], id, "early");
    }
    // Continued, the paused host still believes in its old leases and holds
    // the instances hot: what it runs before it learns better is refused.
    hosts[0].resume();
    for id in late {
        assert_eq!(raise(&hosts[0], id, "Go", "\"late\""), 202);
    }
    for id in early {
        assert_echoed_once(&hosts[0], id, "early");
    }
    for id in late {
        assert_echoed_once(&hosts[1], id, "late");
    }
    spread_over(&db, 2);
}

/// A component deployed through one host is served by all: the others
/// hear of the deploy and read the apps again (no restart, no polling).
#[test]
fn an_app_deployed_through_one_host_is_started_through_another() {
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let hosts = cluster(&db, 2, &sms);
    let hello = std::fs::read(durango_e2e::wasm("hello_sequence")).expect("read the component");
    let deployed = hosts[0].send_component("PUT", "/admin/apps/hello_sequence", &hello);
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    // The other host learns of it as the deploy commits; until its catalog
    // is read again, it says the orchestrator is unknown (400).
    let id = wait_until(
        "the other host to serve the new app",
        Duration::from_secs(10),
        || {
            let answer = hosts[1].call("POST", "/api/orchestrators/E1_HelloSequence", Some("null"));
            match answer.status {
                202 => Some(answer.body["id"].as_str().expect("an id").to_string()),
                400 => None,
                other => panic!("starting through the other host: {other} {}", answer.text),
            }
        },
    );
    let done = hosts[1].wait_finished(&id);
    assert_eq!(
        done["output"],
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"]),
        "{done}"
    );
}

/// Instances kept hot on the hosts that own them are moved to a new
/// version through another host, and each goes on on the new one. An
/// owner's old copy either hears of the move and goes, or meets the moved
/// row at its next commit and is refused: this checks the outcome of both
/// (it passes without the notice too; the notice only shortens the time an
/// old copy may start a call of the old code, which no assertion here sees).
#[test]
fn instances_moved_through_one_host_go_on_on_the_new_version_where_they_run() {
    const INSTANCES: usize = 16;
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let hosts = cluster(&db, 2, &sms);
    spread_over(&db, 2);
    let component = |v: &str| {
        std::fs::read(durango_e2e::wasm(&format!("versioned_{v}"))).expect("read the component")
    };
    let deploy = |host: &Host, v: &str, query: &str| {
        let answer = host.send_component(
            "PUT",
            &format!("/admin/apps/versioned{query}"),
            &component(v),
        );
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.body
    };
    deploy(&hosts[0], "v1", "");
    // Started through either host, each runs (hot) on its partition's owner.
    let ids: Vec<String> = (0..INSTANCES)
        .map(|n| {
            wait_until("the new app served", Duration::from_secs(10), || {
                let answer =
                    hosts[n % 2].call("POST", "/api/orchestrators/Versioned", Some("null"));
                (answer.status == 202).then(|| answer.body["id"].as_str().unwrap().to_string())
            })
        })
        .collect();
    for id in &ids {
        hosts[0].wait_history(id, "TaskCompleted", 1);
    }
    let answer = deploy(&hosts[1], "v2", "?upgrade=compatible");
    assert_eq!(answer["upgrade"]["moved"], INSTANCES, "{answer}");
    for id in &ids {
        for host in &hosts {
            assert_eq!(raise(host, id, "Go", "null"), 202);
        }
    }
    for id in &ids {
        let done = hosts[0].wait_finished(id);
        assert_eq!(
            done["output"],
            json!(["did one", "did two-b", "did three"]),
            "{id}: {done}"
        );
    }
}

/// A first episode creates its instance's row under its host's lease, and
/// its guard comes after, in the same transaction. A lease that runs out
/// between the two (its host a little late renewing) must not leave a row
/// the start then calls a conflict, nor one that never runs: the start is
/// accepted and the instance runs once. A trigger stands in for the late
/// renewal: each new row expires its partition's lease at once, inside the
/// creating transaction. Three ways a first episode commits: in its
/// writer's wave (a new id), a step at a time (it starts a child), and
/// replacing a finished instance of the same id.
#[test]
fn a_lease_running_out_while_an_instance_is_created_leaves_no_orphan() {
    let sms = FakeSms::start();
    let db = postgres::fresh_database();
    let hosts = cluster(&db, 1, &sms);
    spread_over(&db, 1);
    let host = &hosts[0];
    let start = |orchestrator: &str, id: &str| {
        let answer = host.call(
            "POST",
            &format!("/api/orchestrators/{orchestrator}/{id}"),
            Some("\"Go\""),
        );
        assert_eq!(answer.status, 202, "starting {id}: {}", answer.text);
    };
    start("EchoAfterEvent", "again");
    assert_eq!(raise(host, "again", "Go", "\"first\""), 202);
    assert_echoed_once(host, "again", "first");

    postgres::psql(
        &db,
        "CREATE FUNCTION lease_runs_out() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             UPDATE partitions SET expires_at = clock_timestamp() - interval '1 millisecond'
              WHERE id = NEW.partition;
             RETURN NEW;
         END $$;
         CREATE TRIGGER lease_runs_out AFTER INSERT ON instances
            FOR EACH ROW EXECUTE FUNCTION lease_runs_out();",
    );
    start("EchoAfterEvent", "fresh");
    start("ParentOfEcho", "parent");
    start("EchoAfterEvent", "again");
    postgres::psql(&db, "DROP TRIGGER lease_runs_out ON instances");

    for (id, reply) in [
        ("fresh", "fresh"),
        ("parent-child", "child"),
        ("again", "second"),
    ] {
        wait_until(
            &format!("{id} waiting for its event"),
            Duration::from_secs(30),
            || (host.status(id).body["runtimeStatus"] == "Running").then_some(()),
        );
        assert_eq!(raise(host, id, "Go", &format!("\"{reply}\"")), 202);
        assert_echoed_once(host, id, reply);
    }
    let parent = host.wait_finished("parent");
    assert_eq!(parent["runtimeStatus"], "Completed", "{parent}");
    assert_eq!(parent["output"], json!("child"), "{parent}");
    for id in ["fresh", "parent", "parent-child", "again"] {
        assert_eq!(
            host.history_events(id, "ExecutionStarted").len(),
            1,
            "{id}: started once"
        );
    }
}
