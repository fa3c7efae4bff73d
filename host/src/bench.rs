//! `durango bench`: measures the engine on this machine. It starts its own
//! host (in process, on a temporary database, the real components) for each
//! scenario and prints a table and one JSON line per scenario. `parked`
//! restarts as `durango serve` in a new process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::sync::broadcast;

use crate::client::{Client, ClientArgs};
use crate::engine::history::{HistoryEvent, Message, RuntimeStatus, Sender};
use crate::host::{Host, HostConfig};
use crate::runtime::GuestLimits;
use crate::settings::Settings;
use crate::signals::Lifecycle;
use crate::store::{now_ms, Durability};

mod toggle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// E1_HelloSequence (3 activities), closed loop.
    Hello,
    /// The same on the JavaScript sample (E1_HelloSequenceJs).
    HelloJs,
    /// The same on the Python sample (E1_HelloSequencePy).
    HelloPy,
    /// A 5-activity chain, closed loop.
    Hello5,
    /// Instances parked on event + timer: some signalled one at a time
    /// (latency), then the rest all at once (burst).
    Interaction,
    /// The same on a JavaScript orchestrator (JsWaitOrTimeout).
    InteractionJs,
    /// The same on a Python orchestrator (PyWaitOrTimeout).
    InteractionPy,
    /// Many timers due within a window.
    Timers,
    /// Cold replay of a long history.
    Replay,
    /// The same on a JavaScript orchestrator (JsCollect).
    ReplayJs,
    /// The same on a Python orchestrator (PyCollect).
    ReplayPy,
    /// Many waiting instances: memory, database size, restart (a new
    /// process).
    Parked,
    /// The same on a JavaScript orchestrator (JsWaitOrTimeout).
    ParkedJs,
    /// A deploy's check: every waiting instance of an app replayed on a
    /// new version of it.
    Check,
}

/// A scenario's orchestrator in one language: `interaction` parks an
/// orchestrator that waits for the event `Answer` against an hour's timer,
/// `replay` one that collects `Tick`s.
struct Variant {
    scenario: &'static str,
    orchestrator: &'static str,
    /// Its app, when not deployed with every run.
    app: Option<&'static str>,
}

impl Variant {
    /// A variant on an orchestrator of the Rust apps every run deploys.
    const fn rust(scenario: &'static str, orchestrator: &'static str) -> Variant {
        Variant {
            scenario,
            orchestrator,
            app: None,
        }
    }

    /// A variant on an orchestrator of the test guests in another language.
    const fn in_app(
        app: &'static str,
        scenario: &'static str,
        orchestrator: &'static str,
    ) -> Variant {
        Variant {
            scenario,
            orchestrator,
            app: Some(app),
        }
    }
}

