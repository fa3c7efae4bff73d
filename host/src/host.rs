//! The running host: the store, the wasm runtime and the schedulers wired
//! together, and the operations the API and CLI call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};
use tracing::Instrument;

use crate::catalog::Catalog;
use crate::check::{self, CheckReport, Replayed};
use crate::engine::history::{Message, RuntimeStatus};
use crate::engine::rewind;
use crate::links::LinkSigner;
use crate::metrics::{Metrics, Snapshot};
use crate::notify::{Change, Notifier};
use crate::runtime::{FunctionInfo, GuestLimits, RandomKey, Runtime};
use crate::scheduler::dispatch::{start_in_two_commits, Starting, CONCURRENT_EPISODES};
use crate::scheduler::{Parts, Scheduler};
use crate::settings::Settings;
use crate::signals::{Lifecycle, Signals};
use crate::store::{
    now_ms, ActivityRow, Deployment, Durability, EnqueueOutcome, InstanceRow, MoveCommit,
    PinnedOrchestrator, RewindCommit, Store, StoreError, VersionRemoval, VersionRow,
};
use crate::trace;

pub struct HostConfig {
    /// A SQLite file's path, or a `postgres://` URL.
    pub db: String,
    pub durability: Durability,
    pub settings: Settings,
    pub limits: GuestLimits,
    /// Waiting instances kept in memory; 0 replays every episode.
    pub hot_instances: usize,
    /// Linear memory the hot instances' guests may hold together, in bytes.
    pub hot_bytes: usize,
    pub activity_workers: usize,
    /// Timers due within this long are held in memory.
    pub timer_horizon: Duration,
    /// A partition lease's length when hosts share a PostgreSQL database.
    pub lease: Duration,
    /// The system key; `None` uses the stored one or generates it.
    pub key: Option<String>,
    /// Webhooks that get every instance's lifecycle events.
    pub notify_urls: Vec<String>,
    /// Signs lifecycle events; `None` uses the stored one or generates it.
    pub notify_secret: Option<String>,
    /// Base of the links handed out to people (no trailing slash).
    pub public_url: String,
    /// Where compiled components are kept by digest (`--compile-cache`).
    pub compile_cache: Option<std::path::PathBuf>,
}

pub struct Host {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    pub settings: Arc<Settings>,
    /// The system key every management route requires.
    pub key: String,
    /// Makes and checks the links handed to people.
    pub links: Arc<LinkSigner>,
    pub catalog: Arc<Catalog>,
    pub signals: Arc<Signals>,
    pub(crate) scheduler: Arc<Scheduler>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
}

fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug)]
pub enum RewindError {
    NotFound,
    NotFailed(RuntimeStatus),
    Store(StoreError),
}

/// A deployed app, as the deploy route reports it.
#[derive(Debug, serde::Serialize)]
pub struct Deployed {
    pub app: String,
    pub version: String,
    pub functions: Vec<FunctionInfo>,
    /// The settings the app may read; absent when it may read all.
    #[serde(rename = "allowedSettings", skip_serializing_if = "Option::is_none")]
    pub allowed_settings: Option<Vec<String>>,
    /// What `--upgrade compatible` did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgraded>,
    /// Orchestrators the app's older versions had and this one lacks, whose
    /// unfinished instances stay on the version they started on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<PinnedOrchestrator>,
}

/// Which unfinished instances a deploy moves to the new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Upgrade {
    /// None: every instance stays on the version it started on.
    #[default]
    None,
    /// Those whose history replays on the new version without diverging.
    Compatible,
}

/// What a deploy's upgrade did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// Moved to the new version (each has it in its history).
    pub moved: usize,
    /// Diverging on the new version: left on theirs.
    pub stayed: usize,
    /// Went on between their check and their move: left on theirs (a
    /// later check may move them).
    pub changed_meanwhile: usize,
}

/// Why one instance was not moved.
#[derive(Debug)]
pub enum MoveRefused {
    NotFound,
    Finished(RuntimeStatus),
    /// No deployed version serves its orchestrator now.
    NotServed(String),
    /// It diverges on the version that serves it now: why.
    Diverges(String),
    ChangedMeanwhile,
}

