"""Public helpers for testing code that uses loopguard (and for loopguard's own tests).

- :class:`FakeClock`: a clock you move by hand, so recovery windows and wall-clock limits are tested
  without sleeping.
- :class:`ScriptedCall` / :func:`drive`: feed a scripted tool-call trace through a breaker exactly as an
  adapter would (``before_tool``, then the "tool", then ``after_tool``) and report where it was refused.
- :func:`load_scenarios`: read a trace corpus in the format of ``tool_call_scenarios.json``.
- :class:`BodyCounter` / :class:`Recorder`: count how often each tool body really ran, and keep the rows a
  breaker writes (``Breaker(ledger=Recorder())``), to assert on them.
- :class:`ModelScript` / :class:`ScriptExhausted`: the framework-neutral engine of the scripted fake models in
  ``loopguard_langchain.testing``, ``loopguard_crewai.testing``, ``loopguard_pydantic_ai.testing`` and
  ``loopguard_anthropic.testing`` (each imports its framework; this module imports none).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from .breaker import Breaker
from .errors import LoopGuardTripped

__all__ = [
    "BodyCounter",
    "DriveResult",
    "FakeClock",
    "ModelScript",
    "Recorder",
    "Scenario",
    "ScriptExhausted",
    "ScriptedCall",
    "ScriptedClient",
    "ScriptedTurn",
    "Step",
    "drive",
    "load_scenarios",
]


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


# -- tool bodies and ledger rows ---------------------------------------------------------------------------


class BodyCounter:
    """Counts how many times each tool body really ran, to prove a refused call's body never did. Thread-safe.

    Call :meth:`hit` first thing in the tool's body::

        counter = BodyCounter()

        def search(q: str) -> str:
            counter.hit("search", {"q": q})
            return "nothing new"

        ...                                   # run the guarded agent
        assert counter.count("search") == 3   # the fourth identical call was refused before its body
    """

    def __init__(self) -> None:
        self._runs: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def hit(self, tool: str, args: Any = None) -> None:
        """Note one run of ``tool``'s body (with its arguments, if you want to assert on them)."""
        with self._lock:
            self._runs.append((tool, args))

    def count(self, tool: str | None = None) -> int:
        """How many times ``tool``'s body ran; every tool's together when ``tool`` is None."""
        with self._lock:
            return sum(1 for name, _ in self._runs if tool is None or name == tool)

    @property
    def runs(self) -> list[tuple[str, Any]]:
        """Every run so far, in order, as ``(tool, args)`` (a copy)."""
        with self._lock:
            return list(self._runs)

    def reset(self) -> None:
        """Forget the runs counted so far."""
        with self._lock:
            self._runs.clear()

    def __repr__(self) -> str:
        return f"BodyCounter(runs={len(self.runs)})"


