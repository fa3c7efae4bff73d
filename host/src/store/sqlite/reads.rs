//! The reads the engine and the API need.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::engine::history::{HistoryEvent, Message, RetryPolicy, RuntimeStatus};
use crate::store::{
    ActivityRow, InstanceFilter, InstanceReads, InstanceRow, PendingWork, StoreError, StoreFuture,
};
use crate::trace::Parent;

pub(super) const INSTANCE_COLUMNS: &str = "id, name, version, status, input, output, \
    custom_status, created_at, updated_at, callback_url, pk, episodes, trace_context";

pub(super) fn instance_row(row: &Row<'_>) -> rusqlite::Result<InstanceRow> {
    let status: String = row.get(3)?;
    Ok(InstanceRow {
        id: row.get(0)?,
        name: row.get(1)?,
        version: row.get(2)?,
        status: RuntimeStatus::parse(&status).unwrap_or(RuntimeStatus::Failed),
        input: row.get(4)?,
        output: row.get(5)?,
        custom_status: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        callback_url: row.get(9)?,
        pk: row.get(10)?,
        episodes: row.get(11)?,
        trace: stored_trace(row, 12)?,
    })
}

/// An instance's trace as SQLite keeps it (`Parent::to_bytes`).
fn stored_trace(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Parent>> {
    Ok(match row.get_ref(column)? {
        ValueRef::Blob(bytes) => Parent::from_bytes(bytes),
        _ => None,
    })
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn activity_row(row: &Row<'_>) -> rusqlite::Result<(ActivityRow, String)> {
    let retry: Option<String> = row.get(5)?;
    Ok((
        ActivityRow {
            instance_id: row.get(0)?,
            instance_pk: row.get(8)?,
            seq: row.get(1)?,
            version: row.get(2)?,
            name: row.get(3)?,
            input: row.get(4)?,
            retry: RetryPolicy::ONCE,
            attempt: row.get(6)?,
            run_at: row.get(7)?,
            trace: stored_trace(row, 9)?,
        },
        retry.unwrap_or_default(),
    ))
}

pub(super) fn read_instance(
    conn: &Connection,
    id: &str,
) -> Result<Option<InstanceRow>, StoreError> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], instance_row)
        .optional()?)
}

pub(crate) fn read_inbox(conn: &Connection, id: &str) -> Result<Vec<(i64, Message)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, message FROM inbox
          WHERE instance_pk = (SELECT pk FROM instances WHERE id = ?1) ORDER BY id",
    )?;
    let rows = stmt.query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (id, json) = row?;
        Ok((id, decode("inbox message", &json)?))
    })
    .collect()
}

/// A history row: the events one commit appended (databases written before
/// rows held one event each hold single events).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum HistoryRow {
    Events(Vec<HistoryEvent>),
    Event(HistoryEvent),
}

pub(crate) fn read_history(conn: &Connection, id: &str) -> Result<Vec<HistoryEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT event FROM history
          WHERE instance_pk = (SELECT pk FROM instances WHERE id = ?1) ORDER BY position",
    )?;
    let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
    let mut history = Vec::new();
    for row in rows {
        match decode("history events", &row?)? {
            HistoryRow::Events(events) => history.extend(events),
            HistoryRow::Event(event) => history.push(event),
        }
    }
    Ok(history)
}

impl InstanceReads for SqliteStore {
    fn instance(&self, id: String) -> StoreFuture<Option<InstanceRow>> {
        self.read(move |conn| read_instance(conn, &id))
    }

    fn history(&self, id: String) -> StoreFuture<Vec<HistoryEvent>> {
        self.read(move |conn| read_history(conn, &id))
    }

    fn inbox(&self, id: String) -> StoreFuture<Vec<(i64, Message)>> {
        self.read(move |conn| read_inbox(conn, &id))
    }

    fn message_pending(&self, inbox_id: i64) -> StoreFuture<bool> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached("SELECT 1 FROM inbox WHERE id = ?1")?
                .exists([inbox_id])?;
            Ok(found)
        })
    }

    fn list_instances(&self, filter: InstanceFilter) -> StoreFuture<Vec<InstanceRow>> {
        self.read(move |conn| {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            let statuses = serde_json::to_string(&statuses).expect("strings serialize");
            let (after_time, after_id) = filter.resume_after();
            // Fixed words: the list's order is not the caller's text.
            let (cmp, dir) = match filter.newest_first {
                true => ("<", "DESC"),
                false => (">", "ASC"),
            };
            let sql = format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances
                  WHERE (?1 = '[]' OR status IN (SELECT value FROM json_each(?1)))
                    AND (?2 IS NULL OR created_at >= ?2)
                    AND (?3 IS NULL OR created_at <= ?3)
                    AND (?4 IS NULL OR substr(id, 1, length(?4)) = ?4)
                    AND (created_at {cmp} ?5 OR (created_at = ?5 AND id {cmp} ?6))
                    AND (?8 IS NULL OR name = ?8)
                  ORDER BY created_at {dir}, id {dir}
                  LIMIT ?7"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    statuses,
                    filter.created_from,
                    filter.created_to,
                    filter.id_prefix,
                    after_time,
                    after_id,
                    filter.limit as i64,
                    filter.name
                ],
                instance_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn unfinished_of_app(&self, app: String) -> StoreFuture<Vec<InstanceRow>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances
                  WHERE status NOT IN ('Completed', 'Failed', 'Terminated')
                    AND version IN (SELECT version FROM app_versions WHERE app = ?1)
                  ORDER BY created_at, id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([app], instance_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn count_instances(&self, status: RuntimeStatus) -> StoreFuture<usize> {
        self.read(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM instances WHERE status = ?1",
                [status.as_str()],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }

    fn pending_work(&self, pk: i64) -> StoreFuture<PendingWork> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, attempt, run_at FROM activities WHERE instance_pk = ?1 ORDER BY seq",
            )?;
            let activities = stmt
                .query_map([pk], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT seq, fire_at FROM timers WHERE instance_pk = ?1 ORDER BY seq",
            )?;
            let timers = stmt
                .query_map([pk], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(PendingWork { activities, timers })
        })
    }

    fn count_by_status(&self) -> StoreFuture<Vec<(RuntimeStatus, u64)>> {
        self.read(|conn| {
            // A covering scan of `instances_by_status`.
            let mut stmt =
                conn.prepare_cached("SELECT status, COUNT(*) FROM instances GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::store::tally_statuses(rows))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reads_rows_of_many_events_and_older_rows_of_one() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::sqlite::schema::apply(&conn).unwrap();
        conn.execute(
            "INSERT INTO instances (pk, id, name, version, status, input, created_at, updated_at)
             VALUES (7, 'i', 'O', 'v', 'Running', 'null', 0, 0)",
            [],
        )
        .unwrap();
        let event = |timestamp| HistoryEvent::OrchestratorStarted { timestamp };
        let one = serde_json::to_string(&event(1)).unwrap();
        let many = serde_json::to_string(&[event(2), event(3)]).unwrap();
        for (position, json) in [(0, one), (1, many)] {
            conn.execute(
                "INSERT INTO history (instance_pk, position, event) VALUES (7, ?1, ?2)",
                params![position, json],
            )
            .unwrap();
        }
        assert_eq!(
            read_history(&conn, "i").unwrap(),
            vec![event(1), event(2), event(3)]
        );
    }
}
