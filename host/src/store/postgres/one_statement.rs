//! The common episode (it neither restarts its instance, nor starts a
//! sub-orchestration, nor holds an outcome back) committed in one
//! statement, together with the other such episodes of a writer's wave:
//! the guards' `UPDATE` and every write that follows from them, each gated
//! on its guard's row, with the notices to other hosts. A statement per
//! wave instead of several per episode is most of what PostgreSQL and the
//! host save on a busy machine: each statement costs a round trip, a plan's
//! set-up and a wake-up on both sides.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_postgres::Row;

use super::conn::Conn;
use super::writer::{Mergeable, TxResult};
use super::{commit_episode, guarded_fence, leases, now_ms, pg_error, seq, settle};
use crate::store::{partition_of, EpisodeCommit, EpisodeOutcome, InstanceRow, Remote, StoreError};

/// Every write joins `g`, the rows whose guard held, so nothing is written
/// for an episode whose guard failed. The statement's parts see one
/// snapshot and not each other's writes, so `fits` keeps out commits that
/// would touch one row twice; a wave holds one episode per instance.
const COMMIT: &str = concat!(
    "WITH e AS (
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::text[],
                             $6::bigint[], $7::int[], $8::bigint[], $9::bool[], $10::int[],
                             $11::text[], $12::text[])
          AS e(e_pk, e_status, e_output, e_custom_set, e_custom, e_after, e_partition,
               e_epoch, e_ends, e_position, e_events, e_notice)
    ), g AS (
        UPDATE instances SET status = COALESCE(e_status, status),
                             output = COALESCE(e_output, output),
                             custom_status = CASE WHEN e_custom_set THEN e_custom
                                                  ELSE custom_status END,
                             updated_at = $13, episodes = episodes + 1
          FROM e
         WHERE pk = e_pk AND episodes = e_after
           AND (e_partition IS NULL
                OR EXISTS (SELECT 1 FROM partitions
                            WHERE id = e_partition AND owner = $14::text AND epoch = e_epoch
                              AND expires_at > clock_timestamp() FOR KEY SHARE))
           -- An outcome handed over from memory counts only if its call was
           -- committed (the call of a refused episode has no row).
           AND NOT EXISTS (SELECT 1 FROM unnest($17::bigint[], $18::int[]) AS d(d_pk, d_seq)
                            WHERE d_pk = e_pk
                              AND NOT EXISTS (SELECT 1 FROM activities a
                                               WHERE a.instance_pk = d_pk AND a.seq = d_seq))
        RETURNING ",
    instance_columns!(),
    ", parent_id, parent_seq, e_ends, e_position, e_events, e_notice
    ), consumed AS (
        DELETE FROM inbox USING unnest($15::bigint[], $16::bigint[]) AS c(c_pk, c_id), g
         WHERE g.pk = c_pk AND inbox.id = c_id
    ), activities_done AS (
        DELETE FROM activities USING g
         WHERE instance_pk = g.pk
           AND (g.e_ends OR (instance_pk, seq) IN (SELECT * FROM unnest($17::bigint[], $18::int[])))
    ), timers_done AS (
        DELETE FROM timers USING g
         WHERE instance_pk = g.pk
           AND (g.e_ends OR (instance_pk, seq) IN (SELECT * FROM unnest($19::bigint[], $20::int[])))
    ), history_added AS (
        INSERT INTO history (instance_pk, position, event)
        SELECT pk, e_position, e_events FROM g WHERE e_events IS NOT NULL
    ), timers_added AS (
        INSERT INTO timers (instance_pk, seq, fire_at)
        SELECT t_pk, t_seq, t_fire_at
          FROM unnest($21::bigint[], $22::int[], $23::bigint[]) AS t(t_pk, t_seq, t_fire_at)
          JOIN g ON g.pk = t_pk
        ON CONFLICT (instance_pk, seq) DO UPDATE SET fire_at = excluded.fire_at
    ), activities_added AS (
        INSERT INTO activities (instance_pk, seq, version, name, input, retry, attempt, run_at)
        SELECT a_pk, a_seq, a_version, a_name, a_input, a_retry, a_attempt, a_run_at
          FROM unnest($24::bigint[], $25::int[], $26::text[], $27::text[], $28::text[],
                      $29::text[], $30::int[], $31::bigint[])
                 AS a(a_pk, a_seq, a_version, a_name, a_input, a_retry, a_attempt, a_run_at)
          JOIN g ON g.pk = a_pk
        ON CONFLICT (instance_pk, seq) DO UPDATE
           SET version = excluded.version, name = excluded.name, input = excluded.input,
               retry = excluded.retry, attempt = excluded.attempt, run_at = excluded.run_at
    ), outbox_added AS (
        INSERT INTO outbox (url, body, created_at, next_at)
        SELECT n_url, n_body, $13, $13
          FROM unnest($32::bigint[], $33::text[], $34::text[]) AS n(n_pk, n_url, n_body)
          JOIN g ON g.pk = n_pk
    ), told AS (
        SELECT pg_notify('durango', e_notice) FROM g WHERE e_notice IS NOT NULL
    )
    -- A plain SELECT in WITH runs only if read: the count makes the notices go.
    SELECT ",
    instance_columns!(),
    ", parent_id, parent_seq FROM g, (SELECT count(*) FROM told) AS notices"
);

