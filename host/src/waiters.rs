//! Callers waiting for something to happen to one particular thing: an
//! instance to finish (keyed by its id, woken with its stored row when the
//! commit that ended it returned it), an inbox message to be consumed
//! (keyed by its inbox id). Each waiter is woken by its own key, not by
//! every change: with many callers waiting, a broadcast would wake all of
//! them per change.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

pub struct Waiters<K, V> {
    waiting: Mutex<HashMap<K, Vec<oneshot::Sender<V>>>>,
}

impl<K, V> Default for Waiters<K, V> {
    fn default() -> Self {
        Waiters {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

/// Resolves once its key is woken; dropping it (a timeout, a caller gone)
/// takes it off the list.
pub struct Waiter<'a, K: Hash + Eq, V> {
    woken: oneshot::Receiver<V>,
    key: K,
    owner: &'a Waiters<K, V>,
}

impl<K: Hash + Eq + Clone, V: Clone> Waiters<K, V> {
    /// Starts waiting for `key`; register before looking whether it
    /// happened already, so that it happening in between is not missed.
    pub fn register(&self, key: K) -> Waiter<'_, K, V> {
        let (tx, woken) = oneshot::channel();
        self.lock().entry(key.clone()).or_default().push(tx);
        Waiter {
            woken,
            key,
            owner: self,
        }
    }

    /// It happened to `key`: wakes everyone waiting for it with `value`.
    pub fn wake(&self, key: &K, value: V) {
        let Some(waiters) = self.lock().remove(key) else {
            return;
        };
        for waiter in waiters {
            let _ = waiter.send(value.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Vec<oneshot::Sender<V>>>> {
        self.waiting.lock().expect("waiters")
    }
}

impl<K: Hash + Eq, V> Waiter<'_, K, V> {
    /// The value it was woken with; `None` if the waiters went away.
    pub async fn wait(&mut self) -> Option<V> {
        (&mut self.woken).await.ok()
    }
}

impl<K: Hash + Eq, V> Drop for Waiter<'_, K, V> {
    fn drop(&mut self) {
        self.woken.close();
        let mut waiting = self.owner.waiting.lock().expect("waiters");
        if let Some(waiters) = waiting.get_mut(&self.key) {
            waiters.retain(|waiter| !waiter.is_closed());
            if waiters.is_empty() {
                waiting.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_waiters_of_its_key_and_forgets_those_that_leave() {
        let waiters: Waiters<String, u32> = Waiters::default();
        let mut a = waiters.register("a".into());
        let b = waiters.register("b".into());
        waiters.wake(&"a".to_string(), 7);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), a.wait())
            .await
            .expect("a's waiter is woken");
        assert_eq!(woken, Some(7), "with the value");
        assert!(waiters.lock().contains_key("b"));
        drop(b);
        drop(a);
        assert!(waiters.lock().is_empty(), "no waiter is left behind");
    }
}
