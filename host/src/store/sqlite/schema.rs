//! The SQLite schema and its migrations. Times are milliseconds since the
//! Unix epoch.

use rusqlite::Connection;

use super::StoreError;

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

-- `pk` is internal and never reused. The tables below key an instance's
-- rows by it rather than by the id the caller chose, so the rows of
-- instances started together sit on the same pages: a group commit of
-- their episodes writes a few pages instead of one per instance and table.
CREATE TABLE IF NOT EXISTS instances (
    pk            INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    status        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT,
    custom_status TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    callback_url  TEXT,                    -- lifecycle webhook given at start
    episodes      INTEGER NOT NULL DEFAULT 0, -- committed so far: each commits on top of the last
    parent_id     TEXT,                    -- set for sub-orchestrations
    parent_seq    INTEGER,                 -- the parent's step that awaits it
    trace_context BLOB                     -- its start span: trace id, span id, flags (25 bytes)
);
CREATE INDEX IF NOT EXISTS instances_by_created ON instances(created_at);
CREATE INDEX IF NOT EXISTS instances_by_status ON instances(status);

-- Append-only replay history: each row holds the JSON array of events one
-- commit appended, keyed by the position of its first event.
CREATE TABLE IF NOT EXISTS history (
    instance_pk INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (instance_pk, position)
) WITHOUT ROWID;

-- Messages for instances that no episode has consumed yet.
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_pk INTEGER NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_by_instance ON inbox(instance_pk, id);

-- Scheduled activity calls, until the episode that consumes the result
-- commits (or the result is moved to the inbox).
CREATE TABLE IF NOT EXISTS activities (
    instance_pk INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    name        TEXT NOT NULL,
    input       TEXT NOT NULL,
    retry       TEXT,
    attempt     INTEGER NOT NULL DEFAULT 0,
    run_at      INTEGER NOT NULL,
    PRIMARY KEY (instance_pk, seq)
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
    instance_pk INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    fire_at     INTEGER NOT NULL,
    PRIMARY KEY (instance_pk, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_by_due ON timers(fire_at);
"#;

/// Version 3's `traceparent`s (`00-` trace id `-` span id `-` flags, in
/// hex) as their bytes; one that is not valid hex becomes NULL (an
/// instance without a trace), as it was read before.
const TRACES_AS_BYTES: &str = "
UPDATE instances
   SET trace_context = unhex(substr(trace_context, 4, 32) || substr(trace_context, 37, 16)
                             || substr(trace_context, 54, 2))
 WHERE typeof(trace_context) = 'text';";

/// The layout this build writes, kept in `PRAGMA user_version`. Version 2
/// keys an instance's rows by `instances.pk`; databases from before (no
/// version) keyed them by the instance id and are migrated on open.
/// Version 3 adds `instances.trace_context` (a W3C `traceparent`); version
/// 4 keeps it as its 25 bytes.
const VERSION: i64 = 4;

/// Brings the database to this build's layout: creates it, or migrates one
/// an older build wrote, in one transaction.
pub(crate) fn apply(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has layout {version}, newer than this durango knows ({VERSION}); use a newer build"
        )));
    }
    let keyed_by_id = version < 2 && has_column(conn, "history", "instance_id")?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        if keyed_by_id {
            conn.execute_batch(SET_ASIDE_V1)?;
        }
        conn.execute_batch(SCHEMA)?;
        if keyed_by_id {
            conn.execute_batch(COPY_V1)?;
        }
        if !has_column(conn, "instances", "trace_context")? {
            conn.execute_batch("ALTER TABLE instances ADD COLUMN trace_context BLOB")?;
        }
        if version == 3 {
            conn.execute_batch(TRACES_AS_BYTES)?;
        }
        conn.execute_batch(&format!("PRAGMA user_version = {VERSION}; COMMIT"))
    })();
    if applied.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Ok(applied?)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Version 1's tables move aside (their indexes go: the new ones take the
