//! Durable timers: the `timers` table is the truth, this min-heap is its
//! in-memory index of the timers due within the horizon (by default the
//! next ten minutes). At start-up the timers up to the horizon go in (those that fell
//! due while the sched was down fire at once); afterwards each committed timer
//! within the horizon is added as its episode commits, and later ones are
//! loaded from the table as the horizon moves on. So a million instances
//! waiting on day-long timers hold no memory here. One task sleeps until
//! the earliest timer or the next horizon move.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Scheduler;
use crate::engine::history::Message;
use crate::store::now_ms;

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    fire_at: i64,
    instance_id: String,
    seq: u32,
}

#[derive(Clone)]
pub struct TimerQueue {
    tx: mpsc::UnboundedSender<Due>,
    /// Timers due at or before this are in the heap (or on their way);
    /// later ones are loaded from the table when it moves on.
    horizon: Arc<AtomicI64>,
    /// Timers in the heap, as the task last saw it.
    pending: Arc<AtomicUsize>,
}

pub struct TimerTask {
    rx: mpsc::UnboundedReceiver<Due>,
    horizon: Arc<AtomicI64>,
    pending: Arc<AtomicUsize>,
    /// How far ahead the heap holds timers; it moves on when half is used.
    ahead_ms: i64,
}

pub fn timer_queue(horizon: Duration) -> (TimerQueue, TimerTask) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ahead_ms = (horizon.as_millis() as i64).max(2);
    let horizon = Arc::new(AtomicI64::new(now_ms() + ahead_ms));
    let pending = Arc::new(AtomicUsize::new(0));
    (
        TimerQueue {
            tx,
            horizon: horizon.clone(),
            pending: pending.clone(),
        },
        TimerTask {
            rx,
            horizon,
            pending,
            ahead_ms,
        },
    )
}

impl TimerQueue {
    /// Takes a committed timer (beyond the horizon, the table keeps it).
    pub fn add(&self, instance_id: &str, seq: u32, fire_at: i64) {
        // Ordered with the task's move: the task publishes the new horizon
        // before it reads the table, so a timer committed before that read
        // is in it, and one committed after it sees the new horizon here.
        if fire_at <= self.horizon.load(Ordering::SeqCst) {
            let _ = self.tx.send(Due {
                fire_at,
                instance_id: instance_id.to_string(),
                seq,
            });
        }
    }

    /// Timers due up to this belong in the heap.
    pub fn horizon(&self) -> i64 {
        self.horizon.load(Ordering::SeqCst)
    }

    /// Timers held in memory to fire (those due within the horizon; a
    /// cancelled one stays until its time comes).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

impl TimerTask {
    pub async fn run(mut self, sched: Arc<Scheduler>) {
        let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        loop {
            self.pending.store(heap.len(), Ordering::Relaxed);
            let horizon = self.horizon.load(Ordering::SeqCst);
            let move_at = horizon - self.ahead_ms / 2;
            let wake_at = heap
                .peek()
                .map_or(move_at, |Reverse(due)| due.fire_at.min(move_at));
            tokio::select! {
                added = self.rx.recv() => match added {
                    Some(due) => heap.push(Reverse(due)),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline(wake_at)) => {
                    let now = now_ms();
                    while heap.peek().is_some_and(|Reverse(due)| due.fire_at <= now) {
                        let Reverse(due) = heap.pop().expect("peeked");
                        tokio::spawn(fire(sched.clone(), due));
                    }
                    if now >= move_at {
                        let next = now + self.ahead_ms;
                        self.horizon.store(next, Ordering::SeqCst);
                        match sched.store.timers_between(horizon, next, sched.ownership.partitions()).await {
                            Ok(timers) => heap.extend(timers.into_iter().map(|(instance_id, seq, fire_at)| {
                                Reverse(Due { fire_at, instance_id, seq })
                            })),
                            Err(error) => {
                                // Try the same stretch again shortly.
                                tracing::error!(%error, "cannot load the next timers; retrying in 1s");
                                self.horizon.store(horizon, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn deadline(fire_at: i64) -> Instant {
    let wait = fire_at.saturating_sub(now_ms()).max(0) as u64;
    Instant::now() + Duration::from_millis(wait)
}

async fn fire(sched: Arc<Scheduler>, due: Due) {
    match sched
        .store
        .fire_timer(due.instance_id.clone(), due.seq)
        .await
    {
        Ok(Some(inbox_id)) => {
            let late = now_ms().saturating_sub(due.fire_at).max(0) as u64;
            sched.metrics.timer_fired(Duration::from_millis(late));
            sched.dispatcher.hand_over(
                &due.instance_id,
                inbox_id,
                Message::TimerFired { seq: due.seq },
            )
        }
        Ok(None) => {} // cancelled, or its instance finished
        Err(error) => {
            tracing::error!(instance = %due.instance_id, %error, "a timer could not fire; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            sched.timers.add(&due.instance_id, due.seq, due.fire_at);
        }
    }
}
