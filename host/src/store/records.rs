//! The domain records storage holds: instance rows, episode commits,
//! messages, activity and timer rows, notifications, deployments. They know
//! no SQL; each backend maps them to its own schema.

use crate::engine::history::{HistoryEvent, Message, RetryPolicy, RuntimeStatus};
use crate::trace::Parent;

/// Milliseconds since the Unix epoch: the clock every stored time uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How many partitions instances fall into by id. Hosts sharing a database
/// lease partitions, not instances; fixed, since every host must agree.
pub const PARTITIONS: i32 = 16;

/// The partition of instance `id` (FNV-1a of its bytes: the same on every
/// host and build).
pub fn partition_of(id: &str) -> i32 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % PARTITIONS as u64) as i32
}

/// The lease an episode's commit is made under: it writes only while this
/// host still holds the partition at this epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub partition: i32,
    pub epoch: i64,
}

/// What other hosts on the database committed that this one may care
/// about: instances with new messages, instances that finished, inbox
/// messages consumed, a deploy (`apps`), instances moved to another
/// version. Or, after a lost connection, that
/// some may have been missed (`resync`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Remote {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub woken: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumed: Vec<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resync: bool,
    /// The deployed apps changed: which version serves each orchestrator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apps: bool,
    /// Instances moved to another version: a copy kept in memory runs the
    /// old one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
}

/// A stored time as Durable Functions writes times: `yyyy-MM-ddTHH:mm:ssZ`.
pub fn format_time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone)]
pub struct InstanceRow {
    /// Internal, never reused: tells an instance from a later one that
    /// took the same id.
    pub pk: i64,
    /// Episodes committed when this row was read (or, for a hot instance,
    /// queued to commit): the next commits only on top of them.
    pub episodes: i64,
    pub id: String,
    pub name: String,
    pub version: String,
    pub status: RuntimeStatus,
    pub input: String,
    pub output: Option<String>,
    pub custom_status: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub callback_url: Option<String>,
    /// The instance's trace: its start span, the parent of its later spans
    /// (`None` when it was started untraced); stored in
    /// `instances.trace_context` (SQLite: `Parent::to_bytes`; PostgreSQL: a
    /// W3C `traceparent`).
    pub trace: Option<Parent>,
}

impl InstanceRow {
    /// An instance about to be created: Pending since now, no pk yet.
    pub fn pending(
        id: String,
        name: String,
        version: String,
        input: String,
        callback_url: Option<String>,
    ) -> InstanceRow {
        let now = now_ms();
        InstanceRow {
            pk: 0,
            episodes: 0,
            id,
            name,
            version,
            status: RuntimeStatus::Pending,
            input,
            output: None,
            custom_status: None,
            created_at: now,
            updated_at: now,
            callback_url,
            trace: None,
        }
    }
}

/// A stored app version.
pub struct StoredVersion {
    pub compiled: Vec<u8>,
    pub wasm: Vec<u8>,
    pub allowed_settings: Option<Vec<String>>,
}

/// Which instances a list asks for.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub statuses: Vec<RuntimeStatus>,
    /// The orchestrator's name, exactly.
    pub name: Option<String>,
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    pub id_prefix: Option<String>,
    /// Continue after this (created_at, id).
    pub after: Option<(i64, String)>,
    /// Newest first (the dashboard's order) instead of oldest first.
    pub newest_first: bool,
    pub limit: usize,
}

impl InstanceFilter {
    /// Where a page starts when no continuation says: before every row in
    /// the list's order.
    pub fn resume_after(&self) -> (i64, String) {
        self.after.clone().unwrap_or(if self.newest_first {
            (i64::MAX, String::new())
        } else {
            (i64::MIN, String::new())
        })
    }
}

/// An instance's activity calls still owed and timers still set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PendingWork {
    /// (step, attempts already made, when the next attempt may run).
    pub activities: Vec<(u32, u32, i64)>,
    /// (step, due).
    pub timers: Vec<(u32, i64)>,
}

/// A notification waiting for delivery.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub url: String,
    pub body: String,
    pub attempts: u32,
    pub created_at: i64,
}

/// See `Store::cold_round`.
pub struct ColdRound {
    pub inbox: Vec<(i64, Message)>,
    pub instance: Option<InstanceRow>,
    pub history: Vec<HistoryEvent>,
}

pub enum CreateOutcome {
    /// The new row, and the inbox id of its start message.
    Created(Box<InstanceRow>, i64),
    /// An instance with that id exists and has not finished.
    Conflict(RuntimeStatus),
}

pub enum EnqueueOutcome {
    /// In the inbox under this id.
    Queued(i64),
    NotFound,
    /// The instance has finished; nothing will read the message.
    Terminal(RuntimeStatus),
    /// The message was for an execution that is gone: the id now names an
    /// instance started again since.
    Replaced,
}

/// An activity call waiting for (another) attempt.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    pub instance_id: String,
    /// The instance's internal key: an outcome for an instance since
    /// replaced under the same id finds no row and is dropped.
    pub instance_pk: i64,
    pub seq: u32,
    pub version: String,
    pub name: String,
    pub input: String,
    pub retry: RetryPolicy,
    /// Attempts already made.
    pub attempt: u32,
    pub run_at: i64,
    /// The span its attempts' spans are children of: the episode that
    /// scheduled it, or (read back from the store) its instance's start.
    pub trace: Option<Parent>,
}

impl ActivityRow {
    /// The call's idempotency key: the instance id, its execution (the
    /// internal key, new whenever the id is started again) and the step
    /// (numbered across continue-as-new generations). The same for every
    /// run of this call, different from every other call for ever.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.instance_id, self.instance_pk, self.seq)
    }
}

