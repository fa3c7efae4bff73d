//! Reading the domain records back from PostgreSQL rows.

use tokio_postgres::Row;

use crate::engine::history::{HistoryEvent, Message, RetryPolicy, RuntimeStatus};
use crate::store::{ActivityRow, InstanceRow, StoreError};
use crate::trace::Parent;

/// An instance's trace as PostgreSQL keeps it (a W3C `traceparent`).
fn stored_trace(traceparent: Option<String>) -> Option<Parent> {
    traceparent.as_deref().and_then(Parent::parse)
}

pub(super) fn instance_row(row: &Row) -> InstanceRow {
    let status: String = row.get(3);
    InstanceRow {
        id: row.get(0),
        name: row.get(1),
        version: row.get(2),
        status: RuntimeStatus::parse(&status).unwrap_or(RuntimeStatus::Failed),
        input: row.get(4),
        output: row.get(5),
        custom_status: row.get(6),
        created_at: row.get(7),
        updated_at: row.get(8),
        callback_url: row.get(9),
        pk: row.get(10),
        episodes: row.get(11),
        trace: stored_trace(row.get(12)),
    }
}

/// The instance row as `row_to_json` writes it (the cold round's one-query read).
pub(super) fn instance_from_json(json: &str) -> Result<InstanceRow, StoreError> {
    #[derive(serde::Deserialize)]
    struct Json {
        pk: i64,
        episodes: i64,
        id: String,
        name: String,
        version: String,
        status: String,
        input: String,
        output: Option<String>,
        custom_status: Option<String>,
        created_at: i64,
        updated_at: i64,
        callback_url: Option<String>,
        #[serde(default)]
        trace_context: Option<String>,
    }
    let row: Json = decode("instance row", json)?;
    Ok(InstanceRow {
        pk: row.pk,
        episodes: row.episodes,
        id: row.id,
        name: row.name,
        version: row.version,
        status: RuntimeStatus::parse(&row.status).unwrap_or(RuntimeStatus::Failed),
        input: row.input,
        output: row.output,
        custom_status: row.custom_status,
        created_at: row.created_at,
        updated_at: row.updated_at,
        callback_url: row.callback_url,
        trace: stored_trace(row.trace_context),
    })
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Columns: instance id, seq, version, name, input, retry, attempt, run_at,
/// pk, the instance's trace context.
pub(super) fn activity_row(row: &Row) -> Result<ActivityRow, StoreError> {
    let retry: Option<String> = row.get(5);
    let seq: i32 = row.get(1);
    let attempt: i32 = row.get(6);
    Ok(ActivityRow {
        instance_id: row.get(0),
        seq: seq as u32,
        version: row.get(2),
        name: row.get(3),
        input: row.get(4),
        retry: match retry.filter(|r| !r.is_empty()) {
            Some(json) => decode("retry policy", &json)?,
            None => RetryPolicy::ONCE,
        },
        attempt: attempt as u32,
        run_at: row.get(7),
        instance_pk: row.get(8),
        trace: stored_trace(row.get(9)),
    })
}

/// Rows of (id, message JSON) as inbox messages.
pub(super) fn inbox(rows: &[Row]) -> Result<Vec<(i64, Message)>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.get(0), decode("inbox message", r.get::<_, &str>(1))?)))
        .collect()
}

/// History rows (each the JSON array of the events one commit appended).
pub(super) fn history<'a>(
    rows: impl Iterator<Item = &'a str>,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let mut history = Vec::new();
    for json in rows {
        history.extend(decode::<Vec<HistoryEvent>>("history events", json)?);
    }
    Ok(history)
}
