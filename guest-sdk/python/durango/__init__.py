"""Durango's Python SDK: the Durable Functions Python programming model
(azure-functions-durable, v2 decorators, generator orchestrators yielding
tasks) on the host's WIT world `durango:orchestration/function-app`.

An app's module (function_app.py) registers its functions and names the
component's exports:

    import durango as df

    app = df.DFApp()

    @app.orchestration_trigger(context_name="context")
    def E1_HelloSequence(context: df.DurableOrchestrationContext):
        result1 = yield context.call_activity("E1_SayHello", "Tokyo")
        return [result1]

    @app.activity_trigger(input_name="name")
    def E1_SayHello(name: str) -> str:
        return f"Hello {name}!"

    from durango import App, Orchestrator, Activity  # the component's exports

Built with componentize-py against `wit/`; the host runs it exactly as a
Rust or JavaScript component: every host call is the same deterministic one.
"""

import inspect
import json
import os
import random
from typing import Callable, Dict, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import durango_orchestration_types as types
from wit_world.imports import orchestration as host

from . import http
from .activity import ActivityContext, SettingMissingError, required_setting, setting
from .orchestration import (
    DurableOrchestrationContext,
    EventTask,
    RetryOptions,
    Running,
    Task,
    TaskFailedError,
    TimerTask,
)

__all__ = [
    "DFApp",
    "DurableOrchestrationContext",
    "ActivityContext",
    "RetryOptions",
    "Task",
    "TimerTask",
    "EventTask",
    "TaskFailedError",
    "SettingMissingError",
    "setting",
    "required_setting",
    "http",
    "App",
    "Orchestrator",
    "Activity",
]

# name -> (function, the parameter the context goes to)
_orchestrators: Dict[str, Tuple[Callable, str]] = {}
# name -> (function, the input's parameter, whether it takes `context`)
_activities: Dict[str, Tuple[Callable, str, bool]] = {}


def _parameters(function: Callable):
    return inspect.signature(function).parameters


class DFApp:
    """The function app (`df.DFApp()`): its decorators register functions
    under their Python name, or the one `@app.function_name` gives."""

    def __init__(self, *_args, **_kwargs):
        # Azure's arguments (http_auth_level, ...) have no meaning here.
        pass

    @staticmethod
    def _register(function: Callable, kind: str, entry) -> None:
        name = getattr(function, "_durango_name", function.__name__)
        if name in _orchestrators or name in _activities:
            raise ValueError(f"two functions are named {name} in this app")
        table = _orchestrators if kind == "orchestrator" else _activities
        table[name] = entry
        function._durango_registered = (name, table)

    def orchestration_trigger(self, context_name: str = "context"):
        """Registers a generator function as an orchestrator; the context
        goes to its parameter `context_name`."""

        def register(function: Callable) -> Callable:
            if context_name not in _parameters(function):
                raise TypeError(f"orchestrator {function.__name__} has no parameter {context_name}")
            self._register(function, "orchestrator", (function, context_name))
            return function

        return register

    def activity_trigger(self, input_name: str):
        """Registers an activity; its input goes to parameter `input_name`,
        and an ActivityContext to a parameter named `context` if it has one."""

        def register(function: Callable) -> Callable:
            parameters = _parameters(function)
            if input_name not in parameters:
                raise TypeError(f"activity {function.__name__} has no parameter {input_name}")
            takes_context = "context" in parameters and input_name != "context"
            self._register(function, "activity", (function, input_name, takes_context))
            return function

        return register

    def function_name(self, name: str):
        """Names the function (above or below its trigger decorator)."""

        def rename(function: Callable) -> Callable:
            registered = getattr(function, "_durango_registered", None)
            if registered is None:
                function._durango_name = name
                return function
            old, table = registered
            if name != old and (name in _orchestrators or name in _activities):
                raise ValueError(f"two functions are named {name} in this app")
            table[name] = table.pop(old)
            function._durango_registered = (name, table)
            return function

        return rename


def _reseed() -> None:
    """Python's `random` was seeded when the component was built, so every
    instance would start from the same state: seed it from WASI's random,
    which the host keys per instance in an orchestrator (replay draws the
    same) and per call in an activity (a re-run draws the same)."""
    random.seed(os.urandom(16))


def _failed(words: str):
    return types.PollResult_Failed(words)


# The running orchestration: the guest keeps it between the host's calls.
_running: Optional[Running] = None
# Whether this guest told the host it may be reused (`allow_reuse`).
_reuse_allowed = False


class App(exports.App):
    def functions(self):
        kinds = [(name, types.FunctionKind.ORCHESTRATOR) for name in _orchestrators]
        kinds += [(name, types.FunctionKind.ACTIVITY) for name in _activities]
        return [types.FunctionInfo(name=name, kind=kind) for name, kind in kinds]


class Orchestrator(exports.Orchestrator):
    def start(self, name: str, input: str):
        global _running, _reuse_allowed
        _running = None
        entry = _orchestrators.get(name)
        if entry is None:
            return _failed(f"no orchestrator named {name} in this app")
        try:
            parsed = json.loads(input)
        except ValueError:
            return _failed("the orchestration input is not JSON")
        _reseed()
        # Each start resets what the guest keeps (the running orchestration,
        # `random`'s state): the host may run the next one in this guest. The
        # host keeps that promise for the guest's life: it is made once.
        if not _reuse_allowed:
            host.allow_reuse()
            _reuse_allowed = True
        function, context_name = entry
        running, result = Running.start(name, function, context_name, parsed)
        if isinstance(result, types.PollResult_Pending):
            _running = running
        return result

    def resume(self):
        global _running
        if _running is None:
            return _failed("no orchestration is running in this instance")
        result = _running.resume()
        if not isinstance(result, types.PollResult_Pending):
            _running = None
        return result


class Activity(exports.Activity):
    def run(self, name: str, input: str, context) -> str:
        entry = _activities.get(name)
        if entry is None:
            raise Err(f"no activity named {name} in this app")
        try:
            parsed = json.loads(input)
        except ValueError:
            raise Err("the activity input is not JSON") from None
        _reseed()
        function, input_name, takes_context = entry
        arguments = {input_name: parsed}
        if takes_context:
            arguments["context"] = ActivityContext(context)
        try:
            output = function(**arguments)
        except Exception as failure:
            raise Err(str(failure) or type(failure).__name__) from None
        try:
            return json.dumps(output)
        except (TypeError, ValueError) as error:
            raise Err(f"activity {name}'s output is not JSON: {error}") from None
