//! Who runs what, when: per-instance episodes (kept hot between them),
//! durable timers from a heap, and the activity worker pool. Everything is
//! woken by notification; nothing polls.
//!
//! The workers share one `Scheduler`: the parts they use (the store, the
//! catalog, the runtime, the notifier, the signals they send) and each
//! other. They never see the host or the API above them.

pub mod activities;
mod cluster;
pub mod dispatch;
pub mod durable_http;
mod hot_cache;
pub mod ownership;
pub mod timers;

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::links::LinkSigner;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::runtime::Runtime;
use crate::settings::Settings;
use crate::signals::Signals;
use crate::store::{Store, StoreError};
use activities::ActivityPool;
use dispatch::Dispatcher;
use ownership::Ownership;
use timers::{timer_queue, TimerQueue};

pub struct Scheduler {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub runtime: Arc<Runtime>,
    pub signals: Arc<Signals>,
    pub notifier: Arc<Notifier>,
    pub settings: Arc<Settings>,
    pub links: Arc<LinkSigner>,
    pub dispatcher: Dispatcher,
    pub timers: TimerQueue,
    pub activities: ActivityPool,
    /// The instances this host runs.
    pub ownership: Ownership,
    pub metrics: Arc<Metrics>,
}

/// What the scheduler is built from.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    pub runtime: Arc<Runtime>,
    pub signals: Arc<Signals>,
    pub notifier: Arc<Notifier>,
    pub settings: Arc<Settings>,
    pub links: Arc<LinkSigner>,
    /// Waiting instances kept in memory; 0 replays every episode.
    pub hot_instances: usize,
    pub hot_bytes: usize,
    pub activity_workers: usize,
    /// Timers due within this long are held in memory.
    pub timer_horizon: Duration,
    /// How long a partition lease lasts when hosts share the database (a
    /// dead host's instances move on after about this long).
    pub lease: Duration,
    pub metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Starts the episode workers, the timer task and the notifier, then
    /// picks up the work that was under way when the host last stopped.
    pub async fn start(parts: Parts) -> Result<Arc<Scheduler>, StoreError> {
        let (timers, timer_task) = timer_queue(parts.timer_horizon);
        // Changes other hosts commit are followed from before this host
        // reads its work, so none falls in between.
        let remote = parts.store.remote_changes().await?;
        let lease_ms = parts.lease.as_millis() as i64;
        let ownership = match parts.store.lease_round(lease_ms).await? {
            Some(held) => Ownership::leased(held),
            None => Ownership::everything(),
        };
        let scheduler = Arc::new(Scheduler {
            store: parts.store,
            catalog: parts.catalog,
            runtime: parts.runtime,
            signals: parts.signals,
            notifier: parts.notifier,
            settings: parts.settings,
            links: parts.links,
            dispatcher: Dispatcher::new(
                parts.hot_instances,
                parts.hot_bytes,
                parts.metrics.clone(),
            ),
            timers,
            activities: ActivityPool::new(parts.activity_workers),
            ownership,
            metrics: parts.metrics,
        });
        Dispatcher::start(&scheduler);
        if let Some(changes) = remote {
            tokio::spawn(scheduler.clone().follow(changes));
            tokio::spawn(scheduler.clone().keep_leases(parts.lease));
        }
        tokio::spawn(timer_task.run(scheduler.clone()));
        let outbox = scheduler.store.clone();
        tokio::spawn(crate::notify::deliver(outbox, scheduler.notifier.clone()));
        let held = scheduler.ownership.partitions();
        scheduler.recover(held).await?;
        Ok(scheduler)
    }

    /// Loads the timers, activity calls and inbox messages left in the
    /// store for `partitions` (`None`: all), as a host that just took the
    /// work over must.
    async fn recover(self: &Arc<Self>, partitions: Option<Vec<i32>>) -> Result<(), StoreError> {
        let horizon = self.timers.horizon();
        let timers = self
            .store
            .timers_between(i64::MIN, horizon, partitions.clone());
        for (id, seq, fire_at) in timers.await? {
            self.timers.add(&id, seq, fire_at);
        }
        for activity in self.store.activities(partitions.clone()).await? {
            self.activities.submit(self, activity);
        }
        for id in self.store.instances_with_messages(partitions).await? {
            self.dispatcher.wake(&id);
        }
        Ok(())
    }
}
