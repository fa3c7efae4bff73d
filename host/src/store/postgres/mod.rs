//! The PostgreSQL backend: any number of hosts on one database. Writers
//! with group commit (`writer`), read connections shared round-robin
//! (`conn`), the schema (`schema`). Every statement is parameterized and
//! prepared once per connection.

mod conn;
mod io;
mod leases;
mod rows;
mod schema;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::{Config, Row};

use conn::{Conn, Readers};
use writer::{TxFuture, TxResult, Writers};

use crate::engine::history::{HistoryEvent, Message, RuntimeStatus};
use crate::metrics::StoreMetrics;
use crate::store::{
    now_ms, partition_of, ActivityRow, Apps, ChildStart, ColdRound, Committed, ContinueAsNew,
    CreateOutcome, Deployment, EnqueueOutcome, EpisodeCommit, EpisodeOutcome, Episodes, Fence,
    InstanceFilter, InstanceReads, InstanceRow, Leases, MoveCommit, Notification, Outbox,
    OutboxRow, PendingWork, PinnedOrchestrator, Remote, RewindCommit, StoreError, StoreFuture,
    StoredVersion, VersionRemoval, VersionRow, WorkQueues,
};

/// The instance columns, in the order `rows::instance_row` reads them.
macro_rules! instance_columns {
    () => {
        "id, name, version, status, input, output, custom_status, created_at, updated_at, \
         callback_url, pk, episodes, trace_context"
    };
}

/// The guard's lease condition, on parameters `$n` (partition, NULL when
/// unfenced), `$n+1` (host), `$n+2` (epoch); see `holds`.
macro_rules! fenced {
    (5) => {
        fenced!("$5", "$6", "$7")
    };
    (8) => {
        fenced!("$8", "$9", "$10")
    };
    ($p:literal, $h:literal, $e:literal) => {
        concat!(
            "(",
            $p,
            "::int IS NULL OR EXISTS (SELECT 1 FROM partitions WHERE id = ",
            $p,
            " AND owner = ",
            $h,
            "::text AND epoch = ",
            $e,
            "::bigint AND expires_at > clock_timestamp() FOR KEY SHARE))"
        )
    };
}

mod one_statement;

/// Writers, each with its own connection and group commit.
const WRITERS: usize = 2;
/// Read connections; each pipelines many callers' queries.
const READERS: usize = 4;

/// What a failed PostgreSQL call means to the callers (see the error
/// contract in `store`).
pub(super) fn pg_error(error: tokio_postgres::Error) -> StoreError {
    let message = match error.as_db_error() {
        Some(db) => db.message().to_string(),
        None => error.to_string(),
    };
    let unavailable = error.is_closed()
        || error.as_db_error().is_none()
        || error.code().is_some_and(|code| {
            let class = &code.code()[..2];
            // connection exceptions, insufficient resources, operator
            // intervention (shutdown), system errors
            matches!(class, "08" | "53" | "57" | "58")
        });
    if unavailable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Database(message)
    }
}

#[derive(Clone)]
pub struct PgStore {
    writers: Arc<Writers<one_statement::EpisodeJob>>,
    readers: Arc<Readers>,
    config: Config,
    /// This host among those on the database: a random name per start, so
    /// a restarted host is a new one (its old leases simply run out).
    host: Arc<str>,
    /// The connection the leases are renewed on: never queued behind
    /// writes, so a busy writer cannot make a lease run out.
    leases: Arc<tokio::sync::Mutex<Option<Conn>>>,
    io: Arc<io::IoThread>,
}

impl PgStore {
    /// Connects to the database `url` names and brings its schema up to date.
    pub async fn open(url: &str, metrics: StoreMetrics) -> Result<PgStore, StoreError> {
        let config: Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("not a PostgreSQL URL: {e}")))?;
        let mut first = Conn::connect(&config).await?;
        schema::apply(first.client()).await?;
        let host: [u8; 8] = rand::random();
        let io = Arc::new(io::IoThread::start()?);
        Ok(PgStore {
            writers: Arc::new(Writers::start(config.clone(), WRITERS, &io, metrics).await?),
            readers: Arc::new(Readers::new(config.clone(), READERS, io.clone())),
            io,
            config,
            host: host
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into(),
            leases: Arc::default(),
        })
    }

    /// Runs `query` on a read connection.
    fn read<R, F>(&self, query: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c Conn) -> TxFuture<'c, Result<R, StoreError>> + Send + 'static,
    {
        let readers = self.readers.clone();
        Box::pin(async move {
            let conn = readers.get().await?;
            query(&conn).await.map_err(pg_error)?
        })
    }
}

fn seq(seq: u32) -> i32 {
    seq as i32
}

/// Tells the other hosts, when this transaction commits, what it changed
/// (PostgreSQL delivers a `NOTIFY` only on commit, and not at all if it
/// rolls back).
async fn notify(c: &Conn, host: &str, change: Remote) -> TxResult<()> {
    if change.woken.is_empty()
        && change.finished.is_empty()
        && change.consumed.is_empty()
        && change.moved.is_empty()
        && !change.apps
    {
        return Ok(());
    }
    let payload = leases::wire(host, change);
    c.execute("SELECT pg_notify('durango', $1)", &[&payload])
        .await?;
    Ok(())
}

fn woken(id: &str) -> Remote {
    Remote {
        woken: vec![id.to_string()],
        ..Remote::default()
    }
}

async fn read_instance(c: &Conn, id: &str) -> TxResult<Option<InstanceRow>> {
    let sql = concat!(
        "SELECT ",
        instance_columns!(),
        " FROM instances WHERE id = $1"
    );
    Ok(c.query_opt(sql, &[&id])
        .await?
        .map(|r| rows::instance_row(&r)))
}

impl InstanceReads for PgStore {
    fn instance(&self, id: String) -> StoreFuture<Option<InstanceRow>> {
        self.read(move |c| Box::pin(async move { Ok(Ok(read_instance(c, &id).await?)) }))
    }

