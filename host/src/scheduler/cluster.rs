//! A host among several on one database: it renews its partition leases,
//! picks up the work of partitions it gains, and acts on what the other
//! hosts commit (a message for one of its instances, an instance that
//! finished, a message consumed, a deploy, an instance moved to another
//! version) as they announce it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Scheduler;
use crate::store::Remote;

impl Scheduler {
    /// Renews the leases every third of `lease`; runs the partitions gained.
    pub(super) async fn keep_leases(self: Arc<Self>, lease: Duration) {
        let lease_ms = lease.as_millis() as i64;
        loop {
            tokio::time::sleep(lease / 3).await;
            let held = match self.store.lease_round(lease_ms).await {
                Ok(Some(held)) => held,
                Ok(None) => return,
                Err(error) => {
                    // The fence keeps a host that cannot renew from writing
                    // once its leases ran out; it tries again meanwhile.
                    tracing::error!(%error, "cannot renew the partition leases");
                    continue;
                }
            };
            let gained = self.ownership.update(held);
            if gained.is_empty() {
                continue;
            }
            tracing::info!(partitions = ?gained, "took partitions over");
            if let Err(error) = self.recover(Some(gained)).await {
                tracing::error!(%error, "cannot load the work of the partitions taken over");
            }
        }
    }

    /// Acts on what other hosts commit.
    pub(super) async fn follow(self: Arc<Self>, mut changes: mpsc::UnboundedReceiver<Remote>) {
        while let Some(change) = changes.recv().await {
            for id in change.woken.iter().filter(|id| self.ownership.owns(id)) {
                self.dispatcher.wake(id);
            }
            for id in &change.finished {
                self.signals.finished_elsewhere(id);
            }
            // Pages showing these instances read them again.
            for id in change.woken.iter().chain(&change.finished) {
                self.signals.changed(id, None);
            }
            for id in &change.moved {
                self.dispatcher.forget(id);
            }
            self.signals.consumed(&change.consumed);
            if change.apps || change.resync {
                if let Err(error) = self.catalog.reload().await {
                    tracing::error!(%error, "cannot read the deployed apps again");
                }
            }
            if change.resync {
                self.wake_waiting().await;
            }
        }
    }

    /// After changes may have been missed: every instance of ours with
    /// messages waiting reads them.
    async fn wake_waiting(&self) {
        match self
            .store
            .instances_with_messages(self.ownership.partitions())
            .await
        {
            Ok(ids) => ids.iter().for_each(|id| self.dispatcher.wake(id)),
            Err(error) => tracing::error!(%error, "cannot read which instances have messages"),
        }
    }
}
