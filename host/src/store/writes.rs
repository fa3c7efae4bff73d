//! The logical transactions the writer commits.

use std::future::Future;

use rusqlite::{params, Connection, OptionalExtension};

use super::reads::{instance_row, INSTANCE_COLUMNS};
use super::{now_ms, InstanceRow, Store, StoreError};
use crate::engine::history::{HistoryEvent, Message, RetryPolicy, RuntimeStatus};

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

/// A sub-orchestration to create with the episode that asked for it.
#[derive(Debug, Clone)]
pub struct ChildStart {
    pub parent_seq: u32,
    pub id: String,
    pub name: String,
    pub input: String,
    /// The app version to run; `None` if no such orchestrator is deployed.
    pub version: Option<String>,
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

/// An episode's change to its instance's row, made only if the row is
/// still at the episode it was built on (`?7`).
const EPISODE_UPDATE: &str = "UPDATE instances SET status = COALESCE(?2, status),
                                      output = COALESCE(?3, output),
                                      custom_status = CASE WHEN ?4 THEN ?5 ELSE custom_status END,
                                      updated_at = ?6, episodes = episodes + 1
                               WHERE pk = ?1 AND episodes = ?7";

/// What an episode's change to its instance's row did.
enum Applied {
    /// The row was not at the episode it was built on: nothing changed.
    OutOfStep,
    /// Changed; the instance goes on.
    Going,
    /// Changed, and the instance finished: its row as stored, and the
    /// parent (id, task) awaiting it, if any.
    Ended {
        row: Box<InstanceRow>,
        parent: Option<(String, u32)>,
    },
}

/// An episode that continues as new: its instance's row starts over, made
/// only if the row is still at the episode it was built on (`?4`).
const RESTART_UPDATE: &str = "UPDATE instances SET status = 'ContinuedAsNew', input = ?2,
                                      output = NULL, updated_at = ?3, episodes = episodes + 1
                               WHERE pk = ?1 AND episodes = ?4";

/// Applies an episode to its instance's row; a finishing one reads the row
/// back in the same statement.
fn update_instance(
    conn: &Connection,
    pk: i64,
    commit: &EpisodeCommit,
) -> rusqlite::Result<Applied> {
    let going = |changed: usize| match changed {
        0 => Applied::OutOfStep,
        _ => Applied::Going,
    };
    if let Some(restart) = &commit.continue_as_new {
        let update = params![pk, restart.input, now_ms(), commit.after_episodes];
        return Ok(going(exec(conn, RESTART_UPDATE, update)?));
    }
    let update = params![
        pk,
        commit.status.map(RuntimeStatus::as_str),
        commit.output,
        commit.custom_status.is_some(),
        commit.custom_status.as_ref().and_then(Option::as_deref),
        now_ms(),
        commit.after_episodes
    ];
    if !commit.status.is_some_and(RuntimeStatus::is_terminal) {
        return Ok(going(exec(conn, EPISODE_UPDATE, update)?));
    }
    let sql = format!("{EPISODE_UPDATE} RETURNING {INSTANCE_COLUMNS}, parent_id, parent_seq");
    let ended = conn
        .prepare_cached(&sql)?
        .query_row(update, |r| {
            let parent: Option<String> = r.get(12)?;
            let seq: Option<u32> = r.get(13)?;
            Ok(Applied::Ended {
                row: Box::new(instance_row(r)?),
                parent: parent.zip(seq),
            })
        })
        .optional()?;
    Ok(ended.unwrap_or(Applied::OutOfStep))
}

/// The instance's internal key and status.
fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<(i64, RuntimeStatus)>> {
    let found: Option<(i64, String)> = conn
        .prepare_cached("SELECT pk, status FROM instances WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.and_then(|(pk, status)| Some((pk, RuntimeStatus::parse(&status)?))))
}

/// The status of the instance with this internal key: `None` once it is
/// gone, even if another took its id since.
fn status_by_pk(conn: &Connection, pk: i64) -> rusqlite::Result<Option<RuntimeStatus>> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM instances WHERE pk = ?1")?
        .query_row([pk], |r| r.get(0))
        .optional()?;
    Ok(status.and_then(|s| RuntimeStatus::parse(&s)))
}

/// Runs one statement through the connection's statement cache: these run
/// thousands of times a second, and parsing SQL each time showed in profiles.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Appends `events` as one row keyed by the position of the first: a
/// commit writes one history row however many events its episode made.
fn append_history(
    conn: &Connection,
    pk: i64,
    first_position: usize,
    events: &[HistoryEvent],
) -> rusqlite::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(events).expect("history events serialize");
    exec(
        conn,
        "INSERT INTO history (instance_pk, position, event) VALUES (?1, ?2, ?3)",
        params![pk, first_position as i64, json],
    )?;
    Ok(())
}

