# Orchestrators the end-to-end tests use to prove the Python SDK keeps
# Durango's guarantees: replay-safe clocks and randomness, and the step
# check catching code that takes another step on replay.
import random
import time
from datetime import datetime, timedelta

import durango as df
from wit_world.imports import orchestration as host

app = df.DFApp()

# An instance whose id starts with "no-advance" takes its replays as a guest
# built before `advance` existed does: never advanced, resumed by the host
# once per history event (its fallback, tested in durability.rs).
_advance = host.advance
host.advance = lambda: not host.instance_id().startswith("no-advance") and _advance()


@app.orchestration_trigger(context_name="context")
def PyNonDeterministic(context: df.DurableOrchestrationContext):
    """Takes another first step on replay than it took the first time."""
    if context.is_replaying:
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=1))
    else:
        yield context.call_activity("PyEcho", "first")
    return (yield context.wait_for_external_event("Continue"))


@app.orchestration_trigger(context_name="context")
def PyClockAndRandom(context: df.DurableOrchestrationContext):
    """Reads Python's own clock and randomness: the sandbox makes them
    replay-safe. What it saw first is also its custom status, as seen on
    the first run; a replay must see the same. Each reading starts with
    the clock in milliseconds."""

    def look():
        millis = int(time.time() * 1000)
        return "/".join(str(value) for value in [millis, datetime.now().isoformat(), random.random()])

    seen = look()
    if not context.is_replaying:
        context.set_custom_status(seen)
    yield context.wait_for_external_event("Continue")
    return f"{seen} {look()}"


@app.orchestration_trigger(context_name="context")
def PyRetries(context: df.DurableOrchestrationContext):
    """Calls an activity that fails twice, with `max_attempts` attempts."""
    max_attempts = context.get_input()
    return (yield context.call_activity_with_retry("PyFailsTwice", df.RetryOptions(50, max_attempts)))


@app.activity_trigger(input_name="ignored")
def PyFailsTwice(ignored, context: df.ActivityContext):
    if context.attempt < 3:
        raise RuntimeError(f"attempt {context.attempt} failed on purpose")
    return context.attempt


@app.orchestration_trigger(context_name="context")
def PyCounter(context: df.DurableOrchestrationContext):
    """An eternal orchestration: adds each Add event, a round each, until 10."""
    total = context.get_input()
    context.set_custom_status(total)
    if total >= 10:
        return total
    add = yield context.wait_for_external_event("Add")
    context.continue_as_new(total + add)


@app.orchestration_trigger(context_name="context")
def PyFanOut(context: df.DurableOrchestrationContext):
    """Activities in parallel, a sub-orchestration, and a failed one caught."""
    echoes = yield context.task_all([context.call_activity("PyShout", name) for name in context.get_input()])
    child = yield context.call_sub_orchestrator("PyRetries", 3)
    try:
        yield context.call_sub_orchestrator("PyRetries", 2, f"{context.instance_id}-failing")
        caught = None
    except df.TaskFailedError as failure:
        caught = str(failure)
    return {"echoes": echoes, "child": child, "caught": caught}


@app.function_name(name="PyShout")
@app.activity_trigger(input_name="name")
def shout(name: str) -> str:
    return name.upper()


@app.orchestration_trigger(context_name="context")
def PyWaitOrTimeout(context: df.DurableOrchestrationContext):
    """Waits for "Answer" against an hour's timer (the benchmark's
    interaction scenario parks instances on it, as on the Rust
    WaitOrTimeout)."""
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    answer = context.wait_for_external_event("Answer")
    winner = yield context.task_any([answer, timer])
    if winner == answer:
        timer.cancel()
        return True
    return False


@app.orchestration_trigger(context_name="context")
def PyCollect(context: df.DurableOrchestrationContext):
    """Reads a setting `reads` times, then takes `count` Tick events (the
    benchmark's replay scenario, as on the Rust Collect)."""
    count, reads = context.get_input()
    for _ in range(reads):
        context.get_setting("BenchPadding")
    for _ in range(count):
        yield context.wait_for_external_event("Tick")
    return count


@app.orchestration_trigger(context_name="context")
def PyWhoSent(context: df.DurableOrchestrationContext):
    """Hands out links, then says who raised each of `count` events, as the
    host verified it (WhoSent in Rust)."""
    links = yield context.call_activity("PyHandOutLinks")
    context.set_custom_status(links)
    senders = []
    for _ in range(context.get_input()):
        reply = context.wait_for_external_event("Reply")
        yield reply
        sender = reply.sender
        if "holder" in sender:
            senders.append(f"holder:{sender['holder']}")
        else:
            senders.append({"system-key": "systemKey", "unnamed-link": "unnamedLink"}[sender["kind"]])
    return senders


@app.activity_trigger(input_name="ignored")
def PyHandOutLinks(ignored, context: df.ActivityContext):
    """The instance's general links, and links for the recipient `pat`."""
    return {
        "general": context.send_event_url.replace("{eventName}", "Reply"),
        "generalStatus": context.status_url,
        "named": context.event_link("Reply", "pat"),
        "namedStatus": context.status_link("pat"),
    }


@app.activity_trigger(input_name="value")
def PyEcho(value):
    return value


from durango import App, Orchestrator, Activity  # noqa: E402,F401 (the component's exports)