    fn history(&self, id: String) -> StoreFuture<Vec<HistoryEvent>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT h.event FROM history h JOIN instances i ON i.pk = h.instance_pk
                          WHERE i.id = $1 ORDER BY h.position",
                        &[&id],
                    )
                    .await?;
                Ok(rows::history(found.iter().map(|r| r.get::<_, &str>(0))))
            })
        })
    }

    fn inbox(&self, id: String) -> StoreFuture<Vec<(i64, Message)>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT b.id, b.message FROM inbox b JOIN instances i ON i.pk = b.instance_pk
                          WHERE i.id = $1 ORDER BY b.id",
                        &[&id],
                    )
                    .await?;
                Ok(rows::inbox(&found))
            })
        })
    }

    fn message_pending(&self, inbox_id: i64) -> StoreFuture<bool> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query_opt("SELECT 1 FROM inbox WHERE id = $1", &[&inbox_id])
                    .await?;
                Ok(Ok(found.is_some()))
            })
        })
    }

    fn list_instances(&self, filter: InstanceFilter) -> StoreFuture<Vec<InstanceRow>> {
        self.read(move |c| {
            Box::pin(async move {
                let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
                let (after_time, after_id) = filter.resume_after();
                // Two fixed statements: the list's order is not the caller's text.
                macro_rules! listed {
                    ($cmp:literal, $dir:literal) => {
                        concat!(
                            "SELECT ",
                            instance_columns!(),
                            " FROM instances
                              WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))
                                AND ($2::bigint IS NULL OR created_at >= $2)
                                AND ($3::bigint IS NULL OR created_at <= $3)
                                AND ($4::text IS NULL OR starts_with(id, $4))
                                AND (created_at ", $cmp, " $5 OR (created_at = $5 AND id COLLATE \"C\" ", $cmp, " $6))
                                AND ($8::text IS NULL OR name = $8)
                              ORDER BY created_at ", $dir, ", id COLLATE \"C\" ", $dir, "
                              LIMIT $7"
                        )
                    };
                }
                let sql = match filter.newest_first {
                    true => listed!("<", "DESC"),
                    false => listed!(">", "ASC"),
                };
                let found = c
                    .query(
                        sql,
                        &[
                            &statuses,
                            &filter.created_from,
                            &filter.created_to,
                            &filter.id_prefix,
                            &after_time,
                            &after_id,
                            &(filter.limit as i64),
                            &filter.name,
                        ],
                    )
                    .await?;
                Ok(Ok(found.iter().map(rows::instance_row).collect()))
            })
        })
    }

    fn count_instances(&self, status: RuntimeStatus) -> StoreFuture<usize> {
        self.read(move |c| {
            Box::pin(async move {
                let row = c
                    .query_one(
                        "SELECT COUNT(*) FROM instances WHERE status = $1",
                        &[&status.as_str()],
                    )
                    .await?;
                Ok(Ok(row.get::<_, i64>(0) as usize))
            })
        })
    }

    fn pending_work(&self, pk: i64) -> StoreFuture<PendingWork> {
        self.read(move |c| {
            Box::pin(async move {
                let activities = c
                    .query(
                        "SELECT seq, attempt, run_at FROM activities WHERE instance_pk = $1 ORDER BY seq",
                        &[&pk],
                    )
                    .await?;
                let timers = c
                    .query(
                        "SELECT seq, fire_at FROM timers WHERE instance_pk = $1 ORDER BY seq",
                        &[&pk],
                    )
                    .await?;
                let step = |r: &tokio_postgres::Row| r.get::<_, i32>(0) as u32;
                Ok(Ok(PendingWork {
                    activities: activities
                        .iter()
                        .map(|r| (step(r), r.get::<_, i32>(1) as u32, r.get(2)))
                        .collect(),
                    timers: timers.iter().map(|r| (step(r), r.get(1))).collect(),
                }))
            })
        })
    }

    fn count_by_status(&self) -> StoreFuture<Vec<(RuntimeStatus, u64)>> {
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT status, COUNT(*) FROM instances GROUP BY status",
                        &[],
                    )
                    .await?;
                let rows = rows
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
                Ok(Ok(crate::store::tally_statuses(rows)))
            })
        })
    }

    fn unfinished_of_app(&self, app: String) -> StoreFuture<Vec<InstanceRow>> {
        self.read(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        concat!(
                            "SELECT ",
                            instance_columns!(),
                            " FROM instances
                              WHERE status NOT IN ('Completed', 'Failed', 'Terminated')
                                AND version IN (SELECT version FROM app_versions WHERE app = $1)
                              ORDER BY created_at, id"
                        ),
                        &[&app],
                    )
                    .await?;
                Ok(Ok(rows.iter().map(rows::instance_row).collect()))
            })
        })
    }
}

/// Returns the message's inbox id.
async fn insert_message(c: &Conn, pk: i64, message: &Message) -> TxResult<i64> {
    let json = serde_json::to_string(message).expect("messages serialize");
    let row = c
        .query_one(
            "INSERT INTO inbox (instance_pk, message) VALUES ($1, $2) RETURNING id",
            &[&pk, &json],
        )
        .await?;
    Ok(row.get(0))
}

/// The instance's internal key and status.
async fn find(c: &Conn, id: &str) -> TxResult<Option<(i64, RuntimeStatus)>> {
    let found = c
        .query_opt("SELECT pk, status FROM instances WHERE id = $1", &[&id])
        .await?;
    Ok(found.and_then(|r| Some((r.get(0), RuntimeStatus::parse(r.get(1))?))))
}

async fn insert_notifications(c: &Conn, notifications: &[Notification]) -> TxResult<()> {
    let now = now_ms();
    for n in notifications {
        c.execute(
            "INSERT INTO outbox (url, body, created_at, next_at) VALUES ($1, $2, $3, $3)",
            &[&n.url, &n.body, &now],
        )
        .await?;
    }
    Ok(())
}

