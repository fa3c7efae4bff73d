"""Orchestrations: the context, the tasks an orchestrator yields, and the
driver that runs a generator orchestrator against the host.

Every host call here is one of the world's deterministic calls
(`durango:orchestration/orchestration`): on replay it answers what it
answered the first time, and the host checks each step against history.
"""

import json
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional

from componentize_py_types import Ok
from wit_world.imports import orchestration as host
from wit_world.imports import durango_orchestration_types as types


class TaskFailedError(Exception):
    """What yielding a failed task raises in the orchestrator: the activity's
    (or sub-orchestration's) error message."""


class _Pending:
    """A task still open: the orchestrator waits."""


PENDING = _Pending()


class Task:
    """A unit of durable work the orchestrator yields and the host completes."""

    def __init__(self, task_id: int):
        self.id = task_id

    def _outcome(self):
        return host.task_result(self.id)

    @property
    def is_completed(self) -> bool:
        return self._outcome() is not None

    @property
    def is_faulted(self) -> bool:
        outcome = self._outcome()
        return outcome is not None and not isinstance(outcome, Ok)

    @property
    def result(self) -> Any:
        """The completed task's value (JSON-decoded); None while open or failed."""
        outcome = self._outcome()
        return json.loads(outcome.value) if isinstance(outcome, Ok) else None

    def _settle(self):
        """What yielding this task gives back: PENDING, or `(value, error)`."""
        outcome = self._outcome()
        if outcome is None:
            return PENDING
        if isinstance(outcome, Ok):
            return json.loads(outcome.value), None
        return None, TaskFailedError(outcome.value)


class TimerTask(Task):
    """A durable timer; `cancel()` drops it when the orchestration moves on."""

    def __init__(self, task_id: int):
        super().__init__(task_id)
        self._cancelled = False

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        if not self.is_completed:
            host.cancel_timer(self.id)
            self._cancelled = True


class EventTask(Task):
    """An external event wait. `sender` says who raised the event, as the
    host verified it: {"holder": id} for a link made for someone, else
    {"kind": "system-key" | "unnamed-link"}; None while open."""

    @property
    def sender(self) -> Optional[dict]:
        sender = host.task_sender(self.id)
        if sender is None:
            return None
        if isinstance(sender, types.EventSender_Holder):
            return {"holder": sender.value}
        if isinstance(sender, types.EventSender_SystemKey):
            return {"kind": "system-key"}
        return {"kind": "unnamed-link"}


def _only_tasks(tasks, what: str) -> List[Task]:
    listed = list(tasks)
    for task in listed:
        if not isinstance(task, Task):
            raise TypeError(
                f"{what} takes tasks made by the context (activities, timers, "
                "events, sub-orchestrations)"
            )
    return listed


class _WhenAny:
    """The first of several tasks to complete: yields that task."""

    def __init__(self, tasks):
        self.tasks = _only_tasks(tasks, "task_any")
        if not self.tasks:
            # None can complete first: the orchestration would wait for ever.
            raise ValueError("task_any needs at least one task")

    def _settle(self):
        index = host.when_any([task.id for task in self.tasks])
        return PENDING if index is None else (self.tasks[index], None)


class _WhenAll:
    """All of several tasks: yields their values in order, or raises the
    first failure as soon as one fails."""

    def __init__(self, tasks):
        self.tasks = _only_tasks(tasks, "task_all")

    def _settle(self):
        settled = [task._settle() for task in self.tasks]
        for outcome in settled:
            if outcome is not PENDING and outcome[1] is not None:
                return outcome
        if any(outcome is PENDING for outcome in settled):
            return PENDING
        return [value for value, _ in settled], None


class RetryOptions:
    """How the host retries a failing activity, as `df.RetryOptions`."""

    def __init__(self, first_retry_interval_in_milliseconds: int, max_number_of_attempts: int):
        self.first_retry_interval_in_milliseconds = first_retry_interval_in_milliseconds
        self.max_number_of_attempts = max_number_of_attempts
        self.backoff_coefficient = 1.0
        self.max_retry_interval_in_milliseconds = 0
        self.retry_timeout_in_milliseconds = 0

    def _policy(self) -> types.RetryPolicy:
        def millis(value) -> int:
            return max(0, round(value))

        if self.max_number_of_attempts < 1:
            raise ValueError("RetryOptions: max_number_of_attempts must be at least 1")
        return types.RetryPolicy(
            max_attempts=int(self.max_number_of_attempts),
            first_retry_interval_ms=millis(self.first_retry_interval_in_milliseconds),
            backoff_coefficient=float(self.backoff_coefficient),
            max_retry_interval_ms=millis(self.max_retry_interval_in_milliseconds),
            attempt_timeout_ms=millis(self.retry_timeout_in_milliseconds),
        )


def _json(value: Any) -> str:
    return json.dumps(value)


