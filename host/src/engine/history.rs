//! What an instance's history and inbox hold.

use serde::{Deserialize, Serialize};

/// How the host retries an activity (attempts count the first one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_retry_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_retry_interval_ms: u64,
    pub attempt_timeout_ms: u64,
}

impl RetryPolicy {
    /// No retry: one attempt.
    pub const ONCE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        first_retry_interval_ms: 0,
        backoff_coefficient: 1.0,
        max_retry_interval_ms: 0,
        attempt_timeout_ms: 0,
    };

    /// The pause before attempt `next` (2 for the first retry).
    pub fn delay_before(&self, next: u32) -> u64 {
        let exponent = next.saturating_sub(2) as i32;
        let delay = self.first_retry_interval_ms as f64 * self.backoff_coefficient.powi(exponent);
        let cap = if self.max_retry_interval_ms == 0 {
            f64::MAX
        } else {
            self.max_retry_interval_ms as f64
        };
        delay.min(cap).max(0.0) as u64
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One step of an orchestration, in the order the orchestrator took it.
/// Replay checks each step the code takes against the recorded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Action {
    Activity {
        name: String,
        input: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        retry: Option<RetryPolicy>,
    },
    Timer {
        fire_at: i64,
    },
    EventWait {
        name: String,
    },
    Setting {
        name: String,
        value: Option<String>,
    },
    SubOrchestration {
        name: String,
        input: String,
        instance_id: String,
    },
    /// The code reached patch `name` (see `Replay::patched`).
    Patch {
        name: String,
    },
}

impl Action {
    /// Names the step for a non-determinism message.
    pub fn describe(&self) -> String {
        match self {
            Action::Activity { name, .. } => format!("activity {name}"),
            Action::Timer { .. } => "timer".to_string(),
            Action::EventWait { name } => format!("wait for event {name}"),
            Action::Setting { name, .. } => format!("setting {name}"),
            Action::SubOrchestration { name, .. } => format!("sub-orchestration {name}"),
            Action::Patch { name } => format!("patch {name}"),
        }
    }

    /// Whether replayed code took the same step as history recorded. A timer's
    /// fire time may differ only if the code computed it from something other
    /// than the orchestration clock, which the guest SDK does not allow.
    pub fn same_step(&self, other: &Action) -> bool {
        match (self, other) {
            (Action::Activity { name: a, .. }, Action::Activity { name: b, .. }) => a == b,
            (Action::Timer { .. }, Action::Timer { .. }) => true,
            (Action::EventWait { name: a }, Action::EventWait { name: b }) => a == b,
            (Action::Setting { name: a, .. }, Action::Setting { name: b, .. }) => a == b,
            (
                Action::SubOrchestration { name: a, .. },
                Action::SubOrchestration { name: b, .. },
            ) => a == b,
            (Action::Patch { name: a }, Action::Patch { name: b }) => a == b,
            _ => false,
        }
    }
}

/// Who raised an external event, as the host verified it: the credential
/// the request came with, never what its body claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Sender {
    /// The system key (or the keyless loopback RPC listener).
    SystemKey,
    /// A link made for this holder.
    Holder(String),
    /// The instance's general link, which names nobody. Events stored
    /// before senders were recorded read as this, the least trusted.
    #[default]
    UnnamedLink,
}

/// A history event. Completions are revealed to the guest in this order on
/// every replay, which is what makes `when-any` deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HistoryEvent {
    /// An episode began; its time is the orchestration clock until the next.
    OrchestratorStarted {
        timestamp: i64,
    },
    ExecutionStarted {
        name: String,
        input: String,
        /// The number of this generation's first step. Steps are numbered
        /// across continue-as-new generations, so a late outcome of an
        /// earlier generation's step can never answer one of this one's.
        #[serde(default)]
        first_seq: u32,
    },
    /// The orchestrator took step `seq`.
    ActionTaken {
        seq: u32,
        action: Action,
        timestamp: i64,
    },
    TaskCompleted {
        seq: u32,
        result: String,
        /// See `Message::TaskCompleted`.
        #[serde(default, skip_serializing_if = "is_zero")]
        attempts: u32,
    },
    TaskFailed {
        seq: u32,
        error: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        attempts: u32,
    },
    TimerFired {
        seq: u32,
    },
    EventRaised {
        name: String,
        input: String,
        #[serde(default)]
        sender: Sender,
    },
    ExecutionCompleted {
        output: String,
    },
    ExecutionFailed {
        error: String,
    },
    ExecutionTerminated {
        reason: String,
    },
    /// The orchestration started over with `input` (continue-as-new).
    ExecutionContinuedAsNew {
        input: String,
    },
    ExecutionSuspended {
        reason: String,
    },
    ExecutionResumed {
        reason: String,
    },
    /// A failed instance was rewound: its failures were taken out of history.
    ExecutionRewound {
        reason: String,
    },
    /// The instance was moved to another version of its app (its history
    /// replayed on that version without a divergence, see `check`).
    VersionChanged {
        from: String,
        to: String,
    },
}

