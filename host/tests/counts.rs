//! `count_by_status`, on both backends (a SQLite file and the harness's
//! real PostgreSQL): one count per status, zeros included, in
//! `RuntimeStatus::ALL` order.

use durango::engine::history::RuntimeStatus;
use durango::store::{open, CreateOutcome, Durability, EpisodeCommit, InstanceRow, Store};
use durango_e2e::postgres;

async fn counts_each_status(store: &dyn Store) {
    let empty = store.count_by_status().await.expect("count");
    assert_eq!(
        empty,
        RuntimeStatus::ALL
            .iter()
            .map(|s| (*s, 0))
            .collect::<Vec<_>>()
    );
    for n in 0..5 {
        let pending =
            InstanceRow::pending(format!("c{n}"), "O".into(), "v".into(), "null".into(), None);
        let CreateOutcome::Created(row, _) = store
            .create_instance(pending, vec![])
            .await
            .expect("create")
        else {
            panic!("not created");
        };
        // Two of them complete, one goes on running, two stay pending.
        let status = match n {
            0 | 1 => Some(RuntimeStatus::Completed),
            2 => Some(RuntimeStatus::Running),
            _ => None,
        };
        if status.is_some() {
            let commit = EpisodeCommit {
                instance_id: row.id.clone(),
                instance_pk: row.pk,
                status,
                ..EpisodeCommit::default()
            };
            store.commit_episode(commit).await.expect("commit");
        }
    }
    let counts = store.count_by_status().await.expect("count");
    let of = |status| counts.iter().find(|(s, _)| *s == status).unwrap().1;
    assert_eq!(counts.len(), RuntimeStatus::ALL.len());
    assert_eq!(of(RuntimeStatus::Pending), 2, "{counts:?}");
    assert_eq!(of(RuntimeStatus::Running), 1, "{counts:?}");
    assert_eq!(of(RuntimeStatus::Completed), 2, "{counts:?}");
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_instances_by_status_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("durango-counts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let db = dir.join("durango.db");
    let store = open(&db.display().to_string(), Durability::Normal)
        .await
        .expect("open");
    counts_each_status(&*store).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_instances_by_status_on_postgres() {
    let store = open(&postgres::fresh_database(), Durability::Full)
        .await
        .expect("open");
    counts_each_status(&*store).await;
}
