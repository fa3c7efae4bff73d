//! The host's Prometheus metrics: one registry and the handles the parts
//! record on, through small named methods. The parts call down into this
//! module; it calls nothing back. Recording is cheap: a counter is an
//! atomic add, a histogram an uncontended lock around a few adds; only the
//! per-function and per-route families look their label set up (a read
//! lock and a hash, no allocation once the set exists).
//!
//! What only the store or the scheduler knows (instances by status, timers
//! pending, the hot cache's size, the inbox depth) is not kept here: the
//! scrape reads it and hands it to `encode` as a `Snapshot`.
//!
//! No label holds an instance id: labels are a status, a function name
//! (bounded by the deployed apps, and capped here), a trap kind, a route
//! template and an HTTP status code.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::engine::history::RuntimeStatus;

/// The `Content-Type` of what `encode` returns (Prometheus text, 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Most distinct function names labelled; calls of any further one count
/// under `other` (a guest may ask for activities by any name).
const MAX_FUNCTIONS: usize = 512;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabel {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExportLabel {
    export: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrapLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    method: String,
    route: String,
    code: u16,
}

/// Which kind of guest was instantiated or reused.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Orchestrator,
    Activity,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Activity => "activity",
        }
    }
}

/// Which export of an orchestrator guest the host called.
#[derive(Clone, Copy, Debug)]
pub enum OrchestratorExport {
    Start,
    Resume,
}

impl OrchestratorExport {
    const ALL: [OrchestratorExport; 2] = [OrchestratorExport::Start, OrchestratorExport::Resume];

    fn as_str(self) -> &'static str {
        match self {
            OrchestratorExport::Start => "start",
            OrchestratorExport::Resume => "resume",
        }
    }
}

/// Why a guest stopped with a trap (a bounded set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapKind {
    /// Ran past its time limit (epoch interruption).
    Epoch,
    OutOfFuel,
    /// Out-of-bounds memory or table access, misaligned access.
    Memory,
    StackOverflow,
    /// `unreachable`: what a Rust guest's panic ends in.
    Unreachable,
    Other,
}

impl TrapKind {
    const ALL: [TrapKind; 6] = [
        TrapKind::Epoch,
        TrapKind::OutOfFuel,
        TrapKind::Memory,
        TrapKind::StackOverflow,
        TrapKind::Unreachable,
        TrapKind::Other,
    ];

    fn as_str(self) -> &'static str {
        match self {
            TrapKind::Epoch => "epoch",
            TrapKind::OutOfFuel => "out_of_fuel",
            TrapKind::Memory => "memory",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Unreachable => "unreachable",
            TrapKind::Other => "other",
        }
    }
}

/// The group-commit histograms, handed to the store's writers.
#[derive(Clone)]
pub struct StoreMetrics {
    transactions: Histogram,
    episodes: Histogram,
    commit: Histogram,
    sync: Histogram,
    /// Running totals a process can read (the histograms only encode).
    totals: Arc<GroupCommitTotals>,
}

#[derive(Default)]
struct GroupCommitTotals {
    commits: AtomicU64,
    transactions: AtomicU64,
}

impl StoreMetrics {
    /// Handles that record into nothing anyone reads (a store opened
    /// outside a host, as the CLI and tests do).
    pub fn unregistered() -> StoreMetrics {
        StoreMetrics {
            transactions: Histogram::new(batch_buckets()),
            episodes: Histogram::new(batch_buckets()),
            commit: Histogram::new(latency_buckets()),
            sync: Histogram::new(latency_buckets()),
            totals: Arc::default(),
        }
    }

    /// A group commit of `transactions` logical transactions, `episodes`
    /// of them episode commits, took `total` (from BEGIN to the end of
    /// COMMIT), of which `sync` in the COMMIT.
    pub fn group_commit(
        &self,
        transactions: usize,
        episodes: usize,
        total: Duration,
        sync: Duration,
    ) {
        self.transactions.observe(transactions as f64);
        self.episodes.observe(episodes as f64);
        self.commit.observe(total.as_secs_f64());
        self.sync.observe(sync.as_secs_f64());
        self.totals.commits.fetch_add(1, Ordering::Relaxed);
        self.totals
            .transactions
            .fetch_add(transactions as u64, Ordering::Relaxed);
    }

