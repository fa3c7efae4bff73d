//! The SQLite schema. Times are milliseconds since the Unix epoch.

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every version of every app ever deployed: instances stay pinned to theirs.
CREATE TABLE IF NOT EXISTS app_versions (
    version     TEXT PRIMARY KEY,          -- sha256 of the component bytes
    app         TEXT NOT NULL,
    wasm        BLOB NOT NULL,
    compiled    BLOB NOT NULL,             -- wasmtime's serialized form
    functions   TEXT NOT NULL,             -- JSON [{name, kind}]
    allowed_settings TEXT,                 -- JSON [names]; NULL allows all
    deployed_at INTEGER NOT NULL
);

-- The version each app name serves new instances with.
CREATE TABLE IF NOT EXISTS apps (
    name        TEXT PRIMARY KEY,
    version     TEXT NOT NULL REFERENCES app_versions(version),
    deployed_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS instances (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    custom_status TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    callback_url  TEXT,                    -- lifecycle webhook given at start
    parent_id     TEXT,                    -- set for sub-orchestrations
    parent_seq    INTEGER                  -- the parent's step that awaits it
);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_at);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);

-- Append-only replay history: each row holds the JSON array of events one
-- commit appended, keyed by the position of its first event.
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    position    INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_id, position)
) WITHOUT ROWID;

-- Messages for instances that no episode has consumed yet.
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox(instance_id, id);

-- Scheduled activity calls, until their result reaches the inbox.
CREATE TABLE IF NOT EXISTS activities (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    name        TEXT NOT NULL,
    input       TEXT NOT NULL,
    retry       TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0,
    run_at      INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;

-- Lifecycle notifications not yet delivered, written in the same
-- transaction as the status change they report.
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    url         TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    next_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_due ON outbox(next_at);

CREATE TABLE IF NOT EXISTS timers (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    fire_at     INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_by_due ON timers(fire_at);
"#;
