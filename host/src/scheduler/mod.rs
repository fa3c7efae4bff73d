//! Who runs what, when: per-instance episodes (kept hot between them),
//! durable timers from a heap, and the activity worker pool. Everything is
//! woken by notification; nothing polls.
//!
//! The workers share one `Scheduler`: the parts they use (the store, the
//! catalog, the runtime, the notifier, the signals they send) and each
//! other. They never see the host or the API above them.

pub mod activities;
pub mod dispatch;
pub mod durable_http;
pub mod timers;

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::links::LinkSigner;
use crate::notify::Notifier;
use crate::runtime::Runtime;
use crate::settings::Settings;
use crate::signals::Signals;
use crate::store::{Store, StoreError};
use activities::ActivityPool;
use dispatch::Dispatcher;
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
    pub activity_workers: usize,
    /// Timers due within this long are held in memory.
    pub timer_horizon: Duration,
}

impl Scheduler {
    /// Starts the episode workers, the timer task and the notifier, then
    /// picks up the work that was under way when the host last stopped.
    pub async fn start(parts: Parts) -> Result<Arc<Scheduler>, StoreError> {
        let (timers, timer_task) = timer_queue(parts.timer_horizon);
        let scheduler = Arc::new(Scheduler {
            store: parts.store,
            catalog: parts.catalog,
            runtime: parts.runtime,
            signals: parts.signals,
            notifier: parts.notifier,
            settings: parts.settings,
            links: parts.links,
            dispatcher: Dispatcher::new(parts.hot_instances),
            timers,
            activities: ActivityPool::new(parts.activity_workers),
        });
        Dispatcher::start(&scheduler);
        tokio::spawn(timer_task.run(scheduler.clone()));
        let outbox = scheduler.store.clone();
        tokio::spawn(crate::notify::deliver(outbox, scheduler.notifier.clone()));
        scheduler.recover().await?;
        Ok(scheduler)
    }

    /// Loads the timers, activity calls and inbox messages left in the
    /// store, as a host that just took the work over must.
    async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let horizon = self.timers.horizon();
        for (id, seq, fire_at) in self.store.timers_between(i64::MIN, horizon).await? {
            self.timers.add(&id, seq, fire_at);
        }
        for activity in self.store.activities().await? {
            self.activities.submit(self, activity);
        }
        for id in self.store.instances_with_messages().await? {
            self.dispatcher.wake(&id);
        }
        Ok(())
    }
}