/// names) so the new layout can be created next to them.
const SET_ASIDE_V1: &str = r#"
DROP INDEX IF EXISTS instances_by_created;
DROP INDEX IF EXISTS instances_by_status;
DROP INDEX IF EXISTS inbox_by_instance;
DROP INDEX IF EXISTS timers_by_due;
ALTER TABLE instances RENAME TO v1_instances;
ALTER TABLE history RENAME TO v1_history;
ALTER TABLE inbox RENAME TO v1_inbox;
ALTER TABLE activities RENAME TO v1_activities;
ALTER TABLE timers RENAME TO v1_timers;
"#;

/// Version 1's rows into the new layout, instances numbered in creation
/// order; inbox ids are kept (they order each instance's messages).
const COPY_V1: &str = r#"
INSERT INTO instances (id, name, version, status, input, output, custom_status,
                       created_at, updated_at, callback_url, parent_id, parent_seq)
     SELECT id, name, version, status, input, output, custom_status,
            created_at, updated_at, callback_url, parent_id, parent_seq
       FROM v1_instances ORDER BY created_at, id;
INSERT INTO history (instance_pk, position, event)
     SELECT i.pk, h.position, h.event
       FROM v1_history h JOIN instances i ON i.id = h.instance_id;
INSERT INTO inbox (id, instance_pk, message)
     SELECT b.id, i.pk, b.message
       FROM v1_inbox b JOIN instances i ON i.id = b.instance_id ORDER BY b.id;
INSERT INTO activities (instance_pk, seq, version, name, input, retry, attempt, run_at)
     SELECT i.pk, a.seq, a.version, a.name, a.input, a.retry, a.attempt, a.run_at
       FROM v1_activities a JOIN instances i ON i.id = a.instance_id;
INSERT INTO timers (instance_pk, seq, fire_at)
     SELECT i.pk, t.seq, t.fire_at
       FROM v1_timers t JOIN instances i ON i.id = t.instance_id;
