//! Runs each instance's episodes one at a time, in inbox order, and keeps
//! waiting instances hot (their guest parked in memory) in a bounded LRU
//! cache. An evicted or restarted instance is rebuilt from its rows alone.
//!
//! Messages are committed to the inbox first and then handed over here in
//! memory with their inbox id, so a hot instance's episode needs no reads:
//! its row and guest are in the cache, its messages in hand. Anything put in
//! the inbox without a hand-over (`wake`) makes the next round read it.
//!
//! An activity's outcome skips the inbox: it is handed over straight from
//! the call, and the episode that consumes it deletes the activity's row in
//! its own commit (one commit per step instead of two). Until then the row
//! keeps the call durable: a crash in between runs the activity again, as
//! a crash during the call would. Whenever an outcome cannot stay in memory
//! (a deep backlog, a suspended instance) it is committed to the inbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::activities;
use super::hot_cache::HotCache;
use super::ownership::Ownership;
use super::Scheduler;
use crate::engine::episode::{self, Origin};
use crate::engine::history::{Action, HistoryEvent, Message, RuntimeStatus};
use crate::engine::replay::Replay;
use crate::metrics::Metrics;
use crate::notify::Change;
use crate::runtime::{GuestFault, Orchestrator};
use crate::store::{
    format_time, ActivityRow, Committed, CreateOutcome, EpisodeCommit, EpisodeOutcome, InstanceRow,
    Notification, StoreError,
};
use crate::trace::{self, Key, Name};

/// A waiting instance kept in memory (`G`: its guest; `()` while it is
/// being committed).
struct Hot<G = Orchestrator> {
    guest: G,
    history_len: usize,
    instance: InstanceRow,
    /// Highest inbox id a read returned: a hand-over at or below it was
    /// already read (and consumed) by then.
    read_upto: i64,
    /// Every inbox message has been consumed; false while some are held
    /// (suspended), so the next round reads them again.
    inbox_consumed: bool,
}

/// What the next round of an instance has to work on.
#[derive(Default)]
struct Work {
    /// Messages committed to the inbox and handed over, with their ids.
    messages: Vec<(i64, Message)>,
    /// Activity outcomes handed over uncommitted.
    activities: Vec<ActivityOutcome>,
    /// Something reached the inbox without a hand-over: read it.
    unknown: bool,
    /// The instance was just created here: no history yet, and this row.
    created: Option<InstanceRow>,
    /// The instance is to be created by its first episode's commit.
    starting: Option<Starting>,
}

/// A start whose instance does not exist yet: its first episode runs at
/// once and the row is created in that episode's commit (one commit, not
/// two, before the guest's first step is durable).
pub struct Starting {
    pub row: InstanceRow,
    /// Lifecycle notifications of the start.
    pub notifications: Vec<Notification>,
    /// Created, or the status of an unfinished instance holding the id.
    pub reply: oneshot::Sender<Result<Result<(), RuntimeStatus>, StoreError>>,
}

/// An activity's outcome handed over straight from the call.
#[derive(Clone)]
struct ActivityOutcome {
    /// Which instance under this id asked: a later one that took the id
    /// does not get it.
    instance_pk: i64,
    seq: u32,
    message: Message,
}

/// An instance in the dispatch table: its next round's work, and how many
/// rounds the store refused since it last went idle (the back-off).
#[derive(Default)]
struct Entry {
    work: Work,
    failures: u32,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.activities.is_empty()
            && !self.unknown
            && self.created.is_none()
            && self.starting.is_none()
    }
}

/// Episode workers, so episodes that may run at once. Each holds a guest
/// instance in memory (and replays it when cold); a burst of thousands of
/// starts waits as ids in the ready queue, not as thousands of tasks.
pub const CONCURRENT_EPISODES: usize = 64;

/// Instances waiting for a round beyond which new arrivals keep no
/// handed-over messages in memory (each can hold a start input), only
/// their id: a burst of a million starts must not hold a million inputs.
const HANDED_OVER_BACKLOG: usize = 16_384;

