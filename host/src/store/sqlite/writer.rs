//! The one task that writes to SQLite. Callers send small logical
//! transactions; the writer runs every one that is queued inside a single
//! `BEGIN IMMEDIATE … COMMIT` (group commit) and answers the callers once the
//! commit is durable. A transaction that fails must not take the others
//! down with it: then the batch is rolled back and run again with each
//! transaction in its own savepoint, so the failing one rolls back alone.
//! (Savepoints on every transaction would copy each page it touches to the
//! statement journal; the common case needs none.)
//!
//! A commit costs much the same for one transaction as for ten (its WAL
//! pages, its sync), and an episode whose commit nobody waits for (see
//! `EpisodeCommit::deferrable`) need not be on disk at once: its instance
//! goes on regardless, and what the outside sees waits for the commit. So
//! a batch of only such transactions waits, up to `DEFER_WINDOW`, for one
//! somebody waits for, and they commit together. Where guest calls are
//! long (JavaScript, Python) the writer otherwise commits nearly every
//! episode alone (BENCHMARKS.md, sessions 14 and 15).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;
use crate::metrics::StoreMetrics;

/// Most transactions folded into one commit.
const MAX_BATCH: usize = 512;

/// The longest a batch of deferrable episodes waits for a commit somebody
/// waits for. Longer than a sync (0.1-1 ms here), so that one usually
/// comes on a busy host; short beside anything a person could notice (the
/// status of an instance that is still running, a child's start).
pub(crate) const DEFER_WINDOW: Duration = Duration::from_millis(2);

/// Commits between two checkpoints. The writer's connection does not
/// checkpoint itself (that would stall every caller of the commit that
/// crosses the threshold); a thread of its own copies the WAL back into the
/// database meanwhile. The checkpoint's sync of the database file delays
/// the writer's sync of the WAL by as long as it takes to write what the
/// checkpoint copied: small, frequent checkpoints keep that short. (While
/// the host was CPU-bound, 64 had measured better than 16; with the CPU
/// freed, 16 cut hello's p99 from ~16 to ~13 ms and its max from ~40 to
/// ~18 ms: BENCHMARKS.md change 19.)
const COMMITS_PER_CHECKPOINT: u32 = 16;

/// WAL frames at which the writer checkpoints itself after all. Under a
/// steady stream of commits the background checkpoint never quite catches
/// up, and SQLite only starts the WAL file over after a checkpoint that
/// did; without this the file grows without end (gigabytes in a
/// million-instance run). The writer's own pass has little left to copy.
const WAL_FRAMES_LIMIT: u32 = 16_384;

/// A logical transaction waiting for its commit.
trait Job: Send {
    /// Runs the transaction's statements; may run again after a rollback.
    /// Returns whether they succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Tells the caller once the commit's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
    fn kind(&self) -> Kind;
}

/// What a transaction is, for the metrics and for when it commits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Other,
    Episode,
    /// An episode's commit nobody waits for.
    DeferrableEpisode,
}

struct Transaction<R, F> {
    work: F,
    kind: Kind,
    outcome: Option<rusqlite::Result<R>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for Transaction<R, F>
where
    R: Send,
    F: Fn(&Connection) -> rusqlite::Result<R> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = (self.work)(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let result = match (committed, self.outcome) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(outcome)) => outcome.map_err(StoreError::from),
            (Ok(()), None) => Err(StoreError::Stopped),
        };
        let _ = self.reply.send(result);
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}

#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer on `conn` and the checkpointer on `checkpoints`
    /// (a second connection to the same file); deferrable episodes wait up
    /// to `defer_window` (`DEFER_WINDOW`, but for tests).
    pub(crate) fn start(
        conn: Connection,
        checkpoints: Connection,
        metrics: StoreMetrics,
        defer_window: Duration,
    ) -> rusqlite::Result<Writer> {
        conn.execute_batch("PRAGMA wal_autocheckpoint=0")?;
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let (due, checkpoint_due) = mpsc::sync_channel::<()>(1);
        let wal_frames = Arc::new(AtomicU32::new(0));
        let frames = wal_frames.clone();
        thread::Builder::new()
            .name("durango-writer".into())
            .spawn(move || run(conn, queue, due, &frames, &metrics, defer_window))
            .expect("spawn the SQLite writer thread");
        thread::Builder::new()
            .name("durango-checkpoint".into())
            .spawn(move || checkpoint(checkpoints, checkpoint_due, &wal_frames))
            .expect("spawn the SQLite checkpoint thread");
        Ok(Writer { jobs })
    }

    /// Queues `work` (of `kind`) for the next group commit at once
    /// (transactions commit in the order they were queued); the future
    /// resolves once it is on disk. `work` may run more than once (after a
    /// rollback caused by another transaction), so it must only touch the
    /// database.
    pub(crate) fn write<R, F>(
        &self,
        kind: Kind,
        work: F,
    ) -> impl Future<Output = Result<R, StoreError>>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Transaction {
            work,
            kind,
            outcome: None,
            reply,
        });
        let queued = self.jobs.send(job);
        async move {
            queued.map_err(|_| StoreError::Stopped)?;
            answer.await.map_err(|_| StoreError::Stopped)?
        }
    }
}

