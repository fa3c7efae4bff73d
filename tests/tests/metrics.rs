//! Prometheus metrics, end to end: the real host runs hello sequences and
//! phone verifications (SMS through the fake Twilio), then `/metrics` is
//! scraped and parsed as the Prometheus text format. The counters moved by
//! what ran, labels are route templates and function names, and no label
//! value anywhere holds an instance id.

use std::collections::{BTreeMap, HashMap};

use durango_e2e::{request, wait_until, FakeSms, Host, HostOptions, KEY, WAIT};
use serde_json::json;

/// One sample: a name, its labels, its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: every sample, and each family's declared type.
#[derive(Debug)]
struct Scrape {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The value of the one sample named `name` whose labels include
    /// `labels`; 0 when there is none (a family with no child yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().map_or(0.0, |s| s.value)
    }

    /// The sum over every sample named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples named `name` whose labels include `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the Prometheus text format (0.0.4) strictly: HELP and TYPE
/// before a family's samples, valid names, quoted and escaped label values,
/// numeric values; for histograms, `le` buckets that only grow and end in
/// `+Inf`, equal to `_count`.
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name), "bad name in {line:?}");
            assert!(!help.is_empty(), "empty help: {line:?}");
            helped.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "bad name in {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type in {line:?}"
            );
            assert!(helped.contains(name), "TYPE before HELP: {line:?}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{line:?} twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("no value in {line:?}"),
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let end;
            loop {
                let (start, c) = chars.next().expect("unterminated labels");
                if c == '}' {
                    end = start;
                    break;
                }
                if c == ',' {
                    continue;
                }
                let key_start = start;
                let mut key_end = start;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        key_end = i;
                        break;
                    }
                }
                let key = &inner[key_start..key_end];
                assert!(is_name(key), "bad label name {key:?} in {line:?}");
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value").1 {
                        '"' => break,
                        '\\' => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => panic!("bad escape \\{other} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                assert!(labels.insert(key.to_string(), value).is_none(), "{line:?}");
            }
            rest = &inner[end + 1..];
        }
        let value = rest.trim();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            types.contains_key(family) || types.contains_key(name),
            "sample {name} before its TYPE"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    let scrape = Scrape { samples, types };
    check_histograms(&scrape);
    scrape
}

fn check_histograms(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        // Buckets per child (labels without `le`), in order.
        let mut children: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").expect("a bucket has le");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le")
            };
            children.entry(labels).or_default().push((le, s.value));
        }
        for (labels, buckets) in children {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets must grow: {buckets:?}"
            );
            let (last_le, last) = *buckets.last().unwrap();
            assert_eq!(last_le, f64::INFINITY, "{family}{labels:?} ends in +Inf");
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                scrape.value(&format!("{family}_count"), &labels),
                last,
                "{family}{labels:?}: +Inf bucket = count"
            );
        }
    }
}

fn scrape(host: &Host) -> Scrape {
    let answer = host.call("GET", "/metrics", None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        answer.headers
    );
    parse(&answer.text)
}

const HELLO: &str = "E1_HelloSequence";
const VERIFY: &str = "E4_SmsPhoneVerification";
const INSTANCE: &str = "/runtime/webhooks/durabletask/instances/{id}";

