"""The in-process store: a dict of run states behind one short-held lock."""

from __future__ import annotations

import threading

from .._mypyc import mypyc_attr
from ..limits import Limits
from ._run_state import RunState
from .base import ModelRequest, ModelUsage, RunKey, RunSnapshot, ToolOutcome, ToolRequest, Verdict

__all__ = ["MemoryStore"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
class MemoryStore:
    """Breaker state in this process. Safe across threads and asyncio tasks.

    The lock is held only while a step compares and counts (microseconds), never while a guarded
    call runs, so calls through one breaker never serialise on each other.
    """

    def __init__(self, *, reservation_seconds: float | None = 600.0) -> None:
        """``reservation_seconds``: how long an admitted model call that never reports back holds its
        projected tokens and USD (``None``: no reservations; concurrent calls then project independently)."""
        if reservation_seconds is not None and (
            isinstance(reservation_seconds, bool)
            or not isinstance(reservation_seconds, (int, float))
            or not reservation_seconds > 0
        ):
            raise ValueError(f"reservation_seconds must be > 0 or None, got {reservation_seconds!r}")
        self._reservation_seconds = reservation_seconds
        self._lock = threading.Lock()
        self._runs: dict[RunKey, RunState] = {}

    def _state(self, run: RunKey) -> RunState:
        state = self._runs.get(run)
        if state is None:
            state = self._runs[run] = RunState()
        return state

    def admit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict:
        with self._lock:  # the hot path: the run's state looked up inline
            return (self._runs.get(run) or self._state(run)).admit_tool(request, limits)

    def record_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict:
        with self._lock:
            return (self._runs.get(run) or self._state(run)).record_tool(outcome, limits)

    def admit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict:
        with self._lock:  # every model turn: the run's state looked up inline, as for tool calls
            return (self._runs.get(run) or self._state(run)).admit_model(request, limits, self._reservation_seconds)

    def record_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict:
        with self._lock:
            return (self._runs.get(run) or self._state(run)).record_model(usage, limits)

    def steer(self, run: RunKey, limits: Limits, now: float) -> Verdict:
        with self._lock:
            return self._state(run).steer(limits, now)

    def snapshot(self, run: RunKey) -> RunSnapshot:
        with self._lock:
            state = self._runs.get(run)
            return (state or RunState()).snapshot()

    def reset(self, run: RunKey) -> Verdict:
        with self._lock:
            return self._state(run).reset()

    def drop(self, run: RunKey) -> None:
        with self._lock:
            self._runs.pop(run, None)

    def __len__(self) -> int:
        """Number of runs held (for tests of memory bounds)."""
        return len(self._runs)
