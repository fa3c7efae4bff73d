# Orchestrators the end-to-end tests use to prove the Python SDK keeps
# Durango's guarantees: replay-safe clocks and randomness, and the step
# check catching code that takes another step on replay.
import random
import time
from datetime import datetime, timedelta

import durango as df

app = df.DFApp()


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
    the first run; a replay must see the same."""

    def look():
        return "/".join(str(value) for value in [time.time(), datetime.now().isoformat(), random.random()])

    seen = look()
    if not context.is_replaying:
        context.set_custom_status(seen)
    yield context.wait_for_external_event("Continue")
    return f"{seen} {look()}"


@app.activity_trigger(input_name="value")
def PyEcho(value):
    return value


from durango import App, Orchestrator, Activity  # noqa: E402,F401 (the component's exports)