const RUST_WAIT: Variant = Variant::rust("interaction", "WaitOrTimeout");
const JS_WAIT: Variant = Variant::in_app("test_guests_js", "interaction-js", "JsWaitOrTimeout");
const PY_WAIT: Variant = Variant::in_app("test_guests_py", "interaction-py", "PyWaitOrTimeout");
const RUST_PARKED: Variant = Variant::rust("parked", "WaitOrTimeout");
const JS_PARKED: Variant = Variant::in_app("test_guests_js", "parked-js", "JsWaitOrTimeout");
const RUST_COLLECT: Variant = Variant::rust("replay", "Collect");
const JS_COLLECT: Variant = Variant::in_app("test_guests_js", "replay-js", "JsCollect");
const PY_COLLECT: Variant = Variant::in_app("test_guests_py", "replay-py", "PyCollect");

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Closed-loop concurrency for hello / hello5.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Orchestrations per hello run.
    #[arg(long, default_value_t = 3000)]
    pub orchestrations: usize,
    /// Instances parked for `interaction`.
    #[arg(long, default_value_t = 10_000)]
    pub interaction: usize,
    /// Of those, how many are signalled one at a time to measure latency
    /// (the rest are signalled in one burst).
    #[arg(long, default_value_t = 1000)]
    pub interaction_samples: usize,
    /// Timers for `timers`.
    #[arg(long, default_value_t = 100_000)]
    pub timers: usize,
    /// The window the timers fall due in, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub timer_window_ms: u64,
    /// History length (events) for `replay`.
    #[arg(long, default_value_t = 1000)]
    pub history: usize,
    /// Waiting instances for `parked`.
    #[arg(long, default_value_t = 100_000)]
    pub parked: usize,
    /// Waiting instances for `check`.
    #[arg(long = "check-instances", default_value_t = 10_000)]
    pub check_instances: usize,
    /// Empty the OS page cache (the whole machine's) before `parked`'s
    /// restart, so it reads from the device. Needs root on Linux; without
    /// it the restart reads a warm cache, and the report says so.
    #[arg(long)]
    pub drop_page_cache: bool,
    #[arg(long, value_enum, default_value = "full")]
    pub durability: Durability,
    /// Run on PostgreSQL: a server URL (`postgres://user@host:port/db`);
    /// each scenario gets a fresh database created on that server.
    /// `parked` (which measures the SQLite file) runs on SQLite only.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Hosts sharing the database (PostgreSQL only). With 2, `interaction`
    /// raises every event through the host that does not run the instance.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    pub hosts: u64,
    /// Where the guest components are (hello_sequence.wasm, test_guests.wasm).
    #[arg(
        long,
        env = "DURANGO_WASM_DIR",
        default_value = "target/wasm32-wasip2/guest"
    )]
    pub wasm_dir: PathBuf,
    /// Keep compiled components here (see `durango serve --compile-cache`).
    #[arg(long, env = "DURANGO_COMPILE_CACHE", value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,
    /// Waiting instances each host keeps in memory (`durango serve
    /// --hot-instances`; the replay scenarios keep none).
    #[arg(long, default_value_t = crate::serve::DEFAULT_HOT_INSTANCES)]
    pub hot_instances: usize,
    /// Activities each host runs at once (`durango serve --activity-workers`).
    #[arg(long, default_value_t = 64)]
    pub activity_workers: usize,
    /// Linear memory one guest instance may use, in MiB (`durango serve
    /// --guest-memory-mb`). The host reserves address space for it in every
    /// guest slot up front: with this small and few hot instances and
    /// activity workers, the bench runs where address space is short, as
    /// under valgrind (BENCHMARKS.md counts instructions that way).
    #[arg(long, default_value_t = 256)]
    pub guest_memory_mb: usize,
    /// With traces exported (`OTEL_EXPORTER_OTLP_ENDPOINT`), the
    /// closed-loop scenarios switch them off and on every this many
    /// milliseconds and report the rate in each state: what traces cost,
    /// measured where the machine's slow and fast spells fall on both
    /// states alike (runs of their own move by more than the cost).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub toggle_traces_ms: Option<u64>,
}

/// The system key of the benchmark's hosts.
const BENCH_KEY: &str = "bench";

