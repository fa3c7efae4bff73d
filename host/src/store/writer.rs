//! The one task that writes to SQLite. Callers send small logical
//! transactions; the writer runs every one that is queued inside a single
//! `BEGIN IMMEDIATE … COMMIT` (group commit), each in its own savepoint so a
//! failing one rolls back alone, and answers the callers once the commit is
//! durable.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// Most transactions folded into one commit.
const MAX_BATCH: usize = 512;

/// Runs inside the open transaction (or learns it could not begin) and
/// returns what to tell the caller once the commit's fate is known.
type Job = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Writer {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("durango-writer".into())
            .spawn(move || run(conn, queue))
            .expect("spawn the SQLite writer thread");
        Writer { jobs }
    }

    /// Run `work` in the next group commit; resolves once it is on disk.
    pub(crate) async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = conn.and_then(|conn| in_savepoint(conn, work).map_err(StoreError::from));
            Box::new(move |committed: Result<(), StoreError>| {
                let result = committed.and(outcome);
                let _ = reply.send(result);
            })
        });
        self.jobs.send(job).map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Err(error)
        }
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::from);
        let replies: Vec<Reply> = batch
            .into_iter()
            .map(|job| job(began.clone().map(|()| &conn)))
            .collect();
        let committed = began.and_then(|()| {
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                StoreError::from(e)
            })
        });
        if let Err(error) = &committed {
            tracing::error!(%error, "group commit failed");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}