pub struct Dispatcher {
    /// Instances that are queued or being driven.
    active: Mutex<HashMap<String, Entry>>,
    /// Instances with work and no worker yet; each id is in it at most once.
    ready: mpsc::UnboundedSender<String>,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    hot: Option<Mutex<HotCache<Hot>>>,
    /// Each instance's last episode commit still on its way to disk (with
    /// a token telling it from a later one). Episodes commit speculatively:
    /// the next round may start before the last commit landed, and a round
    /// that reads the store must wait for it, or it reads the instance as
    /// it was before (and the outcome of an activity that episode started
    /// would meet a history without the step).
    landing: Mutex<HashMap<String, (u64, oneshot::Receiver<()>)>>,
    commits: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// `hot_instances` and `hot_bytes` bound the hot cache (see
    /// `HotCache`); either 0 keeps nothing hot.
    pub fn new(hot_instances: usize, hot_bytes: usize, metrics: Arc<Metrics>) -> Dispatcher {
        let (ready, queue) = mpsc::unbounded_channel();
        Dispatcher {
            active: Mutex::new(HashMap::new()),
            ready,
            queue: tokio::sync::Mutex::new(queue),
            hot: HotCache::new(hot_instances, hot_bytes).map(Mutex::new),
            landing: Mutex::default(),
            commits: AtomicU64::new(0),
            metrics,
        }
    }

    /// Notes `id`'s commit in flight; answers its token.
    fn committing(&self, id: &str, landing: oneshot::Receiver<()>) -> u64 {
        let token = self.commits.fetch_add(1, Ordering::Relaxed);
        self.landing
            .lock()
            .expect("landing table")
            .insert(id.to_string(), (token, landing));
        token
    }

    /// `id`'s commit `token` is on disk (or failed): unless a later one
    /// took its place, nothing is in flight for it now.
    fn landed(&self, id: &str, token: u64) {
        let mut landing = self.landing.lock().expect("landing table");
        if landing.get(id).is_some_and(|(t, _)| *t == token) {
            landing.remove(id);
        }
    }

    /// Waits until `id`'s last commit is on disk (an instance's commits
    /// land in the order they were queued, so all before it are too).
    async fn until_landed(&self, id: &str) {
        let pending = self.landing.lock().expect("landing table").remove(id);
        if let Some((_, landing)) = pending {
            let _ = landing.await;
        }
    }

    /// Starts the episode workers.
    pub fn start(sched: &Arc<Scheduler>) {
        for _ in 0..CONCURRENT_EPISODES {
            tokio::spawn(work(sched.clone()));
        }
    }

    /// Makes sure the instance's inbox gets read and processed.
    pub fn wake(&self, id: &str) {
        self.add_work(id, |work| work.unknown = true);
    }

    /// Hands over a message just committed to the instance's inbox.
    pub fn hand_over(&self, id: &str, inbox_id: i64, message: Message) {
        self.add_work(id, |work| work.messages.push((inbox_id, message)));
    }

    /// Hands over a just-created instance and its start message.
    pub fn created(&self, row: InstanceRow, inbox_id: i64) {
        let id = row.id.clone();
        let start = Message::start(row.input.clone());
        self.add_work(&id, |work| {
            work.created = Some(row);
            work.messages.push((inbox_id, start));
        });
    }

    /// Runs the first episode of a new instance at once when a worker is
    /// free and nothing else is queued under its id; gives the start back
    /// otherwise (a burst of starts then commits each first, so callers
    /// are not kept waiting behind the episodes).
    pub fn start_at_once(
        &self,
        starting: Starting,
        ownership: &Ownership,
    ) -> Result<(), Box<Starting>> {
        if !ownership.owns(&starting.row.id) {
            return Err(Box::new(starting));
        }
        let mut active = self.active.lock().expect("dispatch table");
        let id = starting.row.id.clone();
        if active.len() >= CONCURRENT_EPISODES || active.contains_key(&id) {
            return Err(Box::new(starting));
        }
        self.queue_round(&mut active, &id).starting = Some(starting);
        Ok(())
    }

