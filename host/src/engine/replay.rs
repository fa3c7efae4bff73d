//! The deterministic core of an orchestration: answers the guest's host calls
//! from history, records new steps, and checks replayed steps against the
//! recorded ones. It knows nothing of wasm or SQLite, so it is tested alone.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sha2::{Digest, Sha256};

use super::history::{Action, HistoryEvent, RetryPolicy, Sender};

/// Code and history disagree: the instance cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nondeterminism(pub String);

impl std::fmt::Display for Nondeterminism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "non-deterministic orchestrator: {}", self.0)
    }
}

impl std::error::Error for Nondeterminism {}

type Outcome = Result<String, String>;

/// Where code and history first disagreed, in the step check's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub step: u32,
    /// The step as history recorded it.
    pub history: String,
    /// The step the code asked for instead.
    pub code: String,
}

/// The replay state of one orchestration instance.
#[derive(Debug)]
pub struct Replay {
    instance_id: String,
    /// This generation's first step number (see `ExecutionStarted`).
    first_seq: u32,
    /// Steps recorded in history, from `first_seq` on.
    recorded: Vec<Action>,
    next_seq: u32,
    /// Steps taken beyond history, not yet handed to a commit.
    new_actions: Vec<(u32, Action)>,
    /// Completed tasks with the order in which they completed.
    results: HashMap<u32, (u64, Outcome)>,
    completions: u64,
    /// Events that arrived before anyone waited for them, by name: data
    /// and sender.
    buffered: HashMap<String, VecDeque<(String, Sender)>>,
    /// Who raised the event that completed each completed wait.
    senders: HashMap<u32, Sender>,
    /// Open waits, oldest step first.
    waits: BTreeMap<u32, String>,
    timers: Vec<u32>,
    cancelled: Vec<u32>,
    now: i64,
    replaying: bool,
    guids: u64,
    custom_status: Option<String>,
    divergence: Option<Divergence>,
    /// Where the first move recorded in history came from, if any.
    moved_from: Option<String>,
    /// The version the instance is pinned to now.
    pinned: String,
    /// History a replay has yet to reveal, oldest first (see
    /// [`Replay::reveal_next`]).
    unrevealed: VecDeque<HistoryEvent>,
}

/// What a guest being replayed acts on next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    /// An execution starts: the guest is started with this orchestrator
    /// and input.
    Start { name: String, input: String },
    /// Something the guest may wait for happened: a task completed or
    /// failed, a timer fired, an event arrived.
    Outcome,
}

impl Replay {
    /// A replay over `history`; `replaying` stays true until [`Replay::caught_up`].
    pub fn new(instance_id: &str, history: &[HistoryEvent]) -> Replay {
        let mut first_seq = 0;
        let mut recorded = Vec::new();
        let mut moved_from = None;
        for event in history {
            match event {
                HistoryEvent::ExecutionStarted {
                    first_seq: first, ..
                } => first_seq = *first,
                HistoryEvent::VersionChanged { from, .. } if moved_from.is_none() => {
                    moved_from = Some(from.clone());
                }
                HistoryEvent::ActionTaken { seq, action, .. } => {
                    debug_assert_eq!(
                        (*seq - first_seq) as usize,
                        recorded.len(),
                        "steps are numbered in order"
                    );
                    recorded.push(action.clone());
                }
                _ => {}
            }
        }
        Replay {
            instance_id: instance_id.to_string(),
            replaying: !recorded.is_empty() || !history.is_empty(),
            first_seq,
            recorded,
            next_seq: first_seq,
            new_actions: Vec::new(),
            results: HashMap::new(),
            completions: 0,
            buffered: HashMap::new(),
            senders: HashMap::new(),
            waits: BTreeMap::new(),
            timers: Vec::new(),
            cancelled: Vec::new(),
            now: 0,
            guids: 0,
            custom_status: None,
            divergence: None,
            moved_from,
            pinned: String::new(),
            unrevealed: VecDeque::new(),
        }
    }

