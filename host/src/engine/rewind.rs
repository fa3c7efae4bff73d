//! Rewinding a failed instance, as Durable Functions does: its failures are
//! taken out of history and everything it was still waiting for when it
//! failed is put back, so replay runs the orchestration on from where it
//! went wrong: activities (the failed ones and those still out, whose rows
//! went when it failed) run again, timers not yet fired are set again, and
//! sub-orchestrations not yet answered are followed up (a failed child is
//! rewound in turn).

use super::history::{Action, HistoryEvent, RetryPolicy};

/// An activity call to schedule again.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub seq: u32,
    pub name: String,
    pub input: String,
    pub retry: RetryPolicy,
}

/// What a rewind writes and follows up.
#[derive(Debug, Default, PartialEq)]
pub struct Rewound {
    /// The history without its failures.
    pub history: Vec<HistoryEvent>,
    pub activities: Vec<Retry>,
    /// Timers to set again: (step, fire at).
    pub timers: Vec<(u32, i64)>,
    /// Sub-orchestrations the instance waits for: (step, child id).
    pub children: Vec<(u32, String)>,
}

/// The rewind of a failed instance with this `history`.
pub fn rewind(history: &[HistoryEvent]) -> Rewound {
    let kept: Vec<HistoryEvent> = history
        .iter()
        .filter(|e| {
            !matches!(
                e,
                HistoryEvent::TaskFailed { .. } | HistoryEvent::ExecutionFailed { .. }
            )
        })
        .cloned()
        .collect();
    let answered = |step: u32| {
        kept.iter().any(|e| match e {
            HistoryEvent::TaskCompleted { seq, .. } | HistoryEvent::TimerFired { seq } => {
                *seq == step
            }
            _ => false,
        })
    };
    let mut rewound = Rewound::default();
    for event in &kept {
        let HistoryEvent::ActionTaken { seq, action, .. } = event else {
            continue;
        };
        if answered(*seq) {
            continue;
        }
        match action {
            Action::Activity { name, input, retry } => rewound.activities.push(Retry {
                seq: *seq,
                name: name.clone(),
                input: input.clone(),
                retry: retry.unwrap_or(RetryPolicy::ONCE),
            }),
            Action::Timer { fire_at } => rewound.timers.push((*seq, *fire_at)),
            Action::SubOrchestration { instance_id, .. } => {
                rewound.children.push((*seq, instance_id.clone()))
            }
            Action::EventWait { .. } | Action::Setting { .. } | Action::Patch { .. } => {}
        }
    }
    rewound.history = kept;
    rewound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(seq: u32, action: Action) -> HistoryEvent {
        HistoryEvent::ActionTaken {
            seq,
            action,
            timestamp: 0,
        }
    }

    #[test]
    fn failures_go_and_what_the_instance_waited_for_comes_back() {
        let activity = |name: &str| Action::Activity {
            name: name.into(),
            input: "1".into(),
            retry: None,
        };
        let child = Action::SubOrchestration {
            name: "Child".into(),
            input: "null".into(),
            instance_id: "p:5".into(),
        };
        let history = vec![
            HistoryEvent::ExecutionStarted {
                name: "O".into(),
                input: "null".into(),
                first_seq: 0,
            },
            taken(0, activity("Good")),
            HistoryEvent::TaskCompleted {
                seq: 0,
                result: "1".into(),
                attempts: 1,
            },
            taken(1, activity("Bad")),
            taken(2, activity("StillOut")),
            taken(3, Action::Timer { fire_at: 99 }),
            taken(4, Action::Timer { fire_at: 7 }),
            HistoryEvent::TimerFired { seq: 4 },
            taken(5, child),
            HistoryEvent::TaskFailed {
                seq: 1,
                error: "boom".into(),
                attempts: 3,
            },
            HistoryEvent::TaskFailed {
                seq: 5,
                error: "child failed".into(),
                attempts: 0,
            },
            HistoryEvent::ExecutionFailed {
                error: "boom".into(),
            },
        ];
        let rewound = rewind(&history);
        assert_eq!(rewound.history.len(), history.len() - 3);
        let again: Vec<(u32, &str)> = rewound
            .activities
            .iter()
            .map(|a| (a.seq, a.name.as_str()))
            .collect();
        assert_eq!(again, [(1, "Bad"), (2, "StillOut")]);
        assert_eq!(rewound.timers, [(3, 99)], "the fired timer stays fired");
        assert_eq!(rewound.children, [(5, "p:5".to_string())]);
    }
}
