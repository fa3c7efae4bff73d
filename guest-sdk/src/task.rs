use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use crate::bindings::durango::orchestration::orchestration as host;
use crate::bindings::durango::orchestration::types::EventSender;
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

/// Who raised an external event, as the host verified it: the credential
/// the event came with, never what its data claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The system key: an operator, the CLI or a trusted service.
    SystemKey,
    /// A link made for this holder ([`ActivityContext::send_event_url_for`]):
    /// the recipient id the orchestration chose when it asked.
    ///
    /// [`ActivityContext::send_event_url_for`]: crate::ActivityContext::send_event_url_for
    Holder(String),
    /// The instance's general link ([`ActivityContext::send_event_url`]),
    /// which names nobody: anyone who got hold of it.
    ///
    /// [`ActivityContext::send_event_url`]: crate::ActivityContext::send_event_url
    UnnamedLink,
}

impl Sender {
    /// The person a link named, if it came through one that did.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Sender::Holder(holder) => Some(holder),
            _ => None,
        }
    }
}

/// An external event's data with its verified sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<T> {
    pub data: T,
    pub sender: Sender,
}

/// A wait for an external event that resolves to the data and who sent it.
#[must_use = "a wait does nothing for the orchestration unless awaited or raced"]
pub struct EventTask<T>(Task<T>);

impl<T> EventTask<T> {
    pub(crate) fn new(id: u32) -> Self {
        EventTask(Task::new(id))
    }
}

impl<T> TaskHandle for EventTask<T> {
    fn task_id(&self) -> u32 {
        self.0.id
    }
}

impl<T: DeserializeOwned> Future for EventTask<T> {
    type Output = Result<Event<T>, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.0.id;
        Pin::new(&mut self.0).poll(cx).map(|data| {
            // A completed wait always has a sender in history; were it ever
            // missing, the least trusted reading is the safe one.
            let sender = match host::task_sender(id) {
                Some(EventSender::SystemKey) => Sender::SystemKey,
                Some(EventSender::Holder(holder)) => Sender::Holder(holder),
                Some(EventSender::UnnamedLink) | None => Sender::UnnamedLink,
            };
            data.map(|data| Event { data, sender })
        })
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
