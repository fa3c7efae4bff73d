//! The logical transactions the writer commits.

use rusqlite::{params, Connection, OptionalExtension};

use super::reads::{instance_row, read_history, read_inbox, read_instance, INSTANCE_COLUMNS};
use super::SqliteStore;
use crate::engine::history::{HistoryEvent, Message, RuntimeStatus};
use crate::store::{
    now_ms, ActivityRow, ChildStart, ColdRound, Committed, ContinueAsNew, CreateOutcome,
    EnqueueOutcome, EpisodeCommit, EpisodeOutcome, Episodes, InstanceRow, MoveCommit, Notification,
    RewindCommit, StoreFuture,
};
use crate::trace::Parent;

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
            let parent: Option<String> = r.get("parent_id")?;
            let seq: Option<u32> = r.get("parent_seq")?;
            Ok(Applied::Ended {
                row: Box::new(instance_row(r)?),
                parent: parent.zip(seq),
            })
        })
        .optional()?;
    Ok(ended.unwrap_or(Applied::OutOfStep))
}

/// The instance's internal key and status.
pub(super) fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<(i64, RuntimeStatus)>> {
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
pub(super) fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Whether the activity calls `seqs` of instance `pk` are all scheduled.
fn calls_exist(conn: &Connection, pk: i64, seqs: &[u32]) -> rusqlite::Result<bool> {
    let mut exists = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM activities WHERE instance_pk = ?1 AND seq = ?2)",
    )?;
    for seq in seqs {
        if !exists.query_row(params![pk, seq], |r| r.get::<_, bool>(0))? {
            return Ok(false);
        }
    }
    Ok(true)
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
pub(super) fn insert_message(
    conn: &Connection,
    pk: i64,
    message: &Message,
) -> rusqlite::Result<i64> {
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
pub(super) fn activity_done(conn: &Connection, pk: i64, seq: u32) -> rusqlite::Result<bool> {
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
pub(super) fn activity_outcome_to_inbox(
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
    let row = InstanceRow {
        trace: new.trace,
        ..InstanceRow::pending(
            new.id.to_string(),
            new.name.to_string(),
            new.version.to_string(),
            new.input.to_string(),
            new.callback_url.map(str::to_string),
        )
    };
    exec(
        conn,
        "INSERT INTO instances (id, name, version, status, input, created_at, updated_at,
                               callback_url, parent_id, parent_seq, trace_context)
         VALUES (?1, ?2, ?3, 'Pending', ?4, ?5, ?5, ?6, ?7, ?8, ?9)",
        params![
            row.id,
            row.name,
            row.version,
            row.input,
            row.created_at,
            row.callback_url,
            new.parent.map(|(id, _)| id),
            new.parent.map(|(_, seq)| seq),
            row.trace.map(|t| t.to_bytes())
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
    /// See `InstanceRow::trace`.
    trace: Option<Parent>,
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
            trace: row.trace,
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
                attempts: 0,
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
        trace: child.trace,
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

impl Episodes for SqliteStore {
    fn cold_round(&self, id: String, work_in_hand: bool) -> StoreFuture<ColdRound> {
        self.read(move |conn| {
            // One snapshot: an inbox read before an episode's commit and a
            // history read after it would hand that episode's messages
            // over again.
            let _snapshot = conn.unchecked_transaction()?;
            let inbox = read_inbox(conn, &id)?;
            let instance = read_instance(conn, &id)?;
            let runnable = instance.as_ref().is_some_and(|i| !i.status.is_terminal());
            let history = if runnable && (work_in_hand || !inbox.is_empty()) {
                read_history(conn, &id)?
            } else {
                Vec::new()
            };
            Ok(ColdRound {
                inbox,
                instance,
                history,
            })
        })
    }

    fn create_instance(
        &self,
        pending: InstanceRow,
        notifications: Vec<Notification>,
    ) -> StoreFuture<CreateOutcome> {
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
    }

    fn enqueue(
        &self,
        id: String,
        execution: Option<i64>,
        message: Message,
    ) -> StoreFuture<EnqueueOutcome> {
        self.write(move |conn| match find(conn, &id)? {
            None => Ok(EnqueueOutcome::NotFound),
            Some((pk, _)) if execution.is_some_and(|e| e != pk) => Ok(EnqueueOutcome::Replaced),
            Some((_, status)) if status.is_terminal() => Ok(EnqueueOutcome::Terminal(status)),
            Some((pk, _)) => Ok(EnqueueOutcome::Queued(insert_message(conn, pk, &message)?)),
        })
    }

    fn commit_episode(&self, commit: EpisodeCommit) -> StoreFuture<EpisodeOutcome> {
        self.write_episode(commit.deferrable, move |conn| {
            let id = commit.instance_id.as_str();
            let pk = match &commit.creates {
                Some(row) => match insert_instance(conn, NewInstance::started(row))? {
                    Ok(created) => created.pk,
                    Err(status) => return Ok(EpisodeOutcome::Conflict(status)),
                },
                None => commit.instance_pk,
            };
            // An outcome handed over from memory counts only if its call
            // was committed: one of a call started by an episode that was
            // then refused has no row, and neither does this episode.
            if !calls_exist(conn, pk, &commit.consumed_activities)? {
                return Ok(EpisodeOutcome::OutOfStep);
            }
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

    fn discard_messages(&self, ids: Vec<i64>) -> StoreFuture<()> {
        self.write(move |conn| {
            let mut delete = conn.prepare_cached("DELETE FROM inbox WHERE id = ?1")?;
            for id in &ids {
                delete.execute([id])?;
            }
            Ok(())
        })
    }

    fn move_instance(&self, moved: MoveCommit) -> StoreFuture<bool> {
        self.write(move |conn| {
            let changed = exec(
                conn,
                "UPDATE instances SET version = ?2, episodes = episodes + 1, updated_at = ?3
                  WHERE pk = ?1 AND episodes = ?4 AND version = ?5
                    AND status NOT IN ('Completed', 'Failed', 'Terminated')",
                params![
                    moved.pk,
                    moved.to,
                    now_ms(),
                    moved.after_episodes,
                    moved.from
                ],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let event = HistoryEvent::VersionChanged {
                from: moved.from.clone(),
                to: moved.to.clone(),
            };
            append_history(conn, moved.pk, moved.first_position, &[event])?;
            Ok(true)
        })
    }

    fn rewind(&self, rewind: RewindCommit) -> StoreFuture<bool> {
        self.write(move |conn| {
            let RewindCommit {
                pk,
                history,
                activities,
                timers,
                message,
            } = &rewind;
            let pk = *pk;
            if status_by_pk(conn, pk)? != Some(RuntimeStatus::Failed) {
                return Ok(false);
            }
            exec(conn, "DELETE FROM history WHERE instance_pk = ?1", [pk])?;
            append_history(conn, pk, 0, history)?;
            for a in activities {
                insert_activity(conn, pk, a)?;
            }
            for (seq, fire_at) in timers {
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
            insert_message(conn, pk, message)?;
            Ok(true)
        })
    }

    fn purge_instance(&self, id: String) -> StoreFuture<bool> {
        self.write(move |conn| {
            let Some((pk, _)) = find(conn, &id)? else {
                return Ok(false);
            };
            delete_instance_rows(conn, pk)?;
            Ok(true)
        })
    }

    fn purge_finished(
        &self,
        from: i64,
        to: Option<i64>,
        statuses: Vec<RuntimeStatus>,
    ) -> StoreFuture<usize> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, InstanceReads, StoreError};

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
    async fn store_with_an_instance(name: &str) -> (SqliteStore, InstanceRow, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("durango-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(
            &dir.join("t.db"),
            Durability::Normal,
            crate::metrics::StoreMetrics::unregistered(),
        )
        .unwrap();
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
