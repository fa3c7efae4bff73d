//! `historyEvents` in the shape Durable Functions' status API gives them:
//! scheduling folded into completions, episode markers left out.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::engine::history::{Action, HistoryEvent, Sender};
use crate::store::format_time;
use crate::store::InstanceRow;

pub fn history_events(
    history: &[HistoryEvent],
    row: &InstanceRow,
    show_output: bool,
) -> Vec<Value> {
    let mut now = row.created_at;
    let mut scheduled: HashMap<u32, (String, i64)> = HashMap::new();
    let mut timers: HashMap<u32, i64> = HashMap::new();
    let mut out = Vec::new();
    let parsed =
        |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into()));
    for event in history {
        let mut entry = Map::new();
        let mut put = |k: &str, v: Value| {
            entry.insert(k.to_string(), v);
        };
        let kind = match event {
            HistoryEvent::OrchestratorStarted { timestamp } => {
                now = *timestamp;
                continue;
            }
            HistoryEvent::ExecutionStarted { name, input, .. } => {
                put("FunctionName", json!(name));
                if show_output {
                    put("Input", parsed(input));
                }
                "ExecutionStarted"
            }
            HistoryEvent::ActionTaken {
                seq,
                action,
                timestamp,
            } => match action {
                Action::Activity { name, .. } => {
                    scheduled.insert(*seq, (name.clone(), *timestamp));
                    continue;
                }
                Action::Timer { fire_at } => {
                    timers.insert(*seq, *fire_at);
                    put("FireAt", json!(format_time(*fire_at)));
                    put("TimerId", json!(seq));
                    "TimerCreated"
                }
                Action::SubOrchestration {
                    name, instance_id, ..
                } => {
                    scheduled.insert(*seq, (name.clone(), *timestamp));
                    put("FunctionName", json!(name));
                    put("InstanceId", json!(instance_id));
                    "SubOrchestrationInstanceCreated"
                }
                Action::EventWait { .. } | Action::Setting { .. } | Action::Patch { .. } => {
                    continue
                }
            },
            HistoryEvent::TaskCompleted { seq, result, .. } => {
                scheduled_fields(&mut put, scheduled.get(seq));
                if show_output {
                    put("Result", parsed(result));
                }
                "TaskCompleted"
            }
            HistoryEvent::TaskFailed { seq, error, .. } => {
                scheduled_fields(&mut put, scheduled.get(seq));
                put("Reason", json!(error));
                "TaskFailed"
            }
            HistoryEvent::TimerFired { seq } => {
                if let Some(fire_at) = timers.get(seq) {
                    put("FireAt", json!(format_time(*fire_at)));
                }
                put("TimerId", json!(seq));
                "TimerFired"
            }
            HistoryEvent::EventRaised {
                name,
                input,
                sender,
            } => {
                put("Name", json!(name));
                // Durango's own field: the verified person, if a link
                // named one (not the name the event's data may claim).
                if let Sender::Holder(holder) = sender {
                    put("Sender", json!(holder));
                }
                if show_output {
                    put("Input", parsed(input));
                }
                "EventRaised"
            }
            HistoryEvent::ExecutionCompleted { output } => {
                put("OrchestrationStatus", json!("Completed"));
                if show_output {
                    put("Result", parsed(output));
                }
                "ExecutionCompleted"
            }
            HistoryEvent::ExecutionFailed { error } => {
                put("OrchestrationStatus", json!("Failed"));
                put("Result", json!(error));
                "ExecutionCompleted"
            }
            HistoryEvent::ExecutionTerminated { reason } => {
                put("Input", json!(reason));
                "ExecutionTerminated"
            }
            HistoryEvent::ExecutionContinuedAsNew { input } => {
                if show_output {
                    put("Input", parsed(input));
                }
                "ContinueAsNew"
            }
            HistoryEvent::ExecutionSuspended { reason } => {
                put("Reason", json!(reason));
                "ExecutionSuspended"
            }
            HistoryEvent::ExecutionResumed { reason } => {
                put("Reason", json!(reason));
                "ExecutionResumed"
            }
            HistoryEvent::ExecutionRewound { reason } => {
                put("Reason", json!(reason));
                "ExecutionRewound"
            }
            // Durango's own event: Durable Functions has no versions.
            HistoryEvent::VersionChanged { from, to } => {
                put("From", json!(from));
                put("To", json!(to));
                "VersionChanged"
            }
        };
        entry.insert("EventType".into(), json!(kind));
        entry.insert("Timestamp".into(), json!(format_time(now)));
        out.push(Value::Object(entry));
    }
    out
}

fn scheduled_fields(put: &mut impl FnMut(&str, Value), scheduled: Option<&(String, i64)>) {
    if let Some((name, at)) = scheduled {
        put("FunctionName", json!(name));
        put("ScheduledTime", json!(format_time(*at)));
    }
}
