//! The reads the engine and the API need.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store, StoreError};
use crate::engine::history::{HistoryEvent, Message, RetryPolicy, RuntimeStatus};
use crate::store::ActivityRow;

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
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    pub id_prefix: Option<String>,
    /// Continue after this (created_at, id).
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

pub(super) const INSTANCE_COLUMNS: &str = "id, name, version, status, input, output, \
    custom_status, created_at, updated_at, callback_url, pk, episodes";

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
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn activity_row(row: &Row<'_>) -> rusqlite::Result<(ActivityRow, String)> {
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
        },
        retry.unwrap_or_default(),
    ))
}

impl Store {
    pub async fn instance(&self, id: String) -> Result<Option<InstanceRow>, StoreError> {
        self.read(move |conn| read_instance(conn, &id)).await
    }

    /// What a round for an instance that is not in memory needs, in one
    /// read: its inbox, its row and (when there is work for it: inbox
    /// messages, or `work_in_hand`) its history.
    pub async fn cold_round(
        &self,
        id: String,
        work_in_hand: bool,
    ) -> Result<ColdRound, StoreError> {
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
        .await
    }

    pub async fn history(&self, id: String) -> Result<Vec<HistoryEvent>, StoreError> {
        self.read(move |conn| read_history(conn, &id)).await
    }

    /// The instance's unconsumed messages, oldest first, with their ids.
    pub async fn inbox(&self, id: String) -> Result<Vec<(i64, Message)>, StoreError> {
        self.read(move |conn| read_inbox(conn, &id)).await
    }

    /// Whether the inbox message with this id is still unconsumed.
    pub async fn message_pending(&self, inbox_id: i64) -> Result<bool, StoreError> {
        self.read(move |conn| {
            let found = conn
                .prepare_cached("SELECT 1 FROM inbox WHERE id = ?1")?
                .exists([inbox_id])?;
            Ok(found)
        })
        .await
    }

    /// A version's compiled form and original bytes.
    pub async fn app_version(&self, version: String) -> Result<Option<StoredVersion>, StoreError> {
        self.read(move |conn| {
            let row: Option<(Vec<u8>, Vec<u8>, Option<String>)> = conn
                .query_row(
                    "SELECT compiled, wasm, allowed_settings FROM app_versions WHERE version = ?1",
                    [version],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(compiled, wasm, allowed)| {
                Ok(StoredVersion {
                    compiled,
                    wasm,
                    allowed_settings: allowed
                        .map(|json| decode("allowed settings", &json))
                        .transpose()?,
                })
            })
            .transpose()
        })
        .await
    }

    /// Every app's current version: (name, version, functions JSON).
    pub async fn current_apps(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT apps.name, apps.version, v.functions
                   FROM apps JOIN app_versions v ON v.version = apps.version ORDER BY apps.name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Every pending timer: (instance, seq, fire_at).
    pub async fn timers_between(
        &self,
        after: i64,
        until: i64,
    ) -> Result<Vec<(String, u32, i64)>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT i.id, t.seq, t.fire_at FROM timers t JOIN instances i ON i.pk = t.instance_pk
                  WHERE t.fire_at > ?1 AND t.fire_at <= ?2",
            )?;
            let rows = stmt.query_map([after, until], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Every activity call still owed a result.
    pub async fn activities(&self) -> Result<Vec<ActivityRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT i.id, a.seq, a.version, a.name, a.input, a.retry, a.attempt, a.run_at, a.instance_pk
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
        .await
    }

    /// How many instances have `status`.
    pub async fn count_instances(&self, status: RuntimeStatus) -> Result<usize, StoreError> {
        self.read(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM instances WHERE status = ?1",
                [status.as_str()],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
        .await
    }

    /// Instances with messages waiting: the work left when the host stopped.
    pub async fn instances_with_messages(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id FROM instances WHERE pk IN (SELECT DISTINCT instance_pk FROM inbox)",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Instances matching `filter`, oldest first.
    pub async fn list_instances(
        &self,
        filter: InstanceFilter,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        self.read(move |conn| {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            let statuses = serde_json::to_string(&statuses).expect("strings serialize");
            let (after_time, after_id) = filter.after.clone().unwrap_or((i64::MIN, String::new()));
            let sql = format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances
                  WHERE (?1 = '[]' OR status IN (SELECT value FROM json_each(?1)))
                    AND (?2 IS NULL OR created_at >= ?2)
                    AND (?3 IS NULL OR created_at <= ?3)
                    AND (?4 IS NULL OR substr(id, 1, length(?4)) = ?4)
                    AND (created_at > ?5 OR (created_at = ?5 AND id > ?6))
                  ORDER BY created_at, id
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
                    filter.limit as i64
                ],
                instance_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
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

impl Store {
    /// Notifications due by `now`, oldest first, and when the next one after
    /// those is due.
    pub async fn outbox_due(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<(Vec<OutboxRow>, Option<i64>), StoreError> {
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
        .await
    }
}

/// See `Store::cold_round`.
pub struct ColdRound {
    pub inbox: Vec<(i64, Message)>,
    pub instance: Option<InstanceRow>,
    pub history: Vec<HistoryEvent>,
}

fn read_instance(conn: &Connection, id: &str) -> Result<Option<InstanceRow>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_reads_rows_of_many_events_and_older_rows_of_one() {
        let conn = Connection::open_in_memory().unwrap();
        crate::store::schema::apply(&conn).unwrap();
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