/// Returns the message's inbox id.
fn insert_message(conn: &Connection, pk: i64, message: &Message) -> rusqlite::Result<i64> {
    let json = serde_json::to_string(message).expect("messages serialize");
    exec(
        conn,
        "INSERT INTO inbox (instance_pk, message) VALUES (?1, ?2)",
        params![pk, json],
    )?;
    Ok(conn.last_insert_rowid())
}

fn insert_notifications(conn: &Connection, notifications: &[Notification]) -> rusqlite::Result<()> {
    if notifications.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let mut insert = conn.prepare_cached(
        "INSERT INTO outbox (url, body, created_at, next_at) VALUES (?1, ?2, ?3, ?3)",
    )?;
    for n in notifications {
        insert.execute(params![n.url, n.body, now])?;
    }
    Ok(())
}

fn insert_activity(conn: &Connection, pk: i64, a: &ActivityRow) -> rusqlite::Result<()> {
    let retry = serde_json::to_string(&a.retry).expect("retry policy serializes");
    conn.prepare_cached(
        "INSERT OR REPLACE INTO activities
           (instance_pk, seq, version, name, input, retry, attempt, run_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        pk, a.seq, a.version, a.name, a.input, retry, a.attempt, a.run_at
    ])?;
    Ok(())
}

/// Deletes a finished activity's row; false if it was gone already.
fn activity_done(conn: &Connection, pk: i64, seq: u32) -> rusqlite::Result<bool> {
    let removed = exec(
        conn,
        "DELETE FROM activities WHERE instance_pk = ?1 AND seq = ?2",
        params![pk, seq],
    )?;
    Ok(removed == 1)
}

/// Moves an activity's outcome from its row to the inbox, returning its
/// inbox id; `None` if the row was gone (the instance finished, or a re-run
/// already reported).
fn activity_outcome_to_inbox(
    conn: &Connection,
    pk: i64,
    seq: u32,
    outcome: &Message,
) -> rusqlite::Result<Option<i64>> {
    activity_done(conn, pk, seq)?
        .then(|| insert_message(conn, pk, outcome))
        .transpose()
}

/// Continue-as-new: the instance keeps its id and starts over with a fresh
/// history; unconsumed events follow its start message. (Its row changes
/// in `update_instance`.)
fn start_over(conn: &Connection, pk: i64, restart: &ContinueAsNew) -> rusqlite::Result<()> {
    for table in ["history", "activities", "timers"] {
        exec(
            conn,
            &format!("DELETE FROM {table} WHERE instance_pk = ?1"),
            [pk],
        )?;
    }
    // Messages still queued (arrived during the episode) go after the
    // carried ones, keeping arrival order; outcomes of the ending
    // generation's steps stay behind with it.
    let queued: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare_cached("SELECT id, message FROM inbox WHERE instance_pk = ?1 ORDER BY id")?;
        let rows = stmt.query_map([pk], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    exec(conn, "DELETE FROM inbox WHERE instance_pk = ?1", [pk])?;
    insert_message(
        conn,
        pk,
        &Message::Start {
            input: restart.input.clone(),
            first_seq: restart.first_seq,
        },
    )?;
    for message in &restart.carried {
        insert_message(conn, pk, message)?;
    }
    for (_, json) in queued {
        let outlives = serde_json::from_str::<Message>(&json)
            .map(|message| message.outlives_generation())
            .unwrap_or(true);
        if outlives {
            exec(
                conn,
                "INSERT INTO inbox (instance_pk, message) VALUES (?1, ?2)",
                params![pk, json],
            )?;
        }
    }
    Ok(())
}

/// A new instance's row, replacing a finished one of the same id: returns
/// the row, or the status of the unfinished instance that holds the id.
fn insert_instance(
    conn: &Connection,
    new: NewInstance<'_>,
) -> rusqlite::Result<Result<InstanceRow, RuntimeStatus>> {
    if let Some((pk, status)) = find(conn, new.id)? {
        if !status.is_terminal() {
            return Ok(Err(status));
        }
        delete_instance_rows(conn, pk)?;
    }
    let row = InstanceRow::pending(
        new.id.to_string(),
        new.name.to_string(),
        new.version.to_string(),
        new.input.to_string(),
        new.callback_url.map(str::to_string),
    );
    exec(
        conn,
        "INSERT INTO instances (id, name, version, status, input, created_at, updated_at,
                               callback_url, parent_id, parent_seq)
         VALUES (?1, ?2, ?3, 'Pending', ?4, ?5, ?5, ?6, ?7, ?8)",
        params![
            row.id,
            row.name,
            row.version,
            row.input,
            row.created_at,
            row.callback_url,
            new.parent.map(|(id, _)| id),
            new.parent.map(|(_, seq)| seq)
        ],
    )?;
    Ok(Ok(InstanceRow {
        pk: conn.last_insert_rowid(),
        ..row
    }))
}