def _epoch_ms(moment) -> int:
    """A datetime (naive ones are UTC, as `current_utc_datetime` plus a
    timedelta is in Durable Functions) or milliseconds since the epoch."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0, round(moment.timestamp() * 1000))
    if isinstance(moment, (int, float)) and not isinstance(moment, bool):
        return max(0, round(moment))
    raise TypeError("create_timer takes a datetime or milliseconds since the epoch")


class DurableOrchestrationContext:
    """`context` in an orchestrator, as in azure-functions-durable."""

    def __init__(self, orchestrator_name: str, orchestrator_input: Any):
        self.function_name = orchestrator_name
        self._input = orchestrator_input
        self._continued_with: Optional[str] = None

    @property
    def instance_id(self) -> str:
        return host.instance_id()

    @property
    def is_replaying(self) -> bool:
        return host.is_replaying()

    @property
    def current_utc_datetime(self) -> datetime:
        """The orchestration's clock: when the current episode started (UTC)."""
        return datetime.fromtimestamp(host.current_time() / 1000, tz=timezone.utc)

    def get_input(self) -> Any:
        return self._input

    def new_uuid(self) -> str:
        return host.new_guid()

    def call_activity(self, name: str, input_: Any = None) -> Task:
        return Task(host.call_activity(name, _json(input_), None))

    def call_activity_with_retry(self, name: str, retry_options: RetryOptions, input_: Any = None) -> Task:
        return Task(host.call_activity(name, _json(input_), retry_options._policy()))

    def call_sub_orchestrator(self, name: str, input_: Any = None, instance_id: Optional[str] = None) -> Task:
        return Task(host.call_sub_orchestrator(name, _json(input_), instance_id))

    def call_sub_orchestrator_with_retry(
        self, name: str, retry_options: RetryOptions, input_: Any = None, instance_id: Optional[str] = None
    ) -> Task:
        # The host does not retry sub-orchestrations: it runs the child once.
        return self.call_sub_orchestrator(name, input_, instance_id)

    def create_timer(self, fire_at) -> TimerTask:
        """A durable timer firing at `fire_at` (a datetime, or milliseconds since the epoch)."""
        return TimerTask(host.create_timer(_epoch_ms(fire_at)))

    def wait_for_external_event(self, name: str) -> EventTask:
        return EventTask(host.wait_for_event(name))

    def task_any(self, activities) -> _WhenAny:
        return _WhenAny(activities)

    def task_all(self, activities) -> _WhenAll:
        return _WhenAll(activities)

    def set_custom_status(self, status: Any) -> None:
        host.set_custom_status(None if status is None else _json(status))

    def continue_as_new(self, input_: Any) -> None:
        """Start over with `input_` once the orchestrator returns (an eternal
        orchestration's next round)."""
        self._continued_with = _json(input_)

    def get_setting(self, name: str) -> Optional[str]:
        """A non-secret app setting, recorded in history on first read."""
        return host.get_setting(name)

    def patched(self, name: str) -> bool:
        """Whether this instance runs the code after patch `name` (see the README)."""
        return host.patched(name)

    @property
    def started_version(self) -> str:
        return host.started_version()

    def log(self, message: str, level: str = "info") -> None:
        """A log line written once, not again on replay."""
        levels = {
            "trace": types.LogLevel.TRACE,
            "debug": types.LogLevel.DEBUG,
            "info": types.LogLevel.INFO,
            "warn": types.LogLevel.WARN,
            "warning": types.LogLevel.WARN,
            "error": types.LogLevel.ERROR,
        }
        if level not in levels:
            raise ValueError(f"log level {level!r} is not one of {', '.join(levels)}")
        host.log(levels[level], str(message))


def _error_words(error: BaseException) -> str:
    words = str(error)
    return words if words else type(error).__name__


class Running:
    """An orchestration the guest keeps in memory between the host's calls."""

    def __init__(self, generator, context: DurableOrchestrationContext):
        self.generator = generator
        self.context = context
        self.waiting_on = None
        self.advancing = True

    def _finished(self, output: Any):
        if self.context._continued_with is not None:
            return types.PollResult_ContinuedAsNew(self.context._continued_with)
        try:
            return types.PollResult_Completed(_json(output))
        except (TypeError, ValueError) as error:
            return types.PollResult_Failed(f"the orchestrator's output is not JSON: {error}")

    def drive(self, value: Any, error: Optional[BaseException]):
        """Runs the generator until it waits for an open task or finishes."""
        while True:
            try:
                if error is not None:
                    step = self.generator.throw(error)
                else:
                    step = self.generator.send(value)
            except StopIteration as stop:
                return self._finished(stop.value)
            except Exception as failure:  # the orchestrator failed: its words
                return types.PollResult_Failed(_error_words(failure))
            settle: Optional[Callable] = getattr(step, "_settle", None)
            if settle is None:
                value, error = None, TypeError(
                    "an orchestrator yields tasks made by the context (call_activity, "
                    "create_timer, wait_for_external_event, task_any, task_all)"
                )
                continue
            settled = self._settle_or_advance(settle)
            if settled is PENDING:
                self.waiting_on = step
                return types.PollResult_Pending()
            value, error = settled

    def resume(self):
        settled = self._settle_or_advance(self.waiting_on._settle)
        if settled is PENDING:
            return types.PollResult_Pending()
        return self.drive(*settled)

    def _settle_or_advance(self, settle: Callable):
        """What a yielded task gives now. While the host replays history
        into this guest, each event it reveals (`advance`) is looked at in
        this same call; once it has none left, the orchestration runs live
        and the host is not asked again (it resumes the guest for each new
        event)."""
        settled = settle()
        while settled is PENDING and self.advancing:
            self.advancing = host.advance()
            if self.advancing:
                settled = settle()
        return settled

    @staticmethod
    def start(name: str, handler: Callable, argument: str, orchestrator_input: Any):
        """Calls the orchestrator; a generator is driven, a plain function's
        return value is the output. Returns (running or None, poll result)."""
        context = DurableOrchestrationContext(name, orchestrator_input)
        try:
            produced = handler(**{argument: context})
        except Exception as failure:
            return None, types.PollResult_Failed(_error_words(failure))
        running = Running(produced, context)
        if not hasattr(produced, "send") or not hasattr(produced, "throw"):
            return None, running._finished(produced)
        # A generator's first step takes None.
        return running, running.drive(None, None)