struct Bench {
    args: BenchArgs,
    dir: PathBuf,
    runs: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    anyhow::ensure!(
        args.toggle_traces_ms.is_none() || crate::trace::exported(),
        "--toggle-traces-ms needs traces exported: set OTEL_EXPORTER_OTLP_ENDPOINT"
    );
    let dir = std::env::temp_dir().join(format!("durango-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut bench = Bench { args, dir, runs: 0 };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Figures are only worth as much as the command that made them.
    let command = std::iter::once("durango".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{command}\ndurango bench: {cores} cores, durability {:?}, concurrency {}",
        bench.args.durability, bench.args.concurrency
    );
    let runs = async {
        for scenario in scenarios {
            let mut report = match scenario {
                Scenario::Hello => bench.closed_loop("E1_HelloSequence", 3, None).await?,
                Scenario::HelloJs => {
                    let app = Some("hello_sequence_js");
                    bench.closed_loop("E1_HelloSequenceJs", 3, app).await?
                }
                Scenario::HelloPy => {
                    let app = Some("hello_sequence_py");
                    bench.closed_loop("E1_HelloSequencePy", 3, app).await?
                }
                Scenario::Hello5 => bench.closed_loop("HelloFive", 5, None).await?,
                Scenario::Interaction => bench.interaction(&RUST_WAIT).await?,
                Scenario::InteractionJs => bench.interaction(&JS_WAIT).await?,
                Scenario::InteractionPy => bench.interaction(&PY_WAIT).await?,
                Scenario::Timers => bench.timers().await?,
                Scenario::Replay => bench.replay(&RUST_COLLECT).await?,
                Scenario::ReplayJs => bench.replay(&JS_COLLECT).await?,
                Scenario::ReplayPy => bench.replay(&PY_COLLECT).await?,
                Scenario::Parked | Scenario::ParkedJs if bench.args.db.is_some() => {
                    println!("parked           runs on SQLite only: skipped");
                    continue;
                }
                Scenario::Parked => bench.parked(&RUST_PARKED).await?,
                Scenario::ParkedJs => bench.parked(&JS_PARKED).await?,
                Scenario::Check => bench.check().await?,
            };
            report["cores"] = json!(cores);
            report["durability"] = json!(format!("{:?}", bench.args.durability).to_lowercase());
            report["command"] = json!(command);
            println!("{}", serde_json::to_string(&report)?);
        }
        anyhow::Ok(())
    };
    // Ctrl-C still removes the databases (the parked scenario's is ~700 MB).
    // Biased: the handler is in place before the first scenario starts.
    let outcome = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        outcome = runs => outcome,
    };
    let _ = std::fs::remove_dir_all(&bench.dir);
    outcome
}

/// A new database on the PostgreSQL server `server` names; its URL.
async fn fresh_database(server: &str, run: usize) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    tokio::spawn(connection);
    let name = format!("durango_bench_{}_{run}", std::process::id());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    // postgres://user@host:port[/db][?params]: the same server, the new db.
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let authority_end = base
        .find("://")
        .and_then(|scheme| base[scheme + 3..].find('/').map(|slash| scheme + 3 + slash))
        .unwrap_or(base.len());
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

/// An external event message.
fn event(name: &str, input: &str) -> Message {
    Message::EventRaised {
        name: name.into(),
        input: input.into(),
        sender: Sender::SystemKey,
    }
}

/// p50, p99 and max of `samples`, in milliseconds.
fn percentiles(samples: &mut [f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99), samples[samples.len() - 1])
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A database's files: itself and its WAL.
fn db_files(db: &Path) -> [PathBuf; 2] {
    ["", "-wal"].map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
}

fn file_mb(db: &Path) -> f64 {
    db_files(db)
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .sum()
}

impl Bench {
    async fn host(&mut self, hot_instances: usize) -> anyhow::Result<(Arc<Host>, String)> {
        self.runs += 1;
        let db = match &self.args.db {
            Some(server) => fresh_database(server, self.runs).await?,
            None => self
                .dir
                .join(format!("bench-{}.db", self.runs))
                .display()
                .to_string(),
        };
        let host = self.open(&db, hot_instances).await?;
        for app in ["hello_sequence", "test_guests"] {
            self.deploy(&host, app).await?;
        }
        Ok((host, db))
    }

    async fn deploy(&self, host: &Host, app: &str) -> anyhow::Result<()> {
        let path = self.args.wasm_dir.join(format!("{app}.wasm"));
        let wasm = std::fs::read(&path)
            .with_context(|| format!("cannot read {} (run `make guests`)", path.display()))?;
        host.deploy(app, &wasm, None)
            .await
            .map_err(|e| anyhow::anyhow!("deploy {app}: {e}"))?;
        Ok(())
    }