/// Queues a new instance's start message; returns its inbox id.
fn queue_start(conn: &Connection, row: &InstanceRow) -> rusqlite::Result<i64> {
    let start = Message::start(row.input.clone());
    insert_message(conn, row.pk, &start)
}

struct NewInstance<'a> {
    id: &'a str,
    name: &'a str,
    version: &'a str,
    input: &'a str,
    callback_url: Option<&'a str>,
    /// The parent's id and the step that awaits this child.
    parent: Option<(&'a str, u32)>,
}

impl<'a> NewInstance<'a> {
    /// A top-level instance as a caller asked for it.
    fn started(row: &'a InstanceRow) -> Self {
        NewInstance {
            id: &row.id,
            name: &row.name,
            version: &row.version,
            input: &row.input,
            callback_url: row.callback_url.as_deref(),
            parent: None,
        }
    }
}

/// Creates a sub-orchestration, or fails its task at once when it cannot
/// start. Returns the instance to wake (the child, or the parent).
fn start_child(
    conn: &Connection,
    (parent, parent_pk): (&str, i64),
    child: &ChildStart,
) -> rusqlite::Result<String> {
    let refuse = |error: String| -> rusqlite::Result<String> {
        insert_message(
            conn,
            parent_pk,
            &Message::TaskFailed {
                seq: child.parent_seq,
                error,
            },
        )?;
        Ok(parent.to_string())
    };
    let Some(version) = &child.version else {
        return refuse(format!("no orchestrator named {} is deployed", child.name));
    };
    let new = NewInstance {
        id: &child.id,
        name: &child.name,
        version,
        input: &child.input,
        callback_url: None,
        parent: Some((parent, child.parent_seq)),
    };
    match insert_instance(conn, new)? {
        Ok(row) => {
            queue_start(conn, &row)?;
            Ok(child.id.clone())
        }
        Err(status) => refuse(format!(
            "sub-orchestration instance {} already exists and is {}",
            child.id,
            status.as_str()
        )),
    }
}

/// A finished sub-orchestration's outcome goes to task `seq` of its parent.
/// Returns the parent to wake, if it still runs.
fn report_to_parent(
    conn: &Connection,
    id: &str,
    (parent, seq): (String, u32),
    status: RuntimeStatus,
    output: Option<&str>,
) -> rusqlite::Result<Option<String>> {
    let parent_pk = match find(conn, &parent)? {
        Some((parent_pk, status)) if !status.is_terminal() => parent_pk,
        _ => return Ok(None),
    };
    let message = Message::child_outcome(id, seq, status, output);
    insert_message(conn, parent_pk, &message)?;
    Ok(Some(parent))
}

/// Removes every row an instance owns.
fn delete_instance_rows(conn: &Connection, pk: i64) -> rusqlite::Result<()> {
    for table in ["history", "inbox", "activities", "timers"] {
        exec(
            conn,
            &format!("DELETE FROM {table} WHERE instance_pk = ?1"),
            [pk],
        )?;
    }
    exec(conn, "DELETE FROM instances WHERE pk = ?1", [pk])?;
    Ok(())
}

