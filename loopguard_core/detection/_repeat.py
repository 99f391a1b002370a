"""Repeat: the same call again after it answered the same thing several times in a row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .._mypyc import mypyc_attr
from ._base import Finding, Thresholds, check_mode, check_per_tool, check_positive
from ._step import POLL, STALE, WAITING, Call, Step

__all__ = ["Repeat"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class Repeat:
    """Refuses a call when the same call (same tool, same canonical arguments) is the last thing the run did
    ``max_repeats`` times in a row and its answer never changed: identical after masking volatile values
    (counters, line numbers, ids, timestamps), or a STALE answer that only re-showed what the earlier ones
    said (a REPL echoing earlier output, a file growing by the same block).

    Identical calls still in flight count too, so a burst of parallel copies cannot slip past together.
    ``max_repeats=None`` uses the policy's (``LoopDetection.max_repeats``, 3 by default: the 4th identical
    call is refused); ``per_tool`` overrides it for named tools.
    """

    max_repeats: int | None = None
    per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    mode: str | None = None
    name: str = "repeat"

    def __post_init__(self) -> None:
        check_positive("Repeat", "max_repeats", self.max_repeats)
        object.__setattr__(self, "per_tool", check_per_tool("Repeat", self.per_tool))
        check_mode("Repeat", self.mode)

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        positions: list[int] = []
        waiting = call.poll
        j = len(window) - 1
        if j >= 0 and window[j].action == call.action:
            positions.append(window[j].seq)
            waiting = waiting or bool(window[j].flags & (WAITING | POLL))
            while j > 0:
                later, earlier = window[j], window[j - 1]
                if earlier.action != call.action:
                    break
                if later.outcome != earlier.outcome and not later.flags & STALE:
                    break  # the answer changed: the streak starts at `later`
                positions.append(earlier.seq)
                j -= 1
        seen = len(positions) + call.inflight
        if not seen:
            return None
        allowed = self.per_tool.get(call.tool) or limits.repeats_allowed(call.tool, waiting, self.max_repeats)
        if seen < allowed:
            return None
        detail = {"in_flight": call.inflight} if call.inflight else {}
        return Finding(self.name, "loop", seen, allowed, tuple(reversed(positions)), detail)
