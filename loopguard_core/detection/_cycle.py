"""Cycle: a block of calls that keeps coming round with the same answers (A, B, A, B, ... or longer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .._mypyc import mypyc_attr
from ._base import Finding, Thresholds, check_mode, check_per_tool, check_positive
from ._step import POLL, WAITING, Call, Step

__all__ = ["Cycle"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class Cycle:
    """Refuses the call that would complete one more pass of a block of 2 to ``max_period`` calls (at least
    two different ones) after the block already went round ``max_repeats`` times in a row with identical
    calls and identical (masked) answers: two agents handing one question back and forth, read A / read B
    forever, edit / rerun with the same rejected edit.

    The whole block must repeat, answers included: a rerun between edits that change something is not a
    cycle, because the edits differ. A block holding a status poll gets poll patience.
    """

    max_repeats: int | None = None
    max_period: int = 10
    per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    mode: str | None = None
    name: str = "cycle"

    def __post_init__(self) -> None:
        check_positive("Cycle", "max_repeats", self.max_repeats)
        check_positive("Cycle", "max_period", self.max_period, allow_none=False)
        object.__setattr__(self, "per_tool", check_per_tool("Cycle", self.per_tool))
        check_mode("Cycle", self.mode)

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        n = len(window)
        action = call.action
        for k in range(2, min(self.max_period, n) + 1):
            if window[n - k].action != action:
                continue  # the block would not come round to this call
            block = window[n - k :]
            waiting = call.poll or any(step.flags & (WAITING | POLL) for step in block)
            allowed = self.per_tool.get(call.tool) or limits.repeats_allowed(call.tool, waiting, self.max_repeats)
            span = (allowed + 1) * k - 1  # `allowed` full passes, then this pass up to this call
            if n < span:
                continue
            if (
                all(
                    window[i].action == window[i - k].action and window[i].outcome == window[i - k].outcome
                    for i in range(n - 1, n - span + k - 1, -1)
                )
                and len({step.action for step in block}) > 1
            ):
                first = n - span
                starts = tuple(window[first + p * k].seq for p in range(allowed))
                return Finding(self.name, "loop", allowed, allowed, starts, {"period": k})
        return None
