//! Durable timers: the `timers` table is the truth, this min-heap is its
//! in-memory index. At start-up every stored timer goes in (those that fell
//! due while the host was down fire at once); afterwards each committed timer
//! is added as its episode commits. One task sleeps until the earliest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::history::Message;
use crate::host::Host;
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
}

pub struct TimerTask {
    rx: mpsc::UnboundedReceiver<Due>,
}

pub fn timer_queue() -> (TimerQueue, TimerTask) {
    let (tx, rx) = mpsc::unbounded_channel();
    (TimerQueue { tx }, TimerTask { rx })
}

impl TimerQueue {
    pub fn add(&self, instance_id: &str, seq: u32, fire_at: i64) {
        let _ = self.tx.send(Due {
            fire_at,
            instance_id: instance_id.to_string(),
            seq,
        });
    }
}

impl TimerTask {
    pub async fn run(mut self, host: Arc<Host>) {
        let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        loop {
            let next = heap.peek().map(|Reverse(due)| due.fire_at);
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(deadline(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                added = self.rx.recv() => match added {
                    Some(due) => heap.push(Reverse(due)),
                    None => return,
                },
                () = sleep => {
                    let now = now_ms();
                    while heap.peek().is_some_and(|Reverse(due)| due.fire_at <= now) {
                        let Reverse(due) = heap.pop().expect("peeked");
                        tokio::spawn(fire(host.clone(), due));
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

async fn fire(host: Arc<Host>, due: Due) {
    match host
        .store
        .fire_timer(due.instance_id.clone(), due.seq)
        .await
    {
        Ok(Some(inbox_id)) => host.hand_over(
            &due.instance_id,
            inbox_id,
            Message::TimerFired { seq: due.seq },
        ),
        Ok(None) => {} // cancelled, or its instance finished
        Err(error) => {
            tracing::error!(instance = %due.instance_id, %error, "a timer could not fire; retrying in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            host.timers.add(&due.instance_id, due.seq, due.fire_at);
        }
    }
}