/// The rows of the wave's first episodes, in one statement, each only
/// under its lease and only if its id is free (those it does not answer go
/// a step at a time: `commit_episode` tells a conflict or a refusal, and
/// replaces a finished instance of the same id).
const CREATE: &str = "
    INSERT INTO instances (id, name, version, status, input, created_at, updated_at,
                           callback_url, partition, trace_context)
    SELECT n_id, n_name, n_version, 'Pending', n_input, n_at, n_at, n_callback, n_partition,
           n_trace
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                  $7::int[], $8::bigint[], $10::text[])
             AS n(n_id, n_name, n_version, n_input, n_at, n_callback, n_partition, n_epoch,
                  n_trace)
     WHERE n_epoch IS NULL
        OR EXISTS (SELECT 1 FROM partitions
                    WHERE id = n_partition AND owner = $9::text AND epoch = n_epoch
                      AND expires_at > clock_timestamp() FOR KEY SHARE)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, pk";

/// Creates the rows of `firsts` (first episodes); answers the pk of each
/// created, by id.
async fn create(c: &Conn, host: &str, firsts: &[&EpisodeCommit]) -> TxResult<HashMap<String, i64>> {
    let rows: Vec<&InstanceRow> = firsts.iter().filter_map(|f| f.creates.as_ref()).collect();
    let column = |f: fn(&InstanceRow) -> &str| -> Vec<&str> { rows.iter().map(|r| f(r)).collect() };
    let created = c
        .query(
            CREATE,
            &[
                &column(|r| &r.id),
                &column(|r| &r.name),
                &column(|r| &r.version),
                &column(|r| &r.input),
                &rows.iter().map(|r| r.created_at).collect::<Vec<i64>>(),
                &rows
                    .iter()
                    .map(|r| r.callback_url.as_deref())
                    .collect::<Vec<Option<&str>>>(),
                &rows
                    .iter()
                    .map(|r| partition_of(&r.id))
                    .collect::<Vec<i32>>(),
                &firsts
                    .iter()
                    .map(|f| f.fence.map(|fence| fence.epoch))
                    .collect::<Vec<Option<i64>>>(),
                &host,
                &rows
                    .iter()
                    .map(|r| r.trace.map(|t| t.traceparent()))
                    .collect::<Vec<Option<String>>>(),
            ],
        )
        .await?;
    Ok(created
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect())
}

/// Whether `commit` can go in one statement.
pub(super) fn fits(commit: &EpisodeCommit) -> bool {
    let touches_twice = commit
        .activities
        .iter()
        .any(|a| commit.consumed_activities.contains(&a.seq));
    commit.continue_as_new.is_none()
        && commit.children.is_empty()
        && commit.held_activities.is_empty()
        && !touches_twice
}