class Recorder:
    """A ledger sink that keeps every row a breaker writes in memory: ``Breaker(ledger=Recorder())``. Thread-safe.

    Rows are the keyword arguments of :meth:`loopguard_core.typing.LedgerSink.record` (``origin`` is
    ``"model"``, ``"tool"`` or ``"breaker"`` for a trip; ``agent``, ``tool``, ``session_id``, ...)::

        (trip,) = ledger.where(origin="breaker")
        assert [row["agent"] for row in ledger.where(origin="tool")] == ["researcher"] * 3
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, **row: Any) -> int:
        with self._lock:
            self.rows.append(row)
            return len(self.rows)

    def where(self, **match: Any) -> list[dict[str, Any]]:
        """The rows whose fields equal every ``match`` given (all rows when none is), in order."""
        with self._lock:
            return [row for row in self.rows if all(row.get(key) == value for key, value in match.items())]

    def __repr__(self) -> str:
        return f"Recorder(rows={len(self.rows)})"


# -- scripted models ---------------------------------------------------------------------------------------

Step: TypeAlias = str | tuple[str, Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]]
"""One answer of a scripted model: ``"text"`` (a final answer), ``("tool", {args})`` (one tool call) or a list of
``(tool, args)`` pairs (parallel tool calls in one answer)."""

_STEP_HELP = (
    "a step is 'text' (a final answer), ('tool', {args}) (a tool call) "
    "or a non-empty list of ('tool', {args}) pairs (parallel tool calls)"
)


class ScriptExhausted(AssertionError):
    """A scripted model was called once more than its script allows.

    It is an ``AssertionError`` (a broken expectation of the test, not a transient failure for a framework to
    retry). ``owner`` names the model, ``call`` is the 1-based number of the call that found no answer.
    """

    def __init__(self, message: str, *, owner: str, call: int) -> None:
        super().__init__(message)
        self.owner = owner
        self.call = call


@dataclass(frozen=True)
class ScriptedTurn:
    """What a scripted model answers to one call: a final ``text``, or ``tool_calls`` as ``(tool, args)`` pairs."""

    index: int  # 0-based: which model call this answers (useful for stable ids)
    text: str | None = None
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def is_final(self) -> bool:
        """True for a final text answer, False for tool calls."""
        return self.text is not None


_Normalized: TypeAlias = str | tuple[tuple[str, dict[str, Any]], ...]


def _pair(item: object, where: str) -> tuple[str, dict[str, Any]]:
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and item[0]
        and isinstance(item[1], Mapping)
    ):
        return item[0], dict(item[1])
    raise TypeError(f"{where}: {item!r} is not a tool call; {_STEP_HELP}")


def _normalize(step: object, where: str) -> _Normalized:
    if isinstance(step, str):
        return step
    if isinstance(step, tuple) and step and isinstance(step[0], str):
        return (_pair(step, where),)
    if isinstance(step, (list, tuple)) and step:
        return tuple(_pair(item, f"{where}[{n}]") for n, item in enumerate(step))
    raise TypeError(f"{where}: {step!r} is not a step; {_STEP_HELP}")


class ModelScript:
    """The answers of a scripted model, played in order; the engine under every framework's scripted model.

    ``script`` is played first, one step per model call. Then ``loop`` (when given) is answered again and again
    until the model has answered ``cap`` calls in all: a runaway agent with a bounded blast radius. The call
    after that raises :class:`ScriptExhausted`, which says how far the script went, so an agent that was not
    stopped fails the test loudly instead of hanging it. End a script with a final answer (a ``str``) when the
    run is meant to finish. Steps are checked when the script is built, so a malformed one fails at once.
    Thread-safe: parallel agents may share one script.

        script = ModelScript([("search", {"q": "a"}), "found it"])
        script.next_turn().tool_calls   # (("search", {"q": "a"}),)
        script.next_turn().text         # "found it"
        script.next_turn()              # raises ScriptExhausted
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        loop: Step | None = None,
        cap: int = 30,
        owner: str = "scripted model",
    ) -> None:
        if isinstance(script, str):
            raise TypeError(f"script must be a list of steps, not a single str ({script!r}); wrap it: [{script!r}]")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"cap must be a non-negative int (the most calls loop is answered up to), got {cap!r}")
        self._steps = tuple(_normalize(step, f"{owner}: script[{n}]") for n, step in enumerate(script))
        self._loop = None if loop is None else _normalize(loop, f"{owner}: loop")
        self.cap = cap
        self.owner = owner
        self._calls = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """How many model calls were answered (a call refused before it reached the model is not one)."""
        with self._lock:
            return self._calls

    def next_turn(self) -> ScriptedTurn:
        """The answer to the next model call; raises :class:`ScriptExhausted` when there is none left."""
        with self._lock:
            index = self._calls
            step = self._step_at(index)
            if step is None:
                raise ScriptExhausted(self._exhausted(index), owner=self.owner, call=index + 1)
            self._calls += 1
        if isinstance(step, str):
            return ScriptedTurn(index, text=step)
        return ScriptedTurn(index, tool_calls=tuple((name, dict(args)) for name, args in step))

    def _step_at(self, index: int) -> _Normalized | None:
        if index < len(self._steps):
            return self._steps[index]
        if self._loop is not None and index < self.cap:
            return self._loop
        return None

    def _exhausted(self, index: int) -> str:
        played = f"{len(self._steps)} scripted step(s)"
        if self._loop is not None:
            played += f", then `loop` up to cap={self.cap} calls in all"
        return (
            f"{self.owner} has no answer for model call {index + 1}: its script is used up ({played}). "
            "If the agent should have been stopped by now, check that the guard is installed and sees this run; "
            "if the run is meant to go on, end the script with a final answer (a str) or raise cap."
        )

    def __repr__(self) -> str:
        return f"ModelScript(owner={self.owner!r}, steps={len(self._steps)}, loop={self._loop!r}, calls={self.calls})"