async fn insert_activity(c: &Conn, pk: i64, a: &ActivityRow) -> TxResult<()> {
    let retry = serde_json::to_string(&a.retry).expect("retry policy serializes");
    c.execute(
        "INSERT INTO activities (instance_pk, seq, version, name, input, retry, attempt, run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (instance_pk, seq) DO UPDATE
            SET version = excluded.version, name = excluded.name, input = excluded.input,
                retry = excluded.retry, attempt = excluded.attempt, run_at = excluded.run_at",
        &[
            &pk,
            &seq(a.seq),
            &a.version,
            &a.name,
            &a.input,
            &retry,
            &(a.attempt as i32),
            &a.run_at,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_timer(c: &Conn, pk: i64, timer_seq: u32, fire_at: i64) -> TxResult<()> {
    c.execute(
        "INSERT INTO timers (instance_pk, seq, fire_at) VALUES ($1, $2, $3)
         ON CONFLICT (instance_pk, seq) DO UPDATE SET fire_at = excluded.fire_at",
        &[&pk, &seq(timer_seq), &fire_at],
    )
    .await?;
    Ok(())
}

async fn append_history(
    c: &Conn,
    pk: i64,
    first_position: usize,
    events: &[HistoryEvent],
) -> TxResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(events).expect("history events serialize");
    c.execute(
        "INSERT INTO history (instance_pk, position, event) VALUES ($1, $2, $3)",
        &[&pk, &(first_position as i32), &json],
    )
    .await?;
    Ok(())
}

/// Moves an activity's outcome from its row to the inbox, returning its
/// inbox id; `None` if the row was gone.
async fn activity_outcome_to_inbox(
    c: &Conn,
    pk: i64,
    activity_seq: u32,
    outcome: &Message,
) -> TxResult<Option<i64>> {
    if activity_done(c, pk, activity_seq).await? {
        Ok(Some(insert_message(c, pk, outcome).await?))
    } else {
        Ok(None)
    }
}

async fn activity_done(c: &Conn, pk: i64, activity_seq: u32) -> TxResult<bool> {
    let removed = c
        .execute(
            "DELETE FROM activities WHERE instance_pk = $1 AND seq = $2",
            &[&pk, &seq(activity_seq)],
        )
        .await?;
    Ok(removed == 1)
}

/// Removes every row an instance owns.
async fn delete_instance_rows(c: &Conn, pk: i64) -> TxResult<()> {
    c.execute("DELETE FROM history WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM inbox WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM activities WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM timers WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM instances WHERE pk = $1", &[&pk])
        .await?;
    Ok(())
}

/// A new instance's row, replacing a finished one of the same id: the
/// row, or the status of the unfinished instance that holds the id.
async fn insert_instance(
    c: &Conn,
    row: &InstanceRow,
    parent: Option<(&str, u32)>,
) -> TxResult<Result<InstanceRow, RuntimeStatus>> {
    if let Some((pk, status)) = find(c, &row.id).await? {
        if !status.is_terminal() {
            return Ok(Err(status));
        }
        delete_instance_rows(c, pk).await?;
    }
    let inserted = c
        .query_one(
            "INSERT INTO instances (id, name, version, status, input, created_at, updated_at,
                                    callback_url, parent_id, parent_seq, partition, trace_context)
             VALUES ($1, $2, $3, 'Pending', $4, $5, $5, $6, $7, $8, $9, $10) RETURNING pk",
            &[
                &row.id,
                &row.name,
                &row.version,
                &row.input,
                &row.created_at,
                &row.callback_url,
                &parent.map(|(id, _)| id),
                &parent.map(|(_, s)| seq(s)),
                &partition_of(&row.id),
                &row.trace.map(|t| t.traceparent()),
            ],
        )
        .await?;
    Ok(Ok(InstanceRow {
        pk: inserted.get(0),
        ..row.clone()
    }))
}

/// Creates a sub-orchestration, or fails its task at once when it cannot
/// start. Returns the instance to wake (the child, or the parent).
async fn start_child(
    c: &Conn,
    (parent, parent_pk): (&str, i64),
    child: &ChildStart,
) -> TxResult<String> {
    let refusal = match &child.version {
        None => format!("no orchestrator named {} is deployed", child.name),
        Some(version) => {
            let row = InstanceRow {
                trace: child.trace,
                ..InstanceRow::pending(
                    child.id.clone(),
                    child.name.clone(),
                    version.clone(),
                    child.input.clone(),
                    None,
                )
            };
            match insert_instance(c, &row, Some((parent, child.parent_seq))).await? {
                Ok(row) => {
                    insert_message(c, row.pk, &Message::start(row.input.clone())).await?;
                    return Ok(child.id.clone());
                }
                Err(status) => format!(
                    "sub-orchestration instance {} already exists and is {}",
                    child.id,
                    status.as_str()
                ),
            }
        }
    };
    let failed = Message::TaskFailed {
        seq: child.parent_seq,
        error: refusal,
        attempts: 0,
    };
    insert_message(c, parent_pk, &failed).await?;
    Ok(parent.to_string())
}

/// Continue-as-new: a fresh history; unconsumed events follow the start.
async fn start_over(c: &Conn, pk: i64, restart: &ContinueAsNew) -> TxResult<()> {
    c.execute("DELETE FROM history WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM activities WHERE instance_pk = $1", &[&pk])
        .await?;
    c.execute("DELETE FROM timers WHERE instance_pk = $1", &[&pk])
        .await?;
    let queued = c
        .query(
            "DELETE FROM inbox WHERE instance_pk = $1 RETURNING id, message",
            &[&pk],
        )
        .await?;
    let mut queued: Vec<(i64, String)> = queued.iter().map(|r| (r.get(0), r.get(1))).collect();
    queued.sort_by_key(|(id, _)| *id);
    let start = Message::Start {
        input: restart.input.clone(),
        first_seq: restart.first_seq,
    };
    insert_message(c, pk, &start).await?;
    for message in &restart.carried {
        insert_message(c, pk, message).await?;
    }
    for (_, json) in queued {
        let outlives = serde_json::from_str::<Message>(&json)
            .map(|message| message.outlives_generation())
            .unwrap_or(true);
        if outlives {
            c.execute(
                "INSERT INTO inbox (instance_pk, message) VALUES ($1, $2)",
                &[&pk, &json],
            )
            .await?;
        }
    }
    Ok(())
}

/// What an episode's change to its instance's row did.
enum Applied {
    OutOfStep,
    Going,
    Ended {
        row: Box<InstanceRow>,
        parent: Option<(String, u32)>,
    },
}

/// The lease an episode's guard checks: none for a first episode, whose
/// lease was checked when its row was created, earlier in the same
/// transaction. That check locked the partition's row (KEY SHARE), and a
/// takeover skips a locked partition, so until the commit only the lease's
/// clock can run out; checking it again would refuse an episode whose row
/// is already written, and leave that row behind without its start.
fn guarded_fence(commit: &EpisodeCommit) -> Option<Fence> {
    commit.fence.filter(|_| commit.creates.is_none())
}

/// Applies an episode to its instance's row, only if the row is still at
/// the episode it was built on.
async fn update_instance(
    c: &Conn,
    host: &str,
    pk: i64,
    commit: &EpisodeCommit,
) -> TxResult<Applied> {
    let now = now_ms();
    let fence = guarded_fence(commit);
    let (partition, epoch) = (fence.map(|f| f.partition), fence.map(|f| f.epoch));
    if let Some(restart) = &commit.continue_as_new {
        let changed = c
            .execute(
                concat!(
                    "UPDATE instances SET status = 'ContinuedAsNew', input = $2, output = NULL,
                                          updated_at = $3, episodes = episodes + 1
                      WHERE pk = $1 AND episodes = $4 AND ",
                    fenced!(5)
                ),
                &[
                    &pk,
                    &restart.input,
                    &now,
                    &commit.after_episodes,
                    &partition,
                    &host,
                    &epoch,
                ],
            )
            .await?;
        return Ok(if changed == 0 {
            Applied::OutOfStep
        } else {
            Applied::Going
        });
    }
    let custom = commit.custom_status.as_ref().and_then(Option::as_deref);
    let found = c
        .query_opt(
            concat!(
                "UPDATE instances SET status = COALESCE($2, status),
                                      output = COALESCE($3, output),
                                      custom_status = CASE WHEN $4 THEN $5 ELSE custom_status END,
                                      updated_at = $6, episodes = episodes + 1
                  WHERE pk = $1 AND episodes = $7 AND ",
                fenced!(8),
                "
              RETURNING ",
                instance_columns!(),
                ", parent_id, parent_seq"
            ),
            &[
                &pk,
                &commit.status.map(RuntimeStatus::as_str),
                &commit.output,
                &commit.custom_status.is_some(),
                &custom,
                &now,
                &commit.after_episodes,
                &partition,
                &host,
                &epoch,
            ],
        )
        .await?;
    Ok(applied(found, commit))
}

/// What the guard's answer (the row as updated, with `parent_id` and
/// `parent_seq` after the instance columns) says the episode did.
fn applied(found: Option<Row>, commit: &EpisodeCommit) -> Applied {
    let Some(found) = found else {
        return Applied::OutOfStep;
    };
    if !commit.status.is_some_and(RuntimeStatus::is_terminal) {
        return Applied::Going;
    }
    let parent: Option<String> = found.get("parent_id");
    let parent_seq: Option<i32> = found.get("parent_seq");
    Applied::Ended {
        row: Box::new(rows::instance_row(&found)),
        parent: parent.zip(parent_seq.map(|s| s as u32)),
    }
}

/// An episode queued as steps: one that creates its instance (through
/// `one_statement` once the row exists) or that `one_statement` does not
/// take.
async fn commit_episode(c: &Conn, host: &str, commit: &EpisodeCommit) -> TxResult<EpisodeOutcome> {
    let pk = match &commit.creates {
        // A first episode creates its row before the guard: check the
        // lease first. Every other episode's guard checks it in the same
        // statement.
        Some(row) => {
            if let Some(fence) = commit.fence {
                if !holds(c, host, fence).await? {
                    return Ok(EpisodeOutcome::Fenced);
                }
            }
            match insert_instance(c, row, None).await? {
                Ok(created) => created.pk,
                Err(status) => return Ok(EpisodeOutcome::Conflict(status)),
            }
        }
        None => commit.instance_pk,
    };
    if one_statement::fits(commit) {
        let found = one_statement::commit(c, host, &[(pk, commit)])
            .await?
            .remove(&pk);
        return settle(c, host, commit, pk, found).await;
    }
    let outcome = commit_in_steps(c, host, pk, commit).await?;
    if let EpisodeOutcome::Committed(committed) = &outcome {
        let finished = committed.finished.as_ref().map(|row| row.id.clone());
        let change = Remote {
            woken: committed.woken.clone(),
            finished: finished.into_iter().collect(),
            consumed: commit.consumed.clone(),
            ..Remote::default()
        };
        notify(c, host, change).await?;
    }
    told_apart(c, host, commit, outcome).await
}

/// What an episode committed through `one_statement` did, given the row
/// its guard answered: an ended child's parent is told (the statement told
/// the other hosts of the end; the parent is news to them).
async fn settle(
    c: &Conn,
    host: &str,
    commit: &EpisodeCommit,
    pk: i64,
    found: Option<Row>,
) -> TxResult<EpisodeOutcome> {
    let mut committed = Committed {
        instance_pk: pk,
        woken: Vec::new(),
        finished: None,
    };
    let outcome = match applied(found, commit) {
        Applied::OutOfStep => EpisodeOutcome::OutOfStep,
        Applied::Going => EpisodeOutcome::Committed(committed),
        Applied::Ended { row, parent } => {
            if let Some(parent) = parent {
                if let Some(parent) = tell_parent(c, commit, parent, &row).await? {
                    notify(c, host, woken(&parent)).await?;
                    committed.woken.push(parent);
                }
            }
            committed.finished = Some(row);
            EpisodeOutcome::Committed(committed)
        }
    };
    told_apart(c, host, commit, outcome).await
}

/// A refused guard is out of step, or fenced if the lease is gone.
async fn told_apart(
    c: &Conn,
    host: &str,
    commit: &EpisodeCommit,
    outcome: EpisodeOutcome,
) -> TxResult<EpisodeOutcome> {
    if let (EpisodeOutcome::OutOfStep, Some(fence)) = (&outcome, commit.fence) {
        if !holds(c, host, fence).await? {
            return Ok(EpisodeOutcome::Fenced);
        }
    }
    Ok(outcome)
}

/// Sends a finished child's outcome to its parent, unless the parent is
/// gone or finished; answers the parent to wake.
async fn tell_parent(
    c: &Conn,
    commit: &EpisodeCommit,
    (parent, parent_seq): (String, u32),
    finished: &InstanceRow,
) -> TxResult<Option<String>> {
    let Some((parent_pk, status)) = find(c, &parent).await? else {
        return Ok(None);
    };
    if status.is_terminal() {
        return Ok(None);
    }
    let message = Message::child_outcome(
        &commit.instance_id,
        parent_seq,
        finished.status,
        commit.output.as_deref(),
    );
    insert_message(c, parent_pk, &message).await?;
    Ok(Some(parent))
}

/// Whether `host` still holds the lease `fence` names. KEY SHARE: a host
/// taking the partition over (FOR UPDATE) skips it until this commit is
/// done, while renewals (which change no key) go on beside it, so the two
/// never wait on each other in a cycle.
async fn holds(c: &Conn, host: &str, fence: Fence) -> TxResult<bool> {
    let held = c
        .query_opt(
            "SELECT 1 FROM partitions
              WHERE id = $1 AND owner = $2 AND epoch = $3 AND expires_at > clock_timestamp()
                FOR KEY SHARE",
            &[&fence.partition, &host, &fence.epoch],
        )
        .await?;
    Ok(held.is_some())
}

/// The episodes `one_statement` does not take, a write at a time.
async fn commit_in_steps(
    c: &Conn,
    host: &str,
    pk: i64,
    commit: &EpisodeCommit,
) -> TxResult<EpisodeOutcome> {
    let id = commit.instance_id.as_str();
    // An outcome handed over from memory counts only if its call was
    // committed (the call of a refused episode has no row).
    if !commit.consumed_activities.is_empty() {
        let seqs: Vec<i32> = commit.consumed_activities.iter().map(|s| seq(*s)).collect();
        let scheduled: i64 = c
            .query_one(
                "SELECT count(*) FROM activities WHERE instance_pk = $1 AND seq = ANY($2)",
                &[&pk, &seqs],
            )
            .await?
            .get(0);
        if scheduled != seqs.len() as i64 {
            return Ok(EpisodeOutcome::OutOfStep);
        }
    }
    let mut committed = Committed {
        instance_pk: pk,
        woken: Vec::new(),
        finished: None,
    };
    let parent = match update_instance(c, host, pk, commit).await? {
        Applied::OutOfStep => return Ok(EpisodeOutcome::OutOfStep),
        Applied::Going => None,
        Applied::Ended { row, parent } => {
            committed.finished = Some(row);
            parent
        }
    };
    // The rest does not depend on itself: sent at once, answered together
    // (tokio-postgres pipelines concurrent statements on one connection).
    let mut writes: Vec<TxFuture<'_, ()>> = Vec::new();
    if !commit.consumed.is_empty() {
        writes.push(Box::pin(async move {
            c.execute("DELETE FROM inbox WHERE id = ANY($1)", &[&commit.consumed])
                .await
                .map(drop)
        }));
    }
    for s in &commit.consumed_activities {
        writes.push(Box::pin(
            async move { activity_done(c, pk, *s).await.map(drop) },
        ));
    }
    for (s, outcome) in &commit.held_activities {
        writes.push(Box::pin(async move {
            activity_outcome_to_inbox(c, pk, *s, outcome)
                .await
                .map(drop)
        }));
    }
    writes.push(Box::pin(insert_notifications(c, &commit.notifications)));
    if let Some(restart) = &commit.continue_as_new {
        futures_util::future::try_join_all(writes).await?;
        start_over(c, pk, restart).await?;
        committed.woken.push(id.to_string());
        return Ok(EpisodeOutcome::Committed(committed));
    }
    writes.push(Box::pin(append_history(
        c,
        pk,
        commit.first_position,
        &commit.events,
    )));
    if committed.finished.is_none() {
        for (s, fire_at) in &commit.timers {
            writes.push(Box::pin(insert_timer(c, pk, *s, *fire_at)));
        }
        for s in &commit.cancelled_timers {
            writes.push(Box::pin(async move {
                c.execute(
                    "DELETE FROM timers WHERE instance_pk = $1 AND seq = $2",
                    &[&pk, &seq(*s)],
                )
                .await
                .map(drop)
            }));
        }
        for a in &commit.activities {
            writes.push(Box::pin(insert_activity(c, pk, a)));
        }
    }
    futures_util::future::try_join_all(writes).await?;
    if let Some(finished) = &committed.finished {
        c.execute("DELETE FROM timers WHERE instance_pk = $1", &[&pk])
            .await?;
        c.execute("DELETE FROM activities WHERE instance_pk = $1", &[&pk])
            .await?;
        if let Some(parent) = parent {
            committed
                .woken
                .extend(tell_parent(c, commit, parent, finished).await?);
        }
    } else {
        for child in &commit.children {
            committed.woken.push(start_child(c, (id, pk), child).await?);
        }
    }
    Ok(EpisodeOutcome::Committed(committed))
}

/// A message for instance `$1` (of execution `$2`, when given) in one
/// statement: the instance's pk and status, and the message's inbox id if
/// it was queued (not when the instance is finished or was replaced), with
/// the notice to the other hosts.
const ENQUEUE: &str = "
    WITH f AS (
        SELECT pk, status FROM instances WHERE id = $1
    ), queued AS (
        INSERT INTO inbox (instance_pk, message)
        SELECT pk, $3 FROM f
         WHERE status NOT IN ('Completed', 'Failed', 'Terminated')
           AND ($2::bigint IS NULL OR pk = $2)
        RETURNING id
    ), told AS (
        SELECT pg_notify('durango', $4) FROM queued
    )
    SELECT f.pk, f.status, (SELECT id FROM queued), (SELECT count(*) FROM told) FROM f";

/// The cold round's read as one statement, so one snapshot: the instance
/// row as JSON, its inbox, and (when there is work) its history.
const COLD_ROUND: &str = "
    SELECT 'i' AS kind, 0::bigint AS n, row_to_json(i)::text AS body
      FROM (SELECT id, name, version, status, input, output, custom_status, created_at,
                   updated_at, callback_url, pk, episodes, trace_context
              FROM instances WHERE id = $1) i
    UNION ALL
    SELECT 'm', b.id, b.message FROM inbox b JOIN instances i ON i.pk = b.instance_pk
     WHERE i.id = $1
    UNION ALL
    SELECT 'h', h.position, h.event FROM history h JOIN instances i ON i.pk = h.instance_pk
     WHERE i.id = $1
       AND i.status NOT IN ('Completed', 'Failed', 'Terminated')
       AND ($2 OR EXISTS (SELECT 1 FROM inbox WHERE instance_pk = i.pk))
    ORDER BY kind, n";

impl Episodes for PgStore {
    fn cold_round(&self, id: String, work_in_hand: bool) -> StoreFuture<ColdRound> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c.query(COLD_ROUND, &[&id, &work_in_hand]).await?;
                let mut round = ColdRound {
                    inbox: Vec::new(),
                    instance: None,
                    history: Vec::new(),
                };
                let read = || -> Result<ColdRound, StoreError> {
                    for row in &found {
                        let body: &str = row.get(2);
                        match row.get::<_, &str>(0) {
                            "i" => round.instance = Some(rows::instance_from_json(body)?),
                            "m" => round
                                .inbox
                                .push((row.get(1), rows::decode("inbox message", body)?)),
                            _ => round
                                .history
                                .extend(rows::decode::<Vec<HistoryEvent>>("history events", body)?),
                        }
                    }
                    Ok(round)
                };
                Ok(read())
            })
        })
    }

    fn create_instance(
        &self,
        pending: InstanceRow,
        notifications: Vec<Notification>,
    ) -> StoreFuture<CreateOutcome> {
        let key = pending.id.clone();
        let (pending, notifications) = (Arc::new(pending), Arc::new(notifications));
        let host = self.host.clone();
        self.writers.write(&key, move |c| {
            let (pending, notifications) = (pending.clone(), notifications.clone());
            let host = host.clone();
            Box::pin(async move {
                match insert_instance(c, &pending, None).await? {
                    Ok(row) => {
                        let start =
                            insert_message(c, row.pk, &Message::start(row.input.clone())).await?;
                        insert_notifications(c, &notifications).await?;
                        notify(c, &host, woken(&row.id)).await?;
                        Ok(CreateOutcome::Created(Box::new(row), start))
                    }
                    Err(status) => Ok(CreateOutcome::Conflict(status)),
                }
            })
        })
    }

    fn enqueue(
        &self,
        id: String,
        execution: Option<i64>,
        message: Message,
    ) -> StoreFuture<EnqueueOutcome> {
        let (id, message) = (Arc::new(id), Arc::new(message));
        let host = self.host.clone();
        self.writers.write(&id.clone(), move |c| {
            let (id, message, host) = (id.clone(), message.clone(), host.clone());
            Box::pin(async move {
                let json = serde_json::to_string(&*message).expect("messages serialize");
                let notice = leases::wire(&host, woken(&id));
                let found = c
                    .query_opt(ENQUEUE, &[&*id, &execution, &json, &notice])
                    .await?;
                let Some(found) = found else {
                    return Ok(EnqueueOutcome::NotFound);
                };
                let pk: i64 = found.get(0);
                let status = RuntimeStatus::parse(found.get(1));
                Ok(match found.get::<_, Option<i64>>(2) {
                    Some(queued) => EnqueueOutcome::Queued(queued),
                    None if execution.is_some_and(|e| e != pk) => EnqueueOutcome::Replaced,
                    None => EnqueueOutcome::Terminal(status.unwrap_or(RuntimeStatus::Failed)),
                })
            })
        })
    }

    fn commit_episode(&self, commit: EpisodeCommit) -> StoreFuture<EpisodeOutcome> {
        let key = commit.instance_id.clone();
        if one_statement::fits(&commit) {
            let (job, answer) = one_statement::EpisodeJob::new(self.host.clone(), commit);
            let queued = self.writers.write_merged(&key, job);
            return Box::pin(async move {
                queued?;
                answer.await.map_err(|_| StoreError::Stopped)?
            });
        }
        let (commit, host) = (Arc::new(commit), self.host.clone());
        self.writers.write_episode(&key, move |c| {
            let (commit, host) = (commit.clone(), host.clone());
            Box::pin(async move { commit_episode(c, &host, &commit).await })
        })
    }

    fn discard_messages(&self, ids: Vec<i64>) -> StoreFuture<()> {
        let ids = Arc::new(ids);
        let host = self.host.clone();
        self.writers.write("", move |c| {
            let (ids, host) = (ids.clone(), host.clone());
            Box::pin(async move {
                c.execute("DELETE FROM inbox WHERE id = ANY($1)", &[&*ids])
                    .await?;
                let change = Remote {
                    consumed: ids.to_vec(),
                    ..Remote::default()
                };
                notify(c, &host, change).await?;
                Ok(())
            })
        })
    }

    fn move_instance(&self, moved: MoveCommit) -> StoreFuture<bool> {
        let (moved, host) = (Arc::new(moved), self.host.clone());
        self.writers.write(&moved.id.clone(), move |c| {
            let (moved, host) = (moved.clone(), host.clone());
            Box::pin(async move {
                let changed = c
                    .execute(
                        "UPDATE instances SET version = $2, episodes = episodes + 1, updated_at = $3
                          WHERE pk = $1 AND episodes = $4 AND version = $5
                            AND status NOT IN ('Completed', 'Failed', 'Terminated')",
                        &[
                            &moved.pk,
                            &moved.to,
                            &now_ms(),
                            &moved.after_episodes,
                            &moved.from,
                        ],
                    )
                    .await?;
                if changed == 0 {
                    return Ok(false);
                }
                let event = HistoryEvent::VersionChanged {
                    from: moved.from.clone(),
                    to: moved.to.clone(),
                };
                append_history(c, moved.pk, moved.first_position, &[event]).await?;
                // The host running it drops its copy of the old version.
                let change = Remote {
                    moved: vec![moved.id.clone()],
                    ..Remote::default()
                };
                notify(c, &host, change).await?;
                Ok(true)
            })
        })
    }

    fn rewind(&self, rewind: RewindCommit) -> StoreFuture<bool> {
        let rewind = Arc::new(rewind);
        let host = self.host.clone();
        self.writers.write(&rewind.pk.to_string(), move |c| {
            let (rewind, host) = (rewind.clone(), host.clone());
            Box::pin(async move {
                let pk = rewind.pk;
                let found = c
                    .query_opt("SELECT status, id FROM instances WHERE pk = $1", &[&pk])
                    .await?;
                let Some(found) = found else {
                    return Ok(false);
                };
                if RuntimeStatus::parse(found.get(0)) != Some(RuntimeStatus::Failed) {
                    return Ok(false);
                }
                notify(c, &host, woken(found.get(1))).await?;
                c.execute("DELETE FROM history WHERE instance_pk = $1", &[&pk])
                    .await?;
                append_history(c, pk, 0, &rewind.history).await?;
                for a in &rewind.activities {
                    insert_activity(c, pk, a).await?;
                }
                for (s, fire_at) in &rewind.timers {
                    insert_timer(c, pk, *s, *fire_at).await?;
                }
                c.execute(
                    "UPDATE instances SET status = 'Running', output = NULL, updated_at = $2
                      WHERE pk = $1",
                    &[&pk, &now_ms()],
                )
                .await?;
                insert_message(c, pk, &rewind.message).await?;
                Ok(true)
            })
        })
    }

    fn purge_instance(&self, id: String) -> StoreFuture<bool> {
        let id = Arc::new(id);
        self.writers.write(&id.clone(), move |c| {
            let id = id.clone();
            Box::pin(async move {
                let Some((pk, _)) = find(c, &id).await? else {
                    return Ok(false);
                };
                delete_instance_rows(c, pk).await?;
                Ok(true)
            })
        })
    }

    fn purge_finished(
        &self,
        from: i64,
        to: Option<i64>,
        statuses: Vec<RuntimeStatus>,
    ) -> StoreFuture<usize> {
        let names: Arc<Vec<&'static str>> = Arc::new(statuses.iter().map(|s| s.as_str()).collect());
        self.writers.write("", move |c| {
            let names = names.clone();
            Box::pin(async move {
                let pks = c
                    .query(
                        "SELECT pk FROM instances
                          WHERE created_at >= $1 AND ($2::bigint IS NULL OR created_at <= $2)
                            AND status = ANY($3)",
                        &[&from, &to, &*names],
                    )
                    .await?;
                for row in &pks {
                    delete_instance_rows(c, row.get(0)).await?;
                }
                Ok(pks.len())
            })
        })
    }
}

