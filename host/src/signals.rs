//! What committed changes tell the callers waiting on them: an instance's
//! status changed (a broadcast for listeners such as the benchmark), an
//! instance finished (its waiters, with its row when the commit returned
//! it), an inbox message was consumed (its waiters). The scheduler signals
//! after its commits; the host's operations wait. With several hosts on
//! one database, changes committed elsewhere arrive here too.

use tokio::sync::broadcast;

use crate::engine::history::RuntimeStatus;
use crate::store::InstanceRow;
use crate::waiters::{Waiter, Waiters};

/// An instance changed status (committed).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub instance_id: String,
    pub status: RuntimeStatus,
}

/// How many status changes a slow listener may fall behind by.
const LIFECYCLE_BACKLOG: usize = 4096;

pub struct Signals {
    lifecycle: broadcast::Sender<Lifecycle>,
    /// Callers waiting for an instance to finish (with its row when the
    /// commit that ended it returned it).
    finished: Waiters<String, Option<InstanceRow>>,
    /// Callers waiting for an inbox message to be consumed by a committed
    /// episode (or dropped because its instance finished).
    consumed: Waiters<i64, ()>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            lifecycle: broadcast::channel(LIFECYCLE_BACKLOG).0,
            finished: Waiters::default(),
            consumed: Waiters::default(),
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

    /// An instance finished on another host: its waiters read it again.
    pub fn finished_elsewhere(&self, instance_id: &str) {
        self.finished.wake(&instance_id.to_string(), None);
    }

    /// Inbox messages left the inbox in a committed change.
    pub fn consumed(&self, inbox_ids: &[i64]) {
        for inbox_id in inbox_ids {
            self.consumed.wake(inbox_id, ());
        }
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
