//! An instance's history as a person reads it: each step with when it began
//! and ended, and the steps still open, which are what the instance waits
//! for now. Event waits are matched to raised events as replay matches
//! them (the oldest open wait of the name takes the event; an event no one
//! waits for yet is kept for the next wait), so what this says is open is
//! what the next raised event or outcome will answer.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::history::{Action, HistoryEvent, Sender};

/// When a step ended and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub at: i64,
    /// `completed`, `failed`, `fired`, `received`.
    pub outcome: &'static str,
    /// An activity's attempts (0 where not recorded).
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// A failure's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One entry of the timeline, in history's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Entry {
    /// A generation began; `first_seq > 0` means it continued as new.
    #[serde(rename_all = "camelCase")]
    Started {
        at: i64,
        name: String,
        first_seq: u32,
    },
    /// A step the orchestrator took: an activity, a timer, an event wait or
    /// a sub-orchestration, from when it was taken to when it ended.
    #[serde(rename_all = "camelCase")]
    Step {
        seq: u32,
        /// `activity`, `timer`, `event`, `subOrchestration`.
        step: &'static str,
        /// The activity, event or sub-orchestrator name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        fire_at: Option<i64>,
        /// A sub-orchestration's instance id.
        #[serde(skip_serializing_if = "Option::is_none")]
        instance_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ended: Option<Ended>,
    },
    /// An external event arrived.
    #[serde(rename_all = "camelCase")]
    EventRaised {
        at: i64,
        name: String,
        sender: String,
    },
    /// The instance finished, was suspended, resumed, rewound or moved.
    #[serde(rename_all = "camelCase")]
    Lifecycle {
        at: i64,
        what: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// A step still open: what the instance waits for, and since when.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub seq: u32,
    pub step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub since: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub entries: Vec<Entry>,
    /// This generation's open steps, oldest first.
    pub open: Vec<Open>,
}

pub fn sender_words(sender: &Sender) -> String {
    match sender {
        Sender::SystemKey => "system key".into(),
        Sender::Holder(holder) => format!("link for {holder}"),
        Sender::UnnamedLink => "instance link".into(),
    }
}

