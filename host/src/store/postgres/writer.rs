//! Writers with group commit, as on SQLite, but several: each owns one
//! connection and runs every transaction queued for it in one
//! `BEGIN … COMMIT`. PostgreSQL commits the writers' batches side by side
//! (sharing WAL flushes), so more than one keeps the server busy while a
//! batch waits for its flush. Work for one instance always goes to the same
//! writer, so an instance's episodes commit in the order they were queued.
//!
//! Inside a batch, the transactions of different instances run side by
//! side, in waves (the first of each key's transactions, then the second,
//! …): their statements go out pipelined on the one connection, and the
//! mergeable ones of a wave (the common episode, see `one_statement`) go
//! as one statement, so a batch costs a few round trips and a few
//! statements however many instances it carries.
//!
//! A transaction that fails must not take the others down: the batch is
//! rolled back and run again with each transaction in its own savepoint.
//! A lost connection fails its batch (the callers see `Unavailable`) and
//! is replaced.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Config;

use super::conn::Conn;
use super::io::IoThread;
use super::pg_error;
use crate::metrics::StoreMetrics;
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
    /// Whether it is an episode's commit (for the metrics).
    fn is_episode(&self) -> bool;
}

struct Transaction<R, F> {
    work: F,
    episode: bool,
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

    fn is_episode(&self) -> bool {
        self.episode
    }
}

/// Work that a writer runs together with the other work of its kind in
/// the same wave (at most one per key), as one statement.
pub(super) trait Mergeable: Send + Sized + 'static {
    /// Runs `jobs` together (again, after a rollback); returns whether
    /// they succeeded.
    fn run_together<'a>(
        conn: &'a Conn,
        jobs: Vec<&'a mut Self>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
    /// Tells the caller once the commit's fate is known.
    fn finish(self, committed: Result<(), StoreError>);
}

enum Work<M> {
    Steps(Box<dyn Job>),
    Merged(M),
}

/// Work and the hash of the key it was queued under: the work of one key
/// runs in queue order.
struct Queued<M> {
    key: u64,
    work: Work<M>,
}

pub(super) struct Writers<M> {
    shards: Vec<mpsc::UnboundedSender<Queued<M>>>,
}

impl<M: Mergeable> Writers<M> {
    /// Starts `count` writers on connections made from `config`, on `io`.
    pub(super) async fn start(
        config: Config,
        count: usize,
        io: &IoThread,
        metrics: StoreMetrics,
    ) -> Result<Writers<M>, StoreError> {
        let mut shards = Vec::new();
        for n in 0..count {
            let connecting = config.clone();
            let conn = io.run(async move { connect(&connecting).await }).await?;
            let (jobs, queue) = mpsc::unbounded_channel();
            io.spawn(run(conn, config.clone(), queue, n, metrics.clone()));
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
        self.write_as(key, false, work)
    }

    /// `write`, for an episode's commit.
    pub(super) fn write_episode<R, F>(&self, key: &str, work: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: for<'c> Fn(&'c Conn) -> TxFuture<'c, R> + Send + 'static,
    {
        self.write_as(key, true, work)
    }

    fn write_as<R, F>(&self, key: &str, episode: bool, work: F) -> StoreFuture<R>
    where
        R: Send + 'static,
        F: for<'c> Fn(&'c Conn) -> TxFuture<'c, R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Transaction {
            work,
            episode,
            outcome: None,
            reply,
        });
        let queued = self.queue(key, Work::Steps(job));
        Box::pin(async move {
            queued.map_err(|_| StoreError::Stopped)?;
            answer.await.map_err(|_| StoreError::Stopped)?
        })
    }

    /// Queues mergeable work on the writer for `key`; it answers its
    /// caller itself (`Mergeable::finish`). Fails if the writers stopped.
    pub(super) fn write_merged(&self, key: &str, work: M) -> Result<(), StoreError> {
        self.queue(key, Work::Merged(work))
            .map_err(|_| StoreError::Stopped)
    }

    fn queue(&self, key: &str, work: Work<M>) -> Result<(), ()> {
        let key = hash(key);
        let shard = (key % self.shards.len() as u64) as usize;
        self.shards[shard].send(Queued { key, work }).map_err(drop)
    }
}