DROP TABLE v1_history;
DROP TABLE v1_inbox;
DROP TABLE v1_activities;
DROP TABLE v1_timers;
DROP TABLE v1_instances;
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::history::{HistoryEvent, Message};
    use crate::store::sqlite::reads::{read_history, read_inbox};
    use crate::trace::Parent;

    /// The layout builds before version 2 wrote (no `user_version`).
    const V1: &str = r#"
        CREATE TABLE instances (id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
            status TEXT NOT NULL, input TEXT NOT NULL, output TEXT, custom_status TEXT,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, callback_url TEXT,
            parent_id TEXT, parent_seq INTEGER);
        CREATE INDEX instances_by_created ON instances(created_at);
        CREATE INDEX instances_by_status ON instances(status);
        CREATE TABLE history (instance_id TEXT NOT NULL, position INTEGER NOT NULL,
            event TEXT NOT NULL, PRIMARY KEY (instance_id, position)) WITHOUT ROWID;
        CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL,
            message TEXT NOT NULL);
        CREATE INDEX inbox_by_instance ON inbox(instance_id, id);
        CREATE TABLE activities (instance_id TEXT NOT NULL, seq INTEGER NOT NULL,
            version TEXT NOT NULL, name TEXT NOT NULL, input TEXT NOT NULL, retry TEXT,
            attempt INTEGER NOT NULL DEFAULT 0, run_at INTEGER NOT NULL,
            PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
        CREATE TABLE timers (instance_id TEXT NOT NULL, seq INTEGER NOT NULL,
            fire_at INTEGER NOT NULL, PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
        CREATE INDEX timers_by_due ON timers(fire_at);

        INSERT INTO instances VALUES
            ('late', 'O', 'v1', 'Running', 'null', NULL, NULL, 20, 20, NULL, NULL, NULL),
            ('early', 'O', 'v1', 'Running', '"hi"', NULL, 'busy', 10, 11, 'http://x', NULL, NULL);
        INSERT INTO history VALUES
            ('early', 0, '{"type":"orchestratorStarted","timestamp":10}'),
            ('late', 0, '[{"type":"orchestratorStarted","timestamp":20}]');
        INSERT INTO inbox (id, instance_id, message) VALUES
            (5, 'early', '{"type":"timerFired","seq":1}'),
            (9, 'late', '{"type":"resume","reason":"go"}');
        INSERT INTO activities VALUES ('late', 0, 'v1', 'Echo', '"x"', NULL, 1, 30);
        INSERT INTO timers VALUES ('early', 1, 40);
    "#;

    #[test]
    fn a_database_keyed_by_instance_id_is_migrated_with_every_row() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        apply(&conn).unwrap();
        apply(&conn).unwrap(); // a second open changes nothing

        let pks: Vec<(String, i64, Option<String>)> = conn
            .prepare("SELECT id, pk, custom_status FROM instances ORDER BY pk")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pks,
            vec![
                ("early".into(), 1, Some("busy".into())),
                ("late".into(), 2, None)
            ],
            "numbered in creation order, columns kept"
        );
        assert_eq!(
            read_history(&conn, "early").unwrap(),
            vec![HistoryEvent::OrchestratorStarted { timestamp: 10 }]
        );
        assert_eq!(
            read_inbox(&conn, "late").unwrap(),
            vec![(
                9,
                Message::Resume {
                    reason: "go".into()
                }
            )]
        );
        let activity: (i64, String, i64) = conn
            .query_row(
                "SELECT instance_pk, name, attempt FROM activities",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(activity, (2, "Echo".into(), 1));
        let timer: (i64, i64) = conn
            .query_row("SELECT instance_pk, fire_at FROM timers", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(timer, (1, 40));
        let leftovers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'v1_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(leftovers, 0);
        // New inbox ids continue after the migrated ones.
        conn.execute(
            "INSERT INTO inbox (instance_pk, message) VALUES (1, 'x')",
            [],
        )
        .unwrap();
        assert!(conn.last_insert_rowid() > 9);
    }

    #[test]
    fn a_version_3_database_keeps_its_traces_as_bytes() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn).unwrap();
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // As version 3 left it: a text column of traceparents, one of them
        // not one.
        conn.execute_batch(&format!(
            "ALTER TABLE instances DROP COLUMN trace_context;
             ALTER TABLE instances ADD COLUMN trace_context TEXT;
             INSERT INTO instances (id, name, version, status, input, created_at, updated_at, trace_context)
                  VALUES ('a', 'o', 'v', 'Running', 'null', 1, 1, '{text}'),
                         ('b', 'o', 'v', 'Running', 'null', 1, 1, 'garbage'),
                         ('c', 'o', 'v', 'Running', 'null', 1, 1, NULL);
             PRAGMA user_version = 3"
        ))
        .unwrap();
        apply(&conn).unwrap();
        let stored = |id: &str| -> Option<Vec<u8>> {
            conn.query_row(
                "SELECT trace_context FROM instances WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let bytes = stored("a").expect("a context");
        assert_eq!(Parent::from_bytes(&bytes), Parent::parse(text));
        assert_eq!(stored("b"), None);
        assert_eq!(stored("c"), None);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
    }

    #[test]
    fn a_version_2_database_gets_the_trace_column() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        apply(&conn).unwrap();
        // As version 2 left it: no trace_context.
        conn.execute_batch(
            "ALTER TABLE instances DROP COLUMN trace_context; PRAGMA user_version = 2",
        )
        .unwrap();
        assert!(!has_column(&conn, "instances", "trace_context").unwrap());
        apply(&conn).unwrap();
        assert!(has_column(&conn, "instances", "trace_context").unwrap());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2, "the rows stay");
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        let error = apply(&conn).unwrap_err().to_string();
        assert!(error.contains("newer"), "{error}");
    }
}