impl WorkQueues for PgStore {
    fn timers_between(
        &self,
        after: i64,
        until: i64,
        partitions: Option<Vec<i32>>,
    ) -> StoreFuture<Vec<(String, u32, i64)>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT i.id, t.seq, t.fire_at FROM timers t
                           JOIN instances i ON i.pk = t.instance_pk
                          WHERE t.fire_at > $1 AND t.fire_at <= $2
                            AND ($3::int[] IS NULL OR i.partition = ANY($3))",
                        &[&after, &until, &partitions],
                    )
                    .await?;
                Ok(Ok(found
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, i32>(1) as u32, r.get(2)))
                    .collect()))
            })
        })
    }

    fn activities(&self, partitions: Option<Vec<i32>>) -> StoreFuture<Vec<ActivityRow>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT i.id, a.seq, a.version, a.name, a.input, a.retry, a.attempt,
                                a.run_at, a.instance_pk, i.trace_context
                           FROM activities a JOIN instances i ON i.pk = a.instance_pk
                          WHERE $1::int[] IS NULL OR i.partition = ANY($1)",
                        &[&partitions],
                    )
                    .await?;
                Ok(found.iter().map(rows::activity_row).collect())
            })
        })
    }

    fn instances_with_messages(&self, partitions: Option<Vec<i32>>) -> StoreFuture<Vec<String>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT id FROM instances
                          WHERE pk IN (SELECT DISTINCT instance_pk FROM inbox)
                            AND ($1::int[] IS NULL OR partition = ANY($1))",
                        &[&partitions],
                    )
                    .await?;
                Ok(Ok(found.iter().map(|r| r.get(0)).collect()))
            })
        })
    }

    fn complete_activities(
        &self,
        instance_pk: i64,
        outcomes: Vec<(u32, Message)>,
    ) -> StoreFuture<Vec<Option<i64>>> {
        let outcomes = Arc::new(outcomes);
        let host = self.host.clone();
        self.writers.write(&instance_pk.to_string(), move |c| {
            let (outcomes, host) = (outcomes.clone(), host.clone());
            Box::pin(async move {
                let mut ids = Vec::new();
                for (s, outcome) in outcomes.iter() {
                    ids.push(activity_outcome_to_inbox(c, instance_pk, *s, outcome).await?);
                }
                if ids.iter().any(Option::is_some) {
                    let id = c
                        .query_one("SELECT id FROM instances WHERE pk = $1", &[&instance_pk])
                        .await?;
                    notify(c, &host, woken(id.get(0))).await?;
                }
                Ok(ids)
            })
        })
    }

    fn retry_activity(
        &self,
        instance_pk: i64,
        activity_seq: u32,
        attempt: u32,
        run_at: i64,
    ) -> StoreFuture<bool> {
        self.writers.write(&instance_pk.to_string(), move |c| {
            Box::pin(async move {
                let changed = c
                    .execute(
                        "UPDATE activities SET attempt = $3, run_at = $4
                          WHERE instance_pk = $1 AND seq = $2",
                        &[&instance_pk, &seq(activity_seq), &(attempt as i32), &run_at],
                    )
                    .await?;
                Ok(changed == 1)
            })
        })
    }

    fn fire_timer(&self, id: String, timer_seq: u32) -> StoreFuture<Option<i64>> {
        let id = Arc::new(id);
        let host = self.host.clone();
        self.writers.write(&id.clone(), move |c| {
            let (id, host) = (id.clone(), host.clone());
            Box::pin(async move {
                let Some((pk, _)) = find(c, &id).await? else {
                    return Ok(None);
                };
                let removed = c
                    .execute(
                        "DELETE FROM timers WHERE instance_pk = $1 AND seq = $2",
                        &[&pk, &seq(timer_seq)],
                    )
                    .await?;
                if removed == 0 {
                    return Ok(None);
                }
                let fired = Message::TimerFired { seq: timer_seq };
                let queued = insert_message(c, pk, &fired).await?;
                notify(c, &host, woken(&id)).await?;
                Ok(Some(queued))
            })
        })
    }
}

