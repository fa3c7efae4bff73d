//! The thread the PostgreSQL connections, the writers and the lease rounds
//! run on, a runtime of their own. On the host's runtime they would queue
//! behind the guests' episodes: each round trip of a writer's batch waited
//! its turn there, so the server sat idle in a transaction while the host
//! was busy, and a lease renewal could come late on a loaded host.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::store::StoreError;

pub(super) struct IoThread {
    handle: Handle,
    /// Dropped with the store: the thread's runtime stops, and with it
    /// every connection and writer on it.
    _stop: oneshot::Sender<()>,
}

impl IoThread {
    pub(super) fn start() -> Result<IoThread, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the PostgreSQL thread: {e}"))
            })?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("durango-pg".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the PostgreSQL thread: {e}"))
            })?;
        Ok(IoThread {
            handle,
            _stop: stop,
        })
    }

    /// Starts `task` on the thread and leaves it there.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }

    /// Runs `work` on the thread (connections it makes stay there) and
    /// answers its result.
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.handle
            .spawn(work)
            .await
            .map_err(|_| StoreError::Stopped)?
    }
}