    /// Group commits so far, and the logical transactions they carried.
    pub fn group_commits(&self) -> (u64, u64) {
        (
            self.totals.commits.load(Ordering::Relaxed),
            self.totals.transactions.load(Ordering::Relaxed),
        )
    }
}

/// What the scrape reads from the store and the scheduler.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub instances: Vec<(RuntimeStatus, u64)>,
    pub timers_pending: usize,
    pub hot_cache_size: usize,
    /// The linear memory of the hot instances' guests.
    pub hot_cache_bytes: usize,
    pub inbox_depth: usize,
}

pub struct Metrics {
    registry: Registry,
    episodes: Counter,
    episode_seconds: Histogram,
    pub store: StoreMetrics,
    activity_calls: Family<FunctionLabel, Counter>,
    /// Function labels made so far (see `MAX_FUNCTIONS`).
    functions: AtomicUsize,
    activity_failures: Family<FunctionLabel, Counter>,
    activity_retries: Family<FunctionLabel, Counter>,
    activity_seconds: Family<FunctionLabel, Histogram>,
    timers_fired: Counter,
    timer_lateness: Histogram,
    hot_hits: Counter,
    hot_misses: Counter,
    hot_evictions: Counter,
    instantiations: Family<RoleLabel, Histogram>,
    reuses: Family<RoleLabel, Counter>,
    orchestrator_calls: Family<ExportLabel, Counter>,
    traps: Family<TrapLabel, Counter>,
    http_requests: Family<RequestLabel, Counter>,
    http_seconds: Family<RouteLabel, Histogram>,
    // Read at scrape time (see `Snapshot`).
    instances: Family<StatusLabel, Gauge>,
    timers_pending: Gauge,
    hot_size: Gauge,
    hot_bytes: Gauge,
    inbox_depth: Gauge,
}

/// Latencies from 100 µs to ~26 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 19)
}

/// Transactions (or episodes) per group commit: 0, then 1 to 512,
/// doubling (the writers' most).
fn batch_buckets() -> impl Iterator<Item = f64> {
    std::iter::once(0.0).chain(exponential_buckets(1.0, 2.0, 10))
}