    /// Queues `history` to be revealed, in order, by [`Replay::reveal_next`]
    /// (the host's replay loop, and the guest's `advance` calls).
    pub fn queue(&mut self, history: Vec<HistoryEvent>) {
        self.unrevealed.extend(history);
    }

    /// Reveals queued history up to and including the next event a guest
    /// acts on, and says what that is; `None` once the queue is empty. An
    /// execution's start is revealed only when `starts` is true: a guest
    /// asking to `advance` from inside a running execution has to return
    /// first, so that the host starts the next one.
    pub fn reveal_next(&mut self, starts: bool) -> Option<Cue> {
        loop {
            if !starts
                && matches!(
                    self.unrevealed.front(),
                    Some(HistoryEvent::ExecutionStarted { .. })
                )
            {
                return None;
            }
            let event = self.unrevealed.pop_front()?;
            self.reveal(&event);
            match event {
                HistoryEvent::ExecutionStarted { name, input, .. } => {
                    return Some(Cue::Start { name, input })
                }
                HistoryEvent::TaskCompleted { .. }
                | HistoryEvent::TaskFailed { .. }
                | HistoryEvent::TimerFired { .. }
                | HistoryEvent::EventRaised { .. } => return Some(Cue::Outcome),
                _ => {}
            }
        }
    }

    /// The version the instance is pinned to now (what it started on,
    /// unless history says it moved).
    pub fn pinned_to(mut self, version: &str) -> Replay {
        self.pinned = version.to_string();
        self
    }

    /// The version this generation started on: the first move's origin,
    /// if history has one, else the version it is pinned to.
    pub fn started_version(&self) -> &str {
        self.moved_from.as_deref().unwrap_or(&self.pinned)
    }

    /// Whether the code after patch `name` runs: history's marker says yes;
    /// another step recorded here says older code went on without it (no
    /// step is taken); beyond history, the patch is new code's and is
    /// recorded.
    pub fn patched(&mut self, name: &str) -> Result<bool, Nondeterminism> {
        let here = (self.next_seq - self.first_seq) as usize;
        match self.recorded.get(here) {
            Some(Action::Patch { name: marked }) if marked == name => {
                self.next_seq += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.take(Action::Patch {
                    name: name.to_string(),
                })?;
                Ok(true)
            }
        }
    }

    /// History is replayed; what comes now is new.
    pub fn caught_up(&mut self) {
        self.replaying = false;
    }

