//! Several hosts on one database: partition leases with fencing epochs,
//! and the `LISTEN/NOTIFY` channel on which each host learns what the
//! others committed (no host polls another's work; the lease renewals are
//! the only periodic writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Config, Socket};

use super::conn::{tls, Conn};
use super::pg_error;
use crate::store::{Remote, StoreError, PARTITIONS};

const CHANNEL: &str = "durango";

/// A change as it travels on the channel: who committed it, and what.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    h: String,
    #[serde(flatten)]
    change: Remote,
}

/// The payload that announces `change`, committed by `host`.
pub(super) fn wire(host: &str, change: Remote) -> String {
    serde_json::to_string(&Wire {
        h: host.to_string(),
        change,
    })
    .expect("changes serialize")
}

/// One lease round for `host`, in one transaction: says it is alive,
/// renews what it holds, gives back what is beyond its share of the live
/// hosts, takes free or expired partitions up to its share (a taken one's
/// epoch goes up by one). Answers what it holds now, with the epochs.
pub(super) async fn round(
    c: &Conn,
    host: &str,
    lease_ms: i64,
) -> Result<HashMap<i32, i64>, StoreError> {
    c.batch("BEGIN").await.map_err(pg_error)?;
    let held = round_in_transaction(c, host, lease_ms).await;
    match held {
        Ok(held) => {
            c.batch("COMMIT").await.map_err(pg_error)?;
            Ok(held)
        }
        Err(error) => {
            let _ = c.batch("ROLLBACK").await;
            Err(pg_error(error))
        }
    }
}

async fn round_in_transaction(
    c: &Conn,
    host: &str,
    lease_ms: i64,
) -> Result<HashMap<i32, i64>, tokio_postgres::Error> {
    c.execute(
        "INSERT INTO hosts (id, seen_until)
         VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond')
         ON CONFLICT (id) DO UPDATE SET seen_until = excluded.seen_until",
        &[&host, &(lease_ms as f64)],
    )
    .await?;
    c.execute(
        "DELETE FROM hosts WHERE seen_until < clock_timestamp() - interval '1 hour'",
        &[],
    )
    .await?;
    let live: i64 = c
        .query_one(
            "SELECT count(*) FROM hosts WHERE seen_until > clock_timestamp()",
            &[],
        )
        .await?
        .get(0);
    let share = (PARTITIONS as i64 + live.max(1) - 1) / live.max(1);
    let renewed = c
        .query(
            "UPDATE partitions SET expires_at = clock_timestamp() + $2 * interval '1 millisecond'
              WHERE owner = $1 AND expires_at > clock_timestamp()
          RETURNING id, epoch",
            &[&host, &(lease_ms as f64)],
        )
        .await?;
    let mut held: HashMap<i32, i64> = renewed.iter().map(|r| (r.get(0), r.get(1))).collect();
    let extra = held.len() as i64 - share;
    if extra > 0 {
        // The highest ones go back: every host gives back the same way, so
        // a joining host finds them free on its next round.
        let mut ids: Vec<i32> = held.keys().copied().collect();
        ids.sort_unstable();
        let released: Vec<i32> = ids.split_off(ids.len() - extra as usize);
        c.execute(
            "UPDATE partitions SET owner = NULL, expires_at = 'epoch'
              WHERE owner = $1 AND id = ANY($2)",
            &[&host, &released],
        )
        .await?;
        for id in released {
            held.remove(&id);
        }
    } else if extra < 0 {
        let taken = c
            .query(
                "UPDATE partitions
                    SET owner = $1, epoch = epoch + 1,
                        expires_at = clock_timestamp() + $2 * interval '1 millisecond'
                  WHERE id IN (SELECT id FROM partitions
                                WHERE owner IS NULL OR expires_at <= clock_timestamp()
                                ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
              RETURNING id, epoch",
                &[&host, &(lease_ms as f64), &(-extra)],
            )
            .await?;
        held.extend(
            taken
                .iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1))),
        );
    }
    Ok(held)
}

/// Starts listening on the channel; what other hosts commit arrives on the
/// receiver from the moment this returns. A lost connection is made again,
/// and then a `resync` says that changes may have been missed meanwhile.
pub(super) async fn listen(
    config: Config,
    host: Arc<str>,
) -> Result<mpsc::UnboundedReceiver<Remote>, StoreError> {
    let (changes, received) = mpsc::unbounded_channel();
    let (ready, listening) = oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        loop {
            let ended = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
                listen_once(&config, tokio_postgres::NoTls, &host, &changes, &mut ready).await
            } else {
                listen_once(&config, tls(), &host, &changes, &mut ready).await
            };
            if let Some(ready) = ready.take() {
                // Never listened: the caller gets the error.
                let _ = ready.send(ended);
                return;
            }
            if changes.is_closed() {
                return;
            }
            if let Err(error) = ended {
                tracing::warn!(%error, "lost the PostgreSQL notification channel; listening again in 1s");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    match listening.await {
        Ok(Ok(())) => Ok(received),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(StoreError::Stopped),
    }
}

/// Listens on one connection until it ends. Sends `Ok` on `ready` once the
/// `LISTEN` is in place (and, when `ready` was already used, a resync).
async fn listen_once<T>(
    config: &Config,
    tls: T,
    host: &str,
    changes: &mpsc::UnboundedSender<Remote>,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(pg_error)?;
    let mut subscribe = Box::pin(client.batch_execute("LISTEN durango"));
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done.map_err(pg_error)?;
                subscribed = true;
                match ready.take() {
                    Some(ready) => { let _ = ready.send(Ok(())); }
                    None => {
                        let _ = changes.send(Remote { resync: true, ..Remote::default() });
                    }
                }
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    match serde_json::from_str::<Wire>(n.payload()) {
                        Ok(wire) if wire.h != host => {
                            if changes.send(wire.change).is_err() {
                                return Ok(());
                            }
                        }
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "an unreadable notification on the durango channel"),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(pg_error(error)),
                None => return Err(StoreError::Unavailable("the notification connection closed".into())),
            }
        }
    }
}
