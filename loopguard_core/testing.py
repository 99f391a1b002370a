"""Public helpers for testing code that uses loopguard (and for loopguard's own tests).

- :class:`FakeClock`: a clock you move by hand, so recovery windows and wall-clock limits are tested
  without sleeping.
- :class:`ScriptedCall` / :func:`drive`: feed a scripted tool-call trace through a breaker exactly as an
  adapter would (``before_tool``, then the "tool", then ``after_tool``) and report where it was refused.
- :func:`load_scenarios`: read a trace corpus in the format of ``tool_call_scenarios.json``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .breaker import Breaker
from .errors import LoopGuardTripped

__all__ = ["DriveResult", "FakeClock", "Scenario", "ScriptedCall", "ScriptedClient", "drive", "load_scenarios"]


class FakeClock:
    """A monotonic clock that only moves when told to. Thread-safe."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"


@dataclass(frozen=True)
class ScriptedCall:
    """One scripted tool call: what the agent asks for and what the tool would answer."""

    tool: str
    args: Any = None
    result: Any = None
    error: bool | str = False
    agent: str | None = None
    tokens: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "runaway" or "legit"
    calls: tuple[ScriptedCall, ...]
    trip_by: int | None = None
    about: str = ""


@dataclass
class DriveResult:
    """What happened when a trace was driven through a breaker."""

    executed: int = 0
    refused_at: int | None = None  # 1-based index of the refused call
    trip: LoopGuardTripped | None = None
    executed_calls: list[ScriptedCall] = field(default_factory=list)

    @property
    def tripped(self) -> bool:
        return self.trip is not None


def drive(breaker: Breaker, calls: Iterable[ScriptedCall], *, stop_on_trip: bool = True) -> DriveResult:
    """Run scripted calls through ``breaker`` as an adapter would; the "tool" only runs if admitted."""
    result = DriveResult()
    for index, call in enumerate(calls, start=1):
        try:
            breaker.before_tool(call.tool, call.args, agent=call.agent)
        except LoopGuardTripped as trip:
            if result.trip is None:
                result.trip, result.refused_at = trip, index
            if stop_on_trip:
                break
            continue
        result.executed += 1
        result.executed_calls.append(call)
        failed = call.error not in (False, None, "")
        error = (call.error if isinstance(call.error, str) else str(call.result)) if failed else None
        breaker.after_tool(call.tool, call.args, result=None if failed else call.result, error=error, agent=call.agent)
    return result


def load_scenarios(path: str | Path) -> list[Scenario]:
    """Load a corpus: ``{"scenarios": [{name, kind, trip_by, calls: [{agent, tool, args, result, error}]}]}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    items: Sequence[dict[str, Any]] = data["scenarios"] if isinstance(data, dict) else data
    scenarios = []
    for item in items:
        calls = tuple(
            ScriptedCall(
                tool=c["tool"],
                args=c.get("args"),
                result=c.get("result"),
                error=c.get("error", False),
                agent=c.get("agent"),
                tokens=int(c.get("tokens", 0)),
            )
            for c in item["calls"]
        )
        scenarios.append(Scenario(item["name"], item["kind"], calls, item.get("trip_by"), item.get("about", "")))
    return scenarios


class ScriptedClient:
    """An Anthropic-shaped fake client: ``client.messages.create(...)`` returns scripted messages.

    Each script item is either a tool call ``("tool_name", {args})`` or a final text ``"done"``. Usage is
    reported as ``input_tokens`` (grows with the conversation, like a real model) and ``output_tokens``.
    """

    def __init__(self, script: Iterable[tuple[str, Any] | str], *, output_tokens: int = 60) -> None:
        self._script = iter(script)
        self._output_tokens = output_tokens
        self.requests: list[dict[str, Any]] = []
        self.messages = self
        self._ids = 0

    def create(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(kwargs)
        from .tokens import estimate_tokens

        usage = {"input_tokens": estimate_tokens(kwargs.get("messages")), "output_tokens": self._output_tokens}
        step = next(self._script, "done")
        if isinstance(step, str):
            return {"content": [{"type": "text", "text": step}], "stop_reason": "end_turn", "usage": usage}
        self._ids += 1
        name, args = step
        block = {"type": "tool_use", "id": f"toolu_{self._ids:04d}", "name": name, "input": args}
        return {"content": [block], "stop_reason": "tool_use", "usage": usage}