impl Timeline {
    pub fn of(history: &[HistoryEvent]) -> Timeline {
        let mut timeline = Timeline::default();
        // The episode's clock: when the events that follow were recorded.
        let mut now = 0;
        // Entry index of each step of this generation.
        let mut steps: HashMap<u32, usize> = HashMap::new();
        // Open event waits by name, oldest first; events no wait took yet.
        let mut waits: HashMap<String, VecDeque<u32>> = HashMap::new();
        let mut unclaimed: HashMap<String, usize> = HashMap::new();
        for event in history {
            let lifecycle = |what, detail: Option<&String>| Entry::Lifecycle {
                at: now,
                what,
                detail: detail.cloned(),
            };
            match event {
                HistoryEvent::OrchestratorStarted { timestamp } => now = *timestamp,
                HistoryEvent::ExecutionStarted {
                    name, first_seq, ..
                } => {
                    steps.clear();
                    waits.clear();
                    unclaimed.clear();
                    timeline.entries.push(Entry::Started {
                        at: now,
                        name: name.clone(),
                        first_seq: *first_seq,
                    });
                }
                HistoryEvent::ActionTaken {
                    seq,
                    action,
                    timestamp,
                } => {
                    let (step, name, fire_at, instance_id) = match action {
                        Action::Activity { name, .. } => ("activity", Some(name), None, None),
                        Action::Timer { fire_at } => ("timer", None, Some(*fire_at), None),
                        Action::EventWait { name } => ("event", Some(name), None, None),
                        Action::SubOrchestration {
                            name, instance_id, ..
                        } => ("subOrchestration", Some(name), None, Some(instance_id)),
                        Action::Setting { .. } | Action::Patch { .. } => continue,
                    };
                    steps.insert(*seq, timeline.entries.len());
                    timeline.entries.push(Entry::Step {
                        seq: *seq,
                        step,
                        name: name.cloned(),
                        at: *timestamp,
                        fire_at,
                        instance_id: instance_id.cloned(),
                        ended: None,
                    });
                    if let Action::EventWait { name } = action {
                        match unclaimed.get_mut(name).filter(|n| **n > 0) {
                            Some(n) => {
                                *n -= 1;
                                timeline.end(&steps, *seq, *timestamp, "received", 0, None);
                            }
                            None => waits.entry(name.clone()).or_default().push_back(*seq),
                        }
                    }
                }
                HistoryEvent::TaskCompleted { seq, attempts, .. } => {
                    timeline.end(&steps, *seq, now, "completed", *attempts, None);
                }
                HistoryEvent::TaskFailed {
                    seq,
                    error,
                    attempts,
                } => {
                    timeline.end(&steps, *seq, now, "failed", *attempts, Some(error));
                }
                HistoryEvent::TimerFired { seq } => {
                    timeline.end(&steps, *seq, now, "fired", 0, None);
                }
                HistoryEvent::EventRaised { name, sender, .. } => {
                    timeline.entries.push(Entry::EventRaised {
                        at: now,
                        name: name.clone(),
                        sender: sender_words(sender),
                    });
                    match waits.get_mut(name).and_then(VecDeque::pop_front) {
                        Some(seq) => timeline.end(&steps, seq, now, "received", 0, None),
                        None => *unclaimed.entry(name.clone()).or_default() += 1,
                    }
                }
                HistoryEvent::ExecutionCompleted { .. } => {
                    timeline.entries.push(lifecycle("completed", None))
                }
                HistoryEvent::ExecutionFailed { error } => {
                    timeline.entries.push(lifecycle("failed", Some(error)))
                }
                HistoryEvent::ExecutionTerminated { reason } => {
                    timeline.entries.push(lifecycle("terminated", Some(reason)))
                }
                HistoryEvent::ExecutionContinuedAsNew { .. } => {
                    timeline.entries.push(lifecycle("continuedAsNew", None))
                }
                HistoryEvent::ExecutionSuspended { reason } => {
                    timeline.entries.push(lifecycle("suspended", Some(reason)))
                }
                HistoryEvent::ExecutionResumed { reason } => {
                    timeline.entries.push(lifecycle("resumed", Some(reason)))
                }
                HistoryEvent::ExecutionRewound { reason } => {
                    timeline.entries.push(lifecycle("rewound", Some(reason)))
                }
                HistoryEvent::VersionChanged { from, to } => timeline
                    .entries
                    .push(lifecycle("versionChanged", Some(&format!("{from} → {to}")))),
            }
        }
        timeline.open = steps
            .values()
            .filter_map(|&index| match &timeline.entries[index] {
                Entry::Step {
                    seq,
                    step,
                    name,
                    at,
                    fire_at,
                    instance_id,
                    ended: None,
                } => Some(Open {
                    seq: *seq,
                    step,
                    name: name.clone(),
                    since: *at,
                    fire_at: *fire_at,
                    instance_id: instance_id.clone(),
                }),
                _ => None,
            })
            .collect();
        timeline.open.sort_by_key(|open| open.seq);
        timeline
    }

    /// Step `seq` of this generation ended (the first ending stands: a
    /// duplicate delivery changes nothing, as in replay).
    fn end(
        &mut self,
        steps: &HashMap<u32, usize>,
        seq: u32,
        at: i64,
        outcome: &'static str,
        attempts: u32,
        error: Option<&String>,
    ) {
        let Some(&index) = steps.get(&seq) else {
            return;
        };
        if let Entry::Step {
            ended: slot @ None, ..
        } = &mut self.entries[index]
        {
            *slot = Some(Ended {
                at,
                outcome,
                attempts,
                error: error.cloned(),
            });
        }
    }