/// The statement's parameters, an array per column.
#[derive(Default)]
struct Columns<'a> {
    pk: Vec<i64>,
    status: Vec<Option<&'static str>>,
    output: Vec<Option<&'a str>>,
    custom_set: Vec<bool>,
    custom: Vec<Option<&'a str>>,
    after: Vec<i64>,
    partition: Vec<Option<i32>>,
    epoch: Vec<Option<i64>>,
    ends: Vec<bool>,
    position: Vec<i32>,
    events: Vec<Option<String>>,
    notice: Vec<Option<String>>,
    consumed: (Vec<i64>, Vec<i64>),
    activities_done: (Vec<i64>, Vec<i32>),
    timers_done: (Vec<i64>, Vec<i32>),
    timers: (Vec<i64>, Vec<i32>, Vec<i64>),
    activities: ActivityColumns<'a>,
    outbox: (Vec<i64>, Vec<&'a str>, Vec<&'a str>),
}

#[derive(Default)]
struct ActivityColumns<'a> {
    pk: Vec<i64>,
    seq: Vec<i32>,
    version: Vec<&'a str>,
    name: Vec<&'a str>,
    input: Vec<&'a str>,
    retry: Vec<String>,
    attempt: Vec<i32>,
    run_at: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn add(&mut self, host: &str, pk: i64, commit: &'a EpisodeCommit) {
        let ends = commit.status.is_some_and(|s| s.is_terminal());
        self.pk.push(pk);
        self.status.push(commit.status.map(|s| s.as_str()));
        self.output.push(commit.output.as_deref());
        self.custom_set.push(commit.custom_status.is_some());
        self.custom
            .push(commit.custom_status.as_ref().and_then(Option::as_deref));
        self.after.push(commit.after_episodes);
        let fence = guarded_fence(commit);
        self.partition.push(fence.map(|f| f.partition));
        self.epoch.push(fence.map(|f| f.epoch));
        self.ends.push(ends);
        self.position.push(commit.first_position as i32);
        self.events.push(
            (!commit.events.is_empty())
                .then(|| serde_json::to_string(&commit.events).expect("history events serialize")),
        );
        let change = Remote {
            finished: ends
                .then(|| commit.instance_id.clone())
                .into_iter()
                .collect(),
            consumed: commit.consumed.clone(),
            ..Remote::default()
        };
        self.notice.push(
            (!change.finished.is_empty() || !change.consumed.is_empty())
                .then(|| leases::wire(host, change)),
        );
        for id in &commit.consumed {
            self.consumed.0.push(pk);
            self.consumed.1.push(*id);
        }
        for s in &commit.consumed_activities {
            self.activities_done.0.push(pk);
            self.activities_done.1.push(seq(*s));
        }
        for s in &commit.cancelled_timers {
            self.timers_done.0.push(pk);
            self.timers_done.1.push(seq(*s));
        }
        for n in &commit.notifications {
            self.outbox.0.push(pk);
            self.outbox.1.push(&n.url);
            self.outbox.2.push(&n.body);
        }
        if ends {
            // An ending episode leaves no timers or activities behind.
            return;
        }
        // A timer set and cancelled in the same episode is not written.
        for (s, fire_at) in &commit.timers {
            if !commit.cancelled_timers.contains(s) {
                self.timers.0.push(pk);
                self.timers.1.push(seq(*s));
                self.timers.2.push(*fire_at);
            }
        }
        let a = &mut self.activities;
        for row in &commit.activities {
            a.pk.push(pk);
            a.seq.push(seq(row.seq));
            a.version.push(&row.version);
            a.name.push(&row.name);
            a.input.push(&row.input);
            a.retry
                .push(serde_json::to_string(&row.retry).expect("retry policy serializes"));
            a.attempt.push(row.attempt as i32);
            a.run_at.push(row.run_at);
        }
    }
}