    async fn open(&self, db: &str, hot_instances: usize) -> anyhow::Result<Arc<Host>> {
        Host::start(HostConfig {
            db: db.to_string(),
            durability: self.args.durability,
            settings: Settings::default(),
            limits: GuestLimits {
                memory_bytes: self.args.guest_memory_mb << 20,
                ..GuestLimits::default()
            },
            hot_instances,
            hot_bytes: crate::serve::DEFAULT_HOT_MEMORY_MB << 20,
            activity_workers: self.args.activity_workers,
            timer_horizon: Duration::from_secs(600),
            lease: Duration::from_secs(5),
            key: Some(BENCH_KEY.into()),
            notify_urls: Vec::new(),
            notify_secret: Some("bench".into()),
            public_url: "http://127.0.0.1".into(),
            compile_cache: self.args.compile_cache.clone(),
        })
        .await
    }

    /// A second host on `first`'s database, once the partitions are shared
    /// out between the two.
    async fn second_host(&self, first: &Arc<Host>, db: &str) -> anyhow::Result<Arc<Host>> {
        anyhow::ensure!(self.args.db.is_some(), "--hosts 2 needs --db postgres://…");
        let second = self.open(db, self.args.hot_instances).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while first.partitions_held() == 0 || second.partitions_held() == 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the hosts did not share the partitions"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(second)
    }

