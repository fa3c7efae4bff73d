//! An episode: new messages arrive for an instance; the guest runs on until it
//! waits again; everything that changed becomes one `EpisodeCommit`.

use std::collections::VecDeque;

use crate::engine::history::{Action, HistoryEvent, Message, RuntimeStatus};
use crate::engine::replay::Cue;
use crate::runtime::{GuestFault, Orchestrator, PollResult};
use crate::store::{now_ms, ActivityRow, ChildStart, ContinueAsNew, EpisodeCommit, InstanceRow};

/// Re-runs a fresh guest over the instance's whole history (the cold path),
/// leaving it where the hot instance would be. A guest that finishes or
/// faults during replay does not match its history. A guest that calls
/// `advance` where it waits takes the history in one call; one that does
/// not (or whose replay ran out of its call's time) is resumed here once
/// per event it may act on.
pub async fn replay_history(
    guest: &mut Orchestrator,
    history: Vec<HistoryEvent>,
) -> Result<(), GuestFault> {
    guest.replay().queue(history);
    while let Some(cue) = guest.reveal_next() {
        let poll = match cue {
            Cue::Start { name, input } => guest.start(&name, &input).await?,
            Cue::Outcome => guest.resume().await?,
        };
        if !matches!(poll, PollResult::Pending) {
            return Err(GuestFault(
                "non-deterministic orchestrator: it finished during replay while history has it waiting"
                    .into(),
            ));
        }
    }
    guest.replay().caught_up();
    Ok(())
}

/// Where a message stays durable until the episode that consumes it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A row in the inbox, with its id.
    Inbox(i64),
    /// The outcome of the activity at this step, handed over straight from
    /// the call: the activity's own row keeps it (a crash before the
    /// consuming commit runs the activity again), so it needs no commit of
    /// its own.
    Activity(u32),
    /// The start of an instance this episode's commit creates.
    Created,
}

/// What an episode decided.
pub struct Episode {
    pub commit: EpisodeCommit,
    /// The instance still waits: worth keeping hot.
    pub waiting: bool,
}

impl Episode {
    /// Nothing was consumed (every message is held while suspended).
    pub fn is_idle(&self) -> bool {
        self.commit.consumed.is_empty()
            && self.commit.consumed_activities.is_empty()
            && self.commit.held_activities.is_empty()
    }
}

/// Runs `messages` through the guest and gathers the commit. `guest` is
/// `None` when the instance could not be (re)built; the episode then fails
/// it with `fault`.
pub async fn run(
    mut guest: Option<&mut Orchestrator>,
    instance: &InstanceRow,
    history_len: usize,
    messages: Vec<(Origin, Message)>,
    build_fault: Option<GuestFault>,
) -> Episode {
    let now = now_ms();
    let mut ep = Builder::new(instance, history_len);
    ep.push(HistoryEvent::OrchestratorStarted { timestamp: now });
    if let Some(guest) = guest.as_deref_mut() {
        guest.reveal(&HistoryEvent::OrchestratorStarted { timestamp: now });
    }
    if let Some(fault) = build_fault {
        ep.fail(fault);
    }
    // While suspended, only resume and terminate act; everything else is
    // held in the inbox, and handled in arrival order once resumed.
    let mut suspended = instance.status == RuntimeStatus::Suspended;
    let mut queue: VecDeque<(Origin, Message)> = messages.into();
    let mut held = Vec::new();
    while let Some((origin, message)) = queue.pop_front() {
        if ep.finished() {
            ep.consume(origin);
            if let Some(restart) = &mut ep.commit.continue_as_new {
                if message.outlives_generation() {
                    restart.carried.push(message);
                }
            }
            continue;
        }
        let stale = message.outcome_of().is_some_and(|seq| {
            guest
                .as_deref_mut()
                .is_some_and(|guest| !guest.replay().has_step(seq))
        });
        if stale {
            // The outcome of a step this generation never took (one of an
            // earlier generation, arriving late): nothing waits for it.
            ep.consume(origin);
            continue;
        }
        match message {
            Message::Terminate { reason } => {
                ep.consume(origin);
                ep.push(HistoryEvent::ExecutionTerminated {
                    reason: reason.clone(),
                });
                ep.finish(RuntimeStatus::Terminated, json_string(&reason));
            }
            Message::Resume { reason } => {
                ep.consume(origin);
                if suspended {
                    suspended = false;
                    ep.push(HistoryEvent::ExecutionResumed { reason });
                    while let Some(waiting) = held.pop() {
                        queue.push_front(waiting);
                    }
                }
            }
            message if suspended => held.push((origin, message)),
            Message::Suspend { reason } => {
                ep.consume(origin);
                suspended = true;
                ep.push(HistoryEvent::ExecutionSuspended { reason });
            }
            message => {
                ep.consume(origin);
                if let Some(guest) = guest.as_deref_mut() {
                    ep.deliver(guest, message).await;
                }
            }
        }
    }
    // Held outcomes not in the inbox go there now, to wait with the rest.
    for (origin, message) in held {
        if let Origin::Activity(seq) = origin {
            ep.commit.held_activities.push((seq, message));
        }
    }
    if let (Some(restart), Some(guest)) = (&mut ep.commit.continue_as_new, guest.as_deref_mut()) {
        // Events that arrived but no wait took go to the next round first,
        // then the messages this episode did not get to.
        let unconsumed = guest.replay().take_unconsumed_events();
        let mut carried: Vec<Message> = unconsumed
            .into_iter()
            .map(|(name, input, sender)| Message::EventRaised {
                name,
                input,
                sender,
            })
            .collect();
        carried.append(&mut restart.carried);
        restart.carried = carried;
    }
    if !ep.finished() {
        ep.commit.status = Some(if suspended {
            RuntimeStatus::Suspended
        } else {
            RuntimeStatus::Running
        });
    }
    if let Some(guest) = guest {
        ep.commit.cancelled_timers = guest.replay().take_cancelled_timers();
        ep.commit.custom_status = Some(guest.replay().custom_status());
    }
    let waiting = !ep.finished();
    Episode {
        commit: ep.commit,
        waiting,
    }
}