#[test]
fn metrics_count_what_ran_by_function_and_route_and_name_no_instance() {
    let sms = FakeSms::start();
    let host = Host::start(
        HostOptions::default()
            .twilio(&sms)
            .arg("--metrics-listen")
            .arg("127.0.0.1:0"),
    );
    let mut ids = Vec::new();

    // Without the key: refused, in JSON, as every route.
    let refused = request("GET", &host.url("/metrics"), &[], None);
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(refused.body["error"].is_string(), "{}", refused.text);
    let wrong = request("GET", &host.url("/metrics?code=not-the-key"), &[], None);
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    let with_code = request("GET", &host.url(&format!("/metrics?code={KEY}")), &[], None);
    assert_eq!(with_code.status, 200, "{}", with_code.text);

    // Three hello sequences, each three activity calls.
    const HELLOS: usize = 3;
    for _ in 0..HELLOS {
        ids.push(host.start_orchestration(HELLO, "null"));
    }
    for id in &ids {
        let status = host.wait_finished(id);
        assert_eq!(status["runtimeStatus"], "Completed", "{status}");
    }

    // A phone verification that waits: its timer is held; suspended, it
    // keeps the code raised meanwhile in its inbox; resumed, it takes the
    // code and completes.
    let waiting = host.start_orchestration(
        VERIFY,
        &json!({"phoneNumber": "+14255550201", "timeoutSeconds": 300}).to_string(),
    );
    ids.push(waiting.clone());
    let code = sms.code_sent_to("+14255550201");
    wait_until("the verification's timer to be held", WAIT, || {
        (scrape(&host).value("durango_timers_pending", &[]) >= 1.0).then_some(())
    });
    let instance = INSTANCE.replace("{id}", &waiting);
    let suspended = host.call("POST", &format!("{instance}/suspend?reason=metrics"), None);
    assert_eq!(suspended.status, 202, "{}", suspended.text);
    wait_until("the verification to be suspended", WAIT, || {
        (host.status(&waiting).body["runtimeStatus"] == "Suspended").then_some(())
    });
    assert_eq!(scrape(&host).value("durango_inbox_events", &[]), 0.0);
    let raised = host.raise(&waiting, "SmsChallengeResponse", &code.to_string());
    assert_eq!(raised.status, 202, "{}", raised.text);
    assert_eq!(scrape(&host).value("durango_inbox_events", &[]), 1.0);
    let resumed = host.call("POST", &format!("{instance}/resume?reason=metrics"), None);
    assert_eq!(resumed.status, 202, "{}", resumed.text);
    let status = host.wait_finished(&waiting);
    assert_eq!(status["output"], json!(true), "{status}");

    // One that times out: its timer fires.
    let timed_out = host.start_orchestration(
        VERIFY,
        &json!({"phoneNumber": "+14255550202", "timeoutSeconds": 1}).to_string(),
    );
    ids.push(timed_out.clone());
    let status = host.wait_finished(&timed_out);
    assert_eq!(status["output"], json!(false), "{status}");

    let m = scrape(&host);

    // Every name is ours and follows the conventions.
    for (family, kind) in &m.types {
        assert!(family.starts_with("durango_"), "{family}");
        match kind.as_str() {
            "counter" => assert!(family.ends_with("_total"), "counter {family}"),
            "histogram" if family.contains("duration") || family.contains("lateness") => {
                assert!(family.ends_with("_seconds"), "histogram {family}")
            }
            _ => {}
        }
    }
    for family in [
        "durango_instances",
        "durango_episodes_total",
        "durango_episode_duration_seconds",
        "durango_store_group_commit_transactions",
        "durango_store_group_commit_episodes",
        "durango_store_group_commit_duration_seconds",
        "durango_store_group_commit_sync_duration_seconds",
        "durango_activity_calls_total",
        "durango_activity_failures_total",
        "durango_activity_retries_total",
        "durango_activity_duration_seconds",
        "durango_timers_pending",
        "durango_timers_fired_total",
        "durango_timer_lateness_seconds",
        "durango_inbox_events",
        "durango_hot_cache_instances",
        "durango_hot_cache_bytes",
        "durango_hot_cache_hits_total",
        "durango_hot_cache_misses_total",
        "durango_hot_cache_evictions_total",
        "durango_guest_instantiation_duration_seconds",
        "durango_guest_traps_total",
        "durango_http_requests_total",
        "durango_http_request_duration_seconds",
    ] {
        assert!(m.types.contains_key(family), "no {family}");
    }

    // What ran.
    let episodes = m.value("durango_episodes_total", &[]);
    assert!(episodes >= (HELLOS * 4) as f64, "episodes {episodes}");
    assert_eq!(
        m.value("durango_episode_duration_seconds_count", &[]),
        episodes
    );
    let calls = |f: &str| m.value("durango_activity_calls_total", &[("function", f)]);
    assert_eq!(calls("E1_SayHello"), (HELLOS * 3) as f64);
    assert_eq!(calls("E4_SendSmsChallenge"), 2.0);
    assert_eq!(
        m.value(
            "durango_activity_duration_seconds_count",
            &[("function", "E1_SayHello")]
        ),
        (HELLOS * 3) as f64
    );
    assert_eq!(m.sum("durango_activity_failures_total", &[]), 0.0);
    let status = |s: &str| m.value("durango_instances", &[("status", s)]);
    assert_eq!(status("Completed"), (HELLOS + 2) as f64);
    assert_eq!(status("Running"), 0.0);
    assert_eq!(status("Pending"), 0.0);
    assert!(m.value("durango_timers_fired_total", &[]) >= 1.0);
    assert!(m.value("durango_timer_lateness_seconds_count", &[]) >= 1.0);
    assert_eq!(m.value("durango_inbox_events", &[]), 0.0);
    let commits = m.value("durango_store_group_commit_duration_seconds_count", &[]);
    assert!(commits >= 1.0, "group commits {commits}");
    assert_eq!(
        m.value(
            "durango_store_group_commit_sync_duration_seconds_count",
            &[]
        ),
        commits
    );
    assert!(m.value("durango_store_group_commit_transactions_sum", &[]) >= commits);
    // Every episode that wrote anything was committed in some group commit.
    let episodes_committed = m.value("durango_store_group_commit_episodes_sum", &[]);
    assert!(
        episodes_committed >= (HELLOS * 4) as f64 && episodes_committed <= episodes,
        "episodes committed {episodes_committed} of {episodes} run"
    );
    assert!(
        m.sum(
            "durango_guest_instantiation_duration_seconds_count",
            &[("role", "orchestrator")]
        ) >= 1.0
    );
    assert!(
        m.sum(
            "durango_guest_instantiation_duration_seconds_count",
            &[("role", "activity")]
        ) >= 1.0
    );
    assert!(m.value("durango_hot_cache_hits_total", &[]) >= 1.0);

    // HTTP requests by route template and status.
    let requests = |method: &str, route: &str, code: &str| {
        m.value(
            "durango_http_requests_total",
            &[("method", method), ("route", route), ("code", code)],
        )
    };
    assert_eq!(
        requests("POST", "/api/orchestrators/{name}", "202"),
        (HELLOS + 2) as f64
    );
    assert!(requests("GET", INSTANCE, "200") >= (HELLOS + 2) as f64);
    assert_eq!(
        requests("POST", &format!("{INSTANCE}/raiseEvent/{{event}}"), "202"),
        1.0
    );
    assert_eq!(
        requests("POST", &format!("{INSTANCE}/{{operation}}"), "202"),
        2.0
    );
    assert_eq!(requests("GET", "/metrics", "401"), 2.0);
    assert!(requests("GET", "/metrics", "200") >= 1.0);

    // No label value anywhere names an instance.
    for sample in &m.samples {
        for (key, value) in &sample.labels {
            for id in &ids {
                assert!(
                    !value.contains(id.as_str()),
                    "{}{{{key}={value:?}}} names instance {id}",
                    sample.name
                );
            }
        }
    }

    // A purged instance leaves the counts.
    let purged = host.call("DELETE", &instance, None);
    assert_eq!(purged.status, 200, "{}", purged.text);
    let after = scrape(&host);
    assert_eq!(
        after.value("durango_instances", &[("status", "Completed")]),
        (HELLOS + 1) as f64
    );
    assert_eq!(
        after.value(
            "durango_http_requests_total",
            &[("method", "DELETE"), ("route", INSTANCE), ("code", "200")]
        ),
        1.0
    );

    // The --metrics-listen address: the same metrics without a key, and
    // nothing else.
    let open = host.metrics_url.clone().expect("a metrics listener");
    let keyless = request("GET", &open, &[], None);
    assert_eq!(keyless.status, 200, "{}", keyless.text);
    let keyless = parse(&keyless.text);
    assert_eq!(
        keyless.value(
            "durango_activity_calls_total",
            &[("function", "E1_SayHello")]
        ),
        (HELLOS * 3) as f64
    );
    let base = open.trim_end_matches("/metrics");
    let elsewhere = request(
        "GET",
        &format!("{base}/runtime/webhooks/durabletask/instances"),
        &[],
        None,
    );
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.text);
    assert!(elsewhere.body["error"].is_string(), "{}", elsewhere.text);
}