fn run(
    conn: Connection,
    queue: mpsc::Receiver<Box<dyn Job>>,
    checkpoint: mpsc::SyncSender<()>,
    wal_frames: &AtomicU32,
    metrics: &StoreMetrics,
    defer_window: Duration,
) {
    let mut commits = 0u32;
    while let Ok(first) = queue.recv() {
        let mut batch = next_batch(first, &queue, defer_window);
        let began = Instant::now();
        let committed = commit(&conn, &mut batch);
        match &committed {
            Ok(sync) => {
                let episodes = batch.iter().filter(|job| job.kind() != Kind::Other).count();
                metrics.group_commit(batch.len(), episodes, began.elapsed(), *sync);
                commits += 1;
                if commits.is_multiple_of(COMMITS_PER_CHECKPOINT) {
                    // Full means one is already due: nothing to add.
                    let _ = checkpoint.try_send(());
                }
                if wal_frames.load(Ordering::Relaxed) > WAL_FRAMES_LIMIT {
                    wal_frames.store(0, Ordering::Relaxed);
                    if let Err(error) = wal_checkpoint(&conn) {
                        tracing::warn!(%error, "WAL checkpoint failed; the next one will retry");
                    }
                }
            }
            Err(error) => tracing::error!(%error, "group commit failed"),
        }
        let committed = committed.map(drop);
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// `first` and what is queued behind it. A batch of deferrable episodes
/// only waits, up to `defer_window`, for a transaction somebody waits for,
/// or for the store to go.
fn next_batch(
    first: Box<dyn Job>,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    defer_window: Duration,
) -> Vec<Box<dyn Job>> {
    let mut batch = vec![first];
    take_queued(queue, &mut batch);
    let deadline = Instant::now() + defer_window;
    // Jobs before `checked` are known to be deferrable.
    let mut checked = 0;
    while batch.len() < MAX_BATCH
        && batch[checked..]
            .iter()
            .all(|job| job.kind() == Kind::DeferrableEpisode)
    {
        checked = batch.len();
        match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(job) => {
                batch.push(job);
                take_queued(queue, &mut batch);
            }
            // The window is over, or the store is going: commit now.
            Err(_) => break,
        }
    }
    batch
}

/// Adds what is queued to `batch`, up to `MAX_BATCH`.
fn take_queued(queue: &mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Runs the batch in one transaction and commits it; answers how long the
/// COMMIT took (writing and syncing the WAL).
fn commit(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<Duration, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut all_ok = true;
    for job in batch.iter_mut() {
        all_ok &= job.run(conn);
        if !all_ok {
            break;
        }
    }
    if !all_ok {
        // SQLite may already have rolled back (a full disk, for one).
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            in_savepoint(conn, job.as_mut())?;
        }
    }
    let syncing = Instant::now();
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::from(e)
    })?;
    Ok(syncing.elapsed())
}

/// Copies committed WAL frames into the database whenever the writer says
/// enough have piled up. PASSIVE: it never blocks the writer or readers.
fn checkpoint(conn: Connection, due: mpsc::Receiver<()>, wal_frames: &AtomicU32) {
    while due.recv().is_ok() {
        match wal_checkpoint(&conn) {
            Ok(Some(frames)) => wal_frames.store(frames, Ordering::Relaxed),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "WAL checkpoint failed; the next one will retry"),
        }
    }
}