struct Builder<'a> {
    instance: &'a InstanceRow,
    commit: EpisodeCommit,
}

impl<'a> Builder<'a> {
    fn new(instance: &'a InstanceRow, history_len: usize) -> Self {
        Builder {
            instance,
            commit: EpisodeCommit {
                instance_id: instance.id.clone(),
                instance_pk: instance.pk,
                after_episodes: instance.episodes,
                first_position: history_len,
                ..EpisodeCommit::default()
            },
        }
    }

    fn consume(&mut self, origin: Origin) {
        match origin {
            Origin::Inbox(id) => self.commit.consumed.push(id),
            Origin::Activity(seq) => self.commit.consumed_activities.push(seq),
            Origin::Created => {}
        }
    }

    fn push(&mut self, event: HistoryEvent) {
        self.commit.events.push(event);
    }

    /// Nothing more happens in this run of the orchestration: it ended, or
    /// it starts over.
    fn finished(&self) -> bool {
        self.commit.status.is_some_and(RuntimeStatus::is_terminal)
            || self.commit.continue_as_new.is_some()
    }

    fn finish(&mut self, status: RuntimeStatus, output: String) {
        self.commit.status = Some(status);
        self.commit.output = Some(output);
    }

    fn fail(&mut self, fault: GuestFault) {
        self.push(HistoryEvent::ExecutionFailed {
            error: fault.0.clone(),
        });
        self.finish(RuntimeStatus::Failed, json_string(&fault.0));
    }

    /// Hands one message to the guest and records what it did.
    async fn deliver(&mut self, guest: &mut Orchestrator, message: Message) {
        let Some(event) = message.into_event(&self.instance.name) else {
            return;
        };
        guest.reveal(&event);
        let poll = match &event {
            HistoryEvent::ExecutionStarted { name, input, .. } => guest.start(name, input).await,
            _ => guest.resume().await,
        };
        self.push(event);
        self.take_actions(guest);
        match poll {
            Ok(PollResult::Pending) => {}
            Ok(PollResult::Completed(output)) => {
                self.push(HistoryEvent::ExecutionCompleted {
                    output: output.clone(),
                });
                self.finish(RuntimeStatus::Completed, output);
            }
            Ok(PollResult::Failed(error)) => self.fail(GuestFault(error)),
            Ok(PollResult::ContinuedAsNew(input)) => {
                self.push(HistoryEvent::ExecutionContinuedAsNew {
                    input: input.clone(),
                });
                self.commit.status = Some(RuntimeStatus::ContinuedAsNew);
                self.commit.continue_as_new = Some(ContinueAsNew {
                    input,
                    first_seq: guest.replay().next_seq(),
                    carried: Vec::new(),
                });
            }
            Err(fault) => self.fail(fault),
        }
    }

    /// Records the steps the guest took and the work they ask for.
    fn take_actions(&mut self, guest: &mut Orchestrator) {
        let timestamp = guest.replay().now();
        for (seq, action) in guest.replay().take_new_actions() {
            match &action {
                Action::Activity { name, input, retry } => {
                    self.commit.activities.push(ActivityRow {
                        instance_id: self.instance.id.clone(),
                        instance_pk: self.instance.pk,
                        seq,
                        version: self.instance.version.clone(),
                        name: name.clone(),
                        input: input.clone(),
                        retry: retry.unwrap_or(crate::engine::history::RetryPolicy::ONCE),
                        attempt: 0,
                        run_at: timestamp,
                        trace: self.instance.trace,
                    })
                }
                Action::Timer { fire_at } => self.commit.timers.push((seq, *fire_at)),
                Action::SubOrchestration {
                    name,
                    input,
                    instance_id,
                } => self.commit.children.push(ChildStart {
                    parent_seq: seq,
                    id: instance_id.clone(),
                    name: name.clone(),
                    input: input.clone(),
                    version: None,
                    trace: None,
                }),
                Action::EventWait { .. } | Action::Setting { .. } | Action::Patch { .. } => {}
            }
            self.push(HistoryEvent::ActionTaken {
                seq,
                action,
                timestamp,
            });
        }
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}
