//! The SQLite store: one writer with group commit (see `writer`), a pool of
//! read connections, and the logical transactions the engine and API need.
//! Every statement is parameterized.

mod reads;
mod schema;
mod writer;
mod writes;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

pub use reads::{InstanceFilter, InstanceRow, OutboxRow, StoredVersion};
use writer::Writer;
pub use writes::{
    ActivityRow, ChildStart, Committed, ContinueAsNew, CreateOutcome, Deployment, EnqueueOutcome,
    EpisodeCommit, EpisodeOutcome, Notification,
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
    /// The writer or reader threads are gone (the host is shutting down).
    Stopped,
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
            } | StoreError::Stopped
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
            StoreError::Stopped => f.write_str("the database connection has stopped"),
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

/// Threads (each with its own read connection) that serve reads. A fixed
/// few beat `spawn_blocking`: no thread pool lock to contend on, and each
/// connection keeps its page cache and prepared statements warm.
const READERS: usize = 4;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

#[derive(Clone)]
pub struct Store {
    writer: Writer,
    reads: mpsc::Sender<ReadJob>,
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
            "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;"
        ))?;
        schema::apply(&conn)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (reads, queue) = mpsc::channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..READERS {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("durango-reader-{n}"))
                .spawn(move || serve_reads(&conn, &queue))
                .map_err(|e| StoreError::Corrupt(format!("cannot start a reader thread: {e}")))?;
        }
        let checkpoints = Connection::open(path)?;
        checkpoints.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store {
            writer: Writer::start(conn, checkpoints)?,
            reads,
        })
    }

    /// Runs `query` on a read connection off the async threads.
    pub(crate) async fn read<R, F>(&self, query: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(query(conn));
        });
        self.reads.send(job).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    pub(crate) fn write<R, F>(&self, work: F) -> impl Future<Output = Result<R, StoreError>>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        self.writer.write(work)
    }
}

/// A reader thread: takes the next read from the shared queue until the
/// store is dropped.
fn serve_reads(conn: &Connection, queue: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking query drops its reply (the caller gets an error);
            // the thread stays to serve the next read.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
            }
            Err(_) => return,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