/// A message waiting in an instance's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    Start {
        input: String,
        /// See `HistoryEvent::ExecutionStarted`.
        #[serde(default)]
        first_seq: u32,
    },
    /// An activity or sub-orchestration finished.
    TaskCompleted {
        seq: u32,
        result: String,
        /// The attempts an activity took (retries are not otherwise
        /// recorded); 0 for a sub-orchestration, and in histories written
        /// before attempts were kept.
        #[serde(default, skip_serializing_if = "is_zero")]
        attempts: u32,
    },
    TaskFailed {
        seq: u32,
        error: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        attempts: u32,
    },
    TimerFired {
        seq: u32,
    },
    EventRaised {
        name: String,
        input: String,
        #[serde(default)]
        sender: Sender,
    },
    Terminate {
        reason: String,
    },
    Suspend {
        reason: String,
    },
    Resume {
        reason: String,
    },
    /// Sent by a rewind so the instance runs again after its failures were
    /// removed from history.
    Rewind {
        reason: String,
    },
}

impl Message {
    /// A new instance's start: its steps are numbered from 0.
    pub fn start(input: String) -> Message {
        Message::Start {
            input,
            first_seq: 0,
        }
    }

    /// Whether the message still means something to the next generation
    /// of a continue-as-new: what the outside world sent (events and
    /// control) does; outcomes of this generation's steps do not.
    pub fn outlives_generation(&self) -> bool {
        matches!(
            self,
            Message::EventRaised { .. }
                | Message::Terminate { .. }
                | Message::Suspend { .. }
                | Message::Resume { .. }
        )
    }

    /// What a finished sub-orchestration `id` (with `status` and `output`)
    /// tells the step `seq` of its parent that awaits it.
    pub fn child_outcome(
        id: &str,
        seq: u32,
        status: RuntimeStatus,
        output: Option<&str>,
    ) -> Message {
        let output = output.unwrap_or("null");
        let reason =
            || serde_json::from_str::<String>(output).unwrap_or_else(|_| output.to_string());
        match status {
            RuntimeStatus::Completed => Message::TaskCompleted {
                seq,
                result: output.to_string(),
                attempts: 0,
            },
            RuntimeStatus::Terminated => Message::TaskFailed {
                seq,
                error: format!("sub-orchestration {id} was terminated: {}", reason()),
                attempts: 0,
            },
            _ => Message::TaskFailed {
                seq,
                error: format!("sub-orchestration {id} failed: {}", reason()),
                attempts: 0,
            },
        }
    }

    /// The step this message is the outcome of, if it is one.
    pub fn outcome_of(&self) -> Option<u32> {
        match self {
            Message::TaskCompleted { seq, .. }
            | Message::TaskFailed { seq, .. }
            | Message::TimerFired { seq } => Some(*seq),
            _ => None,
        }
    }

    /// The history event that records this message, if it goes to the guest.
    pub fn into_event(self, orchestrator: &str) -> Option<HistoryEvent> {
        Some(match self {
            Message::Start { input, first_seq } => HistoryEvent::ExecutionStarted {
                name: orchestrator.to_string(),
                input,
                first_seq,
            },
            Message::TaskCompleted {
                seq,
                result,
                attempts,
            } => HistoryEvent::TaskCompleted {
                seq,
                result,
                attempts,
            },
            Message::TaskFailed {
                seq,
                error,
                attempts,
            } => HistoryEvent::TaskFailed {
                seq,
                error,
                attempts,
            },
            Message::TimerFired { seq } => HistoryEvent::TimerFired { seq },
            Message::EventRaised {
                name,
                input,
                sender,
            } => HistoryEvent::EventRaised {
                name,
                input,
                sender,
            },
            Message::Rewind { reason } => HistoryEvent::ExecutionRewound { reason },
            Message::Terminate { .. } | Message::Suspend { .. } | Message::Resume { .. } => {
                return None
            }
        })
    }
}

/// Where an instance stands, as the status API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuntimeStatus {
    Pending,
    Running,
    Suspended,
    ContinuedAsNew,
    Completed,
    Failed,
    Terminated,
}

impl RuntimeStatus {
    pub const ALL: [RuntimeStatus; 7] = [
        RuntimeStatus::Pending,
        RuntimeStatus::Running,
        RuntimeStatus::Suspended,
        RuntimeStatus::ContinuedAsNew,
        RuntimeStatus::Completed,
        RuntimeStatus::Failed,
        RuntimeStatus::Terminated,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RuntimeStatus::Completed | RuntimeStatus::Failed | RuntimeStatus::Terminated
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeStatus::Pending => "Pending",
            RuntimeStatus::Running => "Running",
            RuntimeStatus::Suspended => "Suspended",
            RuntimeStatus::ContinuedAsNew => "ContinuedAsNew",
            RuntimeStatus::Completed => "Completed",
            RuntimeStatus::Failed => "Failed",
            RuntimeStatus::Terminated => "Terminated",
        }
    }

    /// Parses a status name, ignoring case as Durable Functions does.
    pub fn parse(name: &str) -> Option<RuntimeStatus> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
    }
}
