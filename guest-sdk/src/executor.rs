//! Runs the one orchestration a component instance hosts. The host keeps the
//! instance alive while the orchestration waits, so the future stays in guest
//! memory between `start` and each `resume`: no replay on the hot path.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use crate::activity::ActivityContext;
use crate::bindings::durango::orchestration::orchestration as host;
use crate::bindings::durango::orchestration::types::{
    ActivityContext as WitActivityContext, FunctionInfo, FunctionKind, PollResult,
};
use crate::bindings::exports::durango::orchestration::{activity, app, orchestrator};
use crate::context::OrchestrationContext;
use crate::registry::{Orchestration, Registry};

/// Implemented by [`crate::app!`] for the component's function table.
pub trait FunctionApp {
    fn register(registry: &mut Registry);
}

struct Functions(Registry);

// SAFETY: a wasm32-wasip2 component is single-threaded; the registry is
// never touched from another thread.
unsafe impl Send for Functions {}
unsafe impl Sync for Functions {}

static FUNCTIONS: OnceLock<Functions> = OnceLock::new();

fn registry<A: FunctionApp>() -> &'static Registry {
    &FUNCTIONS
        .get_or_init(|| {
            let mut registry = Registry::default();
            A::register(&mut registry);
            Functions(registry)
        })
        .0
}

thread_local! {
    static RUNNING: RefCell<Option<Orchestration>> = const { RefCell::new(None) };
    /// Whether the host may still have history to reveal to the running
    /// orchestration (see `advance`).
    static ADVANCING: Cell<bool> = const { Cell::new(false) };
    /// Set by `continue_as_new`: the next round's input.
    static NEXT_ROUND: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn continue_as_new(input: String) {
    NEXT_ROUND.with(|n| *n.borrow_mut() = Some(input));
}

/// Asks the host for history's next event while it replays history into
/// this instance, so that a replay takes one call; once it has none left,
/// the orchestration runs live and the host is not asked again (it resumes
/// the guest for each new event).
fn advance() -> bool {
    ADVANCING.with(|advancing| {
        advancing.set(advancing.get() && host::advance());
        advancing.get()
    })
}

/// Polls the running orchestration until it finishes or waits (and the
/// host has no more history for it).
fn poll_running() -> PollResult {
    let Some(mut running) = RUNNING.with(|r| r.borrow_mut().take()) else {
        return PollResult::Failed("no orchestration was started in this instance".into());
    };
    let outcome = loop {
        match running
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Pending if advance() => continue,
            Poll::Pending => {
                RUNNING.with(|r| *r.borrow_mut() = Some(running));
                return PollResult::Pending;
            }
            Poll::Ready(outcome) => break outcome,
        }
    };
    if let Some(input) = NEXT_ROUND.with(|n| n.borrow_mut().take()) {
        return PollResult::ContinuedAsNew(input);
    }
    match outcome {
        Ok(output) => PollResult::Completed(output),
        Err(message) => PollResult::Failed(message),
    }
}

impl<A: FunctionApp> app::Guest for A {
    fn functions() -> Vec<FunctionInfo> {
        let registry = registry::<A>();
        let info = |kind| {
            move |name: &String| FunctionInfo {
                name: name.clone(),
                kind,
            }
        };
        registry
            .orchestrators
            .keys()
            .map(info(FunctionKind::Orchestrator))
            .chain(registry.activities.keys().map(info(FunctionKind::Activity)))
            .collect()
    }
}

impl<A: FunctionApp> orchestrator::Guest for A {
    fn start(name: String, input: String) -> PollResult {
        let Some(function) = registry::<A>().orchestrators.get(&name) else {
            return PollResult::Failed(format!("no orchestrator named {name} in this app"));
        };
        let running = function(OrchestrationContext::new(), &input);
        RUNNING.with(|r| *r.borrow_mut() = Some(running));
        ADVANCING.with(|advancing| advancing.set(true));
        poll_running()
    }

    fn resume() -> PollResult {
        poll_running()
    }
}

impl<A: FunctionApp> activity::Guest for A {
    fn run(name: String, input: String, context: WitActivityContext) -> Result<String, String> {
        let Some(function) = registry::<A>().activities.get(&name) else {
            return Err(format!("no activity named {name} in this app"));
        };
        function(&ActivityContext::new(context), &input)
    }
}
