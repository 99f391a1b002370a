"""What every detector shares: the finding it reports, the protocol it follows, the notion of progress."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ._step import FAILED, NOOP, STALE, Call, Step

__all__ = ["MODES", "Detector", "Finding", "Thresholds", "check_mode", "check_per_tool", "is_progress"]

MODES = ("enforce", "observe")
_NO_DETAIL: Mapping[str, Any] = MappingProxyType({})


class Finding(NamedTuple):
    """A detector's verdict that a call would continue a loop."""

    #: which rule fired: ``repeat``, ``cycle``, ``interleaved``, ``paraphrase``, ``empty_pages``, or your own
    rule: str
    #: the trip's reason: ``loop`` (or ``stall`` for paging into nothing)
    reason: str
    #: occurrences seen before this call
    repeats: int
    #: occurrences allowed before a call is refused
    limit: int
    #: the run's call numbers (1-based) of the earlier calls that make it a loop
    positions: tuple[int, ...]
    #: anything else the rule wants to say (``period`` of a cycle, ...)
    detail: Mapping[str, Any] = _NO_DETAIL
    #: ``enforce`` (refuse the call) or ``observe`` (log and record only)
    mode: str = "enforce"


class Thresholds(Protocol):
    """How many repeats a detector allows for a tool (see ``LoopDetection.repeats_allowed``)."""

    def repeats_allowed(self, tool: str, waiting: bool = False, own: int | None = None) -> int: ...


@runtime_checkable
class Detector(Protocol):
    """A loop rule: looks at the run's recent window and the call about to run.

    ``check`` must be fast (it runs before every tool call), must not keep state of its own (the window is
    the state: it is shared across processes by the store), and returns a :class:`Finding` or ``None``.
    ``mode`` is ``"enforce"``, ``"observe"`` or ``None`` (inherit the policy's).
    """

    @property
    def name(self) -> str: ...

    @property
    def mode(self) -> str | None: ...

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None: ...


def is_progress(window: Sequence[Step], i: int) -> bool:
    """Whether step ``i`` brought something new: it succeeded, did something, and this call with this
    outcome had not happened before in the window. A failed, no-op or repeated call changes nothing."""
    step = window[i]
    if step.flags & (FAILED | NOOP | STALE):
        return False
    action, outcome = step.action, step.outcome
    return not any(w.action == action and w.outcome == outcome for w in window[:i])


def check_mode(owner: str, mode: object) -> None:
    if mode is not None and mode not in MODES:
        raise ValueError(f"{owner} mode must be 'enforce', 'observe' or None, got {mode!r}")


def check_per_tool(owner: str, value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{owner}.per_tool must be a mapping of tool name to int, got {type(value).__name__}")
    checked: dict[str, int] = {}
    for key, limit in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{owner}.per_tool keys must be tool names (str), got {key!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"{owner}.per_tool[{key!r}] must be an int > 0, got {limit!r}")
        checked[key] = limit
    return MappingProxyType(checked)


def check_positive(owner: str, name: str, value: object, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be an int > 0{' or None' if allow_none else ''}, got {value!r}")