/// Commits `episodes` (each `fits`, one per instance, on instance `pk`);
/// answers, by pk, the rows whose guard held, as updated (the instance
/// columns, then `parent_id` and `parent_seq`).
pub(super) async fn commit(
    c: &Conn,
    host: &str,
    episodes: &[(i64, &EpisodeCommit)],
) -> TxResult<HashMap<i64, Row>> {
    let mut p = Columns::default();
    for (pk, commit) in episodes {
        p.add(host, *pk, commit);
    }
    let a = &p.activities;
    let rows = c
        .query(
            COMMIT,
            &[
                &p.pk,
                &p.status,
                &p.output,
                &p.custom_set,
                &p.custom,
                &p.after,
                &p.partition,
                &p.epoch,
                &p.ends,
                &p.position,
                &p.events,
                &p.notice,
                &now_ms(),
                &host,
                &p.consumed.0,
                &p.consumed.1,
                &p.activities_done.0,
                &p.activities_done.1,
                &p.timers_done.0,
                &p.timers_done.1,
                &p.timers.0,
                &p.timers.1,
                &p.timers.2,
                &a.pk,
                &a.seq,
                &a.version,
                &a.name,
                &a.input,
                &a.retry,
                &a.attempt,
                &a.run_at,
                &p.outbox.0,
                &p.outbox.1,
                &p.outbox.2,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get::<_, i64>(10), row))
        .collect())
}

/// A common episode queued on a writer, merged with its wave's others.
pub(super) struct EpisodeJob {
    host: Arc<str>,
    commit: Arc<EpisodeCommit>,
    outcome: Option<Result<EpisodeOutcome, StoreError>>,
    reply: oneshot::Sender<Result<EpisodeOutcome, StoreError>>,
}

impl EpisodeJob {
    /// The job, and where its outcome arrives.
    pub(super) fn new(
        host: Arc<str>,
        commit: EpisodeCommit,
    ) -> (
        EpisodeJob,
        oneshot::Receiver<Result<EpisodeOutcome, StoreError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let job = EpisodeJob {
            host,
            commit: Arc::new(commit),
            outcome: None,
            reply,
        };
        (job, answer)
    }
}

impl Mergeable for EpisodeJob {
    fn run_together<'a>(
        conn: &'a Conn,
        mut jobs: Vec<&'a mut Self>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Some(host) = jobs.first().map(|job| job.host.clone()) else {
                return true;
            };
            let commits: Vec<Arc<EpisodeCommit>> =
                jobs.iter().map(|job| job.commit.clone()).collect();
            let firsts: Vec<&EpisodeCommit> = commits
                .iter()
                .filter(|commit| commit.creates.is_some())
                .map(|commit| &**commit)
                .collect();
            let created = if firsts.is_empty() {
                Ok(HashMap::new())
            } else {
                create(conn, &host, &firsts).await
            };
            // Each episode on its row's pk; a first episode whose row was
            // not created goes a step at a time, after.
            let mut alone = Vec::new();
            let episodes = created.map(|created| {
                let mut episodes: Vec<(i64, &EpisodeCommit)> = Vec::new();
                for (n, commit) in commits.iter().enumerate() {
                    match &commit.creates {
                        None => episodes.push((commit.instance_pk, commit)),
                        Some(row) => match created.get(&row.id) {
                            Some(pk) => episodes.push((*pk, commit)),
                            None => alone.push(n),
                        },
                    }
                }
                episodes
            });
            let committed = match episodes {
                Ok(episodes) => commit(conn, &host, &episodes)
                    .await
                    .map(|rows| (episodes, rows)),
                Err(error) => Err(error),
            };
            let (episodes, mut rows) = match committed {
                Ok(committed) => committed,
                Err(error) => {
                    let error = pg_error(error);
                    for job in jobs {
                        job.outcome = Some(Err(error.clone()));
                    }
                    return false;
                }
            };
            let pks: HashMap<&str, i64> = episodes
                .iter()
                .map(|(pk, commit)| (commit.instance_id.as_str(), *pk))
                .collect();
            let mut all_ok = true;
            for (n, job) in jobs.iter_mut().enumerate() {
                let commit = job.commit.clone();
                let outcome = match pks.get(commit.instance_id.as_str()) {
                    Some(pk) if !alone.contains(&n) => {
                        settle(conn, &host, &commit, *pk, rows.remove(pk)).await
                    }
                    _ => commit_episode(conn, &host, &commit).await,
                };
                all_ok &= outcome.is_ok();
                job.outcome = Some(outcome.map_err(pg_error));
            }
            all_ok
        })
    }

    fn finish(self, committed: Result<(), StoreError>) {
        let result = match (committed, self.outcome) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Stopped),
        };
        let _ = self.reply.send(result);
    }
}
