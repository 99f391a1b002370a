"""Paraphrase: the same question in other words, with the same answer every time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .._mypyc import mypyc_attr
from ._base import Finding, Thresholds, check_mode, check_per_tool, check_positive
from ._observe import similar
from ._step import FAILED, SIMILAR, Call, Step

__all__ = ["Paraphrase"]


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class Paraphrase:
    """Refuses a free-text request (natural language of three words or more, never a command or code) when
    the run's last ``max_repeats`` calls were this tool asked the same question reworded (content words
    overlap by at least ``similarity``, Jaccard, and identifiers such as ``us-east-1`` or ``INV-0042`` match
    exactly), back to back, and all got the same informative answer.
    """

    similarity: float = 0.5
    max_repeats: int | None = None
    per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    mode: str | None = None
    name: str = "paraphrase"

    def __post_init__(self) -> None:
        if isinstance(self.similarity, bool) or not isinstance(self.similarity, (int, float)):
            raise TypeError(f"Paraphrase.similarity must be a number in (0, 1], got {self.similarity!r}")
        if not 0 < self.similarity <= 1:
            raise ValueError(f"Paraphrase.similarity must be in (0, 1], got {self.similarity}")
        check_positive("Paraphrase", "max_repeats", self.max_repeats)
        object.__setattr__(self, "per_tool", check_per_tool("Paraphrase", self.per_tool))
        check_mode("Paraphrase", self.mode)

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        n = len(window)
        limit = self.per_tool.get(call.tool) or limits.repeats_allowed(call.tool, call.poll, self.max_repeats)
        if n < limit or window[-1].tool != call.tool or not window[-1].flags & SIMILAR:
            return None  # no chain of reworded questions has begun: nothing to compare (and no words computed)
        last = window[-1]
        for j in range(n - 1, n - limit, -1):  # each step of the chain rewords the one before it
            step = window[j]
            if step.tool != call.tool or not step.flags & SIMILAR or step.outcome != last.outcome:
                return None
        first = window[n - limit]
        if first.tool != call.tool or first.outcome != last.outcome or first.flags & FAILED:
            return None
        if not similar(call.question(), last.words, self.similarity):
            return None
        positions = tuple(step.seq for step in window[n - limit :])
        return Finding(self.name, "loop", limit, limit, positions)