    /// Hands over an activity's outcome before any commit; gives it back
    /// when it cannot be kept in memory (then it goes to the inbox).
    pub fn activity_done(&self, activity: &ActivityRow, outcome: Message) -> Result<(), Message> {
        let id = activity.instance_id.as_str();
        let mut active = self.active.lock().expect("dispatch table");
        if self.too_deep(&active, id) {
            return Err(outcome);
        }
        let outcome = ActivityOutcome {
            instance_pk: activity.instance_pk,
            seq: activity.seq,
            message: outcome,
        };
        self.queue_round(&mut active, id).activities.push(outcome);
        Ok(())
    }

    fn add_work(&self, id: &str, add: impl FnOnce(&mut Work)) {
        let mut active = self.active.lock().expect("dispatch table");
        let too_deep = self.too_deep(&active, id);
        let work = self.queue_round(&mut active, id);
        if too_deep {
            // Deep in a burst: keep the id only; the round reads its
            // messages from the inbox.
            work.unknown = true;
        } else {
            add(work);
        }
    }

    /// A new arrival past the backlog keeps nothing in memory.
    fn too_deep(&self, active: &HashMap<String, Entry>, id: &str) -> bool {
        active.len() >= HANDED_OVER_BACKLOG && !active.contains_key(id)
    }

    /// The instance's next round, queued if it was not yet.
    fn queue_round<'a>(&self, active: &'a mut HashMap<String, Entry>, id: &str) -> &'a mut Work {
        if !active.contains_key(id) {
            active.insert(id.to_string(), Entry::default());
            let _ = self.ready.send(id.to_string());
        }
        &mut active.get_mut(id).expect("queued above").work
    }

    /// The work for the next round, or `None` (and the instance leaves the
    /// table) when there is none.
    fn next_round(&self, id: &str) -> Option<Work> {
        let mut active = self.active.lock().expect("dispatch table");
        let entry = active.get_mut(id)?;
        if entry.work.is_empty() {
            active.remove(id);
            // A burst of starts can queue a million instances here; give
            // the table's memory back once it has drained.
            let len = active.len();
            if active.capacity() > 4096 && len < active.capacity() / 8 {
                active.shrink_to(len * 2);
            }
            return None;
        }
        Some(std::mem::take(&mut entry.work))
    }

    /// After a round that did not commit: its messages are still in the
    /// inbox, so the next attempt reads them from there; its activity
    /// outcomes are only here, so they go back first in line. Returns how
    /// long to wait before that attempt.
    fn retry_round(&self, id: &str, activities: Vec<ActivityOutcome>) -> Duration {
        let mut active = self.active.lock().expect("dispatch table");
        let entry = active.entry(id.to_string()).or_default();
        entry.work.unknown = true;
        entry.work.activities.splice(0..0, activities);
        entry.failures += 1;
        (FIRST_BACKOFF * 2u32.saturating_pow(entry.failures - 1)).min(MAX_BACKOFF)
    }

    /// Drops a hot instance whose rows changed or are gone.
    pub fn forget(&self, id: &str) {
        self.take_hot(id);
    }

    fn take_hot(&self, id: &str) -> Option<Hot> {
        self.hot.as_ref()?.lock().expect("hot cache").remove(id)
    }

    fn keep_hot(&self, id: &str, hot: Hot) {
        if let Some(cache) = &self.hot {
            let bytes = hot.guest.memory_bytes();
            let left = cache.lock().expect("hot cache").insert(id, hot, bytes);
            self.metrics.hot_cache_evictions(left.evicted);
            // Dropped outside the lock: a guest's store takes a while to go.
            drop(left);
        }
    }

    /// Instances in the hot cache now, and the bytes their guests hold.
    pub fn hot_cache_size(&self) -> (usize, usize) {
        self.hot.as_ref().map_or((0, 0), |cache| {
            let cache = cache.lock().expect("hot cache");
            (cache.len(), cache.bytes())
        })
    }
}