#[derive(Debug)]
pub enum DeployError {
    Invalid(String),
    Store(StoreError),
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployError::Invalid(reason) => f.write_str(reason),
            DeployError::Store(error) => write!(f, "{error}"),
        }
    }
}

#[derive(Debug)]
pub enum StartError {
    UnknownOrchestrator(String),
    Conflict(String),
    Store(StoreError),
}

impl Host {
    /// Opens the store, loads the deployed apps, starts the schedulers and
    /// picks up the work that was under way when the host last stopped.
    pub async fn start(config: HostConfig) -> anyhow::Result<Arc<Host>> {
        let metrics = Arc::new(Metrics::new());
        let store =
            crate::store::open_observed(&config.db, config.durability, metrics.store.clone())
                .await?;
        let key = match config.key {
            Some(key) => key,
            None => store.meta_secret("system_key", random_secret()).await?,
        };
        let notify_secret = match config.notify_secret {
            Some(secret) => secret,
            None => store.meta_secret("notify_secret", random_secret()).await?,
        };
        // Signs the links handed to people; shared by every host on the
        // database, so a link works whichever host it reaches.
        let link_secret = store.meta_secret("link_secret", random_secret()).await?;
        // Shared by every host on the database, so a call re-run anywhere
        // draws what it drew before.
        let random_secret = store
            .meta_secret("activity_random_secret", random_secret())
            .await?;
        let mut settings = config.settings;
        settings.hide(&key);
        settings.hide(&notify_secret);
        settings.hide(&random_secret);
        settings.hide(&link_secret);
        let settings = Arc::new(settings);
        let links = Arc::new(LinkSigner::new(&link_secret, &config.public_url));
        let runtime = Arc::new(
            Runtime::new(
                settings.clone(),
                RandomKey::new(&random_secret),
                links.clone(),
                config.limits,
                config.hot_instances + CONCURRENT_EPISODES,
                config.activity_workers.max(1),
                metrics.clone(),
            )
            .map_err(|e| e.context("cannot reserve the guests' memory (is `ulimit -v` too low?)"))?
            .with_compile_cache(config.compile_cache),
        );
        let catalog = Arc::new(Catalog::new(store.clone(), runtime.clone()));
        catalog.reload().await?;
        let signals = Arc::new(Signals::default());
        let scheduler = Scheduler::start(Parts {
            store: store.clone(),
            catalog: catalog.clone(),
            runtime: runtime.clone(),
            signals: signals.clone(),
            notifier: Arc::new(Notifier::new(config.notify_urls, notify_secret)),
            settings: settings.clone(),
            links: links.clone(),
            hot_instances: config.hot_instances,
            hot_bytes: config.hot_bytes,
            activity_workers: config.activity_workers,
            timer_horizon: config.timer_horizon,
            lease: config.lease,
            metrics: metrics.clone(),
        })
        .await?;
        let host = Arc::new(Host {
            store,
            runtime,
            settings,
            key,
            links,
            catalog,
            signals,
            scheduler,
            metrics,
        });
        Ok(host)
    }

    /// The metrics in the Prometheus text format, with what only the store
    /// and the scheduler know read now.
    pub async fn metrics_text(&self) -> Result<String, StoreError> {
        let instances = self.store.count_by_status().await?;
        let (hot_cache_size, hot_cache_bytes) = self.scheduler.dispatcher.hot_cache_size();
        let snapshot = Snapshot {
            instances,
            timers_pending: self.scheduler.timers.pending(),
            hot_cache_size,
            hot_cache_bytes,
            inbox_depth: self.signals.events_pending(),
        };
        Ok(self.metrics.encode(&snapshot))
    }

    /// Has the instance read its inbox and act on what is there.
    fn wake(&self, id: &str) {
        self.scheduler.dispatcher.wake(id);
    }

    /// Replays every unfinished instance of `app` on the component `wasm`
    /// without writing anything: which could move to it, and where the
    /// others diverge.
    pub async fn check_deploy(&self, app: &str, wasm: &[u8]) -> Result<CheckReport, DeployError> {
        let compiled = self
            .runtime
            .compile(wasm, None)
            .await
            .map_err(DeployError::Invalid)?;
        let verdicts = self
            .check_against(app, &compiled.version, &compiled.functions)
            .await
            .map_err(DeployError::Store)?;
        Ok(check::report(app, &compiled.version, verdicts))
    }