/// A lifecycle notification to queue: where to POST and what.
#[derive(Debug, Clone)]
pub struct Notification {
    pub url: String,
    pub body: String,
}

/// A version to store as an app's current one.
pub struct Deployment {
    pub app: String,
    pub version: String,
    pub wasm: Vec<u8>,
    pub compiled: Vec<u8>,
    /// JSON list of the app's functions.
    pub functions: String,
    /// The settings it may read; `None` allows all.
    pub allowed_settings: Option<Vec<String>>,
}

/// One stored version of an app, as `Apps::app_versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The sha256 digest of the component bytes.
    pub version: String,
    /// When these bytes were first stored (ms since the epoch).
    pub deployed_at: i64,
    /// Instances on it that have not finished (neither Completed, Failed
    /// nor Terminated).
    pub unfinished: u64,
    /// Whether it serves the app's new instances.
    pub current: bool,
}

/// What `Apps::remove_version` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRemoval {
    /// The version is gone: its wasm and compiled code.
    Removed(String),
    /// No version of the app starts with the prefix.
    NotFound,
    /// More than one version of the app starts with the prefix: these.
    Ambiguous(Vec<String>),
    /// It is the current version of an app: new instances start on it.
    Current(String),
    /// Instances still use it: `unfinished` ones, and `failed` ones (a
    /// rewind replays them on it).
    InUse {
        version: String,
        unfinished: u64,
        failed: u64,
    },
}

/// Unfinished instances of one orchestrator on one version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinnedOrchestrator {
    pub orchestrator: String,
    pub version: String,
    pub unfinished: u64,
}

/// A sub-orchestration to create with the episode that asked for it.
#[derive(Debug, Clone)]
pub struct ChildStart {
    pub parent_seq: u32,
    pub id: String,
    pub name: String,
    pub input: String,
    /// The app version to run; `None` if no such orchestrator is deployed.
    pub version: Option<String>,
    /// The child's trace (see `InstanceRow::trace`): its start span, a
    /// child of the parent's episode.
    pub trace: Option<Parent>,
}

/// The orchestration starts over: a fresh history with `input`, and these
/// messages queued after the start, in order.
#[derive(Debug, Clone)]
pub struct ContinueAsNew {
    pub input: String,
    /// The next generation's first step number.
    pub first_seq: u32,
    pub carried: Vec<Message>,
}

/// Everything one episode changes, committed atomically with the messages it
/// consumed.
#[derive(Debug, Default)]
pub struct EpisodeCommit {
    pub instance_id: String,
    pub instance_pk: i64,
    /// The instance's `episodes` the episode was built on.
    pub after_episodes: i64,
    /// Position of the first new event (the history's length before).
    pub first_position: usize,
    pub events: Vec<HistoryEvent>,
    /// Inbox messages it consumed.
    pub consumed: Vec<i64>,
    /// Activities whose outcome it consumed straight from the call: their
    /// rows go now.
    pub consumed_activities: Vec<u32>,
    /// Outcomes handed over straight from the call that it held (the
    /// instance is suspended): into the inbox with them.
    pub held_activities: Vec<(u32, Message)>,
    pub activities: Vec<ActivityRow>,
    pub timers: Vec<(u32, i64)>,
    pub cancelled_timers: Vec<u32>,
    pub status: Option<RuntimeStatus>,
    pub output: Option<String>,
    /// `Some` replaces the custom status (`Some(None)` clears it).
    pub custom_status: Option<Option<String>>,
    pub notifications: Vec<Notification>,
    pub children: Vec<ChildStart>,
    pub continue_as_new: Option<ContinueAsNew>,
    /// The instance's first episode, run before its row existed: the row
    /// is created in this commit.
    pub creates: Option<InstanceRow>,
    /// The lease it commits under, when hosts share the database.
    pub fence: Option<Fence>,
    /// Nobody waits for this commit (it neither creates its instance, nor
    /// ends it, nor consumes a message someone raised): a store may hold it
    /// back briefly to commit it with the next one somebody does wait for.
    pub deferrable: bool,
}

/// How an episode's commit went.
#[derive(Debug)]
pub enum EpisodeOutcome {
    Committed(Committed),
    /// The episode was to create its instance, but an unfinished one with
    /// this status holds the id: nothing was written.
    Conflict(RuntimeStatus),
    /// The instance is gone, or the episode was not built on its last
    /// committed one (an earlier episode did not commit, or a round read
    /// the store before it did): nothing was written.
    OutOfStep,
    /// This host no longer holds the instance's partition (another host
    /// took it over): nothing was written.
    Fenced,
}

/// What an episode's commit did.
#[derive(Debug)]
pub struct Committed {
    /// The instance's pk (assigned now if the episode created it).
    pub instance_pk: i64,
    /// Other instances it sent messages to: wake them.
    pub woken: Vec<String>,
    /// The instance's row as stored, when the episode finished it: those
    /// waiting for the end get it without reading it back.
    pub finished: Option<Box<InstanceRow>>,
}

/// An unfinished instance moved to another version of its app, its
/// history having replayed on it without a divergence.
#[derive(Debug, Clone)]
pub struct MoveCommit {
    pub id: String,
    pub pk: i64,
    /// The instance's `episodes` the check replayed: a commit since leaves
    /// it where it is.
    pub after_episodes: i64,
    /// The history's length then: where `VersionChanged` goes.
    pub first_position: usize,
    pub from: String,
    pub to: String,
}

/// A failed instance run again from where it failed: its history without
/// the failure, the activity calls and timers to set again, and the
/// message that makes it run on.
#[derive(Debug)]
pub struct RewindCommit {
    pub pk: i64,
    pub history: Vec<HistoryEvent>,
    pub activities: Vec<ActivityRow>,
    pub timers: Vec<(u32, i64)>,
    pub message: Message,
}
