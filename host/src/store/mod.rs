//! Storage: the domain records (`records`, no SQL) and the traits a backend
//! implements, split by who uses them:
//!
//! - `InstanceReads`: what the API and the host's operations read;
//! - `Episodes`: the engine's side: an instance's round, its episode
//!   commit, and the operations that change an instance from outside
//!   (create, enqueue, rewind, purge);
//! - `WorkQueues`: the scheduler's timers and activity calls;
//! - `Outbox`: lifecycle notifications waiting for delivery;
//! - `Apps`: deployed versions and the host's stored secrets.
//!
//! The engine decides what to write (every message, every row); a backend
//! only stores it, in its own schema: `sqlite/` (the embedded default, one
//! writer with group commit) and `postgres/` (any number of hosts on one
//! database). Every statement of both is parameterized.
//!
//! Methods return boxed futures that own what they need ('static): the
//! store is shared behind `Arc<dyn Store>` and a write is queued when the
//! method is called, not when its future is first polled (an instance's
//! episodes commit in the order they were queued).
//!
//! Error contract (`StoreError`): `Unavailable` means the database cannot
//! take the request now and a retry later may succeed (the API answers
//! 503); `Fenced` means this host no longer holds the lease of the
//! instance's partition and nothing was written; `Corrupt` means a stored
//! row cannot be read; `Database` is any other failure; `Stopped` means the
//! host is shutting down. "Not found" is never an error: reads answer
//! `None`, writes answer an outcome that says so.

pub mod postgres;
mod records;
pub mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::history::{HistoryEvent, Message, RuntimeStatus};
use crate::metrics::StoreMetrics;
pub use records::*;

/// What every store method returns: a future that owns its inputs.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// What the store failed with. Cloned to every caller of a failed commit.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The database cannot take the request right now (down, disk full,
    /// read-only, locked): retrying later may succeed.
    Unavailable(String),
    /// This host's lease on the instance's partition is gone (another host
    /// owns it now): the write was refused, nothing was written.
    Fenced,
    /// The database holds a row that cannot be read.
    Corrupt(String),
    /// Any other database error.
    Database(String),
    /// The connections are gone (the host is shutting down).
    Stopped,
}

impl StoreError {
    /// True when the database cannot take writes right now: the API
    /// answers 503 instead of 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Stopped | StoreError::Fenced
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "the database is unavailable: {why}"),
            StoreError::Fenced => f.write_str(
                "this host no longer owns the instance's partition; another host serves it",
            ),
            StoreError::Corrupt(what) => write!(f, "database holds an unreadable row: {what}"),
            StoreError::Database(message) => write!(f, "database error: {message}"),
            StoreError::Stopped => f.write_str("the database connection has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The store's durability: `Full` syncs every commit (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Full,
    Normal,
}

/// What the API and the host's operations read.
pub trait InstanceReads: Send + Sync {
    fn instance(&self, id: String) -> StoreFuture<Option<InstanceRow>>;
    fn history(&self, id: String) -> StoreFuture<Vec<HistoryEvent>>;
    /// The instance's unconsumed messages, oldest first, with their ids.
    fn inbox(&self, id: String) -> StoreFuture<Vec<(i64, Message)>>;
    /// Whether the inbox message with this id is still unconsumed.
    fn message_pending(&self, inbox_id: i64) -> StoreFuture<bool>;
    /// Instances matching `filter`, oldest first.
    fn list_instances(&self, filter: InstanceFilter) -> StoreFuture<Vec<InstanceRow>>;
    /// How many instances have `status`.
    fn count_instances(&self, status: RuntimeStatus) -> StoreFuture<usize>;
    /// The instance's activity calls still owed and timers still set (a
    /// cancelled timer's row is gone).
    fn pending_work(&self, pk: i64) -> StoreFuture<PendingWork>;
    /// How many instances there are of each status: every status of
    /// `RuntimeStatus::ALL`, in that order, zero included. One pass over
    /// the status index (no table rows read).
    fn count_by_status(&self) -> StoreFuture<Vec<(RuntimeStatus, u64)>>;
    /// The unfinished instances (neither completed, failed nor terminated)
    /// pinned to any version of `app`, oldest first.
    fn unfinished_of_app(&self, app: String) -> StoreFuture<Vec<InstanceRow>>;
}