    /// `app`'s unfinished instances replayed on `version` (loaded, with
    /// these `functions`).
    async fn check_against(
        &self,
        app: &str,
        version: &str,
        functions: &[FunctionInfo],
    ) -> Result<Vec<check::InstanceCheck>, StoreError> {
        let orchestrators = functions
            .iter()
            .filter(|f| f.kind == "orchestrator")
            .map(|f| f.name.clone())
            .collect();
        let instances = self.store.unfinished_of_app(app.to_string()).await?;
        Ok(check::replay_on(
            self.runtime.clone(),
            self.store.clone(),
            version.to_string(),
            orchestrators,
            instances,
        )
        .await)
    }

    /// Checks, compiles and stores a component as the current version of `app`.
    /// `allowed_settings` limits the settings the app may read (`None`: all).
    pub async fn deploy(
        &self,
        app: &str,
        wasm: &[u8],
        allowed_settings: Option<Vec<String>>,
    ) -> Result<Deployed, DeployError> {
        let allowed = allowed_settings
            .clone()
            .map(|names| Arc::new(names.into_iter().collect()));
        let compiled = self
            .runtime
            .compile(wasm, allowed)
            .await
            .map_err(DeployError::Invalid)?;
        {
            for f in compiled
                .functions
                .iter()
                .filter(|f| f.kind == "orchestrator")
            {
                if let Some(other) = self.catalog.app_of(&f.name) {
                    if other != app {
                        return Err(DeployError::Invalid(format!(
                            "orchestrator {} is already deployed by app {other}",
                            f.name
                        )));
                    }
                }
            }
        }
        let functions =
            serde_json::to_string(&compiled.functions).expect("function list serializes");
        self.store
            .deploy(Deployment {
                app: app.to_string(),
                version: compiled.version.clone(),
                wasm: wasm.to_vec(),
                compiled: compiled.compiled,
                functions,
                allowed_settings: allowed_settings.clone(),
            })
            .await
            .map_err(DeployError::Store)?;
        self.catalog.reload().await.map_err(DeployError::Store)?;
        // Instances are pinned to the version they started on: those of an
        // orchestrator this version drops go on running their old code
        // (loaded from the database by version, not through the catalog),
        // and the answer says so.
        let pinned = self
            .store
            .unfinished_elsewhere(app.to_string(), compiled.version.clone())
            .await
            .map_err(DeployError::Store)?
            .into_iter()
            .filter(|p| {
                !compiled
                    .functions
                    .iter()
                    .any(|f| f.kind == "orchestrator" && f.name == p.orchestrator)
            })
            .collect();
        Ok(Deployed {
            app: app.to_string(),
            version: compiled.version,
            functions: compiled.functions,
            allowed_settings,
            upgrade: None,
            pinned,
        })
    }

    /// Deploys, then moves the instances `upgrade` says to the new version.
    pub async fn deploy_and_upgrade(
        &self,
        app: &str,
        wasm: &[u8],
        allowed_settings: Option<Vec<String>>,
        upgrade: Upgrade,
    ) -> Result<Deployed, DeployError> {
        let mut deployed = self.deploy(app, wasm, allowed_settings).await?;
        if upgrade == Upgrade::Compatible {
            let verdicts = self
                .check_against(app, &deployed.version, &deployed.functions)
                .await
                .map_err(DeployError::Store)?;
            let mut upgraded = Upgraded::default();
            let mut moves = Vec::new();
            for verdict in verdicts {
                match verdict.replayed {
                    Some(replayed) if verdict.compatible => moves.push(self.move_to(
                        verdict.instance_id,
                        replayed,
                        verdict.version,
                        deployed.version.clone(),
                    )),
                    _ if !verdict.compatible => upgraded.stayed += 1,
                    _ => {} // already on it
                }
            }
            // Queued together, the moves share group commits.
            for moved in futures_util::future::join_all(moves).await {
                match moved.map_err(DeployError::Store)? {
                    true => upgraded.moved += 1,
                    false => upgraded.changed_meanwhile += 1,
                }
            }
            deployed.upgrade = Some(upgraded);
        }
        Ok(deployed)
    }

