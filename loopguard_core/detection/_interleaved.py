"""Interleaved: the same call, the same answer, again and again, with only failed or no-op calls between."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .._mypyc import mypyc_attr
from ._base import Finding, Thresholds, check_mode, check_per_tool, check_positive, is_progress
from ._step import POLL, WAITING, Call, Step

__all__ = ["Interleaved"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class Interleaved:
    """Refuses a call made ``max_repeats`` times before with the same (masked) answer, at most ``max_gap``
    calls apart, when nothing between them made progress: every call in between failed (a rejected edit, a
    command error), was a no-op (``echo``, a comment, a ``think`` step) or repeated a call and answer already
    seen. A rerun after an edit that went through is progress and never counts.
    """

    max_repeats: int | None = None
    max_gap: int = 2
    per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    mode: str | None = None
    name: str = "interleaved"

    def __post_init__(self) -> None:
        check_positive("Interleaved", "max_repeats", self.max_repeats)
        check_positive("Interleaved", "max_gap", self.max_gap, allow_none=False)
        object.__setattr__(self, "per_tool", check_per_tool("Interleaved", self.per_tool))
        check_mode("Interleaved", self.mode)

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        n, action = len(window), call.action
        found: list[int] = []  # positions of earlier occurrences, newest first
        since = 0
        for j in range(n - 1, -1, -1):
            if window[j].action == action:
                found.append(j)
                since = 0
            else:
                since += 1
                if since > self.max_gap:
                    break
        if not found:
            return None
        waiting = call.poll or any(window[i].flags & (WAITING | POLL) for i in found)
        limit = self.per_tool.get(call.tool) or limits.repeats_allowed(call.tool, waiting, self.max_repeats)
        if len(found) < limit:
            return None
        found = found[:limit]
        outcome = window[found[0]].outcome
        if any(window[i].outcome != outcome for i in found):
            return None
        between = [i for i in range(found[-1] + 1, n) if window[i].action != action]
        if not between or any(is_progress(window, i) for i in between):
            return None  # back to back is the repeat rule's case; progress in between is no loop
        return Finding(self.name, "loop", limit, limit, tuple(window[i].seq for i in reversed(found)))