/// Pauses between attempts at an episode the store refused.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An episode worker: drives one ready instance at a time.
async fn work(sched: Arc<Scheduler>) {
    loop {
        let next = sched.dispatcher.queue.lock().await.recv().await;
        let Some(id) = next else { return };
        drive(&sched, id).await;
    }
}

/// Runs the instance's rounds until it has no more work.
async fn drive(sched: &Arc<Scheduler>, id: String) {
    while let Some(mut work) = sched.dispatcher.next_round(&id) {
        if !sched.ownership.owns(&id) {
            // Another host runs it now: its messages are in the inbox for
            // that host; an activity outcome in hand is not, and the
            // activity runs again there.
            sched.dispatcher.forget(&id);
            if let Some(starting) = work.starting.take() {
                start_in_two_commits(sched, starting).await;
            }
            continue;
        }
        if let Some(starting) = work.starting.take() {
            first_round(sched, &id, starting).await;
            if work.is_empty() {
                continue;
            }
        }
        if let Err(error) = process(sched, &id, &work).await {
            // The messages stay in the inbox; try again once the store may
            // have recovered (disk space freed, lock released), without
            // holding a worker meanwhile.
            let backoff = sched.dispatcher.retry_round(&id, work.activities);
            tracing::error!(instance = %id, %error, "episode not committed; retrying in {backoff:?}");
            let sched = sched.clone();
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                let _ = sched.dispatcher.ready.send(id);
            });
            return;
        }
    }
}

