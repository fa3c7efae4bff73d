//! An episode's commit, at the store, on both backends (a SQLite file and
//! the harness's real PostgreSQL): an activity outcome handed to the
//! episode from memory counts only if the call was committed. The call of
//! an episode that was then refused (out of step, fenced) has no row; its
//! outcome must not become history, whatever step the rebuilt instance
//! has under that number.

use durango::engine::history::{RetryPolicy, RuntimeStatus};
use durango::store::{
    open, ActivityRow, ChildStart, CreateOutcome, Durability, EpisodeCommit, EpisodeOutcome,
    InstanceRow, Store,
};
use durango::trace::Parent;
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
        trace: None,
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

const PARENT_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CHILD_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01";
const OTHER_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01";

/// An instance's trace context is stored with it, however it is created
/// (by its first episode, in two commits, as a sub-orchestration), and
/// comes back with its row and with its activity calls read from the store.
async fn keeps_trace_contexts(store: &dyn Store) {
    let pending = InstanceRow {
        trace: Parent::parse(PARENT_TRACE),
        ..InstanceRow::pending(
            "traced".into(),
            "Parent".into(),
            "v1".into(),
            "null".into(),
            None,
        )
    };
    let first = EpisodeCommit {
        instance_id: pending.id.clone(),
        status: Some(RuntimeStatus::Running),
        creates: Some(pending.clone()),
        activities: vec![call(&pending, 0)],
        children: vec![ChildStart {
            parent_seq: 1,
            id: "traced:1".into(),
            name: "Child".into(),
            input: "null".into(),
            version: Some("v1".into()),
            trace: Parent::parse(CHILD_TRACE),
        }],
        ..EpisodeCommit::default()
    };
    let outcome = store.commit_episode(first).await.expect("commit");
    assert!(
        matches!(outcome, EpisodeOutcome::Committed(_)),
        "{outcome:?}"
    );
    let read = |id: &'static str| async move {
        store
            .instance(id.into())
            .await
            .expect("read")
            .expect("there")
    };
    assert_eq!(
        read("traced")
            .await
            .trace
            .map(|t| t.traceparent())
            .as_deref(),
        Some(PARENT_TRACE)
    );
    assert_eq!(
        read("traced:1")
            .await
            .trace
            .map(|t| t.traceparent())
            .as_deref(),
        Some(CHILD_TRACE)
    );
    let calls = store.activities(None).await.expect("activities");
    let call = calls
        .iter()
        .find(|a| a.instance_id == "traced")
        .expect("the call");
    assert_eq!(
        call.trace.map(|t| t.traceparent()).as_deref(),
        Some(PARENT_TRACE),
        "the instance's context"
    );
    let cold = store
        .cold_round("traced".into(), true)
        .await
        .expect("round");
    assert_eq!(
        cold.instance
            .expect("the row")
            .trace
            .map(|t| t.traceparent())
            .as_deref(),
        Some(PARENT_TRACE)
    );

    let started = InstanceRow {
        trace: Parent::parse(OTHER_TRACE),
        ..InstanceRow::pending(
            "two".into(),
            "Parent".into(),
            "v1".into(),
            "null".into(),
            None,
        )
    };
    let created = store
        .create_instance(started, Vec::new())
        .await
        .expect("create");
    assert!(matches!(created, CreateOutcome::Created(..)));
    assert_eq!(
        read("two").await.trace.map(|t| t.traceparent()).as_deref(),
        Some(OTHER_TRACE)
    );
    let untraced =
        InstanceRow::pending("plain".into(), "P".into(), "v1".into(), "null".into(), None);
    store
        .create_instance(untraced, Vec::new())
        .await
        .expect("create");
    assert_eq!(read("plain").await.trace, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_contexts_are_stored_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("durango-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let db = dir.join("durango.db");
    let store = open(&db.display().to_string(), Durability::Full)
        .await
        .expect("open");
    keeps_trace_contexts(&*store).await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_contexts_are_stored_on_postgres() {
    let store = open(&postgres::fresh_database(), Durability::Full)
        .await
        .expect("open");
    keeps_trace_contexts(&*store).await;
}
