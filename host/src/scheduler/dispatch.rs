//! Runs each instance's episodes one at a time, in inbox order, and keeps
//! waiting instances hot (their guest parked in memory) in a bounded LRU
//! cache. An evicted or restarted instance is rebuilt from its rows alone.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;

use crate::engine::episode;
use crate::engine::history::{Message, RuntimeStatus};
use crate::engine::replay::Replay;
use crate::host::Host;
use crate::notify::Change;
use crate::runtime::{GuestFault, Orchestrator};
use crate::store::{InstanceRow, StoreError};

struct Hot {
    guest: Orchestrator,
    history_len: usize,
}

/// Episodes that may run at once. Each holds a guest instance in memory
/// (and replays it when cold), so a burst of thousands of starts must not
/// instantiate thousands of guests at the same moment.
pub const CONCURRENT_EPISODES: usize = 64;

pub struct Dispatcher {
    /// Instances with an episode under way; `true` = new messages came meanwhile.
    active: Mutex<HashMap<String, bool>>,
    running: tokio::sync::Semaphore,
    hot: Option<Mutex<LruCache<String, Hot>>>,
}

impl Dispatcher {
    pub fn new(hot_instances: usize) -> Dispatcher {
        Dispatcher {
            active: Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new(CONCURRENT_EPISODES),
            hot: NonZeroUsize::new(hot_instances).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    /// Makes sure the instance's inbox gets processed.
    pub fn wake(&self, host: &Arc<Host>, id: &str) {
        let mut active = self.active.lock().expect("dispatch table");
        match active.get_mut(id) {
            Some(again) => *again = true,
            None => {
                active.insert(id.to_string(), false);
                tokio::spawn(drive(host.clone(), id.to_string()));
            }
        }
    }

    /// Drops a hot instance whose rows are gone.
    pub fn forget(&self, id: &str) {
        self.take_hot(id);
    }

    fn take_hot(&self, id: &str) -> Option<Hot> {
        self.hot.as_ref()?.lock().expect("hot cache").pop(id)
    }

    fn keep_hot(&self, id: &str, hot: Hot) {
        if let Some(cache) = &self.hot {
            cache.lock().expect("hot cache").put(id.to_string(), hot);
        }
    }

    /// Whether another round is needed (messages arrived during this one).
    fn finish_round(&self, id: &str) -> bool {
        let mut active = self.active.lock().expect("dispatch table");
        if active.get(id).copied().unwrap_or(false) {
            active.insert(id.to_string(), false);
            true
        } else {
            active.remove(id);
            false
        }
    }
}

/// Longest pause between attempts at an episode the store refused.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

async fn drive(host: Arc<Host>, id: String) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let processed = {
            let _slot = host.dispatcher.running.acquire().await;
            process(&host, &id).await
        };
        if let Err(error) = processed {
            // The messages stay in the inbox; try again once the store may
            // have recovered (disk space freed, lock released).
            tracing::error!(instance = %id, %error, "episode not committed; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        if !host.dispatcher.finish_round(&id) {
            return;
        }
    }
}

async fn process(host: &Arc<Host>, id: &str) -> Result<(), StoreError> {
    let dispatcher = &host.dispatcher;
    let messages = host.store.inbox(id.to_string()).await?;
    if messages.is_empty() {
        return Ok(());
    }
    let instance = match host.store.instance(id.to_string()).await? {
        Some(instance) if !instance.status.is_terminal() => instance,
        _ => {
            dispatcher.take_hot(id);
            let ids = messages.into_iter().map(|(id, _)| id).collect();
            return host.store.discard_messages(ids).await;
        }
    };
    if instance.status == RuntimeStatus::Suspended
        && !messages
            .iter()
            .any(|(_, m)| matches!(m, Message::Resume { .. } | Message::Terminate { .. }))
    {
        return Ok(()); // held until resumed
    }
    let (mut guest, history_len, fault) = match dispatcher.take_hot(id) {
        Some(hot) => (Some(hot.guest), hot.history_len, None),
        None => rebuild(host, &instance).await?,
    };
    let mut episode = episode::run(guest.as_mut(), &instance, history_len, messages, fault).await;
    if episode.is_idle() {
        if let Some(guest) = guest {
            dispatcher.keep_hot(id, Hot { guest, history_len });
        }
        return Ok(());
    }
    let history_len = history_len + episode.commit.events.len();
    let activities = episode.commit.activities.clone();
    let timers = episode.commit.timers.clone();
    let changed = episode.commit.status.filter(|s| *s != instance.status);
    if let Some(status) = changed.filter(|s| s.is_terminal()) {
        episode.commit.notifications = host.notifier.notifications(&Change {
            instance_id: id,
            name: &instance.name,
            status,
            detail: episode.commit.output.as_deref(),
            callback_url: instance.callback_url.as_deref(),
        });
    }
    for child in &mut episode.commit.children {
        child.version = host.version_of(&child.name);
    }
    let notify = !episode.commit.notifications.is_empty();
    let woken = host.store.commit_episode(episode.commit).await?;
    for other in woken.0 {
        host.wake(&other);
    }
    if let Some(status) = changed {
        host.announce(id, status);
    }
    if notify {
        host.notifier.wake();
    }
    for activity in activities {
        host.activities.submit(activity);
    }
    for (seq, fire_at) in timers {
        host.timers.add(id, seq, fire_at);
    }
    if let (true, Some(guest)) = (episode.waiting, guest) {
        dispatcher.keep_hot(id, Hot { guest, history_len });
    }
    Ok(())
}

/// The cold path: a fresh guest replayed over the stored history. A guest
/// that cannot be rebuilt comes back as a fault that fails the instance.
async fn rebuild(
    host: &Arc<Host>,
    instance: &InstanceRow,
) -> Result<(Option<Orchestrator>, usize, Option<GuestFault>), StoreError> {
    let history = host.store.history(instance.id.clone()).await?;
    let len = history.len();
    if let Err(fault) = host.ensure_loaded(&instance.version).await? {
        return Ok((None, len, Some(fault)));
    }
    let replay = Replay::new(&instance.id, &history);
    let mut guest = match host.runtime.orchestrator(&instance.version, replay).await {
        Ok(guest) => guest,
        Err(fault) => return Ok((None, len, Some(fault))),
    };
    match episode::replay_history(&mut guest, &history).await {
        Ok(()) => Ok((Some(guest), len, None)),
        Err(fault) => Ok((None, len, Some(fault))),
    }
}