impl Outbox for PgStore {
    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<(Vec<OutboxRow>, Option<i64>)> {
        self.read(move |c| {
            Box::pin(async move {
                let due = c
                    .query(
                        "SELECT id, url, body, attempts, created_at FROM outbox
                          WHERE next_at <= $1 ORDER BY next_at, id LIMIT $2",
                        &[&now, &(limit as i64)],
                    )
                    .await?;
                let next = c
                    .query_one(
                        "SELECT MIN(next_at) FROM outbox WHERE next_at > $1",
                        &[&now],
                    )
                    .await?;
                let due = due
                    .iter()
                    .map(|r| OutboxRow {
                        id: r.get(0),
                        url: r.get(1),
                        body: r.get(2),
                        attempts: r.get::<_, i32>(3) as u32,
                        created_at: r.get(4),
                    })
                    .collect();
                Ok(Ok((due, next.get(0))))
            })
        })
    }

    fn outbox_delivered(&self, id: i64) -> StoreFuture<()> {
        self.writers.write("", move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM outbox WHERE id = $1", &[&id])
                    .await?;
                Ok(())
            })
        })
    }

    fn outbox_retry(&self, id: i64, attempts: u32, next_at: i64) -> StoreFuture<()> {
        self.writers.write("", move |c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE outbox SET attempts = $2, next_at = $3 WHERE id = $1",
                    &[&id, &(attempts as i32), &next_at],
                )
                .await?;
                Ok(())
            })
        })
    }
}

