"""The store contract: where a breaker's per-run state lives, and the atomic steps it offers.

Each method is one atomic step (one lock acquisition in memory, one Lua script round trip in Redis) that
both decides and records, so two callers can never both take the last unit of a budget. The breaker
computes signatures and prices before calling; the store only compares and counts integers and digests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..limits import Limits
from ..state import BreakerState

_NO_FACTS: Mapping[str, Any] = MappingProxyType({})

__all__ = [
    "ModelRequest",
    "ModelUsage",
    "RunKey",
    "RunSnapshot",
    "Steering",
    "Store",
    "ToolOutcome",
    "ToolRequest",
    "Transition",
    "Verdict",
]


class RunKey(NamedTuple):
    """Identifies one run's state: ``scope`` groups runs (a crew, a tenant), ``run_id`` is the run."""

    scope: str
    run_id: str


class ToolRequest(NamedTuple):
    tool: str
    #: the call's signature: its tool and canonical arguments (``call_signature``)
    signature: str
    now: float
    call_id: str | None = None
    agent: str | None = None
    #: the request with its paging parameter masked (``request_shape``), "" when it has none
    shape: str = ""
    #: keyed hashes of the content words of a natural-language request (see detection), empty when none
    words: frozenset[int] = frozenset()
    #: the tool reports a status (poll patience)
    poll: bool = False
    #: computes ``words`` on demand, in the caller's process (the paraphrase detector asks only when needed)
    prose: Callable[[], frozenset[int]] | None = None
    #: the last steps of the window that calls of this call's batch (the same model answer) recorded: left out
    #: of the judgement, since the model asked for them all at once and saw none of their results
    siblings_done: int = 0


class ToolOutcome(NamedTuple):
    tool: str
    signature: str
    #: digest of the outcome with volatile values masked (``detection.masked_digest``)
    outcome: str
    #: the tool raised or reported an error through the error channel (counts toward the failure streak)
    failed: bool
    now: float
    call_id: str | None = None
    #: loop-detection flags of the finished call (``detection.FAILED``, ``NOOP``, ``STALE``, ...)
    flags: int = 0
    shape: str = ""
    words: frozenset[int] = frozenset()


class ModelRequest(NamedTuple):
    projected_tokens: int
    projected_cost_micros: int
    now: float
    call_id: str | None = None


class ModelUsage(NamedTuple):
    tokens: int
    cost_micros: int
    now: float
    call_id: str | None = None
    #: the call raised instead of answering: release its reservation, count nothing, and do not remember
    #: the id (a retry under the same id that succeeds must still be counted)
    failed: bool = False


@dataclass(frozen=True)
class Transition:
    source: BreakerState
    target: BreakerState
    reason: str


class Verdict(NamedTuple):
    """What a store step decided. ``reason`` is set when the call is refused.

    A NamedTuple because one is made for every check: it is several times cheaper to build than a
    frozen dataclass, and just as immutable.
    """

    admitted: bool
    reason: str | None = None
    terminal: bool = False
    facts: Mapping[str, Any] = _NO_FACTS
    transitions: tuple[Transition, ...] = ()
    turn: int = 0
    probe: bool = False
    duplicate: bool = False
    #: what the checks would have refused but only observed (mode "observe"): (reason, facts) pairs
    observed: tuple[tuple[str, Mapping[str, Any]], ...] = ()


# A Verdict without NamedTuple.__new__'s Python frame, for the stores' hot paths (every field given, in order).
_new_verdict: Callable[[type[Verdict], tuple[Any, ...]], Verdict] = tuple.__new__


@dataclass(frozen=True)
class RunSnapshot:
    """A read-only view of one run's counters and state."""

    state: BreakerState
    terminal: bool
    trip_reason: str | None
    turns: int
    tokens: int
    cost_micros: int
    tool_calls: int
    calls_per_tool: dict[str, int]
    trips: int
    started_at: float | None
    opened_at: float | None
    #: refused calls the agent was told about (``on_trip="steer"``) in this run
    refusals: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000


@runtime_checkable
class Store(Protocol):
    """Per-run breaker state. Implementations: :class:`MemoryStore`, ``RedisStore`` (extra ``redis``)."""

    def admit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict: ...

    def record_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict: ...

    def admit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict: ...

    def record_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict: ...

    def snapshot(self, run: RunKey) -> RunSnapshot: ...

    def reset(self, run: RunKey) -> Verdict: ...

    def drop(self, run: RunKey) -> None: ...


@runtime_checkable
class Steering(Protocol):
    """A store that can let a run go on after a refused call (``on_trip="steer"``): both stores shipped do."""

    def steer(self, run: RunKey, limits: Limits, now: float) -> Verdict: ...