/// One round: this round's messages through the instance's guest, then one
/// commit.
async fn process(sched: &Arc<Scheduler>, id: &str, work: &Work) -> Result<(), StoreError> {
    let began = Instant::now();
    let dispatcher = &sched.dispatcher;
    let hot = dispatcher.take_hot(id);
    if work.created.is_none() {
        sched.metrics.hot_cache_lookup(hot.is_some());
    }
    let in_hand = !work.unknown
        && match &hot {
            Some(hot) => hot.inbox_consumed,
            None => work.created.is_some(),
        };
    let mut read_upto = hot.as_ref().map_or(0, |h| h.read_upto);
    // Where the round's messages, row and history come from: memory for a
    // hot or just-created instance, else one read.
    let cached = hot.as_ref().map(|hot| hot.instance.clone());
    let (messages, instance, history) = match (cached, &work.created) {
        (Some(cached), _) if in_hand => (in_memory(work, read_upto), Some(cached), None),
        (Some(cached), _) => {
            // The guest is ahead of the store until its last commit lands.
            dispatcher.until_landed(id).await;
            (sched.store.inbox(id.to_string()).await?, Some(cached), None)
        }
        (None, Some(created)) if in_hand => (
            in_memory(work, read_upto),
            Some(created.clone()),
            Some(Vec::new()),
        ),
        (None, _) => {
            dispatcher.until_landed(id).await;
            let outcomes_in_hand = !work.activities.is_empty();
            let cold = sched
                .store
                .cold_round(id.to_string(), outcomes_in_hand)
                .await?;
            (cold.inbox, cold.instance, Some(cold.history))
        }
    };
    if !in_hand {
        if let Some((last, _)) = messages.last() {
            read_upto = read_upto.max(*last);
        }
    }
    let instance = match instance {
        Some(instance) if !instance.status.is_terminal() => instance,
        _ => {
            // (Its activity rows went when it finished.)
            for outcome in &work.activities {
                activities::dropped_late_result(id, outcome.seq);
            }
            let ids: Vec<i64> = messages.into_iter().map(|(id, _)| id).collect();
            sched.store.discard_messages(ids.clone()).await?;
            sched.signals.consumed(&ids);
            return Ok(());
        }
    };
    let keep = |guest, history_len, instance, inbox_consumed| {
        dispatcher.keep_hot(
            id,
            Hot {
                guest,
                history_len,
                instance,
                read_upto,
                inbox_consumed,
            },
        )
    };
    let held = instance.status == RuntimeStatus::Suspended
        && !messages
            .iter()
            .any(|(_, m)| matches!(m, Message::Resume { .. } | Message::Terminate { .. }));
    let outcomes: Vec<(u32, Message)> = work
        .activities
        .iter()
        .filter(|outcome| outcome.instance_pk == instance.pk)
        .map(|outcome| (outcome.seq, outcome.message.clone()))
        .collect();
    if held && !outcomes.is_empty() {
        // Held in the inbox with the rest, not in memory.
        sched
            .store
            .complete_activities(instance.pk, outcomes.clone())
            .await?;
    }
    if (messages.is_empty() && outcomes.is_empty()) || held {
        // Nothing new, or all of it held until resumed.
        if let Some(hot) = hot {
            keep(hot.guest, hot.history_len, hot.instance, !held);
        }
        return Ok(());
    }
    let mut span = episode_span(&instance);
    let log = span.log();
    let traced = &mut span;
    let keep = &keep;
    async move {
        let (mut guest, history_len, fault) = match (hot, history) {
            (Some(hot), _) => (Some(hot.guest), hot.history_len, None),
            (None, history) => rebuild(sched, &instance, history.unwrap_or_default()).await?,
        };
        let offered = messages.len();
        let in_hand = outcomes.clone();
        let messages = messages
            .into_iter()
            .map(|(id, message)| (Origin::Inbox(id), message))
            .chain(
                outcomes
                    .into_iter()
                    .map(|(seq, outcome)| (Origin::Activity(seq), outcome)),
            )
            .collect();
        let episode = episode::run(guest.as_mut(), &instance, history_len, messages, fault).await;
        sched.metrics.episode(began.elapsed());
        let inbox_consumed =
            episode.commit.consumed.len() == offered && episode.commit.held_activities.is_empty();
        if episode.is_idle() {
            if let Some(guest) = guest {
                keep(guest, history_len, instance, inbox_consumed);
            }
            return Ok(());
        }
        let kept = Hot {
            guest: (),
            history_len,
            instance,
            read_upto,
            inbox_consumed,
        };
        // The outcomes it took from memory, for the durable path should the
        // commit be refused.
        let in_hand = in_hand
            .into_iter()
            .filter(|(seq, _)| episode.commit.consumed_activities.contains(seq))
            .collect();
        // Only an episode that creates its instance can find the id taken.
        let _ = commit_round(sched, id, guest, kept, episode, in_hand, traced).await?;
        Ok(())
    }
    .instrument(log)
    .await
}