    /// Moves instance `id` to the version that serves its orchestrator now,
    /// if its history replays there without diverging; answers the
    /// versions it was moved from and to (the same if it was there).
    pub async fn upgrade_instance(
        &self,
        id: &str,
    ) -> Result<Result<(String, String), MoveRefused>, StoreError> {
        let Some(row) = self.store.instance(id.to_string()).await? else {
            return Ok(Err(MoveRefused::NotFound));
        };
        if row.status.is_terminal() {
            return Ok(Err(MoveRefused::Finished(row.status)));
        }
        let Some(to) = self.catalog.version_of(&row.name) else {
            return Ok(Err(MoveRefused::NotServed(row.name)));
        };
        if to == row.version {
            return Ok(Ok((row.version, to)));
        }
        if let Err(fault) = self.catalog.ensure_loaded(&to).await? {
            return Ok(Err(MoveRefused::Diverges(fault.0)));
        }
        let orchestrators = [row.name.clone()].into_iter().collect();
        let from = row.version.clone();
        let verdict = check::replay_on(
            self.runtime.clone(),
            self.store.clone(),
            to.clone(),
            orchestrators,
            vec![row],
        )
        .await
        .pop()
        .expect("one verdict for one instance");
        let replayed = match (verdict.compatible, verdict.replayed) {
            (true, Some(replayed)) => replayed,
            _ => {
                let why = match (verdict.step, verdict.history, verdict.code) {
                    (Some(step), Some(history), Some(code)) => {
                        check::divergence_words(step.into(), &history, &code)
                    }
                    _ => verdict.reason.unwrap_or_default(),
                };
                return Ok(Err(MoveRefused::Diverges(why)));
            }
        };
        if !self
            .move_to(id.to_string(), replayed, from.clone(), to.clone())
            .await?
        {
            return Ok(Err(MoveRefused::ChangedMeanwhile));
        }
        Ok(Ok((from, to)))
    }

    async fn move_to(
        &self,
        id: String,
        replayed: Replayed,
        from: String,
        to: String,
    ) -> Result<bool, StoreError> {
        let moved = self
            .store
            .move_instance(MoveCommit {
                id: id.clone(),
                pk: replayed.pk,
                after_episodes: replayed.episodes,
                first_position: replayed.history_len,
                from,
                to,
            })
            .await?;
        if moved {
            // Its hot copy here runs the old version: it goes.
            self.scheduler.dispatcher.forget(&id);
        }
        Ok(moved)
    }

    /// The stored versions of `app`, newest first; `None` if there is no
    /// such app.
    pub async fn versions(&self, app: &str) -> Result<Option<Vec<VersionRow>>, StoreError> {
        self.store.app_versions(app.to_string()).await
    }

    /// Removes the one version of `app` whose digest starts with `prefix`,
    /// if no instance uses it and it is not the app's current one (see
    /// `Apps::remove_version`); a removed version leaves this host's
    /// memory too.
    pub async fn remove_version(
        &self,
        app: &str,
        prefix: &str,
    ) -> Result<VersionRemoval, StoreError> {
        let outcome = self
            .store
            .remove_version(app.to_string(), prefix.to_string())
            .await?;
        if let VersionRemoval::Removed(version) = &outcome {
            self.catalog.forget(version);
        }
        Ok(outcome)
    }

    /// Starts an orchestration; returns once the start is committed.
    /// `callback_url` also gets the instance's lifecycle events. The
    /// instance's trace continues `traceparent` (the start request's), or
    /// is a new one.
    pub async fn start_instance(
        self: &Arc<Self>,
        orchestrator: &str,
        id: String,
        input: String,
        callback_url: Option<String>,
        traceparent: Option<trace::Parent>,
    ) -> Result<(), StartError> {
        let version = self
            .catalog
            .version_of(orchestrator)
            .ok_or_else(|| StartError::UnknownOrchestrator(orchestrator.to_string()))?;
        let mut span = trace::Span::start(&id, orchestrator, &version, traceparent);
        let trace = span.parent();
        self.start_row(orchestrator, id, input, callback_url, version, trace)
            .instrument(span.log())
            .await
            .inspect_err(|error| {
                if let StartError::Conflict(_) = error {
                    span.attribute(trace::Key::Outcome, "conflict");
                }
            })
    }

