//! The PostgreSQL schema and its migrations. Times are milliseconds since
//! the Unix epoch. Hosts starting together on an empty database take an
//! advisory lock, so one creates the tables and the others find them.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::{StoreError, PARTITIONS};

/// The layout this build writes, kept in `meta` under `schema_version`.
/// Version 2 adds `instances.trace_context`.
const VERSION: i64 = 2;

/// Any number shared by every host: the lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x6475_7261_6e67_6f00; // "durango\0"

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every version of every app ever deployed: instances stay pinned to theirs.
CREATE TABLE IF NOT EXISTS app_versions (
    version     TEXT PRIMARY KEY,          -- sha256 of the component bytes
    app         TEXT NOT NULL,
    wasm        BYTEA NOT NULL,
    compiled    BYTEA NOT NULL,            -- wasmtime's serialized form
    functions   TEXT NOT NULL,             -- JSON [{name, kind}]
    allowed_settings TEXT,                 -- JSON [names]; NULL allows all
    deployed_at BIGINT NOT NULL
);

-- The version each app name serves new instances with.
CREATE TABLE IF NOT EXISTS apps (
    name        TEXT PRIMARY KEY,
    version     TEXT NOT NULL REFERENCES app_versions(version),
    deployed_at BIGINT NOT NULL
);

-- `pk` is internal and never reused: it tells an instance from a later
-- one started under the same id.
CREATE TABLE IF NOT EXISTS instances (
    pk            BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    custom_status TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    callback_url  TEXT,
    episodes      BIGINT NOT NULL DEFAULT 0,
    parent_id     TEXT,
    parent_seq    INTEGER,
    partition     INTEGER NOT NULL,        -- partition_of(id): which host runs it
    trace_context TEXT                     -- W3C traceparent of its start span
);
ALTER TABLE instances ADD COLUMN IF NOT EXISTS trace_context TEXT;
CREATE INDEX IF NOT EXISTS instances_by_partition ON instances(partition);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_at, id);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);

-- Append-only replay history: each row holds the JSON array of events one
-- commit appended, keyed by the position of its first event.
CREATE TABLE IF NOT EXISTS history (
    instance_pk BIGINT NOT NULL,
    position    INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_pk, position)
);

-- Messages for instances that no episode has consumed yet.
CREATE TABLE IF NOT EXISTS inbox (
    id          BIGSERIAL PRIMARY KEY,
    instance_pk BIGINT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox(instance_pk, id);

-- Scheduled activity calls, until the episode that consumes the result
-- commits (or the result is moved to the inbox).
CREATE TABLE IF NOT EXISTS activities (
    instance_pk BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    name        TEXT NOT NULL,
    input       TEXT NOT NULL,
    retry       TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0,
    run_at      BIGINT NOT NULL,
    PRIMARY KEY (instance_pk, seq)
);

-- Lifecycle notifications not yet delivered, written in the same
-- transaction as the status change they report.
CREATE TABLE IF NOT EXISTS outbox (
    id          BIGSERIAL PRIMARY KEY,
    url         TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    next_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_at);

CREATE TABLE IF NOT EXISTS timers (
    instance_pk BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    fire_at     BIGINT NOT NULL,
    PRIMARY KEY (instance_pk, seq)
);
CREATE INDEX IF NOT EXISTS timers_by_due ON timers(fire_at);

-- Each partition's lease: the host that runs its instances until
-- `expires_at`, and the epoch every one of its episode commits checks.
-- A new owner adds one to the epoch, so a host whose lease ran out (paused,
-- cut off) writes no episode after another took over.
CREATE TABLE IF NOT EXISTS partitions (
    id         INTEGER PRIMARY KEY,
    owner      TEXT,
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT 'epoch'
);

-- Live hosts (each renews `seen_until` with its leases): partitions are
-- shared out among them.
CREATE TABLE IF NOT EXISTS hosts (
    id         TEXT PRIMARY KEY,
    seen_until TIMESTAMPTZ NOT NULL
);
"#;

/// Brings the database to this build's layout, in one transaction.
pub(super) async fn apply(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(SCHEMA).await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO partitions (id) SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING",
        &[&PARTITIONS],
    )
    .await
    .map_err(pg_error)?;
    let found: Option<String> = tx
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0));
    match found.map(|v| v.parse::<i64>()) {
        Some(Ok(version)) if version > VERSION => {
            return Err(StoreError::Corrupt(format!(
                "the database has layout {version}, newer than this durango knows ({VERSION}); use a newer build"
            )))
        }
        Some(Ok(version)) if version < VERSION => {
            tx.execute(
                "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
                &[&VERSION.to_string()],
            )
            .await
            .map_err(pg_error)?;
        }
        Some(Ok(_)) => {}
        Some(Err(_)) => return Err(StoreError::Corrupt("schema_version is not a number".into())),
        None => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)",
                &[&VERSION.to_string()],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    tx.commit().await.map_err(pg_error)
}