/// Commits an episode and acts on it: submits its activities, keeps the
/// instance hot (`then`, with its guest) if it still waits, and once the
/// commit is on disk wakes, announces and arms its timers. `Err` is the
/// status of an unfinished instance holding the id of one the episode
/// meant to create.
///
/// An existing instance goes on speculatively: its activities start and
/// its next episode may run before this commit is durable, saving a commit
/// wait per step. That keeps the guarantees: commits land in the order
/// they were queued, an episode commits only on top of the one before it,
/// and an activity runs at least once either way (one that ran for an
/// episode lost in a crash runs again when the replay asks for it, as one
/// interrupted by the crash would). What the outside sees (status, events,
/// notifications) waits for the commit. A new instance waits for its
/// commit first: a refused start must not have run anything.
async fn commit_round(
    sched: &Arc<Scheduler>,
    id: &str,
    guest: Option<Orchestrator>,
    then: Hot<()>,
    mut episode: episode::Episode,
    in_hand: Vec<(u32, Message)>,
    span: &mut trace::Span,
) -> Result<Result<(), RuntimeStatus>, StoreError> {
    // An ended orchestration's guest may serve another one at once; only
    // a waiting instance keeps its own (hot, below).
    let guest = match guest {
        Some(guest) if !episode.waiting => {
            sched.runtime.recycle(guest);
            None
        }
        guest => guest,
    };
    let instance = &then.instance;
    let changed = episode.commit.status.filter(|s| *s != instance.status);
    if let Some(status) = changed.filter(|s| s.is_terminal()) {
        let notifications = sched.notifier.notifications(&Change {
            instance_id: id,
            name: &instance.name,
            status,
            detail: episode.commit.output.as_deref(),
            callback_url: instance.callback_url.as_deref(),
        });
        episode.commit.notifications.extend(notifications);
    }
    for child in &mut episode.commit.children {
        child.version = sched.catalog.version_of(&child.name);
    }
    trace_episode(span, &mut episode.commit);
    let activities = episode.commit.activities.clone();
    let durable = Durable {
        consumed: episode.commit.consumed.clone(),
        created: episode.commit.creates.is_some(),
        changed,
        notify: !episode.commit.notifications.is_empty(),
        timers: episode.commit.timers.clone(),
    };
    let history_len = then.history_len + episode.commit.events.len();
    episode.commit.fence = sched.ownership.fence(id);
    episode.commit.deferrable = !durable.awaited();
    let committing = sched.store.commit_episode(episode.commit);
    let pk = if durable.created {
        match committing.await? {
            EpisodeOutcome::Committed(committed) => {
                let pk = committed.instance_pk;
                durable.act(sched, id, committed);
                pk
            }
            EpisodeOutcome::Conflict(status) => return Ok(Err(status)),
            EpisodeOutcome::Fenced => return Err(StoreError::Fenced),
            EpisodeOutcome::OutOfStep => {
                return Err(StoreError::Corrupt(format!(
                    "new instance {id} had history"
                )))
            }
        }
    } else {
        let (sched, id, pk_then) = (sched.clone(), id.to_string(), instance.pk);
        let (landed, landing) = oneshot::channel();
        let token = sched.dispatcher.committing(&id, landing);
        tokio::spawn(async move {
            let outcome = committing.await;
            let _ = landed.send(());
            sched.dispatcher.landed(&id, token);
            let failed = outcome.is_err();
            match outcome {
                Ok(EpisodeOutcome::Committed(committed)) => {
                    return durable.act(&sched, &id, committed)
                }
                Ok(EpisodeOutcome::Fenced) => {
                    tracing::info!(instance = %id, "episode refused: another host holds this instance's partition now");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(instance = %id, %error, "episode not committed; retrying in {FIRST_BACKOFF:?}");
                }
            }
            // Refused or failed: the outcomes it took from memory go the
            // durable way, where only those of committed calls (with a
            // row) count. One of a call the refused episode itself started
            // has none, and is dropped.
            if !in_hand.is_empty() {
                if let Err(error) = sched.store.complete_activities(pk_then, in_hand).await {
                    tracing::error!(instance = %id, %error, "cannot record activity results; they run again after restart");
                }
            }
            let pause = if failed {
                FIRST_BACKOFF
            } else {
                Duration::ZERO
            };
            start_over_from_store(&sched, &id, pause).await
        });
        instance.pk
    };
    for activity in activities {
        sched.activities.submit(
            sched,
            ActivityRow {
                instance_pk: pk,
                ..activity
            },
        );
    }
    if let Some(guest) = guest {
        sched.dispatcher.keep_hot(
            id,
            Hot {
                guest,
                history_len,
                instance: InstanceRow {
                    pk,
                    episodes: then.instance.episodes + 1,
                    status: changed.unwrap_or(then.instance.status),
                    ..then.instance
                },
                read_upto: then.read_upto,
                inbox_consumed: then.inbox_consumed,
            },
        );
    }
    Ok(Ok(()))
}

/// What an episode's commit makes happen once it is on disk.
struct Durable {
    /// The inbox messages it consumed.
    consumed: Vec<i64>,
    created: bool,
    changed: Option<RuntimeStatus>,
    notify: bool,
    timers: Vec<(u32, i64)>,
}

impl Durable {
    /// Whether somebody waits for the commit: the starter of an instance
    /// it creates, whoever waits for the instance to end, or the sender of
    /// a message it consumes (`EpisodeCommit::deferrable`).
    fn awaited(&self) -> bool {
        self.created
            || self.changed.is_some_and(RuntimeStatus::is_terminal)
            || !self.consumed.is_empty()
    }

