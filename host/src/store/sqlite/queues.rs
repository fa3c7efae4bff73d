//! The scheduler's queues (timers, activity calls), the outbox, and the
//! leases a single host does not need.

use std::collections::HashMap;

use rusqlite::params;
use tokio::sync::mpsc;

use super::reads::{activity_row, decode};
use super::writes::{activity_outcome_to_inbox, exec, find, insert_message};
use super::SqliteStore;
use crate::engine::history::Message;
use crate::store::{ActivityRow, Leases, Outbox, OutboxRow, Remote, StoreFuture, WorkQueues};

// One host holds every partition of a SQLite database: the `partitions`
// filters are all of them.
impl WorkQueues for SqliteStore {
    fn timers_between(
        &self,
        after: i64,
        until: i64,
        _partitions: Option<Vec<i32>>,
    ) -> StoreFuture<Vec<(String, u32, i64)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT i.id, t.seq, t.fire_at FROM timers t JOIN instances i ON i.pk = t.instance_pk
                  WHERE t.fire_at > ?1 AND t.fire_at <= ?2",
            )?;
            let rows = stmt.query_map([after, until], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn activities(&self, _partitions: Option<Vec<i32>>) -> StoreFuture<Vec<ActivityRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT i.id, a.seq, a.version, a.name, a.input, a.retry, a.attempt, a.run_at, a.instance_pk,
                        i.trace_context
                   FROM activities a JOIN instances i ON i.pk = a.instance_pk",
            )?;
            let rows = stmt.query_map([], activity_row)?;
            rows.map(|row| {
                let (mut activity, retry) = row?;
                if !retry.is_empty() {
                    activity.retry = decode("retry policy", &retry)?;
                }
                Ok(activity)
            })
            .collect()
        })
    }

    fn instances_with_messages(&self, _partitions: Option<Vec<i32>>) -> StoreFuture<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id FROM instances WHERE pk IN (SELECT DISTINCT instance_pk FROM inbox)",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn complete_activities(
        &self,
        instance_pk: i64,
        outcomes: Vec<(u32, Message)>,
    ) -> StoreFuture<Vec<Option<i64>>> {
        self.write(move |conn| {
            outcomes
                .iter()
                .map(|(seq, outcome)| activity_outcome_to_inbox(conn, instance_pk, *seq, outcome))
                .collect()
        })
    }

    fn retry_activity(
        &self,
        instance_pk: i64,
        seq: u32,
        attempt: u32,
        run_at: i64,
    ) -> StoreFuture<bool> {
        self.write(move |conn| {
            let changed = exec(
                conn,
                "UPDATE activities SET attempt = ?3, run_at = ?4 WHERE instance_pk = ?1 AND seq = ?2",
                params![instance_pk, seq, attempt, run_at],
            )?;
            Ok(changed == 1)
        })
    }

    fn fire_timer(&self, id: String, seq: u32) -> StoreFuture<Option<i64>> {
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
    }
}

impl Outbox for SqliteStore {
    fn outbox_due(&self, now: i64, limit: usize) -> StoreFuture<(Vec<OutboxRow>, Option<i64>)> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, url, body, attempts, created_at FROM outbox
                  WHERE next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    body: r.get(2)?,
                    attempts: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?;
            let due = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let next: Option<i64> = conn.query_row(
                "SELECT MIN(next_at) FROM outbox WHERE next_at > ?1",
                [now],
                |r| r.get(0),
            )?;
            Ok((due, next))
        })
    }

    fn outbox_delivered(&self, id: i64) -> StoreFuture<()> {
        self.write(move |conn| {
            exec(conn, "DELETE FROM outbox WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    fn outbox_retry(&self, id: i64, attempts: u32, next_at: i64) -> StoreFuture<()> {
        self.write(move |conn| {
            exec(
                conn,
                "UPDATE outbox SET attempts = ?2, next_at = ?3 WHERE id = ?1",
                params![id, attempts, next_at],
            )?;
            Ok(())
        })
    }
}

/// One host, nobody else writing: no leases, no remote changes.
impl Leases for SqliteStore {
    fn lease_round(&self, _lease_ms: i64) -> StoreFuture<Option<HashMap<i32, i64>>> {
        Box::pin(async { Ok(None) })
    }

    fn remote_changes(&self) -> StoreFuture<Option<mpsc::UnboundedReceiver<Remote>>> {
        Box::pin(async { Ok(None) })
    }
}