#[test]
fn the_parser_in_this_suite_refuses_what_prometheus_would() {
    let good = "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"q\\\"\"} 3\n";
    assert_eq!(parse(good).value("x_total", &[("a", "q\"")]), 3.0);
    for bad in [
        "x_total 1\n",
        "# HELP x A.\n# TYPE x gauge\nx{a=b} 1\n",
        "# HELP x A.\n# TYPE x gauge\nx one\n",
        "# HELP 1x A.\n# TYPE 1x gauge\n1x 1\n",
    ] {
        let caught = std::panic::catch_unwind(|| parse(bad));
        assert!(caught.is_err(), "accepted {bad:?}");
    }
}

#[test]
fn traps_are_counted_by_kind_and_activity_retries_by_function() {
    // A step limit the spin reaches in two seconds, and the overflow long
    // before (it takes microseconds) however slow the machine is.
    let host = Host::start(
        HostOptions::default()
            .arg("--orchestrator-step-ms")
            .arg("2000"),
    );
    let failed = |orchestrator: &str, input: &str| {
        let id = host.start_orchestration(orchestrator, input);
        let status = host.wait_finished(&id);
        assert_eq!(
            status["runtimeStatus"], "Failed",
            "{orchestrator}: {status}"
        );
        id
    };
    let mut ids = vec![
        failed("Panics", "\"on purpose\""),
        failed("Overflows", "100000000"),
        failed("Spins", "null"),
    ];
    // Fails twice, succeeds on the third attempt.
    let retried = host.start_orchestration("Retries", "3");
    assert_eq!(host.wait_finished(&retried)["runtimeStatus"], "Completed");
    ids.push(retried);

    let m = scrape(&host);
    let traps = |kind: &str| m.value("durango_guest_traps_total", &[("kind", kind)]);
    assert_eq!(traps("unreachable"), 1.0, "the panic");
    assert_eq!(traps("stack_overflow"), 1.0);
    assert_eq!(traps("epoch"), 1.0, "the spin stopped at its time limit");
    assert_eq!(traps("memory") + traps("out_of_fuel") + traps("other"), 0.0);
    let of = |name: &str| m.value(name, &[("function", "FailsTwice")]);
    assert_eq!(of("durango_activity_calls_total"), 3.0);
    assert_eq!(of("durango_activity_failures_total"), 2.0);
    assert_eq!(of("durango_activity_retries_total"), 2.0);
    assert_eq!(m.value("durango_instances", &[("status", "Failed")]), 3.0);
    for sample in &m.samples {
        for value in sample.labels.values() {
            assert!(
                !ids.iter().any(|id| value.contains(id.as_str())),
                "{}: {value}",
                sample.name
            );
        }
    }
}