    fn act(self, sched: &Arc<Scheduler>, id: &str, committed: Committed) {
        if self.created {
            sched.signals.announce(id, RuntimeStatus::Pending, None);
        }
        for other in committed.woken {
            sched.dispatcher.wake(&other);
        }
        if let Some(status) = self.changed {
            sched
                .signals
                .announce(id, status, committed.finished.as_deref());
        }
        sched.signals.changed(id, self.changed);
        if self.notify {
            sched.notifier.wake();
        }
        for (seq, fire_at) in self.timers {
            sched.timers.add(id, seq, fire_at);
        }
        // Last: whoever waits for a message sees all of the above.
        sched.signals.consumed(&self.consumed);
    }
}

/// A speculative episode did not commit: the instance in memory is ahead
/// of its rows. Drop it and, after `pause`, run the instance again from
/// what is stored.
async fn start_over_from_store(sched: &Arc<Scheduler>, id: &str, pause: Duration) {
    sched.dispatcher.forget(id);
    tokio::time::sleep(pause).await;
    // A round that held the stale guest meanwhile may have put it back.
    sched.dispatcher.forget(id);
    sched.dispatcher.wake(id);
}

/// The first round of an instance whose row does not exist yet: its first
/// episode runs and the row is created in the episode's commit.
async fn first_round(sched: &Arc<Scheduler>, id: &str, starting: Starting) {
    let Starting {
        row,
        notifications,
        reply,
    } = starting;
    let fallback = Starting {
        row: row.clone(),
        notifications: notifications.clone(),
        reply,
    };
    let mut span = episode_span(&row);
    let log = span.log();
    let outcome = async {
        let began = Instant::now();
        let (mut guest, _, fault) = rebuild(sched, &row, Vec::new()).await?;
        let start = Message::start(row.input.clone());
        let messages = vec![(Origin::Created, start)];
        let mut episode = episode::run(guest.as_mut(), &row, 0, messages, fault).await;
        sched.metrics.episode(began.elapsed());
        episode.commit.creates = Some(row.clone());
        episode.commit.notifications.splice(0..0, notifications);
        let then = Hot {
            guest: (),
            history_len: 0,
            instance: row,
            read_upto: 0,
            inbox_consumed: true,
        };
        commit_round(sched, id, guest, then, episode, Vec::new(), &mut span).await
    };
    match outcome.instrument(log).await {
        // Its partition moved to another host meanwhile: nothing was
        // written, and the instance starts there.
        Err(StoreError::Fenced) => start_in_two_commits(sched, fallback).await,
        outcome => {
            let _ = fallback.reply.send(outcome);
        }
    }
}

/// A start in two commits: the row and its start message first, the first
/// episode after, here if this host runs the instance, else on the host
/// that does (woken through the store).
pub async fn start_in_two_commits(sched: &Arc<Scheduler>, starting: Starting) {
    let Starting {
        row,
        notifications,
        reply,
    } = starting;
    let notify = !notifications.is_empty();
    let outcome = sched.store.create_instance(row, notifications).await;
    let outcome = outcome.map(|created| match created {
        CreateOutcome::Created(row, start) => {
            sched
                .signals
                .announce(&row.id, RuntimeStatus::Pending, None);
            if notify {
                sched.notifier.wake();
            }
            if sched.ownership.owns(&row.id) {
                sched.dispatcher.created(*row, start);
            }
            Ok(())
        }
        CreateOutcome::Conflict(status) => Err(status),
    });
    let _ = reply.send(outcome);
}

/// The handed-over messages a previous read has not already covered.
fn in_memory(work: &Work, read_upto: i64) -> Vec<(i64, Message)> {
    work.messages
        .iter()
        .filter(|(inbox_id, _)| *inbox_id > read_upto)
        .cloned()
        .collect()
}