    /// `concurrency` clients, each starting an orchestration and waiting for
    /// it to complete, until `orchestrations` have run.
    /// `app`, when given, is deployed too (before the clock starts).
    async fn closed_loop(
        &mut self,
        orchestrator: &str,
        activities: usize,
        app: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let (host, _) = self.host(self.args.hot_instances).await?;
        if let Some(app) = app {
            self.deploy(&host, app).await?;
        }
        let total = self.args.orchestrations;
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (commits_before, carried_before) = host.metrics.store.group_commits();
        let started = Instant::now();
        let toggled = self.args.toggle_traces_ms.map(|ms| {
            let phase = Duration::from_millis(ms);
            // Phases that end once fewer than `concurrency` remain are
            // the run winding down, not the state's rate.
            let last = total.saturating_sub(self.args.concurrency);
            tokio::spawn(toggle::toggle_traces(phase, done.clone(), last))
        });
        let mut clients = Vec::new();
        for client in 0..self.args.concurrency {
            let (host, next, finished) = (host.clone(), next.clone(), done.clone());
            let orchestrator = orchestrator.to_string();
            clients.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let id = format!("c{client}-{}", latencies.len());
                    let t0 = Instant::now();
                    host.start_instance(&orchestrator, id.clone(), "null".into(), None, None)
                        .await
                        .map_err(|e| anyhow::anyhow!("start: {e:?}"))?;
                    let done = host.wait_finished(&id, Duration::from_secs(120)).await?;
                    anyhow::ensure!(
                        done.is_some_and(|r| r.status == RuntimeStatus::Completed),
                        "{id} did not complete"
                    );
                    latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for client in clients {
            latencies.extend(client.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (p50, p99, max) = percentiles(&mut latencies);
        let rate = latencies.len() as f64 / elapsed;
        let (commits_after, carried_after) = host.metrics.store.group_commits();
        let commits = commits_after - commits_before;
        let per_commit = (carried_after - carried_before) as f64 / commits.max(1) as f64;
        println!(
            "{orchestrator:<16} {activities} activities  {:>7.0} orchestrations/s  p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms  ({} in {elapsed:.1} s, concurrency {}; {commits} group commits, {per_commit:.1} transactions each)",
            rate,
            latencies.len(),
            self.args.concurrency
        );
        let mut report = json!({"scenario": orchestrator, "activities": activities, "orchestrations": latencies.len(),
                  "per_second": rate, "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                  "concurrency": self.args.concurrency, "group_commits": commits,
                  "transactions_per_commit": per_commit});
        if let Some(toggled) = toggled {
            let (line, traces) = toggled.await?.report();
            println!("  {line}");
            report["traces_toggled"] = traces;
        }
        Ok(report)
    }

    /// Starts `count` instances `id(i)` of `orchestrator` with `input(i)`,
    /// 512 at a time. Ids are made as needed: holding a million of them
    /// would weigh on the RSS the `parked` scenario measures.
    async fn start_many(
        host: &Arc<Host>,
        orchestrator: &str,
        count: usize,
        id: impl Fn(usize) -> String,
        input: impl Fn(usize) -> String,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        for first in (0..count).step_by(512) {
            let mut starts = Vec::new();
            for i in first..(first + 512).min(count) {
                let (host, id, orch) = (host.clone(), id(i), orchestrator.to_string());
                let input = input(i);
                starts.push(tokio::spawn(async move {
                    host.start_instance(&orch, id, input, None, None).await
                }));
            }
            for start in starts {
                start.await?.map_err(|e| anyhow::anyhow!("start: {e:?}"))?;
            }
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }

    async fn wait_count(
        host: &Arc<Host>,
        status: RuntimeStatus,
        count: usize,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while host.store.count_instances(status).await? < count {
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {count} {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// When each of the instances reached a terminal status (milliseconds
    /// since the epoch), collected from the lifecycle announcements.
    fn completions(
        host: &Arc<Host>,
        expected: usize,
    ) -> tokio::task::JoinHandle<HashMap<String, i64>> {
        let mut changes: broadcast::Receiver<Lifecycle> = host.subscribe();
        tokio::spawn(async move {
            let mut done = HashMap::new();
            while done.len() < expected {
                match changes.recv().await {
                    Ok(change) if change.status.is_terminal() => {
                        done.insert(change.instance_id, now_ms());
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            done
        })
    }

    async fn interaction(&mut self, waiter: &Variant) -> anyhow::Result<serde_json::Value> {
        let n = self.args.interaction;
        let (host, db) = self.host(self.args.hot_instances).await?;
        if let Some(app) = waiter.app {
            self.deploy(&host, app).await?;
        }
        // With a second host, each event goes through the host that does
        // not run its instance: commit there, NOTIFY, the owner wakes.
        let other = match self.args.hosts {
            2 => Some(self.second_host(&host, &db).await?),
            _ => None,
        };
        let through = |id: &str| -> Arc<Host> {
            match &other {
                Some(other) if host.runs(id) => other.clone(),
                Some(_) => host.clone(),
                None => host.clone(),
            }
        };
        let ids: Vec<String> = (0..n).map(|i| format!("wait-{i}")).collect();
        let start_rate = Self::start_many(
            &host,
            waiter.orchestrator,
            n,
            |i| ids[i].clone(),
            |_| "null".into(),
        )
        .await?;
        Self::wait_count(&host, RuntimeStatus::Running, n).await?;
        // Latency: one signal at a time, spread over the parked instances
        // (most of them cold: the hot cache holds 1,024).
        let samples = self.args.interaction_samples.min(n);
        let step = (n / samples.max(1)).max(1);
        let sampled: Vec<&String> = ids.iter().step_by(step).take(samples).collect();
        let mut latencies = Vec::new();
        for id in &sampled {
            let t0 = Instant::now();
            let raiser = through(id);
            raiser.send(id, event("Answer", "1")).await?;
            let done = raiser.wait_finished(id, Duration::from_secs(60)).await?;
            anyhow::ensure!(done.is_some(), "{id} did not finish");
            latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99, max) = percentiles(&mut latencies);
        // Burst: every other instance signalled at once.
        let rest: Vec<&String> = ids.iter().filter(|id| !sampled.contains(id)).collect();
        // Completions are announced on the host that runs each instance.
        let mine = rest.iter().filter(|id| host.runs(id)).count();
        let completions = Self::completions(&host, mine);
        let elsewhere = other
            .as_ref()
            .map(|other| Self::completions(other, rest.len() - mine));
        let mut raised_at = HashMap::new();
        let burst = Instant::now();
        let mut raises = Vec::new();
        for id in &rest {
            raised_at.insert(id.to_string(), now_ms());
            let (host, id) = (through(id), id.to_string());
            raises.push(tokio::spawn(async move {
                host.send(&id, event("Answer", "1")).await
            }));
        }
        for raise in raises {
            raise.await??;
        }
        let mut done = completions.await?;
        if let Some(elsewhere) = elsewhere {
            done.extend(elsewhere.await?);
        }
        let elapsed = burst.elapsed().as_secs_f64();
        let mut burst_latencies: Vec<f64> = done
            .iter()
            .filter_map(|(id, at)| raised_at.get(id).map(|r| (at - r) as f64))
            .collect();
        let (burst_p50, burst_p99, _) = percentiles(&mut burst_latencies);
        let rate = done.len() as f64 / elapsed;
        let hosts = self.args.hosts;
        println!(
            "{:<16} {n} parked on {hosts} host(s): one signal at a time ({} samples): raise-to-Completed p50 {p50:.2} ms  p99 {p99:.2} ms  max {max:.1} ms; burst of {}: {rate:>7.0} completions/s, p50 {burst_p50:.0} ms  p99 {burst_p99:.0} ms  (started {start_rate:.0}/s)",
            waiter.scenario,
            latencies.len(),
            done.len()
        );
        Ok(
            json!({"scenario": waiter.scenario, "hosts": hosts, "parked": n, "samples": latencies.len(), "p50_ms": p50,
                  "p99_ms": p99, "max_ms": max, "burst": done.len(), "burst_completions_per_second": rate,
                  "burst_p50_ms": burst_p50, "burst_p99_ms": burst_p99, "start_per_second": start_rate}),
        )
    }

    async fn timers(&mut self) -> anyhow::Result<serde_json::Value> {
        let n = self.args.timers;
        let (host, _) = self.host(self.args.hot_instances).await?;
        let window_ms = self.args.timer_window_ms as i64;
        // Far enough ahead that every start is committed before the first
        // timer falls due.
        let lead_ms = 5000 + (n as i64) / 2;
        let base = now_ms() + lead_ms;
        let ids: Vec<String> = (0..n).map(|i| format!("timer-{i}")).collect();
        let fire_at: Vec<i64> = (0..n)
            .map(|i| base + (i as i64 * window_ms) / n as i64)
            .collect();
        let completions = Self::completions(&host, n);
        let start_rate = Self::start_many(
            &host,
            "SleepUntil",
            n,
            |i| ids[i].clone(),
            |i| fire_at[i].to_string(),
        )
        .await?;
        let late_start = now_ms() > base;
        let done = completions.await?;
        let index: HashMap<&String, i64> = ids.iter().zip(fire_at.iter().copied()).collect();
        // Signed: a timer that fired early shows as such.
        let mut lateness: Vec<f64> = done
            .iter()
            .filter_map(|(id, at)| index.get(id).map(|due| (at - due) as f64))
            .collect();
        let early: Vec<f64> = lateness.iter().filter(|l| **l < 0.0).map(|l| -l).collect();
        let (earliest, early) = (early.iter().copied().fold(0.0, f64::max), early.len());
        let (p50, p99, max) = percentiles(&mut lateness);
        println!(
            "timers           {n} due within {window_ms} ms: lateness p50 {p50:.0} ms  p99 {p99:.0} ms  max {max:.0} ms; {early} early (by up to {earliest:.0} ms)  (started {start_rate:.0}/s{})",
            if late_start { "; some starts were later than their timers" } else { "" }
        );
        Ok(
            json!({"scenario": "timers", "timers": n, "window_ms": window_ms, "p50_ms": p50, "p99_ms": p99,
                  "max_ms": max, "early": early, "earliest_ms": earliest, "start_per_second": start_rate}),
        )
    }

    async fn replay(&mut self, collector: &Variant) -> anyhow::Result<serde_json::Value> {
        // No hot instances: every episode rebuilds the guest from history.
        let (host, _) = self.host(0).await?;
        if let Some(app) = collector.app {
            self.deploy(&host, app).await?;
        }
        // The first episode records the start, the episode, each setting
        // read and the first wait; a tick consumed in an episode of its own
        // adds three (the episode, the event, the next wait). So, sent one
        // at a time, the ticks before the last make the history it replays
        // 3 × ticks + reads long: `events` (checked below).
        let events = self.args.history.max(3);
        let (ticks, reads) = (events / 3, events % 3);
        let mut samples = Vec::new();
        for run in 0..5 {
            let id = format!("replay-{run}");
            let input = json!([ticks, reads]).to_string();
            host.start_instance(collector.orchestrator, id.clone(), input, None, None)
                .await
                .map_err(|e| anyhow::anyhow!("start: {e:?}"))?;
            let mut history_len = 0;
            for raised in 0..ticks {
                history_len = Self::wait_raised(&host, &id, raised).await?;
                if raised < ticks - 1 {
                    host.send(&id, event("Tick", "null")).await?;
                }
            }
            anyhow::ensure!(
                history_len == events,
                "the history to replay is {history_len} events, not {events}"
            );
            let t0 = Instant::now();
            host.send(&id, event("Tick", "null")).await?;
            host.wait_finished(&id, Duration::from_secs(60)).await?;
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, _, max) = percentiles(&mut samples);
        println!(
            "{:<16} {events}-event history: cold resume to Completed p50 {p50:.1} ms  max {max:.1} ms (5 runs)",
            collector.scenario
        );
        Ok(
            json!({"scenario": collector.scenario, "history_events": events, "p50_ms": p50, "max_ms": max}),
        )
    }

    /// Waits until `id`'s history holds `count` raised events and the wait
    /// for the next; returns its length.
    async fn wait_raised(host: &Arc<Host>, id: &str, count: usize) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let history = host.store.history(id.to_string()).await?;
            let raised = history
                .iter()
                .filter(|e| matches!(e, HistoryEvent::EventRaised { .. }))
                .count();
            // An episode that consumed an event ends waiting for the next.
            let waiting = matches!(history.last(), Some(HistoryEvent::ActionTaken { .. }));
            if raised == count && waiting {
                return Ok(history.len());
            }
            anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {id}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn check(&mut self) -> anyhow::Result<serde_json::Value> {
        let (host, _) = self.host(self.args.hot_instances).await?;
        let n = self.args.check_instances;
        Self::start_many(
            &host,
            "WaitOrTimeout",
            n,
            |i| format!("check-{i}"),
            |_| "null".into(),
        )
        .await?;
        Self::wait_count(&host, RuntimeStatus::Running, n).await?;
        // The same code under a new digest (a custom section appended), so
        // every instance is replayed, and every one is compatible.
        let path = self.args.wasm_dir.join("test_guests.wasm");
        let mut wasm = std::fs::read(&path)
            .with_context(|| format!("cannot read {} (run `make guests`)", path.display()))?;
        wasm.extend_from_slice(&[0x00, 0x06, 0x05, b'b', b'e', b'n', b'c', b'h']);
        let t0 = Instant::now();
        host.runtime
            .compile(&wasm, None)
            .await
            .map_err(anyhow::Error::msg)?;
        let compile = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let report = host
            .check_deploy("test_guests", &wasm)
            .await
            .map_err(|e| anyhow::anyhow!("check: {e}"))?;
        let total = t0.elapsed().as_secs_f64();
        anyhow::ensure!(
            report.unfinished == n && report.compatible == n,
            "the check saw {} unfinished, {} compatible, of {n} waiting",
            report.unfinished,
            report.compatible
        );
        println!(
            "check            {n} waiting instances replayed on a new version: {total:.2} s in all ({:.0} instances/s), of which compiling the component {compile:.2} s",
            n as f64 / total
        );
        Ok(
            json!({"scenario": "check", "instances": n, "seconds": total, "compile_seconds": compile,
                  "per_second": n as f64 / total}),
        )
    }

    async fn parked(&mut self, waiter: &Variant) -> anyhow::Result<serde_json::Value> {
        // The hot cache as `durango serve` runs it (`--hot-instances`).
        let (host, db) = self.host(self.args.hot_instances).await?;
        if let Some(app) = waiter.app {
            self.deploy(&host, app).await?;
        }
        let db = PathBuf::from(db);
        let n = self.args.parked;
        let rss_before = rss_mb();
        let id = |i: usize| format!("parked-{i}");
        let start_rate =
            Self::start_many(&host, waiter.orchestrator, n, id, |_| "null".into()).await?;
        Self::wait_count(&host, RuntimeStatus::Running, n).await?;
        let rss = rss_mb();
        let db_mb = file_mb(&db);
        // A restart: `durango serve` in a new process on the same file (this
        // process's host stays open on it, idle). How long until it answers,
        // and until a parked instance raised through it has completed.
        let cold = self.args.drop_page_cache
            && drop_page_cache(&db)
                .map_err(|e| eprintln!("durango bench: cannot drop the page cache: {e}"))
                .is_ok();
        let t0 = Instant::now();
        let served = Served::start(&db, self.args.durability)?;
        served.answer(&id(0)).await?;
        let ready_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let first_ms = served.raise_and_time(&id(0)).await?;
        let last_ms = served.raise_and_time(&id(n - 1)).await?;
        drop(served);
        let cache = if cold {
            "page cache dropped"
        } else {
            "page cache warm"
        };
        println!(
            "{:<16} {n} waiting: RSS {rss:.0} MB (was {rss_before:.0} MB before)  database {db_mb:.0} MB  started {start_rate:.0}/s  restart in a new process ({cache}): answers in {ready_ms:.0} ms, first answered in {first_ms:.1} ms, last in {last_ms:.1} ms",
            waiter.scenario
        );
        Ok(
            json!({"scenario": waiter.scenario, "parked": n, "rss_mb": rss, "rss_before_mb": rss_before, "db_mb": db_mb,
                  "start_per_second": start_rate, "restart_cold_cache": cold, "restart_ready_ms": ready_ms,
                  "first_answer_ms": first_ms, "last_answer_ms": last_ms}),
        )
    }
}

/// Empties the OS page cache (Linux, as root), so a restart reads the
/// database from the device.
fn drop_page_cache(db: &Path) -> std::io::Result<()> {
    // Dirty pages are not dropped: write the database's out first.
    for file in db_files(db) {
        if let Ok(file) = std::fs::File::open(file) {
            file.sync_all()?;
        }
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1")
}

/// `durango serve` on a benchmark database, in a process of its own; killed
/// when dropped.
struct Served {
    child: std::process::Child,
    client: Client,
    /// Its standard output, kept open: a host whose `println!` met a closed
    /// pipe would panic.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Served {
    /// Starts it and waits for the address it listens on.
    fn start(db: &Path, durability: Durability) -> anyhow::Result<Served> {
        let durability = durability.to_possible_value().expect("no skipped values");
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--durability"])
            .arg(durability.get_name())
            .arg("--db")
            .arg(db)
            .env("DURANGO_KEY", BENCH_KEY)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start durango serve")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let url = loop {
            line.clear();
            if std::io::BufRead::read_line(&mut stdout, &mut line)? == 0 {
                let _ = child.kill();
                anyhow::bail!("durango serve exited: {}", child.wait()?);
            }
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                break url.to_string();
            }
        };
        let client = Client::new(&ClientArgs {
            url,
            key: Some(BENCH_KEY.into()),
        })?;
        Ok(Served {
            child,
            client,
            _stdout: stdout,
        })
    }

    /// Waits until it answers `id`'s status; returns the runtime status.
    async fn answer(&self, id: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.client.status(id, false)?;
            // 202 while it runs, as in Durable Functions.
            if matches!(answer.status, 200 | 202) {
                return Ok(answer.body["runtimeStatus"].as_str().unwrap_or("").into());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{id} did not answer: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Raises `Answer` on a parked instance, waiting for its effect (the
    /// raise's `timeout`); how long, in milliseconds, until it answered
    /// Completed.
    async fn raise_and_time(&self, id: &str) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let raised = self.client.raise(id, "Answer", Some("1"), Some(60.0))?;
        anyhow::ensure!(
            raised.status == 200 && raised.body["runtimeStatus"] == "Completed",
            "raise {id}: {} {}",
            raised.status,
            raised.body
        );
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
