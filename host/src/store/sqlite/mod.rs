//! The SQLite backend: one writer with group commit (see `writer`), a pool
//! of read connections, and the logical transactions the traits ask for.
//! Every statement is parameterized.

mod apps;
mod queues;
pub(crate) mod reads;
pub(crate) mod schema;
mod writer;
mod writes;

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use writer::{Kind, Writer};

use super::{Durability, StoreError, StoreFuture};
use crate::metrics::StoreMetrics;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let message = error.to_string();
        match error.sqlite_error_code() {
            Some(
                DiskFull | ReadOnly | DatabaseBusy | DatabaseLocked | CannotOpen | SystemIoFailure,
            ) => StoreError::Unavailable(message),
            _ => StoreError::Database(message),
        }
    }
}

/// Prepared statements kept per connection (the hot paths use ~30).
const STATEMENT_CACHE: usize = 64;

/// Threads (each with its own read connection) that serve reads. A fixed
/// few beat `spawn_blocking`: no thread pool lock to contend on, and each
/// connection keeps its page cache and prepared statements warm.
const READERS: usize = 4;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    reads: mpsc::Sender<ReadJob>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies the schema and starts
    /// the writer.
    pub fn open(
        path: &Path,
        durability: Durability,
        metrics: StoreMetrics,
    ) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        // SQLite quietly opens a file it cannot write read-only; say so now
        // rather than fail every write later.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::Unavailable(format!(
                "the database {} is read-only; durango needs to write to it",
                path.display()
            )));
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
        Ok(SqliteStore {
            writer: Writer::start(conn, checkpoints, metrics, writer::DEFER_WINDOW)?,
            reads,
        })
    }

    /// Queues `query` for a read connection, off the async threads.
    fn read<R, F>(&self, query: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(query(conn));
        });
        let queued = self.reads.send(job);
        Box::pin(async move {
            queued.map_err(|_| StoreError::Stopped)?;
            answer.await.map_err(|_| StoreError::Stopped)?
        })
    }

    /// Queues `work` for the next group commit (see `Writer::write`).
    fn write<R, F>(&self, work: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        Box::pin(self.writer.write(Kind::Other, work))
    }

    /// `write`, for an episode's commit (see `EpisodeCommit::deferrable`).
    fn write_episode<R, F>(&self, deferrable: bool, work: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let kind = if deferrable {
            Kind::DeferrableEpisode
        } else {
            Kind::Episode
        };
        Box::pin(self.writer.write(kind, work))
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