    /// Marks the open timers that are no longer stored (cancelled: the
    /// orchestrator moved on without them) as ended, leaving `stored_timers`
    /// the only ones still awaited.
    pub fn cancel_timers_not_in(&mut self, stored_timers: &[u32], at: i64) {
        let gone: Vec<u32> = self
            .open
            .iter()
            .filter(|o| o.step == "timer" && !stored_timers.contains(&o.seq))
            .map(|o| o.seq)
            .collect();
        for entry in &mut self.entries {
            if let Entry::Step {
                seq,
                ended: slot @ None,
                ..
            } = entry
            {
                if gone.contains(seq) {
                    *slot = Some(Ended {
                        at,
                        outcome: "cancelled",
                        attempts: 0,
                        error: None,
                    });
                }
            }
        }
        self.open.retain(|o| !gone.contains(&o.seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(seq: u32, action: Action, timestamp: i64) -> HistoryEvent {
        HistoryEvent::ActionTaken {
            seq,
            action,
            timestamp,
        }
    }

    fn wait(name: &str) -> Action {
        Action::EventWait { name: name.into() }
    }

    fn raised(name: &str) -> HistoryEvent {
        HistoryEvent::EventRaised {
            name: name.into(),
            input: "1".into(),
            sender: Sender::SystemKey,
        }
    }

    fn open_seqs(t: &Timeline) -> Vec<(u32, &'static str)> {
        t.open.iter().map(|o| (o.seq, o.step)).collect()
    }

    #[test]
    fn a_phone_verification_waits_for_the_code_and_the_timer_after_its_sms() {
        let history = vec![
            HistoryEvent::OrchestratorStarted { timestamp: 100 },
            HistoryEvent::ExecutionStarted {
                name: "E4".into(),
                input: "\"+1\"".into(),
                first_seq: 0,
            },
            taken(
                0,
                Action::Activity {
                    name: "Send".into(),
                    input: "\"+1\"".into(),
                    retry: None,
                },
                100,
            ),
            HistoryEvent::OrchestratorStarted { timestamp: 250 },
            HistoryEvent::TaskCompleted {
                seq: 0,
                result: "1234".into(),
                attempts: 2,
            },
            taken(1, Action::Timer { fire_at: 90_250 }, 250),
            taken(2, wait("Code"), 250),
        ];
        let t = Timeline::of(&history);
        assert_eq!(open_seqs(&t), vec![(1, "timer"), (2, "event")]);
        assert_eq!(t.open[0].fire_at, Some(90_250));
        assert_eq!(t.open[1].name.as_deref(), Some("Code"));
        assert_eq!(t.open[1].since, 250);
        let Entry::Step {
            ended: Some(ended), ..
        } = &t.entries[1]
        else {
            panic!("the activity ended: {:?}", t.entries[1]);
        };
        assert_eq!(
            (ended.at, ended.outcome, ended.attempts),
            (250, "completed", 2)
        );
    }

    #[test]
    fn events_go_to_the_oldest_open_wait_and_wait_for_the_next_one_otherwise() {
        let history = vec![
            HistoryEvent::OrchestratorStarted { timestamp: 1 },
            HistoryEvent::ExecutionStarted {
                name: "O".into(),
                input: "null".into(),
                first_seq: 0,
            },
            taken(0, wait("A"), 1),
            taken(1, wait("A"), 1),
            HistoryEvent::OrchestratorStarted { timestamp: 5 },
            raised("A"),
            raised("B"),
            HistoryEvent::OrchestratorStarted { timestamp: 9 },
            taken(2, wait("B"), 9),
            taken(3, wait("B"), 9),
        ];
        let t = Timeline::of(&history);
        // 0 took the first A; 2 took the B that came before it.
        assert_eq!(open_seqs(&t), vec![(1, "event"), (3, "event")]);
    }

    #[test]
    fn a_new_generation_has_only_its_own_open_steps_and_cancelled_timers_are_not_awaited() {
        let history = vec![
            HistoryEvent::OrchestratorStarted { timestamp: 1 },
            HistoryEvent::ExecutionStarted {
                name: "O".into(),
                input: "null".into(),
                first_seq: 7,
            },
            taken(7, Action::Timer { fire_at: 50 }, 1),
            taken(8, Action::Timer { fire_at: 60 }, 1),
            taken(9, wait("Go"), 1),
        ];
        let mut t = Timeline::of(&history);
        assert!(matches!(t.entries[0], Entry::Started { first_seq: 7, .. }));
        t.cancel_timers_not_in(&[8], 3);
        assert_eq!(open_seqs(&t), vec![(8, "timer"), (9, "event")]);
        assert!(matches!(
            &t.entries[1],
            Entry::Step {
                ended: Some(Ended {
                    outcome: "cancelled",
                    ..
                }),
                ..
            }
        ));
    }
}