/// Timer lateness, from 1 ms to ~65 s, doubling.
fn lateness_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("durango");
        let seconds = || Histogram::new(latency_buckets());
        let metrics = Metrics {
            episodes: Counter::default(),
            episode_seconds: seconds(),
            store: StoreMetrics::unregistered(),
            activity_calls: Family::default(),
            functions: AtomicUsize::new(0),
            activity_failures: Family::default(),
            activity_retries: Family::default(),
            activity_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            timers_fired: Counter::default(),
            timer_lateness: Histogram::new(lateness_buckets()),
            hot_hits: Counter::default(),
            hot_misses: Counter::default(),
            hot_evictions: Counter::default(),
            instantiations: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            reuses: Family::default(),
            orchestrator_calls: Family::default(),
            traps: Family::default(),
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            instances: Family::default(),
            timers_pending: Gauge::default(),
            hot_size: Gauge::default(),
            hot_bytes: Gauge::default(),
            inbox_depth: Gauge::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "instances",
            "Instances in the database, by runtime status",
            m.instances.clone(),
        );
        r.register(
            "episodes",
            "Episodes run (an instance's guest run over new messages, then committed)",
            m.episodes.clone(),
        );
        r.register_with_unit(
            "episode_duration",
            "Time from an episode's start to its commit being queued: reads, a cold instance's replay and the guest's run",
            Unit::Seconds,
            m.episode_seconds.clone(),
        );
        r.register(
            "store_group_commit_transactions",
            "Logical transactions (episode commits, enqueued messages, fired timers, ...) per database commit",
            m.store.transactions.clone(),
        );
        r.register(
            "store_group_commit_episodes",
            "Episode commits per database commit",
            m.store.episodes.clone(),
        );
        r.register_with_unit(
            "store_group_commit_duration",
            "Time of one group commit, from BEGIN to the end of COMMIT",
            Unit::Seconds,
            m.store.commit.clone(),
        );
        r.register_with_unit(
            "store_group_commit_sync_duration",
            "Time of a group commit's COMMIT: writing and syncing the WAL on SQLite, the COMMIT round trip (the server's WAL flush) on PostgreSQL",
            Unit::Seconds,
            m.store.sync.clone(),
        );
        r.register(
            "activity_calls",
            "Activity attempts run, by function",
            m.activity_calls.clone(),
        );
        r.register(
            "activity_failures",
            "Activity attempts that failed, by function (retried or not)",
            m.activity_failures.clone(),
        );
        r.register(
            "activity_retries",
            "Failed activity attempts that will be tried again, by function",
            m.activity_retries.clone(),
        );
        r.register_with_unit(
            "activity_duration",
            "Time of one activity attempt, by function",
            Unit::Seconds,
            m.activity_seconds.clone(),
        );
        r.register(
            "timers_pending",
            "Durable timers held in memory to fire (those due within the timer horizon; later ones wait in the database)",
            m.timers_pending.clone(),
        );
        r.register(
            "timers_fired",
            "Durable timers fired",
            m.timers_fired.clone(),
        );
        r.register_with_unit(
            "timer_lateness",
            "How long after its due time a timer fired",
            Unit::Seconds,
            m.timer_lateness.clone(),
        );
        r.register(
            "inbox_events",
            "External events raised through this host since it started that no committed episode has taken in yet (e.g. held while their instance is suspended)",
            m.inbox_depth.clone(),
        );
        r.register(
            "hot_cache_instances",
            "Waiting instances kept in memory (the hot cache)",
            m.hot_size.clone(),
        );
        r.register_with_unit(
            "hot_cache",
            "Linear memory the guests of the hot instances hold (bounded by --hot-memory-mb)",
            Unit::Bytes,
            m.hot_bytes.clone(),
        );
        r.register(
            "hot_cache_hits",
            "Rounds that found their instance in the hot cache",
            m.hot_hits.clone(),
        );
        r.register(
            "hot_cache_misses",
            "Rounds that had to rebuild their instance from the database",
            m.hot_misses.clone(),
        );
        r.register(
            "hot_cache_evictions",
            "Instances evicted from the hot cache to make room",
            m.hot_evictions.clone(),
        );
        r.register_with_unit(
            "guest_instantiation_duration",
            "Time to instantiate a guest component, by role (orchestrator, activity)",
            Unit::Seconds,
            m.instantiations.clone(),
        );
        r.register(
            "guest_reuses",
            "Guests used again instead of instantiated, by role: an activity guest for its next call, an orchestrator guest whose orchestration ended for another (when its app allows it)",
            m.reuses.clone(),
        );
        r.register(
            "orchestrator_calls",
            "Calls into orchestrator guests, by export: a start (a new instance's, or the replay of a cold one's history) or a resume (after an event the guest may act on; a guest that takes a replay by `advance` needs none for its history)",
            m.orchestrator_calls.clone(),
        );
        r.register(
            "guest_traps",
            "Guest calls that ended in a trap, by kind (epoch, out_of_fuel, memory, stack_overflow, unreachable, other)",
            m.traps.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by method and route template",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        // The bounded label sets start at 0, so rates see their first event.
        for kind in TrapKind::ALL {
            let _ = metrics.traps.get_or_create(&TrapLabel {
                kind: kind.as_str(),
            });
        }
        for export in OrchestratorExport::ALL {
            let _ = metrics.orchestrator_calls.get_or_create(&ExportLabel {
                export: export.as_str(),
            });
        }
        for role in [Role::Orchestrator, Role::Activity] {
            let role = role.as_str();
            let _ = metrics.instantiations.get_or_create(&RoleLabel { role });
            let _ = metrics.reuses.get_or_create(&RoleLabel { role });
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// An episode ran; `took` from its round's start to its commit queued.
    pub fn episode(&self, took: Duration) {
        self.episodes.inc();
        self.episode_seconds.observe(took.as_secs_f64());
    }

    /// A round looked its instance up in the hot cache.
    pub fn hot_cache_lookup(&self, hit: bool) {
        if hit {
            self.hot_hits.inc();
        } else {
            self.hot_misses.inc();
        }
    }

    pub fn hot_cache_evictions(&self, count: usize) {
        self.hot_evictions.inc_by(count as u64);
    }

    /// One attempt of activity `function` ended after `took`: `Ok`, or
    /// failed (and `retried`, or not).
    pub fn activity_attempt(&self, function: &str, took: Duration, failed: bool, retried: bool) {
        let label = self.function_label(function);
        self.activity_calls.get_or_create(&label).inc();
        self.activity_seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        // Made (at 0) with the function's first call, so that a failure
        // ratio has both sides from the start.
        self.activity_failures
            .get_or_create(&label)
            .inc_by(u64::from(failed));
        self.activity_retries
            .get_or_create(&label)
            .inc_by(u64::from(retried));
    }

    fn function_label(&self, function: &str) -> FunctionLabel {
        let mut label = FunctionLabel {
            function: function.to_string(),
        };
        let new = self.activity_calls.get(&label).is_none();
        if new && self.functions.fetch_add(1, Ordering::Relaxed) >= MAX_FUNCTIONS {
            label.function = "other".to_string();
        }
        label
    }

    /// A durable timer fired `late` after its due time.
    pub fn timer_fired(&self, late: Duration) {
        self.timers_fired.inc();
        self.timer_lateness.observe(late.as_secs_f64());
    }

    pub fn guest_instantiated(&self, role: Role, took: Duration) {
        self.instantiations
            .get_or_create(&RoleLabel {
                role: role.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn guest_reused(&self, role: Role) {
        self.reuses
            .get_or_create(&RoleLabel {
                role: role.as_str(),
            })
            .inc();
    }

    pub fn orchestrator_called(&self, export: OrchestratorExport) {
        self.orchestrator_calls
            .get_or_create(&ExportLabel {
                export: export.as_str(),
            })
            .inc();
    }

    pub fn guest_trapped(&self, kind: TrapKind) {
        self.traps
            .get_or_create(&TrapLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// An HTTP request to `route` (a route template, never a raw path)
    /// was answered `code` after `took`.
    pub fn http_request(&self, method: &str, route: &str, code: u16, took: Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        self.http_seconds
            .get_or_create(&RouteLabel {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.http_requests
            .get_or_create(&RequestLabel {
                method,
                route,
                code,
            })
            .inc();
    }

    /// The metrics in the Prometheus text format, with `snapshot`'s values
    /// for what is read at scrape time.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        for (status, count) in &snapshot.instances {
            self.instances
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(*count as i64);
        }
        self.timers_pending.set(snapshot.timers_pending as i64);
        self.hot_size.set(snapshot.hot_cache_size as i64);
        self.hot_bytes.set(snapshot.hot_cache_bytes as i64);
        self.inbox_depth.set(snapshot.inbox_depth as i64);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_the_snapshot_is_shown() {
        let metrics = Metrics::new();
        metrics.episode(Duration::from_millis(2));
        metrics.activity_attempt("SayHello", Duration::from_millis(1), false, false);
        metrics.http_request(
            "GET",
            "/runtime/webhooks/durabletask/instances/{id}",
            200,
            Duration::from_millis(1),
        );
        metrics.guest_trapped(TrapKind::Epoch);
        let text = metrics.encode(&Snapshot {
            instances: vec![(RuntimeStatus::Completed, 3)],
            timers_pending: 2,
            ..Snapshot::default()
        });
        for line in [
            "durango_episodes_total 1",
            "durango_episode_duration_seconds_count 1",
            "durango_activity_calls_total{function=\"SayHello\"} 1",
            "durango_instances{status=\"Completed\"} 3",
            "durango_timers_pending 2",
            "durango_guest_traps_total{kind=\"epoch\"} 1",
            "# TYPE durango_http_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn function_labels_are_capped() {
        let metrics = Metrics::new();
        for n in 0..MAX_FUNCTIONS + 10 {
            metrics.activity_attempt(&format!("f{n}"), Duration::ZERO, false, false);
        }
        metrics.activity_attempt("f0", Duration::ZERO, false, false);
        let text = metrics.encode(&Snapshot::default());
        assert!(text.contains("durango_activity_calls_total{function=\"other\"} 10"));
        assert!(text.contains("durango_activity_calls_total{function=\"f0\"} 2"));
    }
}
