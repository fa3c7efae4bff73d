//! An episode's commit, at the store, on both backends (a SQLite file and
//! the harness's real PostgreSQL): an activity outcome handed to the
//! episode from memory counts only if the call was committed. The call of
//! an episode that was then refused (out of step, fenced) has no row; its
//! outcome must not become history, whatever step the rebuilt instance
//! has under that number.

use durango::engine::history::{RetryPolicy, RuntimeStatus};
use durango::store::{
    open, ActivityRow, Durability, EpisodeCommit, EpisodeOutcome, InstanceRow, Store,
};
use durango_e2e::postgres;

fn call(row: &InstanceRow, seq: u32) -> ActivityRow {
    ActivityRow {
        instance_id: row.id.clone(),
        instance_pk: row.pk,
        seq,
        version: row.version.clone(),
        name: "Step".into(),
        input: "null".into(),
        retry: RetryPolicy::ONCE,
        attempt: 0,
        run_at: 0,
    }
}

async fn refuses_outcomes_of_calls_never_committed(store: &dyn Store) {
    let id = "calls";
    let pending = InstanceRow::pending(id.into(), "Calls".into(), "v1".into(), "null".into(), None);
    let first = EpisodeCommit {
        instance_id: id.into(),
        status: Some(RuntimeStatus::Running),
        creates: Some(pending.clone()),
        activities: vec![call(&pending, 0)],
        ..EpisodeCommit::default()
    };
    let EpisodeOutcome::Committed(created) = store.commit_episode(first).await.expect("commit")
    else {
        panic!("the first episode was refused");
    };
    let row = store
        .instance(id.into())
        .await
        .expect("read")
        .expect("created");
    assert_eq!(row.pk, created.instance_pk);
    let next = |consumed: u32, after: i64| EpisodeCommit {
        instance_id: id.into(),
        instance_pk: row.pk,
        after_episodes: after,
        consumed_activities: vec![consumed],
        activities: vec![call(&row, consumed + 1)],
        ..EpisodeCommit::default()
    };
    // Step 0's call was committed: its outcome is taken.
    let outcome = store.commit_episode(next(0, 1)).await.expect("commit");
    assert!(
        matches!(outcome, EpisodeOutcome::Committed(_)),
        "{outcome:?}"
    );
    // Step 7 was never scheduled: refused, nothing written.
    let outcome = store.commit_episode(next(7, 2)).await.expect("commit");
    assert!(matches!(outcome, EpisodeOutcome::OutOfStep), "{outcome:?}");
    let after = store
        .instance(id.into())
        .await
        .expect("read")
        .expect("there");
    assert_eq!(after.episodes, 2);
    // Step 1's call (scheduled by the second episode) still counts.
    let outcome = store.commit_episode(next(1, 2)).await.expect("commit");
    assert!(
        matches!(outcome, EpisodeOutcome::Committed(_)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_of_a_call_never_committed_is_refused_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("durango-episodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let db = dir.join("durango.db");
    let store = open(&db.display().to_string(), Durability::Full)
        .await
        .expect("open");
    refuses_outcomes_of_calls_never_committed(&*store).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_of_a_call_never_committed_is_refused_on_postgres() {
    let store = open(&postgres::fresh_database(), Durability::Full)
        .await
        .expect("open");
    refuses_outcomes_of_calls_never_committed(&*store).await;
}
