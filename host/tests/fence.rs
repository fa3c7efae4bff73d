//! The lease fence at the store, on a real PostgreSQL: once another host
//! holds an instance's partition, this host's commits for it are refused
//! and write nothing, whichever way the episode goes to the database (the
//! common one-statement episode, a first episode creating its row, an
//! episode written a step at a time). End to end, a host that lost its
//! lease usually learns it from its next lease round before it tries to
//! commit, and the instance-level guard refuses most late writes anyway,
//! so only here can the fence be seen alone.

use durango::engine::history::RuntimeStatus;
use durango::store::{
    open, partition_of, ContinueAsNew, Durability, EpisodeCommit, EpisodeOutcome, Fence,
    InstanceRow, Store,
};
use durango_e2e::postgres;

fn first_episode(id: &str, fence: Fence) -> EpisodeCommit {
    EpisodeCommit {
        instance_id: id.to_string(),
        status: Some(RuntimeStatus::Running),
        creates: Some(InstanceRow::pending(
            id.to_string(),
            "Fenced".to_string(),
            "v1".to_string(),
            "null".to_string(),
            None,
        )),
        fence: Some(fence),
        ..EpisodeCommit::default()
    }
}

fn next_episode(row: &InstanceRow, fence: Fence) -> EpisodeCommit {
    EpisodeCommit {
        instance_id: row.id.clone(),
        instance_pk: row.pk,
        after_episodes: row.episodes,
        status: Some(RuntimeStatus::Completed),
        output: Some("\"done\"".to_string()),
        fence: Some(fence),
        ..EpisodeCommit::default()
    }
}

async fn row(store: &dyn Store, id: &str) -> Option<InstanceRow> {
    store.instance(id.to_string()).await.expect("read")
}

/// An id in `partition` other than `taken`.
fn id_in(partition: i32, taken: &str) -> String {
    (0..)
        .map(|n| format!("fenced-{n}"))
        .find(|id| partition_of(id) == partition && id != taken)
        .expect("some id falls in every partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_partition_was_taken_writes_nothing_for_it() {
    let url = postgres::fresh_database();
    let store = open(&url, Durability::Full).await.expect("open");
    let held = store
        .lease_round(60_000)
        .await
        .expect("lease round")
        .expect("PostgreSQL leases");
    let id = "fenced-instance";
    let partition = partition_of(id);
    let fence = Fence {
        partition,
        epoch: held[&partition],
    };

    // Under the lease, a first episode creates its row.
    let outcome = store
        .commit_episode(first_episode(id, fence))
        .await
        .expect("commit");
    assert!(
        matches!(outcome, EpisodeOutcome::Committed(_)),
        "{outcome:?}"
    );
    let before = row(&*store, id).await.expect("created");
    assert_eq!(before.episodes, 1);

    // Another host takes the partition over (a new epoch, its name).
    postgres::psql(
        &url,
        &format!(
            "UPDATE partitions SET owner = 'another-host', epoch = epoch + 1,
                    expires_at = clock_timestamp() + interval '1 hour'
              WHERE id = {partition}"
        ),
    );

    // The common episode, in one statement.
    let outcome = store
        .commit_episode(next_episode(&before, fence))
        .await
        .expect("commit");
    assert!(matches!(outcome, EpisodeOutcome::Fenced), "{outcome:?}");

    // An episode written a step at a time (continue-as-new).
    let restart = EpisodeCommit {
        status: None,
        output: None,
        continue_as_new: Some(ContinueAsNew {
            input: "1".to_string(),
            first_seq: 0,
            carried: Vec::new(),
        }),
        ..next_episode(&before, fence)
    };
    let outcome = store.commit_episode(restart).await.expect("commit");
    assert!(matches!(outcome, EpisodeOutcome::Fenced), "{outcome:?}");

    // A first episode of another instance in that partition.
    let other = id_in(partition, id);
    let outcome = store
        .commit_episode(first_episode(&other, fence))
        .await
        .expect("commit");
    assert!(matches!(outcome, EpisodeOutcome::Fenced), "{outcome:?}");

    // Nothing of the three was written.
    let after = row(&*store, id).await.expect("still there");
    assert_eq!(
        (after.episodes, after.status, after.input),
        (1, RuntimeStatus::Running, "null".to_string())
    );
    assert!(row(&*store, &other).await.is_none());
    assert!(store
        .history(id.to_string())
        .await
        .expect("read")
        .is_empty());
}