/// A passive checkpoint; returns the frames in the WAL, or `None` when the
/// other connection's checkpoint was under way (the writer's and this
/// thread's can meet): SQLite then answers busy, with -1 for the counts,
/// and the next checkpoint does the work.
fn wal_checkpoint(conn: &Connection) -> rusqlite::Result<Option<u32>> {
    let (busy, frames): (i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    Ok(u32::try_from(frames).ok().filter(|_| busy == 0))
}

/// Runs one job so that its failure undoes only its own statements.
fn in_savepoint(conn: &Connection, job: &mut dyn Job) -> rusqlite::Result<()> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    if !job.run(conn) {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::path::PathBuf;

    use super::*;

    thread_local! {
        /// A connection that checkpoints while another's checkpoint waits,
        /// and what it was answered.
        static SECOND: RefCell<Option<Connection>> = const { RefCell::new(None) };
        static ANSWER: RefCell<Option<rusqlite::Result<Option<u32>>>> = const { RefCell::new(None) };
    }

    /// A writer on a fresh database in a folder of its own, whose
    /// deferrable episodes wait far longer than any test: what ends a wait
    /// is another commit, or the store going, never the clock.
    fn writer_on(name: &str) -> (Writer, StoreMetrics, PathBuf) {
        let dir = std::env::temp_dir().join(format!("durango-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
            .unwrap();
        let metrics = StoreMetrics::unregistered();
        let checkpoints = Connection::open(&path).unwrap();
        let window = Duration::from_secs(600);
        let writer = Writer::start(conn, checkpoints, metrics.clone(), window).unwrap();
        (writer, metrics, dir)
    }

    fn insert(
        writer: &Writer,
        kind: Kind,
        x: i64,
    ) -> impl Future<Output = Result<usize, StoreError>> {
        writer.write(kind, move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
        })
    }

    /// `future`'s output, which must come within a minute.
    fn within<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), future).await })
            .expect("committed within a minute")
    }

    #[test]
    fn deferrable_episodes_wait_for_a_commit_somebody_waits_for() {
        let (writer, metrics, dir) = writer_on("defer");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Not deferrable: at once, window or not.
        for kind in [Kind::Other, Kind::Episode] {
            assert_eq!(within(&runtime, insert(&writer, kind, 1)).unwrap(), 1);
        }
        assert_eq!(metrics.group_commits(), (2, 2));

        // Two deferrable episodes wait: with nothing else to do, the writer
        // still holds them a while later (the one thing a test can check
        // of a commit that must not happen yet; the window is 600 s). The
        // next commit somebody waits for carries them.
        let mut deferred: Vec<_> = (0..2)
            .map(|x| Box::pin(insert(&writer, Kind::DeferrableEpisode, x)))
            .collect();
        let a_while = Duration::from_millis(100);
        let early =
            runtime.block_on(async { tokio::time::timeout(a_while, deferred[0].as_mut()).await });
        assert!(early.is_err(), "a deferrable episode committed alone");
        assert_eq!(metrics.group_commits(), (2, 2));
        let awaited = insert(&writer, Kind::Episode, 2);
        assert_eq!(within(&runtime, awaited).unwrap(), 1);
        for write in deferred {
            assert_eq!(within(&runtime, write).unwrap(), 1);
        }
        assert_eq!(metrics.group_commits(), (3, 5));

        // A store going commits what waits.
        let last = insert(&writer, Kind::DeferrableEpisode, 3);
        drop(writer);
        assert_eq!(within(&runtime, last).unwrap(), 1);
        assert_eq!(metrics.group_commits(), (4, 6));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_checkpoint_that_meets_another_is_busy_not_an_error() {
        let dir = std::env::temp_dir().join(format!("durango-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let first = Connection::open(&path).unwrap();
        first
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)")
            .unwrap();
        // A FULL checkpoint takes the checkpoint lock, then waits for this
        // writer, calling its busy handler meanwhile: the second
        // connection's checkpoint runs in there and meets it.
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2)")
            .unwrap();
        SECOND.set(Some(Connection::open(&path).unwrap()));
        first
            .busy_handler(Some(|_| {
                SECOND.with_borrow(|second| ANSWER.set(second.as_ref().map(wal_checkpoint)));
                false
            }))
            .unwrap();
        first
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
            .unwrap();
        assert!(matches!(ANSWER.take(), Some(Ok(None))), "busy is no error");
        writer.execute_batch("COMMIT").unwrap();
        let second = SECOND.take().unwrap();
        assert!(matches!(wal_checkpoint(&second), Ok(Some(frames)) if frames > 0));
        drop((first, writer, second));
        std::fs::remove_dir_all(&dir).ok();
    }
}