impl Store {
    /// Stores a deployed version and makes it the app's current one.
    pub async fn deploy(&self, d: Deployment) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = now_ms();
            let allowed = d
                .allowed_settings
                .as_ref()
                .map(|names| serde_json::to_string(&names).expect("names serialize"));
            exec(
                conn,
                "INSERT INTO app_versions
                   (version, app, wasm, compiled, functions, allowed_settings, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(version) DO UPDATE SET compiled = excluded.compiled,
                                                    allowed_settings = excluded.allowed_settings",
                params![
                    d.version,
                    d.app,
                    d.wasm,
                    d.compiled,
                    d.functions,
                    allowed,
                    now
                ],
            )?;
            exec(
                conn,
                "INSERT INTO apps (name, version, deployed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET version = excluded.version,
                                                 deployed_at = excluded.deployed_at",
                params![d.app, d.version, now],
            )?;
            Ok(())
        })
        .await
    }

    /// Creates the instance `pending` describes, with its start message,
    /// replacing a finished instance of the same id.
    pub async fn create_instance(
        &self,
        pending: InstanceRow,
        notifications: Vec<Notification>,
    ) -> Result<CreateOutcome, StoreError> {
        self.write(
            move |conn| match insert_instance(conn, NewInstance::started(&pending))? {
                Ok(row) => {
                    let start = queue_start(conn, &row)?;
                    insert_notifications(conn, &notifications)?;
                    Ok(CreateOutcome::Created(Box::new(row), start))
                }
                Err(status) => Ok(CreateOutcome::Conflict(status)),
            },
        )
        .await
    }

    /// Puts a message in a running instance's inbox.
    /// Queues `message` for instance `id` (only for that `execution` of
    /// it, when given).
    pub async fn enqueue(
        &self,
        id: String,
        execution: Option<i64>,
        message: Message,
    ) -> Result<EnqueueOutcome, StoreError> {
        self.write(move |conn| match find(conn, &id)? {
            None => Ok(EnqueueOutcome::NotFound),
            Some((pk, _)) if execution.is_some_and(|e| e != pk) => Ok(EnqueueOutcome::Replaced),
            Some((_, status)) if status.is_terminal() => Ok(EnqueueOutcome::Terminal(status)),
            Some((pk, _)) => Ok(EnqueueOutcome::Queued(insert_message(conn, pk, &message)?)),
        })
        .await
    }

    /// Queues an episode's commit at once (see `EpisodeOutcome`), creating
    /// its instance first when it is the first (`creates`). Episodes of one
    /// instance may be queued before the previous one is on disk: each
    /// commits only if the instance's `episodes` is the count it was built
    /// on, and adds one.
    pub fn commit_episode(
        &self,
        commit: EpisodeCommit,
    ) -> impl Future<Output = Result<EpisodeOutcome, StoreError>> {
        self.write(move |conn| {
            let id = commit.instance_id.as_str();
            let pk = match &commit.creates {
                Some(row) => match insert_instance(conn, NewInstance::started(row))? {
                    Ok(created) => created.pk,
                    Err(status) => return Ok(EpisodeOutcome::Conflict(status)),
                },
                None => commit.instance_pk,
            };
            // The guard first: nothing is written unless the instance is
            // still at the episode this one was built on.
            let applied = update_instance(conn, pk, &commit)?;
            let mut committed = Committed {
                instance_pk: pk,
                woken: Vec::new(),
                finished: None,
            };
            let parent = match applied {
                Applied::OutOfStep => return Ok(EpisodeOutcome::OutOfStep),
                Applied::Going => None,
                Applied::Ended { row, parent } => {
                    committed.finished = Some(row);
                    parent
                }
            };
            let mut consume = conn.prepare_cached("DELETE FROM inbox WHERE id = ?1")?;
            for message in &commit.consumed {
                consume.execute([message])?;
            }
            for seq in &commit.consumed_activities {
                activity_done(conn, pk, *seq)?;
            }
            for (seq, outcome) in &commit.held_activities {
                activity_outcome_to_inbox(conn, pk, *seq, outcome)?;
            }
            insert_notifications(conn, &commit.notifications)?;
            if let Some(restart) = &commit.continue_as_new {
                start_over(conn, pk, restart)?;
                committed.woken.push(id.to_string());
                return Ok(EpisodeOutcome::Committed(committed));
            }
            append_history(conn, pk, commit.first_position, &commit.events)?;
            if let Some(finished) = &committed.finished {
                exec(conn, "DELETE FROM timers WHERE instance_pk = ?1", [pk])?;
                exec(conn, "DELETE FROM activities WHERE instance_pk = ?1", [pk])?;
                if let Some(parent) = parent {
                    let status = finished.status;
                    let output = commit.output.as_deref();
                    if let Some(parent) = report_to_parent(conn, id, parent, status, output)? {
                        committed.woken.push(parent);
                    }
                }
            } else {
                let mut timer = conn.prepare_cached(
                    "INSERT OR REPLACE INTO timers (instance_pk, seq, fire_at) VALUES (?1, ?2, ?3)",
                )?;
                for (seq, fire_at) in &commit.timers {
                    timer.execute(params![pk, seq, fire_at])?;
                }
                let mut cancel =
                    conn.prepare_cached("DELETE FROM timers WHERE instance_pk = ?1 AND seq = ?2")?;
                for seq in &commit.cancelled_timers {
                    cancel.execute(params![pk, seq])?;
                }
                for a in &commit.activities {
                    insert_activity(conn, pk, a)?;
                }
                for child in &commit.children {
                    committed.woken.push(start_child(conn, (id, pk), child)?);
                }
            }
            Ok(EpisodeOutcome::Committed(committed))
        })
    }

    /// Records activity outcomes in the inbox (returning their inbox ids),
    /// except those no longer wanted (the instance finished, or a re-run
    /// already reported).
    pub async fn complete_activities(
        &self,
        instance_pk: i64,
        outcomes: Vec<(u32, Message)>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        self.write(move |conn| {
            outcomes
                .iter()
                .map(|(seq, outcome)| activity_outcome_to_inbox(conn, instance_pk, *seq, outcome))
                .collect()
        })
        .await
    }

    /// Notes a failed attempt and when to try again.
    pub async fn retry_activity(
        &self,
        instance_pk: i64,
        seq: u32,
        attempt: u32,
        run_at: i64,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let changed = exec(
                conn,
                "UPDATE activities SET attempt = ?3, run_at = ?4 WHERE instance_pk = ?1 AND seq = ?2",
                params![instance_pk, seq, attempt, run_at],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Turns a due timer into a message (returning its inbox id), unless it
    /// was cancelled or its instance finished meanwhile.
    pub async fn fire_timer(&self, id: String, seq: u32) -> Result<Option<i64>, StoreError> {
        self.write(move |conn| {
            let Some((pk, _)) = find(conn, &id)? else {
                return Ok(None);
            };
            let removed = exec(
                conn,
                "DELETE FROM timers WHERE instance_pk = ?1 AND seq = ?2",
                params![pk, seq],
            )?;
            (removed == 1)
                .then(|| insert_message(conn, pk, &Message::TimerFired { seq }))
                .transpose()
        })
        .await
    }

    /// Drops inbox messages that no episode can use (the instance finished).
    pub async fn discard_messages(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let mut delete = conn.prepare_cached("DELETE FROM inbox WHERE id = ?1")?;
            for id in &ids {
                delete.execute([id])?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes an instance and everything it owns; false if there was none.
    pub async fn purge_instance(&self, id: String) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let Some((pk, _)) = find(conn, &id)? else {
                return Ok(false);
            };
            delete_instance_rows(conn, pk)?;
            Ok(true)
        })
        .await
    }

    /// Replaces a failed instance's history with `history`, schedules
    /// `activities` again, sets `timers` (step, fire at) again and sends it
    /// `message` to run on. False if the instance is no longer Failed.
    pub async fn rewind(
        &self,
        pk: i64,
        history: Vec<HistoryEvent>,
        activities: Vec<ActivityRow>,
        timers: Vec<(u32, i64)>,
        message: Message,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            if status_by_pk(conn, pk)? != Some(RuntimeStatus::Failed) {
                return Ok(false);
            }
            exec(conn, "DELETE FROM history WHERE instance_pk = ?1", [pk])?;
            append_history(conn, pk, 0, &history)?;
            for a in &activities {
                insert_activity(conn, pk, a)?;
            }
            for (seq, fire_at) in &timers {
                exec(
                    conn,
                    "INSERT OR REPLACE INTO timers (instance_pk, seq, fire_at) VALUES (?1, ?2, ?3)",
                    params![pk, seq, fire_at],
                )?;
            }
            exec(
                conn,
                "UPDATE instances SET status = 'Running', output = NULL, updated_at = ?2 WHERE pk = ?1",
                params![pk, now_ms()],
            )?;
            insert_message(conn, pk, &message)?;
            Ok(true)
        })
        .await
    }

    /// Purges finished instances created in `[from, to]` with one of
    /// `statuses`; returns how many.
    pub async fn purge_finished(
        &self,
        from: i64,
        to: Option<i64>,
        statuses: Vec<RuntimeStatus>,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            let names = serde_json::to_string(&names).expect("strings serialize");
            let pks: Vec<i64> = {
                let mut stmt = conn.prepare(
                    "SELECT pk FROM instances
                      WHERE created_at >= ?1 AND (?2 IS NULL OR created_at <= ?2)
                        AND status IN (SELECT value FROM json_each(?3))",
                )?;
                let rows = stmt.query_map(params![from, to, names], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for pk in &pks {
                delete_instance_rows(conn, *pk)?;
            }
            Ok(pks.len())
        })
        .await
    }

    /// A notification was delivered.
    pub async fn outbox_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.write(move |conn| {
            exec(conn, "DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    /// A delivery failed; try again at `next_at`.
    pub async fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_at: i64,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            exec(
                conn,
                "UPDATE outbox SET attempts = ?2, next_at = ?3 WHERE id = ?1",
                params![id, attempts, next_at],
            )?;
            Ok(())
        })
        .await
    }

    /// A stored secret from `meta` (the system key, the signing secret),
    /// storing `candidate` first if there is none.
    pub async fn meta_secret(
        &self,
        name: &'static str,
        candidate: String,
    ) -> Result<String, StoreError> {
        self.write(move |conn| {
            exec(
                conn,
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![name, candidate],
            )?;
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [name], |r| {
                r.get(0)
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    fn episode(pk: i64, after_episodes: i64, first_position: usize) -> EpisodeCommit {
        let events = 2;
        EpisodeCommit {
            instance_id: "i".into(),
            instance_pk: pk,
            after_episodes,
            first_position,
            events: (0..events as i64)
                .map(|timestamp| HistoryEvent::OrchestratorStarted { timestamp })
                .collect(),
            status: Some(RuntimeStatus::Running),
            ..EpisodeCommit::default()
        }
    }

    fn committed(outcome: Result<EpisodeOutcome, StoreError>) -> bool {
        matches!(outcome, Ok(EpisodeOutcome::Committed(_)))
    }

    fn out_of_step(outcome: Result<EpisodeOutcome, StoreError>) -> bool {
        matches!(outcome, Ok(EpisodeOutcome::OutOfStep))
    }

    /// A store in a fresh folder `name` holding one new instance "i".
    async fn store_with_an_instance(name: &str) -> (Store, InstanceRow, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("durango-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("t.db"), Durability::Normal).unwrap();
        let pending = InstanceRow::pending("i".into(), "O".into(), "v".into(), "7".into(), None);
        let CreateOutcome::Created(row, _) = store.create_instance(pending, vec![]).await.unwrap()
        else {
            panic!("not created")
        };
        (store, *row, dir)
    }

    #[tokio::test]
    async fn an_episode_commits_only_on_top_of_the_episode_it_was_built_on() {
        let (store, row, dir) = store_with_an_instance("writes").await;
        // Queued back to back, as a hot instance's episodes are.
        let first = store.commit_episode(episode(row.pk, 0, 0));
        let built_on_a_lost_one = store.commit_episode(episode(row.pk, 5, 2));
        let built_before_the_first = store.commit_episode(episode(row.pk, 0, 0));
        let next = store.commit_episode(episode(row.pk, 1, 2));
        assert!(committed(first.await));
        assert!(out_of_step(built_on_a_lost_one.await));
        assert!(out_of_step(built_before_the_first.await));
        assert!(committed(next.await));
        assert_eq!(store.history("i".into()).await.unwrap().len(), 4);

        store.purge_instance("i".into()).await.unwrap();
        assert!(out_of_step(
            store.commit_episode(episode(row.pk, 2, 4)).await
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn the_episode_that_ends_an_instance_returns_its_row_as_stored() {
        let (store, row, dir) = store_with_an_instance("ends").await;
        let Ok(EpisodeOutcome::Committed(running)) =
            store.commit_episode(episode(row.pk, 0, 0)).await
        else {
            panic!("first episode not committed")
        };
        assert!(running.finished.is_none(), "still running");
        let last = EpisodeCommit {
            status: Some(RuntimeStatus::Completed),
            output: Some("\"done\"".into()),
            custom_status: Some(Some("\"last\"".into())),
            ..episode(row.pk, 1, 2)
        };
        let Ok(EpisodeOutcome::Committed(ended)) = store.commit_episode(last).await else {
            panic!("last episode not committed")
        };
        let returned = ended
            .finished
            .expect("the finishing commit returns the row");
        let stored = store.instance("i".into()).await.unwrap().unwrap();
        assert_eq!(returned.status, RuntimeStatus::Completed);
        assert_eq!(returned.output.as_deref(), Some("\"done\""));
        assert_eq!(format!("{returned:?}"), format!("{stored:?}"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
