use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::bindings::durango::orchestration::orchestration as host;
use crate::error::TaskError;

/// Anything that names a durable task: what `when_any` and `when_all` race.
pub trait TaskHandle {
    fn task_id(&self) -> u32;

    /// Whether the host has completed the task (as far as replay has got).
    fn is_completed(&self) -> bool {
        host::task_result(self.task_id()).is_some()
    }
}

/// A durable task (activity call, external event) that resolves to `T`.
/// Await it for its result; it may be awaited after `when_any` picked it.
#[must_use = "a task does nothing for the orchestration unless awaited or raced"]
pub struct Task<T> {
    id: u32,
    output: PhantomData<fn() -> T>,
}

impl<T> Task<T> {
    pub(crate) fn new(id: u32) -> Self {
        Task {
            id,
            output: PhantomData,
        }
    }
}

impl<T> TaskHandle for Task<T> {
    fn task_id(&self) -> u32 {
        self.id
    }
}

impl<T: DeserializeOwned> Future for Task<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        match host::task_result(self.id) {
            None => Poll::Pending,
            Some(Err(message)) => Poll::Ready(Err(TaskError { message })),
            Some(Ok(json)) => Poll::Ready(crate::json::decode(&json).map_err(|e| TaskError {
                message: format!("task {} output does not decode: {e}", self.id),
            })),
        }
    }
}

/// A durable timer. Cancel it when the flow no longer needs it, so that the
/// host drops it instead of waking the instance.
#[must_use = "a timer does nothing for the orchestration unless awaited or raced"]
pub struct Timer(Task<()>);

impl Timer {
    pub(crate) fn new(id: u32) -> Self {
        Timer(Task::new(id))
    }

    pub fn cancel(&self) {
        host::cancel_timer(self.0.id);
    }
}

impl TaskHandle for Timer {
    fn task_id(&self) -> u32 {
        self.0.id
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match host::task_result(self.0.id) {
            None => Poll::Pending,
            Some(_) => Poll::Ready(()),
        }
    }
}

/// Resolves to the index of the first of `tasks` to complete, in the order
/// the host completed them (the same order on every replay).
pub(crate) struct WhenAny {
    pub(crate) ids: Vec<u32>,
}

impl Future for WhenAny {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
        match host::when_any(&self.ids) {
            Some(index) => Poll::Ready(index as usize),
            None => Poll::Pending,
        }
    }
}

/// Resolves once every task completed.
pub(crate) struct WhenAll {
    pub(crate) ids: Vec<u32>,
}

impl Future for WhenAll {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if host::when_all(&self.ids) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