/// The cold path: a fresh guest replayed over the stored history. A guest
/// that cannot be rebuilt comes back as a fault that fails the instance.
async fn rebuild(
    sched: &Arc<Scheduler>,
    instance: &InstanceRow,
    history: Vec<HistoryEvent>,
) -> Result<(Option<Orchestrator>, usize, Option<GuestFault>), StoreError> {
    let len = history.len();
    if let Err(fault) = sched.catalog.ensure_loaded(&instance.version).await? {
        return Ok((None, len, Some(fault)));
    }
    let replay = Replay::new(&instance.id, &history).pinned_to(&instance.version);
    let mut guest = match sched.runtime.orchestrator(&instance.version, replay).await {
        Ok(guest) => guest,
        Err(fault) => return Ok((None, len, Some(fault))),
    };
    match episode::replay_history(&mut guest, history).await {
        Ok(()) => Ok((Some(guest), len, None)),
        Err(fault) => Ok((None, len, Some(fault))),
    }
}

/// The span of an episode of `instance`: a child of its start span.
fn episode_span(instance: &InstanceRow) -> trace::Span {
    trace::Span::episode(&instance.id, instance.episodes, instance.trace)
}

/// Puts what an episode did on its span: the timers it set and fired, the
/// events it waited for and received (their names, never their data), the
/// status it left; and makes it the parent of the activity calls and
/// sub-orchestrations it started (each child's start span is made here).
fn trace_episode(span: &mut trace::Span, commit: &mut EpisodeCommit) {
    if span.recording() {
        for event in &commit.events {
            match event {
                HistoryEvent::ActionTaken {
                    seq,
                    action: Action::Timer { fire_at },
                    ..
                } => span.event(
                    Name::TimerCreated,
                    &[
                        (Key::TimerSeq, i64::from(*seq).into()),
                        (Key::TimerFireAt, format_time(*fire_at).as_str().into()),
                    ],
                ),
                HistoryEvent::ActionTaken {
                    action: Action::EventWait { name },
                    ..
                } => span.event(
                    Name::WaitingForEvent,
                    &[(Key::EventName, name.as_str().into())],
                ),
                HistoryEvent::TimerFired { seq } => {
                    span.event(Name::TimerFired, &[(Key::TimerSeq, i64::from(*seq).into())])
                }
                HistoryEvent::EventRaised { name, .. } => {
                    span.event(Name::EventRaised, &[(Key::EventName, name.as_str().into())])
                }
                _ => {}
            }
        }
        if !commit.cancelled_timers.is_empty() {
            let count = commit.cancelled_timers.len() as i64;
            span.event(Name::TimersCancelled, &[(Key::TimerCount, count.into())]);
        }
        if let Some(status) = commit.status {
            span.attribute(Key::Status, status.as_str());
        }
    }
    if commit.activities.is_empty() && commit.children.is_empty() {
        return;
    }
    let parent = span.parent();
    for activity in &mut commit.activities {
        activity.trace = parent;
    }
    for child in &mut commit.children {
        let start = trace::Span::start(
            &child.id,
            &child.name,
            child.version.as_deref().unwrap_or(""),
            parent,
        );
        child.trace = start.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_start_an_ending_or_a_consumed_message_is_awaited() {
        let durable = |created, changed, consumed: &[i64]| Durable {
            consumed: consumed.to_vec(),
            created,
            changed,
            notify: false,
            timers: vec![(1, 0)],
        };
        let step = durable(false, None, &[]);
        assert!(!step.awaited(), "an episode that only goes on");
        assert!(!durable(false, Some(RuntimeStatus::Running), &[]).awaited());
        assert!(durable(true, Some(RuntimeStatus::Running), &[]).awaited());
        for ended in [
            RuntimeStatus::Completed,
            RuntimeStatus::Failed,
            RuntimeStatus::Terminated,
        ] {
            assert!(durable(false, Some(ended), &[]).awaited(), "{ended:?}");
        }
        assert!(
            durable(false, None, &[7]).awaited(),
            "a raised event consumed"
        );
    }
}
