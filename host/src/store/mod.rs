//! The SQLite store: one writer with group commit (see `writer`), a pool of
//! read connections, and the logical transactions the engine and API need.
//! Every statement is parameterized.

mod reads;
mod schema;
mod writer;
mod writes;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use reads::{InstanceFilter, InstanceRow, OutboxRow, StoredVersion};
use writer::Writer;
pub use writes::{
    ActivityRow, ChildStart, ContinueAsNew, CreateOutcome, Deployment, EnqueueOutcome,
    EpisodeCommit, Notification, Woken,
};

/// What the store failed with. Cloned to every caller of a failed commit.
#[derive(Debug, Clone)]
pub enum StoreError {
    Sqlite {
        code: Option<rusqlite::ErrorCode>,
        message: String,
    },
    Corrupt(String),
    /// The database file cannot be written.
    ReadOnly(String),
    WriterGone,
}

impl StoreError {
    /// True when the database cannot take writes right now (disk full,
    /// read-only, locked): the API answers 503 instead of 500.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode::*;
        matches!(
            self,
            StoreError::Sqlite {
                code: Some(
                    DiskFull
                        | ReadOnly
                        | DatabaseBusy
                        | DatabaseLocked
                        | CannotOpen
                        | SystemIoFailure
                ),
                ..
            } | StoreError::WriterGone
                | StoreError::ReadOnly(_)
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite { message, .. } => write!(f, "database error: {message}"),
            StoreError::Corrupt(what) => write!(f, "database holds an unreadable row: {what}"),
            StoreError::ReadOnly(path) => write!(
                f,
                "the database {path} is read-only; durango needs to write to it"
            ),
            StoreError::WriterGone => f.write_str("the database writer has stopped"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            code: error.sqlite_error_code(),
            message: error.to_string(),
        }
    }
}

/// The store's durability: `Full` syncs every commit (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    Full,
    Normal,
}

/// Prepared statements kept per connection (the hot paths use ~30).
const STATEMENT_CACHE: usize = 64;

#[derive(Clone)]
pub struct Store {
    writer: Writer,
    readers: Arc<Readers>,
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database, applies the schema and starts
    /// the writer.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        // SQLite quietly opens a file it cannot write read-only; say so now
        // rather than fail every write later.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::ReadOnly(path.display().to_string()));
        }
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "could not switch to WAL (got {mode})"
            )));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"
        ))?;
        conn.execute_batch(schema::SCHEMA)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Store {
            writer: Writer::start(conn),
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `query` on a read connection off the async threads.
    pub(crate) async fn read<R, F>(&self, query: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.idle.lock().expect("reader pool").pop() {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(
                        &readers.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                    conn
                }
            };
            let result = query(&conn);
            readers.idle.lock().expect("reader pool").push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    pub(crate) async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.writer.write(work).await
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