/// A writer's connection. Writers touch rows by key only, and their
/// statements are prepared once, while the tables may still be small: a
/// plan that scanned a small table whole would go on scanning it once it is
/// large. Scans by index only, then.
async fn connect(config: &Config) -> Result<Conn, StoreError> {
    let conn = Conn::connect(config).await?;
    conn.batch("SET enable_seqscan = off")
        .await
        .map_err(super::pg_error)?;
    Ok(conn)
}

fn hash(key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

async fn run<M: Mergeable>(
    mut conn: Conn,
    config: Config,
    mut queue: mpsc::UnboundedReceiver<Queued<M>>,
    n: usize,
    metrics: StoreMetrics,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = Instant::now();
        let mut committed = commit(&conn, &mut batch).await;
        if committed.as_ref().is_err_and(is_transient) {
            // Chosen as a deadlock's victim, or a serialization failure:
            // the batch as a whole may simply run again.
            committed = commit(&conn, &mut batch).await;
        }
        if let Ok(sync) = &committed {
            // Mergeable work is the common episode (`one_statement`).
            let episodes = batch
                .iter()
                .filter(|queued| match &queued.work {
                    Work::Steps(job) => job.is_episode(),
                    Work::Merged(_) => true,
                })
                .count();
            metrics.group_commit(batch.len(), episodes, began.elapsed(), *sync);
        }
        let committed = committed.map(drop).map_err(pg_error);
        if let Err(error) = &committed {
            tracing::error!(writer = n, %error, "group commit failed");
        }
        for queued in batch {
            match queued.work {
                Work::Steps(job) => job.finish(committed.clone()),
                Work::Merged(work) => work.finish(committed.clone()),
            }
        }
        while conn.is_closed() {
            match connect(&config).await {
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

/// Runs the batch in one transaction and commits it; answers how long the
/// COMMIT took (its round trip: the server's WAL flush).
async fn commit<M: Mergeable>(
    conn: &Conn,
    batch: &mut [Queued<M>],
) -> Result<Duration, tokio_postgres::Error> {
    // BEGIN goes out with the first wave, not a round trip ahead of it: it
    // fails only with the connection, and then so does everything after it.
    let (begun, all_ok) =
        futures_util::future::join(conn.batch("BEGIN"), run_in_waves(conn, batch)).await;
    begun?;
    if !all_ok {
        // One failed, and with it the transaction (the others' statements
        // after the failure failed too): run each on its own savepoint.
        conn.batch("ROLLBACK").await?;
        conn.batch("BEGIN").await?;
        for queued in batch.iter_mut() {
            conn.batch("SAVEPOINT job").await?;
            let ok = match &mut queued.work {
                Work::Steps(job) => job.run(conn).await,
                Work::Merged(work) => M::run_together(conn, vec![work]).await,
            };
            if !ok {
                conn.batch("ROLLBACK TO SAVEPOINT job").await?;
            }
            conn.batch("RELEASE SAVEPOINT job").await?;
        }
    }
    let syncing = Instant::now();
    if let Err(error) = conn.batch("COMMIT").await {
        let _ = conn.batch("ROLLBACK").await;
        return Err(error);
    }
    Ok(syncing.elapsed())
}

/// Runs the batch in waves: wave n holds the n-th work of each key. A
/// wave's work runs side by side, its mergeable work as one; returns
/// whether every work succeeded.
async fn run_in_waves<M: Mergeable>(conn: &Conn, batch: &mut [Queued<M>]) -> bool {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let waves: Vec<usize> = batch
        .iter()
        .map(|queued| {
            let wave = seen.entry(queued.key).or_default();
            *wave += 1;
            *wave - 1
        })
        .collect();
    let last = waves.iter().copied().max().unwrap_or(0);
    for wave in 0..=last {
        let mut steps = Vec::new();
        let mut merged = Vec::new();
        for (queued, _) in batch.iter_mut().zip(&waves).filter(|(_, w)| **w == wave) {
            match &mut queued.work {
                Work::Steps(job) => steps.push(job.run(conn)),
                Work::Merged(work) => merged.push(work),
            }
        }
        let together = async { merged.is_empty() || M::run_together(conn, merged).await };
        let (steps, together) =
            futures_util::future::join(futures_util::future::join_all(steps), together).await;
        if !(together && steps.into_iter().all(|ok| ok)) {
            return false;
        }
    }
    true
}