/// The engine's side: rounds and episode commits, and the changes made to
/// an instance from outside it.
pub trait Episodes: Send + Sync {
    /// What a round for an instance that is not in memory needs, read in
    /// one snapshot: its inbox, its row and (when there is work for it:
    /// inbox messages, or `work_in_hand`) its history.
    fn cold_round(&self, id: String, work_in_hand: bool) -> StoreFuture<ColdRound>;
    /// Creates the instance `pending` describes, with its start message,
    /// replacing a finished instance of the same id.
    fn create_instance(
        &self,
        pending: InstanceRow,
        notifications: Vec<Notification>,
    ) -> StoreFuture<CreateOutcome>;
    /// Queues `message` for instance `id` (only for that `execution` of it,
    /// when given).
    fn enqueue(
        &self,
        id: String,
        execution: Option<i64>,
        message: Message,
    ) -> StoreFuture<EnqueueOutcome>;
    /// Queues an episode's commit at once (see `EpisodeOutcome`), creating
    /// its instance first when it is the first (`creates`). Episodes of one
    /// instance may be queued before the previous one is durable: each
    /// commits only if the instance's `episodes` is the count it was built
    /// on, and adds one; they commit in the order they were queued.
    fn commit_episode(&self, commit: EpisodeCommit) -> StoreFuture<EpisodeOutcome>;
    /// Drops inbox messages that no episode can use (the instance finished).
    fn discard_messages(&self, ids: Vec<i64>) -> StoreFuture<()>;
    /// Moves an unfinished instance to version `to` and records it in its
    /// history, if it is still on `from` at the episode the check replayed
    /// (the move counts as an episode, so a hot copy's next commit finds
    /// itself out of step and reads the instance again); answers whether
    /// it moved.
    fn move_instance(&self, moved: MoveCommit) -> StoreFuture<bool>;
    /// Replaces a failed instance's history with `rewind.history`, schedules
    /// its activities and timers again and queues `message` for it. False
    /// if the instance is no longer Failed.
    fn rewind(&self, rewind: RewindCommit) -> StoreFuture<bool>;
    /// Deletes an instance and everything it owns; false if there was none.
    fn purge_instance(&self, id: String) -> StoreFuture<bool>;
    /// Purges finished instances created in `[from, to]` with one of
    /// `statuses`; returns how many.
    fn purge_finished(
        &self,
        from: i64,
        to: Option<i64>,
        statuses: Vec<RuntimeStatus>,
    ) -> StoreFuture<usize>;
}

/// The scheduler's queues: durable timers and activity calls.
pub trait WorkQueues: Send + Sync {
    /// Pending timers due in `(after, until]`: (instance, seq, fire_at), of
    /// instances in `partitions` (`None`: all).
    fn timers_between(
        &self,
        after: i64,
        until: i64,
        partitions: Option<Vec<i32>>,
    ) -> StoreFuture<Vec<(String, u32, i64)>>;
    /// Every activity call still owed a result (in `partitions`).
    fn activities(&self, partitions: Option<Vec<i32>>) -> StoreFuture<Vec<ActivityRow>>;
    /// Instances with messages waiting (in `partitions`): the work left
    /// when a host stopped.
    fn instances_with_messages(&self, partitions: Option<Vec<i32>>) -> StoreFuture<Vec<String>>;
    /// Records activity outcomes in the inbox (returning their inbox ids),
    /// except those no longer wanted (the instance finished, or a re-run
    /// already reported).
    fn complete_activities(
        &self,
        instance_pk: i64,
        outcomes: Vec<(u32, Message)>,
    ) -> StoreFuture<Vec<Option<i64>>>;
    /// Notes a failed attempt and when to try again; false if the call is
    /// no longer owed.
    fn retry_activity(
        &self,
        instance_pk: i64,
        seq: u32,
        attempt: u32,
        run_at: i64,
    ) -> StoreFuture<bool>;
    /// Turns a due timer into a message (returning its inbox id), unless it
    /// was cancelled or its instance finished meanwhile.
    fn fire_timer(&self, id: String, seq: u32) -> StoreFuture<Option<i64>>;
}

/// Lifecycle notifications, queued in the commits that make them.
pub trait Outbox: Send + Sync {
    /// Notifications due by `now`, oldest first, and when the next one
    /// after those is due.
    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<(Vec<OutboxRow>, Option<i64>)>;
    fn outbox_delivered(&self, id: i64) -> StoreFuture<()>;
    /// A delivery failed; try again at `next_at`.
    fn outbox_retry(&self, id: i64, attempts: u32, next_at: i64) -> StoreFuture<()>;
}

