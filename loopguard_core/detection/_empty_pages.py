"""Empty pages: paging on and on into nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._mypyc import mypyc_attr
from ._base import Finding, Thresholds, check_mode, check_positive
from ._step import EMPTY, FAILED, Call, Step

__all__ = ["EmptyPages"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class EmptyPages:
    """Refuses the next request of a tool after ``max_empty`` empty answers ([] / {} / "" / "null") in a row
    to the same request with only its paging parameter changed (``page``, ``offset``, ``cursor``, ...): paging
    past the last page. Different requests that each find nothing are different questions and do not count;
    ``None`` is never empty (it is what a tool that acts returns on success). Trips with reason ``stall``.
    """

    max_empty: int = 4
    mode: str | None = None
    name: str = "empty_pages"

    def __post_init__(self) -> None:
        check_positive("EmptyPages", "max_empty", self.max_empty, allow_none=False)
        check_mode("EmptyPages", self.mode)

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        if not call.shape:
            return None
        found: list[int] = []
        for j in range(len(window) - 1, -1, -1):
            step = window[j]
            if step.tool != call.tool:
                continue
            if step.shape != call.shape or not step.flags & EMPTY or step.flags & FAILED:
                break
            found.append(step.seq)
            if len(found) >= self.max_empty:
                return Finding(self.name, "stall", len(found), self.max_empty, tuple(reversed(found)))
        return None
