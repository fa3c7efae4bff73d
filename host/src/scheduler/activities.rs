//! The activity worker pool. Activities run at least once: the row stays in
//! `activities` until the episode that consumes its result commits (or the
//! result is in the inbox), so a crash before then means a re-run after
//! restart, and a consumed result is never run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::durable_http;
use super::Scheduler;
use crate::engine::history::Message;
use crate::runtime::ActivityContext;
use crate::store::{now_ms, ActivityRow};
use crate::trace;

/// Time limit of one durable HTTP attempt unless its policy says otherwise.
const DEFAULT_HTTP_LIMIT: Duration = Duration::from_secs(60);

/// Runs each submitted activity on a task of its own once one of the
/// pool's slots is free (after its retry delay, if it has one).
pub struct ActivityPool {
    slots: Arc<Semaphore>,
}

impl ActivityPool {
    /// A pool running at most `workers` activities at once.
    pub fn new(workers: usize) -> ActivityPool {
        ActivityPool {
            slots: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    pub fn submit(&self, sched: &Arc<Scheduler>, activity: ActivityRow) {
        let (sched, slots) = (sched.clone(), self.slots.clone());
        tokio::spawn(async move {
            let wait = activity.run_at.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            run_attempt(&sched, activity).await;
        });
    }
}

/// One attempt, in a span of its own (a child of the episode that
/// scheduled the call, or of its instance's start), which its outgoing
/// HTTP requests name as their parent.
async fn run_attempt(sched: &Arc<Scheduler>, activity: ActivityRow) {
    let mut span = trace::Span::activity(
        &activity.instance_id,
        &activity.name,
        activity.attempt + 1,
        activity.trace,
    );
    let log = span.log();
    attempt(sched, activity, &mut span).instrument(log).await
}

async fn attempt(sched: &Arc<Scheduler>, activity: ActivityRow, span: &mut trace::Span) {
    let attempt = activity.attempt + 1;
    // Formatted when a request goes out, not for every attempt.
    let parent = span.parent();
    let (send_event_url, status_url) =
        sched
            .links
            .general_links(&activity.instance_id, activity.instance_pk, now_ms());
    let context = ActivityContext {
        instance_id: activity.instance_id.clone(),
        idempotency_key: activity.idempotency_key(),
        attempt,
        send_event_url,
        status_url,
    };
    let limit = (activity.retry.attempt_timeout_ms > 0)
        .then(|| Duration::from_millis(activity.retry.attempt_timeout_ms));
    let began = Instant::now();
    let outcome = if activity.name == durable_http::BUILTIN_HTTP {
        durable_http::call(
            &activity.input,
            &context.idempotency_key,
            limit.unwrap_or(DEFAULT_HTTP_LIMIT),
            parent.as_ref(),
        )
        .await
    } else {
        match sched.catalog.ensure_loaded(&activity.version).await {
            Ok(Ok(())) => {
                sched
                    .runtime
                    .run_activity(
                        &activity.version,
                        &activity.name,
                        &activity.input,
                        context,
                        (activity.instance_pk, parent.as_ref()),
                        limit,
                    )
                    .await
            }
            Ok(Err(fault)) => Err(fault.0),
            Err(error) => {
                tracing::error!(instance_id = %activity.instance_id, %error, "cannot load an activity's app; it will run after restart");
                return;
            }
        }
    };
    let (id, seq) = (activity.instance_id.clone(), activity.seq);
    let retried = outcome.is_err() && attempt < activity.retry.max_attempts;
    sched
        .metrics
        .activity_attempt(&activity.name, began.elapsed(), outcome.is_err(), retried);
    let outcome_name = match &outcome {
        Ok(_) => "completed",
        Err(_) if attempt < activity.retry.max_attempts => "retrying",
        Err(_) => "failed",
    };
    span.attribute(trace::Key::Outcome, outcome_name);
    if outcome.is_err() {
        span.failed();
    }
    let message = match outcome {
        Ok(result) => Message::TaskCompleted {
            seq,
            result: sched.settings.redact(&result),
            attempts: attempt,
        },
        Err(error) if retried => {
            let run_at = now_ms() + activity.retry.delay_before(attempt + 1) as i64;
            tracing::warn!(instance = %id, activity = %activity.name, attempt, %error, "activity failed; will retry");
            match sched
                .store
                .retry_activity(activity.instance_pk, seq, attempt, run_at)
                .await
            {
                Ok(true) => sched.activities.submit(
                    sched,
                    ActivityRow {
                        attempt,
                        run_at,
                        ..activity
                    },
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(instance = %id, error = %e, "cannot record a retry"),
            }
            return;
        }
        Err(error) => Message::TaskFailed {
            seq,
            error: sched.settings.redact(&error),
            attempts: attempt,
        },
    };
    // An instance another host runs now gets the outcome through the inbox.
    let handed_over = match sched.ownership.owns(&activity.instance_id) {
        true => sched.dispatcher.activity_done(&activity, message),
        false => Err(message),
    };
    let Err(message) = handed_over else {
        return;
    };
    match sched
        .store
        .complete_activities(activity.instance_pk, vec![(seq, message.clone())])
        .await
        .map(|ids| ids.first().copied().flatten())
    {
        Ok(Some(inbox_id)) => sched.dispatcher.hand_over(&id, inbox_id, message),
        // The instance finished meanwhile, or a re-run reported first.
        Ok(None) => dropped_late_result(&id, seq),
        Err(error) => {
            tracing::error!(instance = %id, %error, "cannot record an activity result; it will run again after restart")
        }
    }
}

/// Says that an activity's result found its instance finished (terminated,
/// say, while the call ran) and was dropped, as it must be: an operator
/// wondering where the call's effect went finds it in the log.
pub fn dropped_late_result(instance: &str, seq: u32) {
    tracing::info!(%instance, step = seq, "an activity's result came after its instance finished; dropped");
}