/// The hot cache is bounded by the memory its guests hold, not only by
/// count: with room for two JavaScript interpreters' heaps, six waiting
/// JavaScript instances leave most of them out, the gauge stays within the
/// bound, and every one still completes when raised (one left out is
/// rebuilt from its rows).
#[test]
fn the_hot_cache_holds_no_more_guest_memory_than_allowed() {
    const BUDGET_MB: f64 = 24.0;
    let host = Host::start(
        HostOptions::with_apps(&["test_guests_js"])
            .arg("--hot-memory-mb")
            .arg("24"),
    );
    let ids: Vec<String> = (0..6)
        .map(|_| host.start_orchestration("JsWaitOrTimeout", "null"))
        .collect();
    // Each has run its first episode, and its guest was kept or evicted.
    let m = wait_until("six guests kept or evicted", WAIT, || {
        let m = scrape(&host);
        let kept = m.value("durango_hot_cache_instances", &[]);
        (kept + m.value("durango_hot_cache_evictions_total", &[]) == 6.0).then_some(m)
    });
    let kept = m.value("durango_hot_cache_instances", &[]);
    let bytes = m.value("durango_hot_cache_bytes", &[]);
    assert!(bytes <= BUDGET_MB * 1048576.0, "{bytes} bytes held");
    assert!((1.0..6.0).contains(&kept), "{kept} kept hot");
    // What is counted is the interpreter's heap: megabytes each.
    assert!(bytes / kept > 4.0 * 1048576.0, "{bytes} bytes for {kept}");

    for id in &ids {
        let raised = host.raise(id, "Answer", "true");
        assert_eq!(raised.status, 202, "{}", raised.text);
    }
    for id in &ids {
        let status = host.wait_finished(id);
        assert_eq!(status["runtimeStatus"], "Completed", "{status}");
        assert_eq!(status["output"], json!(true), "{status}");
    }
    let m = scrape(&host);
    assert!(m.value("durango_hot_cache_misses_total", &[]) >= 6.0 - kept);
    assert_eq!(m.value("durango_hot_cache_instances", &[]), 0.0);
    assert_eq!(m.value("durango_hot_cache_bytes", &[]), 0.0);
}
