//! Rewinding a failed instance, as Durable Functions does: its failures are
//! taken out of history, and the activities that failed are scheduled again,
//! so replay runs the orchestration on from where it went wrong.

use super::history::{Action, HistoryEvent, RetryPolicy};

/// An activity call to schedule again: (step, name, input, retry).
pub type Retry = (u32, String, String, RetryPolicy);

/// `history` without its failures, and the activity calls to run again.
pub fn without_failures(history: &[HistoryEvent]) -> (Vec<HistoryEvent>, Vec<Retry>) {
    let failed: Vec<u32> = history
        .iter()
        .filter_map(|e| match e {
            HistoryEvent::TaskFailed { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let mut retries = Vec::new();
    let kept = history
        .iter()
        .filter(|e| {
            !matches!(
                e,
                HistoryEvent::TaskFailed { .. } | HistoryEvent::ExecutionFailed { .. }
            )
        })
        .inspect(|e| {
            if let HistoryEvent::ActionTaken {
                seq,
                action: Action::Activity { name, input, retry },
                ..
            } = e
            {
                if failed.contains(seq) {
                    retries.push((
                        *seq,
                        name.clone(),
                        input.clone(),
                        retry.unwrap_or(RetryPolicy::ONCE),
                    ));
                }
            }
        })
        .cloned()
        .collect();
    (kept, retries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_go_and_failed_activities_come_back() {
        let activity = |name: &str| Action::Activity {
            name: name.into(),
            input: "1".into(),
            retry: None,
        };
        let history = vec![
            HistoryEvent::ExecutionStarted {
                name: "O".into(),
                input: "null".into(),
                first_seq: 0,
            },
            HistoryEvent::ActionTaken {
                seq: 0,
                action: activity("Good"),
                timestamp: 0,
            },
            HistoryEvent::TaskCompleted {
                seq: 0,
                result: "1".into(),
            },
            HistoryEvent::ActionTaken {
                seq: 1,
                action: activity("Bad"),
                timestamp: 0,
            },
            HistoryEvent::TaskFailed {
                seq: 1,
                error: "boom".into(),
            },
            HistoryEvent::ExecutionFailed {
                error: "boom".into(),
            },
        ];
        let (kept, retries) = without_failures(&history);
        assert_eq!(kept.len(), 4);
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].0, 1);
        assert_eq!(retries[0].1, "Bad");
    }
}
