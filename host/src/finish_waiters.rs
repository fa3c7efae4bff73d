//! Callers waiting for particular instances to finish. Each is woken by its
//! own instance's end, not by every status change of every instance: with
//! many callers waiting, a broadcast would wake all of them per change.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Default)]
pub struct FinishWaiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// Resolves once the instance has finished; dropping it (a timeout, a
/// caller gone) takes it off the list.
pub struct Waiter<'a> {
    finished: oneshot::Receiver<()>,
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

    /// `id` reached a terminal status: wakes everyone waiting for it.
    pub fn finished(&self, id: &str) {
        let Some(waiters) = self.lock().remove(id) else {
            return;
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<()>>>> {
        self.waiting.lock().expect("finish waiters")
    }
}

impl Waiter<'_> {
    pub async fn wait(&mut self) {
        let _ = (&mut self.finished).await;
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
        waiters.finished("a");
        tokio::time::timeout(std::time::Duration::from_secs(5), a.wait())
            .await
            .expect("a's waiter is woken");
        assert!(waiters.lock().contains_key("b"));
        drop(b);
        drop(a);
        assert!(waiters.lock().is_empty(), "no waiter is left behind");
    }
}