    pub fn is_replaying(&self) -> bool {
        self.replaying
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn now(&self) -> i64 {
        self.now
    }

    /// Makes an event visible to the guest, as history orders it.
    pub fn reveal(&mut self, event: &HistoryEvent) {
        match event {
            HistoryEvent::OrchestratorStarted { timestamp } => self.now = *timestamp,
            HistoryEvent::TaskCompleted { seq, result, .. } => {
                self.complete(*seq, Ok(result.clone()))
            }
            HistoryEvent::TaskFailed { seq, error, .. } => self.complete(*seq, Err(error.clone())),
            HistoryEvent::TimerFired { seq } => self.complete(*seq, Ok("null".into())),
            HistoryEvent::EventRaised {
                name,
                input,
                sender,
            } => {
                let waiting = self.waits.iter().find(|(_, n)| *n == name).map(|(s, _)| *s);
                match waiting {
                    Some(seq) => self.complete_wait(seq, input.clone(), sender.clone()),
                    None => self
                        .buffered
                        .entry(name.clone())
                        .or_default()
                        .push_back((input.clone(), sender.clone())),
                }
            }
            HistoryEvent::ExecutionStarted { first_seq, .. } => {
                // A new generation, revealed before it takes any step.
                self.first_seq = *first_seq;
                self.next_seq = *first_seq;
            }
            HistoryEvent::ActionTaken { .. }
            | HistoryEvent::ExecutionCompleted { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ExecutionTerminated { .. }
            | HistoryEvent::ExecutionContinuedAsNew { .. }
            | HistoryEvent::ExecutionSuspended { .. }
            | HistoryEvent::ExecutionResumed { .. }
            | HistoryEvent::ExecutionRewound { .. }
            | HistoryEvent::VersionChanged { .. } => {}
        }
    }

    fn complete_wait(&mut self, seq: u32, input: String, sender: Sender) {
        // The first completion stands, sender included (see `complete`).
        self.senders.entry(seq).or_insert(sender);
        self.complete(seq, Ok(input));
    }

    fn complete(&mut self, seq: u32, outcome: Outcome) {
        if self.results.contains_key(&seq) {
            return; // a duplicate delivery (an activity re-run after a crash)
        }
        self.waits.remove(&seq);
        self.completions += 1;
        self.results.insert(seq, (self.completions, outcome));
    }

    /// Whether this generation took step `seq` (so an outcome for it is
    /// awaited, or was).
    pub fn has_step(&self, seq: u32) -> bool {
        (self.first_seq..self.next_seq).contains(&seq)
    }

    /// Where the code first took another step than history has, if it did.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }

    /// History's steps of this generation that the code has not taken
    /// (again) so far.
    pub fn steps_not_taken(&self) -> usize {
        self.recorded
            .len()
            .saturating_sub((self.next_seq - self.first_seq) as usize)
    }

    /// The number the next step will get.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// The guest takes its next step: checked against history when replaying,
    /// recorded as new otherwise. Returns the step number and the step as
    /// history has it (a setting's recorded value, say).
    fn take(&mut self, action: Action) -> Result<(u32, Action), Nondeterminism> {
        // A patch marker the code no longer asks for (the `patched` call
        // went once no older instance needed it) is passed over.
        while let Some(Action::Patch { .. }) =
            self.recorded.get((self.next_seq - self.first_seq) as usize)
        {
            if matches!(action, Action::Patch { .. }) {
                break;
            }
            self.next_seq += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.recorded.get((seq - self.first_seq) as usize) {
            Some(recorded) if recorded.same_step(&action) => Ok((seq, recorded.clone())),
            Some(recorded) => {
                let divergence = Divergence {
                    step: seq,
                    history: recorded.describe(),
                    code: action.describe(),
                };
                let error = Nondeterminism(format!(
                    "step {seq}: history has {}, code asked for {}",
                    divergence.history, divergence.code
                ));
                self.divergence.get_or_insert(divergence);
                Err(error)
            }
            None => {
                self.new_actions.push((seq, action.clone()));
                Ok((seq, action))
            }
        }
    }

    pub fn call_activity(
        &mut self,
        name: &str,
        input: &str,
        retry: Option<RetryPolicy>,
    ) -> Result<u32, Nondeterminism> {
        let action = Action::Activity {
            name: name.to_string(),
            input: input.to_string(),
            retry,
        };
        Ok(self.take(action)?.0)
    }

    /// Starts a child orchestration; its id defaults to `{parent}:{step}`.
    pub fn call_sub_orchestrator(
        &mut self,
        name: &str,
        input: &str,
        instance_id: Option<String>,
    ) -> Result<u32, Nondeterminism> {
        let instance_id =
            instance_id.unwrap_or_else(|| format!("{}:{}", self.instance_id, self.next_seq));
        let action = Action::SubOrchestration {
            name: name.to_string(),
            input: input.to_string(),
            instance_id,
        };
        Ok(self.take(action)?.0)
    }

    pub fn create_timer(&mut self, fire_at: i64) -> Result<u32, Nondeterminism> {
        let (seq, _) = self.take(Action::Timer { fire_at })?;
        self.timers.push(seq);
        Ok(seq)
    }

    pub fn cancel_timer(&mut self, seq: u32) {
        if self.timers.contains(&seq) && !self.results.contains_key(&seq) {
            self.cancelled.push(seq);
        }
    }

    pub fn wait_for_event(&mut self, name: &str) -> Result<u32, Nondeterminism> {
        let (seq, _) = self.take(Action::EventWait {
            name: name.to_string(),
        })?;
        let early = self.buffered.get_mut(name).and_then(VecDeque::pop_front);
        match early {
            Some((input, sender)) => self.complete_wait(seq, input, sender),
            None => {
                self.waits.insert(seq, name.to_string());
            }
        }
        Ok(seq)
    }

    /// A setting as history recorded it, or `current` when first read.
    pub fn setting(
        &mut self,
        name: &str,
        current: Option<String>,
    ) -> Result<Option<String>, Nondeterminism> {
        let action = Action::Setting {
            name: name.to_string(),
            value: current,
        };
        match self.take(action)?.1 {
            Action::Setting { value, .. } => Ok(value),
            _ => unreachable!("take returns the same kind of step it was given"),
        }
    }

    /// Who raised the event that completed the wait at `seq`, if it did.
    pub fn event_sender(&self, seq: u32) -> Option<&Sender> {
        self.senders.get(&seq)
    }

    pub fn task_result(&self, seq: u32) -> Option<Outcome> {
        self.results.get(&seq).map(|(_, outcome)| outcome.clone())
    }

    /// Index into `tasks` of the one that completed first.
    pub fn when_any(&self, tasks: &[u32]) -> Option<u32> {
        tasks
            .iter()
            .enumerate()
            .filter_map(|(i, seq)| self.results.get(seq).map(|(order, _)| (*order, i)))
            .min()
            .map(|(_, i)| i as u32)
    }

    pub fn when_all(&self, tasks: &[u32]) -> bool {
        tasks.iter().all(|seq| self.results.contains_key(seq))
    }

    /// A UUID from the instance id and a counter: the same on every replay.
    pub fn new_guid(&mut self) -> String {
        self.guids += 1;
        let digest = Sha256::digest(format!("{}:{}", self.instance_id, self.guids));
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x50; // version 5 layout (name-based, SHA)
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    pub fn set_custom_status(&mut self, status: Option<String>) {
        self.custom_status = status;
    }

    pub fn custom_status(&self) -> Option<String> {
        self.custom_status.clone()
    }

    /// Steps taken since the last call, for the episode's commit.
    pub fn take_new_actions(&mut self) -> Vec<(u32, Action)> {
        std::mem::take(&mut self.new_actions)
    }

    /// Events that arrived but no wait consumed (name, data, sender),
    /// oldest first: carried over, senders and all, when the orchestration
    /// continues as new.
    pub fn take_unconsumed_events(&mut self) -> Vec<(String, String, Sender)> {
        let mut events = Vec::new();
        // Keep arrival order within a name; names in a stable order.
        let mut names: Vec<String> = self.buffered.keys().cloned().collect();
        names.sort();
        for name in names {
            if let Some(queue) = self.buffered.remove(&name) {
                events.extend(
                    queue
                        .into_iter()
                        .map(|(input, sender)| (name.clone(), input, sender)),
                );
            }
        }
        events
    }

    /// Timers cancelled since the last call.
    pub fn take_cancelled_timers(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(name: &str) -> Action {
        Action::Activity {
            name: name.into(),
            input: "null".into(),
            retry: None,
        }
    }

    fn taken(seq: u32, action: Action) -> HistoryEvent {
        HistoryEvent::ActionTaken {
            seq,
            action,
            timestamp: 0,
        }
    }

    fn patch(name: &str) -> Action {
        Action::Patch { name: name.into() }
    }

    #[test]
    fn queued_history_is_revealed_up_to_each_event_a_guest_acts_on() {
        let history = vec![
            HistoryEvent::OrchestratorStarted { timestamp: 10 },
            HistoryEvent::ExecutionStarted {
                name: "O".into(),
                input: "1".into(),
                first_seq: 0,
            },
            taken(0, activity("A")),
            taken(1, Action::EventWait { name: "E".into() }),
            HistoryEvent::OrchestratorStarted { timestamp: 20 },
            HistoryEvent::TaskCompleted {
                seq: 0,
                result: "\"a\"".into(),
                attempts: 0,
            },
            HistoryEvent::OrchestratorStarted { timestamp: 30 },
            HistoryEvent::EventRaised {
                name: "E".into(),
                input: "\"e\"".into(),
                sender: Sender::default(),
            },
        ];
        let mut r = Replay::new("i", &history);
        r.queue(history);
        // A guest asking to advance before its execution started is told
        // to return: the start is the host's to make.
        assert_eq!(r.reveal_next(false), None);
        assert_eq!(
            r.reveal_next(true),
            Some(Cue::Start {
                name: "O".into(),
                input: "1".into()
            })
        );
        assert_eq!(r.now(), 10);
        assert_eq!(r.call_activity("A", "null", None).unwrap(), 0);
        assert_eq!(r.wait_for_event("E").unwrap(), 1);
        assert_eq!(r.task_result(0), None, "not revealed yet");
        // Each outcome comes with its episode's clock.
        assert_eq!(r.reveal_next(false), Some(Cue::Outcome));
        assert_eq!(r.now(), 20);
        assert!(r.task_result(0).is_some());
        assert_eq!(r.task_result(1), None);
        assert_eq!(r.reveal_next(false), Some(Cue::Outcome));
        assert_eq!(r.now(), 30);
        assert!(r.task_result(1).is_some());
        assert_eq!(r.reveal_next(false), None, "history is all revealed");
        assert!(r.is_replaying(), "until the host says it caught up");
    }

    #[test]
    fn a_patch_is_taken_by_new_code_and_not_by_history_older_code_wrote() {
        // Beyond history: new code's patch, recorded as a step.
        let mut new = Replay::new("i", &[taken(0, activity("A"))]);
        assert_eq!(new.call_activity("A", "1", None).unwrap(), 0);
        assert!(new.patched("p").unwrap());
        assert_eq!(new.call_activity("B", "null", None).unwrap(), 2);
        assert_eq!(
            new.take_new_actions(),
            vec![(1, patch("p")), (2, activity("B"))]
        );
        // History older code wrote past this point: no patch, no step.
        let old = [taken(0, activity("A")), taken(1, activity("Old"))];
        let mut replay = Replay::new("i", &old);
        replay.call_activity("A", "1", None).unwrap();
        assert!(!replay.patched("p").unwrap());
        assert_eq!(replay.call_activity("Old", "1", None).unwrap(), 1);
        // History with the marker: the same answer on every replay.
        let marked = [
            taken(0, activity("A")),
            taken(1, patch("p")),
            taken(2, activity("B")),
        ];
        let mut replay = Replay::new("i", &marked);
        replay.call_activity("A", "1", None).unwrap();
        assert!(replay.patched("p").unwrap());
        assert_eq!(replay.call_activity("B", "1", None).unwrap(), 2);
        assert!(replay.take_new_actions().is_empty());
        // Code that dropped the `patched` call passes the marker over.
        let mut later = Replay::new("i", &marked);
        later.call_activity("A", "1", None).unwrap();
        assert_eq!(later.call_activity("B", "1", None).unwrap(), 2);
        assert_eq!(later.steps_not_taken(), 0);
    }

    #[test]
    fn steps_history_holds_that_the_code_did_not_take_are_counted() {
        let history = [taken(0, activity("A")), taken(1, activity("B"))];
        let mut r = Replay::new("i", &history);
        r.call_activity("A", "null", None).unwrap();
        assert_eq!(r.steps_not_taken(), 1);
        r.call_activity("B", "null", None).unwrap();
        assert_eq!(r.steps_not_taken(), 0);
    }

    #[test]
    fn the_started_version_survives_a_move() {
        let moved = [HistoryEvent::VersionChanged {
            from: "v1".into(),
            to: "v2".into(),
        }];
        assert_eq!(
            Replay::new("i", &moved).pinned_to("v2").started_version(),
            "v1"
        );
        assert_eq!(
            Replay::new("i", &[]).pinned_to("v2").started_version(),
            "v2"
        );
    }

    #[test]
    fn new_steps_are_recorded_in_order() {
        let mut r = Replay::new("i", &[]);
        assert!(!r.is_replaying());
        assert_eq!(r.call_activity("A", "1", None).unwrap(), 0);
        assert_eq!(r.create_timer(5).unwrap(), 1);
        assert_eq!(r.wait_for_event("E").unwrap(), 2);
        let steps = r.take_new_actions();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[1], (1, Action::Timer { fire_at: 5 }));
        assert!(r.take_new_actions().is_empty());
    }

    #[test]
    fn replayed_steps_match_history_and_are_not_recorded_again() {
        let history = vec![
            taken(0, activity("A")),
            taken(1, Action::Timer { fire_at: 9 }),
        ];
        let mut r = Replay::new("i", &history);
        assert!(r.is_replaying());
        assert_eq!(r.call_activity("A", "null", None).unwrap(), 0);
        assert_eq!(r.create_timer(9).unwrap(), 1);
        assert!(r.take_new_actions().is_empty());
        assert_eq!(r.call_activity("B", "null", None).unwrap(), 2);
        assert_eq!(r.take_new_actions().len(), 1);
    }

    #[test]
    fn a_later_generation_numbers_its_steps_on_from_its_first() {
        let started = HistoryEvent::ExecutionStarted {
            name: "O".into(),
            input: "null".into(),
            first_seq: 5,
        };
        let mut r = Replay::new("i", &[started.clone(), taken(5, activity("A"))]);
        r.reveal(&started);
        assert_eq!(r.call_activity("A", "null", None).unwrap(), 5);
        assert_eq!(r.create_timer(9).unwrap(), 6);
        assert!(r.has_step(6));
        assert!(!r.has_step(4), "an earlier generation's step");
        assert_eq!(r.next_seq(), 7);

        // A fresh generation learns its first step from its start.
        let mut fresh = Replay::new("i", &[]);
        fresh.reveal(&started);
        assert_eq!(fresh.wait_for_event("E").unwrap(), 5);
    }

    #[test]
    fn a_diverging_step_names_both_sides() {
        let history = vec![taken(0, Action::Timer { fire_at: 1 })];
        let mut r = Replay::new("i", &history);
        let err = r
            .call_activity("E4_SendSmsChallenge", "null", None)
            .unwrap_err();
        assert_eq!(
            err.0,
            "step 0: history has timer, code asked for activity E4_SendSmsChallenge"
        );
    }

    #[test]
    fn when_any_follows_completion_order_not_argument_order() {
        let mut r = Replay::new("i", &[]);
        let event = r.wait_for_event("E").unwrap();
        let timer = r.create_timer(10).unwrap();
        assert_eq!(r.when_any(&[event, timer]), None);
        r.reveal(&HistoryEvent::TimerFired { seq: timer });
        r.reveal(&HistoryEvent::EventRaised {
            name: "E".into(),
            input: "1".into(),
            sender: Sender::SystemKey,
        });
        assert_eq!(r.when_any(&[event, timer]), Some(1));
        assert!(r.when_all(&[event, timer]));
        assert_eq!(r.task_result(event), Some(Ok("1".into())));
    }

    #[test]
    fn events_raised_early_are_kept_in_order_and_matched_by_exact_name() {
        let mut r = Replay::new("i", &[]);
        for (name, input) in [("Reply", "1"), ("reply", "2"), ("Reply", "3")] {
            r.reveal(&HistoryEvent::EventRaised {
                name: name.into(),
                input: input.into(),
                sender: Sender::SystemKey,
            });
        }
        let first = r.wait_for_event("Reply").unwrap();
        let second = r.wait_for_event("Reply").unwrap();
        let third = r.wait_for_event("Reply").unwrap();
        assert_eq!(r.task_result(first), Some(Ok("1".into())));
        assert_eq!(r.task_result(second), Some(Ok("3".into())));
        assert_eq!(r.task_result(third), None);
        let lower = r.wait_for_event("reply").unwrap();
        assert_eq!(r.task_result(lower), Some(Ok("2".into())));
    }

    #[test]
    fn an_event_completes_the_oldest_open_wait() {
        let mut r = Replay::new("i", &[]);
        let a = r.wait_for_event("E").unwrap();
        let b = r.wait_for_event("E").unwrap();
        r.reveal(&HistoryEvent::EventRaised {
            name: "E".into(),
            input: "x".into(),
            sender: Sender::SystemKey,
        });
        assert!(r.task_result(a).is_some());
        assert!(r.task_result(b).is_none());
    }

    #[test]
    fn a_wait_gives_the_sender_of_its_event_early_or_late_and_carries_the_rest() {
        let raised = |input: &str, sender: Sender| HistoryEvent::EventRaised {
            name: "E".into(),
            input: input.into(),
            sender,
        };
        let mut r = Replay::new("i", &[]);
        r.reveal(&raised("1", Sender::Holder("alice".into())));
        let early = r.wait_for_event("E").unwrap();
        let late = r.wait_for_event("E").unwrap();
        assert_eq!(r.event_sender(late), None, "not completed yet");
        r.reveal(&raised("2", Sender::SystemKey));
        r.reveal(&raised("3", Sender::UnnamedLink));
        assert_eq!(r.event_sender(early), Some(&Sender::Holder("alice".into())));
        assert_eq!(r.event_sender(late), Some(&Sender::SystemKey));
        let timer = r.create_timer(1).unwrap();
        r.reveal(&HistoryEvent::TimerFired { seq: timer });
        assert_eq!(r.event_sender(timer), None, "a timer has no sender");
        assert_eq!(
            r.take_unconsumed_events(),
            vec![("E".into(), "3".into(), Sender::UnnamedLink)]
        );
    }

    #[test]
    fn events_stored_before_senders_were_read_as_the_least_trusted() {
        let old = r#"{"type":"eventRaised","name":"E","input":"1"}"#;
        let event: HistoryEvent = serde_json::from_str(old).unwrap();
        assert_eq!(
            event,
            HistoryEvent::EventRaised {
                name: "E".into(),
                input: "1".into(),
                sender: Sender::UnnamedLink
            }
        );
        let new = serde_json::to_string(&HistoryEvent::EventRaised {
            name: "E".into(),
            input: "1".into(),
            sender: Sender::Holder("alice".into()),
        })
        .unwrap();
        assert!(new.contains(r#""sender":{"holder":"alice"}"#), "{new}");
    }

    #[test]
    fn settings_replay_their_recorded_value() {
        let mut first = Replay::new("i", &[]);
        assert_eq!(
            first.setting("T", Some("5".into())).unwrap(),
            Some("5".into())
        );
        let (seq, action) = first.take_new_actions().remove(0);
        let mut again = Replay::new("i", &[taken(seq, action)]);
        assert_eq!(
            again.setting("T", Some("7".into())).unwrap(),
            Some("5".into())
        );
    }

    #[test]
    fn cancelling_a_fired_or_unknown_timer_does_nothing() {
        let mut r = Replay::new("i", &[]);
        let t = r.create_timer(1).unwrap();
        let u = r.create_timer(2).unwrap();
        r.reveal(&HistoryEvent::TimerFired { seq: t });
        r.cancel_timer(t);
        r.cancel_timer(99);
        r.cancel_timer(u);
        assert_eq!(r.take_cancelled_timers(), vec![u]);
    }

    #[test]
    fn guids_are_stable_per_instance_and_distinct() {
        let mut a = Replay::new("one", &[]);
        let mut b = Replay::new("one", &[]);
        let first = a.new_guid();
        assert_eq!(first, b.new_guid());
        assert_ne!(first, a.new_guid());
        assert_eq!(first.len(), 36);
        assert_ne!(first, Replay::new("two", &[]).new_guid());
    }

    #[test]
    fn a_duplicate_completion_is_ignored() {
        let mut r = Replay::new("i", &[]);
        let t = r.call_activity("A", "null", None).unwrap();
        r.reveal(&HistoryEvent::TaskCompleted {
            seq: t,
            result: "1".into(),
            attempts: 1,
        });
        r.reveal(&HistoryEvent::TaskCompleted {
            seq: t,
            result: "2".into(),
            attempts: 1,
        });
        assert_eq!(r.task_result(t), Some(Ok("1".into())));
    }
}