impl Apps for PgStore {
    fn deploy(&self, d: Deployment) -> StoreFuture<()> {
        let (d, host) = (Arc::new(d), self.host.clone());
        self.writers.write("", move |c| {
            let (d, host) = (d.clone(), host.clone());
            Box::pin(async move {
                let now = now_ms();
                let allowed = d
                    .allowed_settings
                    .as_ref()
                    .map(|names| serde_json::to_string(&names).expect("names serialize"));
                c.execute(
                    "INSERT INTO app_versions
                       (version, app, wasm, compiled, functions, allowed_settings, deployed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (version) DO UPDATE SET compiled = excluded.compiled,
                                                        allowed_settings = excluded.allowed_settings",
                    &[&d.version, &d.app, &d.wasm, &d.compiled, &d.functions, &allowed, &now],
                )
                .await?;
                c.execute(
                    "INSERT INTO apps (name, version, deployed_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET version = excluded.version,
                                                     deployed_at = excluded.deployed_at",
                    &[&d.app, &d.version, &now],
                )
                .await?;
                // The other hosts serve what is deployed from now on too.
                let apps = Remote {
                    apps: true,
                    ..Remote::default()
                };
                notify(c, &host, apps).await
            })
        })
    }

    fn app_version(&self, version: String) -> StoreFuture<Option<StoredVersion>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query_opt(
                        "SELECT compiled, wasm, allowed_settings FROM app_versions WHERE version = $1",
                        &[&version],
                    )
                    .await?;
                let Some(row) = found else {
                    return Ok(Ok(None));
                };
                let allowed: Option<String> = row.get(2);
                let allowed = match allowed {
                    Some(json) => match rows::decode("allowed settings", &json) {
                        Ok(names) => Some(names),
                        Err(error) => return Ok(Err(error)),
                    },
                    None => None,
                };
                Ok(Ok(Some(StoredVersion {
                    compiled: row.get(0),
                    wasm: row.get(1),
                    allowed_settings: allowed,
                })))
            })
        })
    }

    fn store_compiled(&self, version: String, compiled: Vec<u8>) -> StoreFuture<()> {
        let (version, compiled) = (Arc::new(version), Arc::new(compiled));
        self.writers.write("", move |c| {
            let (version, compiled) = (version.clone(), compiled.clone());
            Box::pin(async move {
                c.execute(
                    "UPDATE app_versions SET compiled = $1 WHERE version = $2",
                    &[&*compiled, &*version],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn current_apps(&self) -> StoreFuture<Vec<(String, String, String)>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT apps.name, apps.version, v.functions
                           FROM apps JOIN app_versions v ON v.version = apps.version
                          ORDER BY apps.name",
                        &[],
                    )
                    .await?;
                Ok(Ok(found
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()))
            })
        })
    }

    fn app_versions(&self, app: String) -> StoreFuture<Option<Vec<VersionRow>>> {
        self.read(move |c| {
            Box::pin(async move {
                // Unfinished instances are found through `instances_by_status`.
                let found = c
                    .query(
                        "SELECT v.version, v.deployed_at, COALESCE(u.n, 0), a.version IS NOT NULL
                           FROM app_versions v
                           LEFT JOIN (SELECT version, COUNT(*) AS n FROM instances
                                       WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')
                                       GROUP BY version) u ON u.version = v.version
                           LEFT JOIN apps a ON a.name = $1 AND a.version = v.version
                          WHERE v.app = $1 OR v.version IN (SELECT version FROM apps WHERE name = $1)
                          ORDER BY v.deployed_at DESC, v.version",
                        &[&app],
                    )
                    .await?;
                let versions: Vec<VersionRow> = found
                    .iter()
                    .map(|r| VersionRow {
                        version: r.get(0),
                        deployed_at: r.get(1),
                        unfinished: r.get::<_, i64>(2) as u64,
                        current: r.get(3),
                    })
                    .collect();
                // An app always lists its current version: none means no app.
                Ok(Ok((!versions.is_empty()).then_some(versions)))
            })
        })
    }

    fn remove_version(&self, app: String, prefix: String) -> StoreFuture<VersionRemoval> {
        let (app, prefix) = (Arc::new(app), Arc::new(prefix));
        self.writers.write("", move |c| {
            let (app, prefix) = (app.clone(), prefix.clone());
            Box::pin(async move {
                // The matching rows stay locked to the commit: a deploy of
                // the same bytes (which would make the version current
                // again) waits for it. `apps.version` references the row,
                // so a current version could not go anyway.
                let matches: Vec<String> = c
                    .query(
                        "SELECT version FROM app_versions
                          WHERE (app = $1 OR version IN (SELECT version FROM apps WHERE name = $1))
                            AND left(version, char_length($2::text)) = $2::text
                          ORDER BY version
                            FOR UPDATE",
                        &[&*app, &*prefix],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let version = match <[String; 1]>::try_from(matches) {
                    Ok([version]) => version,
                    Err(matches) if matches.is_empty() => return Ok(VersionRemoval::NotFound),
                    Err(matches) => return Ok(VersionRemoval::Ambiguous(matches)),
                };
                let current: bool = c
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM apps WHERE version = $1)",
                        &[&version],
                    )
                    .await?
                    .get(0);
                if current {
                    return Ok(VersionRemoval::Current(version));
                }
                let used = c
                    .query_one(
                        "SELECT COUNT(*) FILTER (WHERE status <> 'Failed'),
                                COUNT(*) FILTER (WHERE status = 'Failed')
                           FROM instances
                          WHERE version = $1
                            AND status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew', 'Failed')",
                        &[&version],
                    )
                    .await?;
                let (unfinished, failed): (i64, i64) = (used.get(0), used.get(1));
                if unfinished + failed > 0 {
                    return Ok(VersionRemoval::InUse {
                        version,
                        unfinished: unfinished as u64,
                        failed: failed as u64,
                    });
                }
                c.execute("DELETE FROM app_versions WHERE version = $1", &[&version])
                    .await?;
                Ok(VersionRemoval::Removed(version))
            })
        })
    }

    fn unfinished_elsewhere(
        &self,
        app: String,
        except: String,
    ) -> StoreFuture<Vec<PinnedOrchestrator>> {
        self.read(move |c| {
            Box::pin(async move {
                let found = c
                    .query(
                        "SELECT name, version, COUNT(*) FROM instances
                          WHERE status IN ('Pending', 'Running', 'Suspended', 'ContinuedAsNew')
                            AND version <> $2
                            AND version IN (SELECT version FROM app_versions WHERE app = $1)
                          GROUP BY name, version
                          ORDER BY name, version",
                        &[&app, &except],
                    )
                    .await?;
                Ok(Ok(found
                    .iter()
                    .map(|r| PinnedOrchestrator {
                        orchestrator: r.get(0),
                        version: r.get(1),
                        unfinished: r.get::<_, i64>(2) as u64,
                    })
                    .collect()))
            })
        })
    }

    fn meta_secret(&self, name: &'static str, candidate: String) -> StoreFuture<String> {
        let candidate = Arc::new(candidate);
        self.writers.write("", move |c| {
            let candidate = candidate.clone();
            Box::pin(async move {
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&name, &*candidate],
                )
                .await?;
                let row = c
                    .query_one("SELECT value FROM meta WHERE key = $1", &[&name])
                    .await?;
                Ok(row.get(0))
            })
        })
    }
}

impl Leases for PgStore {
    fn lease_round(&self, lease_ms: i64) -> StoreFuture<Option<HashMap<i32, i64>>> {
        let (store, host) = (self.clone(), self.host.clone());
        let io = self.io.clone();
        Box::pin(async move {
            let round = async move {
                let mut slot = store.leases.lock().await;
                if slot.as_ref().is_none_or(Conn::is_closed) {
                    *slot = Some(Conn::connect(&store.config).await?);
                }
                let conn = slot.as_ref().expect("connected");
                leases::round(conn, &host, lease_ms).await
            };
            Ok(Some(io.run(round).await?))
        })
    }

    fn remote_changes(&self) -> StoreFuture<Option<mpsc::UnboundedReceiver<Remote>>> {
        let (config, host) = (self.config.clone(), self.host.clone());
        let io = self.io.clone();
        Box::pin(async move { Ok(Some(io.run(leases::listen(config, host)).await?)) })
    }
}
