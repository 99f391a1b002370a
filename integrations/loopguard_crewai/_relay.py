"""Carry a trip from a guarded tool body to the next model call of the same CrewAI run.

A tool body cannot stop a CrewAI run: CrewAI turns whatever it raises into an observation for the model
(and the ReAct path re-invokes a raising tool up to six times). Only a ``HookAborted`` raised by a
before-model hook leaves ``kickoff``. So a :func:`guarded_tool` that trips outside any ``guard_crew`` block
posts its trip here under CrewAI's execution id (set by every kickoff and inherited by its worker threads),
and one process-wide before-model hook raises it at that run's next model call. The hook does nothing for
any other run. It is registered when the first guarded tool is created, because CrewAI's agent executors
copy the global model hooks when they are built.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from crewai.execution import get_execution_uuid
from crewai.hooks import InterceptionPoint
from crewai.hooks.dispatch import get_hooks, register

__all__ = ["hold", "install", "installed", "relay_hook"]

_MAX_RUNS = 1_024
_lock = threading.Lock()
_held: OrderedDict[str, BaseException] = OrderedDict()


def relay_hook(ctx: Any) -> None:
    """The before-model hook: raise the trip a guarded tool posted for this run, if any."""
    execution = get_execution_uuid()
    if execution is None:
        return
    with _lock:
        error = _held.get(execution)
    if error is not None:
        raise error  # a HookAborted subclass: the one exception CrewAI lets out of kickoff


relay_hook.__loopguard_relay__ = True  # type: ignore[attr-defined]


def installed() -> bool:
    return relay_hook in get_hooks(InterceptionPoint.PRE_MODEL_CALL)


def install() -> bool:
    """Register the relay hook once; returns False when it had to be (re)registered just now."""
    with _lock:
        if installed():
            return True
        register(InterceptionPoint.PRE_MODEL_CALL, relay_hook)
        return False


def hold(execution: str, error: BaseException) -> None:
    """Post ``error`` for the run ``execution``; every later model call of that run raises it."""
    with _lock:
        _held.setdefault(execution, error)
        _held.move_to_end(execution)
        while len(_held) > _MAX_RUNS:
            _held.popitem(last=False)
