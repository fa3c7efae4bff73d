//! Writers with group commit, as on SQLite, but several: each owns one
//! connection and runs every transaction queued for it in one
//! `BEGIN … COMMIT`. PostgreSQL commits the writers' batches side by side
//! (sharing WAL flushes), so more than one keeps the server busy while a
//! batch waits for its flush. Work for one instance always goes to the same
//! writer, so an instance's episodes commit in the order they were queued.
//!
//! A transaction that fails must not take the others down: the batch is
//! rolled back and run again with each transaction in its own savepoint.
//! A lost connection fails its batch (the callers see `Unavailable`) and
//! is replaced.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Config;

use super::conn::Conn;
use super::pg_error;
use crate::store::{StoreError, StoreFuture};

/// Most transactions folded into one commit.
const MAX_BATCH: usize = 256;

pub(super) type TxResult<R> = Result<R, tokio_postgres::Error>;
pub(super) type TxFuture<'a, R> = Pin<Box<dyn Future<Output = TxResult<R>> + Send + 'a>>;

/// A logical transaction waiting for its commit.
trait Job: Send {
    /// Runs the transaction's statements (again, after a rollback);
    /// returns whether they succeeded.
    fn run<'a>(&'a mut self, conn: &'a Conn) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    /// Tells the caller once the commit's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Transaction<R, F> {
    work: F,
    outcome: Option<TxResult<R>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for Transaction<R, F>
where
    R: Send,
    F: for<'c> Fn(&'c Conn) -> TxFuture<'c, R> + Send,
{
    fn run<'a>(&'a mut self, conn: &'a Conn) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let outcome = (self.work)(conn).await;
            let ok = outcome.is_ok();
            self.outcome = Some(outcome);
            ok
        })
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match (committed, self.outcome) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(outcome)) => outcome.map_err(pg_error),
            (Ok(()), None) => Err(StoreError::Stopped),
        };
        let _ = self.reply.send(result);
    }
}

pub(super) struct Writers {
    shards: Vec<mpsc::UnboundedSender<Box<dyn Job>>>,
}

impl Writers {
    /// Starts `count` writers on connections made from `config`.
    pub(super) async fn start(config: Config, count: usize) -> Result<Writers, StoreError> {
        let mut shards = Vec::new();
        for n in 0..count {
            let conn = Conn::connect(&config).await?;
            let (jobs, queue) = mpsc::unbounded_channel();
            tokio::spawn(run(conn, config.clone(), queue, n));
            shards.push(jobs);
        }
        Ok(Writers { shards })
    }

    /// Queues `work` at once on the writer for `key` (an instance id, or
    /// anything for work of no instance); the future resolves once it is
    /// committed. `work` may run more than once (after a rollback caused
    /// by another transaction), so it must only touch the database.
    pub(super) fn write<R, F>(&self, key: &str, work: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: for<'c> Fn(&'c Conn) -> TxFuture<'c, R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Transaction {
            work,
            outcome: None,
            reply,
        });
        let queued = self.shards[shard(key, self.shards.len())].send(job);
        Box::pin(async move {
            queued.map_err(|_| StoreError::Stopped)?;
            answer.await.map_err(|_| StoreError::Stopped)?
        })
    }
}

fn shard(key: &str, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

async fn run(
    mut conn: Conn,
    config: Config,
    mut queue: mpsc::UnboundedReceiver<Box<dyn Job>>,
    n: usize,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut committed = commit(&conn, &mut batch).await;
        if committed.as_ref().is_err_and(is_transient) {
            // Chosen as a deadlock's victim, or a serialization failure:
            // the batch as a whole may simply run again.
            committed = commit(&conn, &mut batch).await;
        }
        let committed = committed.map_err(pg_error);
        if let Err(error) = &committed {
            tracing::error!(writer = n, %error, "group commit failed");
        }
        for job in batch {
            job.finish(committed.clone());
        }
        while conn.is_closed() {
            match Conn::connect(&config).await {
                Ok(new) => conn = new,
                Err(error) => {
                    tracing::error!(writer = n, %error, "cannot reconnect to PostgreSQL; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn is_transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Runs the batch in one transaction and commits it.
async fn commit(conn: &Conn, batch: &mut [Box<dyn Job>]) -> Result<(), tokio_postgres::Error> {
    conn.batch("BEGIN").await?;
    let mut all_ok = true;
    for job in batch.iter_mut() {
        if !job.run(conn).await {
            all_ok = false;
            break;
        }
    }
    if !all_ok {
        conn.batch("ROLLBACK").await?;
        conn.batch("BEGIN").await?;
        for job in batch.iter_mut() {
            conn.batch("SAVEPOINT job").await?;
            if !job.run(conn).await {
                conn.batch("ROLLBACK TO SAVEPOINT job").await?;
            }
            conn.batch("RELEASE SAVEPOINT job").await?;
        }
    }
    if let Err(error) = conn.batch("COMMIT").await {
        let _ = conn.batch("ROLLBACK").await;
        return Err(error);
    }
    Ok(())
}
