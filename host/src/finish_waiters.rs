//! Callers waiting for particular instances to finish. Each is woken by its
//! own instance's end, not by every status change of every instance: with
//! many callers waiting, a broadcast would wake all of them per change. The
//! end comes with the instance's stored row when the commit that ended it
//! returned it, so the waiter need not read it back.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::store::InstanceRow;

#[derive(Default)]
pub struct FinishWaiters {
    waiting: Mutex<HashMap<String, Vec<Sender>>>,
}

/// Resolves once the instance has finished; dropping it (a timeout, a
/// caller gone) takes it off the list.
pub struct Waiter<'a> {
    finished: oneshot::Receiver<Option<InstanceRow>>,
    id: &'a str,
    owner: &'a FinishWaiters,
}

impl FinishWaiters {
    /// Starts waiting for `id`; register before reading its status, so an
    /// end committed in between is not missed.
    pub fn register<'a>(&'a self, id: &'a str) -> Waiter<'a> {
        let (tx, finished) = oneshot::channel();
        self.lock().entry(id.to_string()).or_default().push(tx);
        Waiter {
            finished,
            id,
            owner: self,
        }
    }

    /// `id` reached a terminal status (stored as `row`, if known): wakes
    /// everyone waiting for it.
    pub fn finished(&self, id: &str, row: Option<&InstanceRow>) {
        let Some(waiters) = self.lock().remove(id) else {
            return;
        };
        for waiter in waiters {
            let _ = waiter.send(row.cloned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Sender>>> {
        self.waiting.lock().expect("finish waiters")
    }
}

type Sender = oneshot::Sender<Option<InstanceRow>>;

impl Waiter<'_> {
    /// The instance's row as it finished, when the end came with it.
    pub async fn wait(&mut self) -> Option<InstanceRow> {
        (&mut self.finished).await.ok().flatten()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.finished.close();
        let mut waiting = self.owner.lock();
        if let Some(waiters) = waiting.get_mut(self.id) {
            waiters.retain(|waiter| !waiter.is_closed());
            if waiters.is_empty() {
                waiting.remove(self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_finished_instances_waiters_and_forgets_those_that_leave() {
        let waiters = FinishWaiters::default();
        let mut a = waiters.register("a");
        let b = waiters.register("b");
        let row = InstanceRow::pending("a".into(), "N".into(), "v".into(), "null".into(), None);
        waiters.finished("a", Some(&row));
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), a.wait())
            .await
            .expect("a's waiter is woken");
        assert_eq!(woken.map(|r| r.id), Some("a".to_string()), "with the row");
        assert!(waiters.lock().contains_key("b"));
        drop(b);
        drop(a);
        assert!(waiters.lock().is_empty(), "no waiter is left behind");
    }
}