    async fn start_row(
        self: &Arc<Self>,
        orchestrator: &str,
        id: String,
        input: String,
        callback_url: Option<String>,
        version: String,
        trace: Option<trace::Parent>,
    ) -> Result<(), StartError> {
        let notifications = self.scheduler.notifier.notifications(&Change {
            instance_id: &id,
            name: orchestrator,
            status: RuntimeStatus::Pending,
            detail: None,
            callback_url: callback_url.as_deref(),
        });
        let row = InstanceRow {
            trace,
            ..InstanceRow::pending(
                id.clone(),
                orchestrator.to_string(),
                version,
                input,
                callback_url,
            )
        };
        let (reply, answer) = oneshot::channel();
        let starting = Starting {
            row,
            notifications,
            reply,
        };
        let scheduler = &self.scheduler;
        if let Err(starting) = scheduler
            .dispatcher
            .start_at_once(starting, &scheduler.ownership)
        {
            start_in_two_commits(scheduler, *starting).await;
        }
        let outcome = answer.await.unwrap_or(Err(StoreError::Stopped));
        match outcome.map_err(StartError::Store)? {
            Ok(()) => Ok(()),
            Err(status) => Err(StartError::Conflict(format!(
                "instance {id} already exists and is {}",
                status.as_str()
            ))),
        }
    }

    /// Delivers a message (event, termination) to a running instance.
    pub async fn send(
        self: &Arc<Self>,
        id: &str,
        message: Message,
    ) -> Result<EnqueueOutcome, StoreError> {
        self.send_to(id, None, message).await
    }

    /// Delivers a message to a running instance, if `execution` (when given:
    /// the one a link was made for) is still the one under its id.
    pub async fn send_to(
        self: &Arc<Self>,
        id: &str,
        execution: Option<i64>,
        message: Message,
    ) -> Result<EnqueueOutcome, StoreError> {
        let outcome = self
            .store
            .enqueue(id.to_string(), execution, message.clone())
            .await?;
        if let EnqueueOutcome::Queued(inbox_id) = outcome {
            if matches!(message, Message::EventRaised { .. }) {
                // Counted before the hand-over, which is what runs the
                // episode that takes it in. (A round reading the inbox for
                // other work could take it in first only by committing in
                // between: then the count keeps it, and says one too many.)
                self.signals.event_queued(id, inbox_id);
            }
            self.scheduler.dispatcher.hand_over(id, inbox_id, message);
        }
        Ok(outcome)
    }

    /// Delivers a message, then waits (up to `timeout`) until the episode
    /// that consumed it has committed, or the instance finished without it:
    /// `Some(row)` as the instance then stands, `None` if the time ran out.
    pub async fn send_and_wait(
        self: &Arc<Self>,
        id: &str,
        execution: Option<i64>,
        message: Message,
        timeout: Duration,
    ) -> Result<(EnqueueOutcome, Option<InstanceRow>), StoreError> {
        let outcome = self.send_to(id, execution, message).await?;
        let EnqueueOutcome::Queued(inbox_id) = outcome else {
            return Ok((outcome, None));
        };
        let mut consumed = self.signals.on_consumed(inbox_id);
        // It may have been consumed before the waiter was there: once it
        // has left the inbox, its commit is on disk.
        let gone = !self.store.message_pending(inbox_id).await?;
        if gone || tokio::time::timeout(timeout, consumed.wait()).await.is_ok() {
            return Ok((outcome, self.store.instance(id.to_string()).await?));
        }
        Ok((outcome, None))
    }

    /// Deletes an instance's state and history.
    pub async fn purge(&self, id: &str) -> Result<bool, StoreError> {
        let purged = self.store.purge_instance(id.to_string()).await?;
        self.signals.purged(id);
        self.scheduler.dispatcher.forget(id);
        self.signals.changed(id, None);
        Ok(purged)
    }