/// Deployed app versions, and the secrets the hosts share.
pub trait Apps: Send + Sync {
    /// Stores a deployed version and makes it the app's current one.
    fn deploy(&self, deployment: Deployment) -> StoreFuture<()>;
    /// A version's compiled form and original bytes.
    fn app_version(&self, version: String) -> StoreFuture<Option<StoredVersion>>;
    /// Replaces a version's compiled form: a host whose engine could not
    /// load the stored one (another wasmtime, other engine settings)
    /// compiled it again.
    fn store_compiled(&self, version: String, compiled: Vec<u8>) -> StoreFuture<()>;
    /// Every app's current version: (name, version, functions JSON).
    fn current_apps(&self) -> StoreFuture<Vec<(String, String, String)>>;
    /// The stored versions of `app` (those deployed under its name, and its
    /// current one), newest first, each with its count of unfinished
    /// instances and whether it is the app's current one; `None` if there
    /// is no app of that name.
    fn app_versions(&self, app: String) -> StoreFuture<Option<Vec<VersionRow>>>;
    /// Removes the version of `app` whose digest starts with `prefix`, in
    /// one transaction: only if exactly one of the app's versions matches,
    /// it is no app's current version, and no instance uses it. An instance
    /// uses its version while it is unfinished, and while it is Failed (a
    /// rewind replays it there); Completed and Terminated ones do not. The
    /// outcome says which case held; nothing is written unless `Removed`.
    /// Other hosts on the database may keep the version loaded in memory
    /// until they restart (no instance needs it any more).
    fn remove_version(&self, app: String, prefix: String) -> StoreFuture<VersionRemoval>;
    /// The unfinished instances on versions of `app` other than `except`,
    /// counted by orchestrator and version (sorted by both): after a deploy
    /// of `except`, the instances that stay on older code.
    fn unfinished_elsewhere(
        &self,
        app: String,
        except: String,
    ) -> StoreFuture<Vec<PinnedOrchestrator>>;
    /// A stored secret (the system key, a signing secret), storing
    /// `candidate` first if there is none.
    fn meta_secret(&self, name: &'static str, candidate: String) -> StoreFuture<String>;
}

/// Several hosts on one database: each leases partitions of the instances
/// and learns from the others what they committed. A backend for one host
/// (SQLite) answers `None`: that host owns everything, and nobody else
/// writes.
pub trait Leases: Send + Sync {
    /// Renews this host's leases (each `lease_ms` long) and balances them
    /// with the other live hosts: takes free or expired partitions up to
    /// its share, gives back what is beyond it. Answers the partitions held
    /// now with their epochs.
    fn lease_round(&self, lease_ms: i64) -> StoreFuture<Option<HashMap<i32, i64>>>;
    /// What other hosts commit from now on, as it is committed.
    fn remote_changes(&self) -> StoreFuture<Option<mpsc::UnboundedReceiver<Remote>>>;
}

/// Folds a backend's `(status, count)` rows into one count per status of
/// `RuntimeStatus::ALL`, in that order. A status the host cannot read
/// counts as Failed, as reading the instance row itself answers.
pub(crate) fn tally_statuses(
    rows: impl IntoIterator<Item = (String, i64)>,
) -> Vec<(RuntimeStatus, u64)> {
    let mut counts: Vec<(RuntimeStatus, u64)> =
        RuntimeStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for (status, n) in rows {
        let status = RuntimeStatus::parse(&status).unwrap_or(RuntimeStatus::Failed);
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 += n.max(0) as u64;
        }
    }
    counts
}

/// A whole backend.
pub trait Store: InstanceReads + Episodes + WorkQueues + Outbox + Apps + Leases {}

impl<T: InstanceReads + Episodes + WorkQueues + Outbox + Apps + Leases> Store for T {}

/// Opens the store `db` names: a `postgres://` or `postgresql://` URL, or
/// the path of a SQLite file.
pub async fn open(db: &str, durability: Durability) -> Result<Arc<dyn Store>, StoreError> {
    open_observed(db, durability, StoreMetrics::unregistered()).await
}

/// `open`, with the writers' group commits recorded on `metrics`.
pub async fn open_observed(
    db: &str,
    durability: Durability,
    metrics: StoreMetrics,
) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres(db) {
        return Ok(Arc::new(postgres::PgStore::open(db, metrics).await?));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(
        std::path::Path::new(db),
        durability,
        metrics,
    )?))
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}
