//! What committed changes tell the callers waiting on them: an instance's
//! status changed (a broadcast for listeners such as the benchmark), an
//! instance changed at all (a broadcast for pages that show it), an
//! instance finished (its waiters, with its row when the commit returned
//! it), an inbox message was consumed (its waiters). The scheduler signals
//! after its commits; the host's operations wait. With several hosts on
//! one database, changes committed elsewhere arrive here too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

use crate::engine::history::RuntimeStatus;
use crate::store::InstanceRow;
use crate::waiters::{Waiter, Waiters};

/// An instance changed status (committed).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub instance_id: String,
    pub status: RuntimeStatus,
}

/// An instance's stored state changed: a commit of its, or its purge.
#[derive(Debug, Clone)]
pub struct Change {
    pub instance_id: Arc<str>,
    /// Its new status, if the change set one.
    pub status: Option<RuntimeStatus>,
}

/// How many status changes a slow listener may fall behind by.
const LIFECYCLE_BACKLOG: usize = 4096;

pub struct Signals {
    lifecycle: broadcast::Sender<Lifecycle>,
    changes: broadcast::Sender<Change>,
    /// Set when the host stops: streams that would never end on their own
    /// (a page's live updates) end then.
    stopping: watch::Sender<bool>,
    /// Callers waiting for an instance to finish (with its row when the
    /// commit that ended it returned it).
    finished: Waiters<String, Option<InstanceRow>>,
    /// Callers waiting for an inbox message to be consumed by a committed
    /// episode (or dropped because its instance finished).
    consumed: Waiters<i64, ()>,
    /// External events raised through this host and not yet consumed:
    /// inbox id → instance id (the inbox depth the metrics show).
    events: Mutex<HashMap<i64, String>>,
    /// `events`' size, read without the lock.
    events_pending: AtomicUsize,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            lifecycle: broadcast::channel(LIFECYCLE_BACKLOG).0,
            changes: broadcast::channel(LIFECYCLE_BACKLOG).0,
            stopping: watch::channel(false).0,
            finished: Waiters::default(),
            consumed: Waiters::default(),
            events: Mutex::default(),
            events_pending: AtomicUsize::new(0),
        }
    }
}

impl Signals {
    /// Status changes as they are committed.
    pub fn subscribe(&self) -> broadcast::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }

    /// An instance's status changed; `row` is the stored row, if the
    /// change's commit returned it.
    pub fn announce(&self, instance_id: &str, status: RuntimeStatus, row: Option<&InstanceRow>) {
        if status.is_terminal() {
            self.finished.wake(&instance_id.to_string(), row.cloned());
        }
        let _ = self.lifecycle.send(Lifecycle {
            instance_id: instance_id.to_string(),
            status,
        });
    }

    /// Every change to any instance, as it is committed.
    pub fn watch_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// An instance's stored state changed. Costs an allocation only while
    /// someone watches.
    pub fn changed(&self, instance_id: &str, status: Option<RuntimeStatus>) {
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(Change {
                instance_id: instance_id.into(),
                status,
            });
        }
    }

    /// The host is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once the host is stopping.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    /// An instance finished on another host: its waiters read it again.
    pub fn finished_elsewhere(&self, instance_id: &str) {
        self.finished.wake(&instance_id.to_string(), None);
    }

    /// Inbox messages left the inbox in a committed change.
    pub fn consumed(&self, inbox_ids: &[i64]) {
        for inbox_id in inbox_ids {
            self.consumed.wake(inbox_id, ());
        }
        if self.events_pending.load(Ordering::Relaxed) > 0 && !inbox_ids.is_empty() {
            let mut events = self.events.lock().expect("pending events");
            for inbox_id in inbox_ids {
                events.remove(inbox_id);
            }
            self.events_pending.store(events.len(), Ordering::Relaxed);
        }
    }

    /// An external event for `instance_id` went into its inbox as
    /// `inbox_id`.
    pub fn event_queued(&self, instance_id: &str, inbox_id: i64) {
        let mut events = self.events.lock().expect("pending events");
        events.insert(inbox_id, instance_id.to_string());
        self.events_pending.store(events.len(), Ordering::Relaxed);
    }

    /// An instance and its inbox were purged.
    pub fn purged(&self, instance_id: &str) {
        if self.events_pending.load(Ordering::Relaxed) > 0 {
            let mut events = self.events.lock().expect("pending events");
            events.retain(|_, id| id != instance_id);
            self.events_pending.store(events.len(), Ordering::Relaxed);
        }
    }

    /// External events raised through this host since it started that no
    /// committed change has consumed (or dropped) yet.
    pub fn events_pending(&self) -> usize {
        self.events_pending.load(Ordering::Relaxed)
    }

    /// Starts waiting for the instance to finish (register, then look).
    pub fn on_finish(&self, id: &str) -> Waiter<'_, String, Option<InstanceRow>> {
        self.finished.register(id.to_string())
    }

    /// Starts waiting for the inbox message to be consumed (register, then look).
    pub fn on_consumed(&self, inbox_id: i64) -> Waiter<'_, i64, ()> {
        self.consumed.register(inbox_id)
    }
}