    /// Whether this host runs instance `id` (on a shared database: holds
    /// the lease of its partition).
    pub fn runs(&self, id: &str) -> bool {
        self.scheduler.ownership.owns(id)
    }

    /// How many partitions this host holds (all of them on its own database).
    pub fn partitions_held(&self) -> usize {
        self.scheduler
            .ownership
            .partitions()
            .map_or(crate::store::PARTITIONS as usize, |held| held.len())
    }

    /// Status changes as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<Lifecycle> {
        self.signals.subscribe()
    }

    /// The instance once it has finished, or `None` if `timeout` passed
    /// first (or it does not exist). Woken by status changes, not polling.
    pub async fn wait_finished(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<InstanceRow>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut finished = self.signals.on_finish(id);
            match self.store.instance(id.to_string()).await? {
                Some(row) if row.status.is_terminal() => return Ok(Some(row)),
                Some(_) => {}
                None => return Ok(None),
            }
            match tokio::time::timeout_at(deadline, finished.wait()).await {
                Err(_) => return Ok(None),
                Ok(Some(Some(row))) => return Ok(Some(row)),
                Ok(_) => {}
            }
        }
    }

    /// Runs a failed instance again from where it failed.
    pub async fn rewind(self: &Arc<Self>, id: &str, reason: String) -> Result<(), RewindError> {
        let row = self
            .store
            .instance(id.to_string())
            .await
            .map_err(RewindError::Store)?
            .ok_or(RewindError::NotFound)?;
        if row.status != RuntimeStatus::Failed {
            return Err(RewindError::NotFailed(row.status));
        }
        let history = self
            .store
            .history(id.to_string())
            .await
            .map_err(RewindError::Store)?;
        let plan = rewind::rewind(&history);
        let activities: Vec<ActivityRow> = plan
            .activities
            .into_iter()
            .map(|retry| ActivityRow {
                instance_id: id.to_string(),
                instance_pk: row.pk,
                seq: retry.seq,
                version: row.version.clone(),
                name: retry.name,
                input: retry.input,
                retry: retry.retry,
                attempt: 0,
                run_at: now_ms(),
                trace: row.trace,
            })
            .collect();
        let rewound = self
            .store
            .rewind(RewindCommit {
                pk: row.pk,
                history: plan.history,
                activities: activities.clone(),
                timers: plan.timers.clone(),
                message: Message::Rewind {
                    reason: reason.clone(),
                },
            })
            .await
            .map_err(RewindError::Store)?;
        if !rewound {
            return Err(RewindError::NotFailed(RuntimeStatus::Failed));
        }
        self.scheduler.dispatcher.forget(id);
        self.signals.announce(id, RuntimeStatus::Running, None);
        for activity in activities {
            self.scheduler.activities.submit(&self.scheduler, activity);
        }
        for (seq, fire_at) in plan.timers {
            self.scheduler.timers.add(id, seq, fire_at);
        }
        self.wake(id);
        for (seq, child) in plan.children {
            if let Err(error) = self.follow_up_child(id, seq, &child, &reason).await {
                tracing::error!(instance = %id, child = %child, %error, "cannot follow up a sub-orchestration of a rewound instance");
            }
        }
        Ok(())
    }

    /// A sub-orchestration that a rewound parent waits for at step `seq`: a
    /// failed one is rewound too; one that finished while the parent was
    /// failed answers again (its answer was dropped then); a running one
    /// answers when it ends, as ever.
    fn follow_up_child<'a>(
        self: &'a Arc<Self>,
        parent: &'a str,
        seq: u32,
        child: &'a str,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let row = self
                .store
                .instance(child.to_string())
                .await
                .map_err(|e| e.to_string())?;
            let answer = match row {
                Some(row) if row.status == RuntimeStatus::Failed => {
                    return self
                        .rewind(child, reason.to_string())
                        .await
                        .map_err(|e| format!("{e:?}"));
                }
                Some(row) if row.status.is_terminal() => {
                    Message::child_outcome(child, seq, row.status, row.output.as_deref())
                }
                Some(_) => return Ok(()),
                None => Message::TaskFailed {
                    seq,
                    error: format!("sub-orchestration {child} no longer exists"),
                    attempts: 0,
                },
            };
            self.send(parent, answer)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
