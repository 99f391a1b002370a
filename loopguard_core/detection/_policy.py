"""The loop-detection policy: which detectors run, in which order, how patient they are, in which mode."""

from __future__ import annotations

import operator
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .._bounds import MAX_COUNT
from .._mypyc import mypyc_attr
from ..tools import ToolPolicy
from ._base import Detector, Finding, check_mode
from ._cycle import Cycle
from ._empty_pages import EmptyPages
from ._interleaved import Interleaved
from ._paraphrase import Paraphrase
from ._repeat import Repeat
from ._semantics import infer_policy
from ._step import SIMILAR, Call, PackedWindow, Step

__all__ = ["DEFAULT_POLL_TOOLS", "LoopDetection", "finding_facts"]

DEFAULT_POLL_TOOLS = r"status|poll|progress|wait|health|heartbeat|is_?done|is_?ready|check_?job"


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
@dataclass(frozen=True)
class LoopDetection:
    """How loops are recognised (see docs/loop-detection.md).

    A loop is the run doing the same thing again with nothing new coming back. The policy runs its
    ``detectors`` in order over the run's recent ``window`` of finished calls before each tool call; the
    first finding in ``enforce`` mode refuses the call, findings in ``observe`` mode are logged and
    recorded only. The defaults::

        Repeat()       the same call, the same (masked) answer, max_repeats times in a row
        Cycle()        a block of 2-10 calls coming round max_repeats times with the same answers
        Interleaved()  the same call and answer max_repeats times with only failed/no-op calls between
        Paraphrase()   the same natural-language question reworded, same answer (``similarity``)
        EmptyPages()   max_empty_results empty pages in a row (reason ``stall``)

    ``max_repeats`` (default 3: the 4th identical call with an unchanged answer is refused) is the patience
    every detector inherits unless it sets its own; ``max_repeats_per_tool`` overrides it per tool, status
    polls (``poll_tools`` names, answers saying "running") get ``poll_max_repeats``.
    """

    enabled: bool = True
    #: identical answers of one call (or passes of a block) allowed before the next such call is refused
    max_repeats: int = 3
    #: fold letter case and whitespace of arguments (and key order, 1 == 1.0) before comparing calls
    loose_matching: bool = True
    #: tools never subject to loop detection (e.g. a deliberate ``sleep``)
    exempt_tools: Collection[str] = frozenset()
    #: per-tool overrides of ``max_repeats`` (for every detector)
    max_repeats_per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: distinct calls remembered as "in flight" per run (admitted, not yet reported); past this many (callers
    #: that never report outcomes), the in-flight memory starts over
    memory: int = 10_000
    #: tools that report a status (a regular expression matched on the name) get ``poll_max_repeats``: waiting
    #: for a job legitimately sees "running" several times before "done"
    poll_tools: str = DEFAULT_POLL_TOOLS
    poll_max_repeats: int = 8
    #: shorthand for the default ``EmptyPages(max_empty=...)``; None leaves that detector out
    max_empty_results: int | None = 4
    #: shorthand for the default ``Paraphrase(similarity=...)``; None leaves that detector out
    similarity: float | None = 0.5
    #: finished calls kept per run for the detectors (a cycle of k calls needs (max_repeats + 1) * k - 1)
    window: int = 48
    #: the detectors, in order; None means the defaults above
    detectors: Sequence[Detector] | None = None
    #: ``"enforce"``, ``"observe"``, or None to follow the breaker's ``mode``
    mode: str | None = None
    #: the similarity at which the paraphrase detector (if any) calls two requests the same question; derived from
    #: ``detectors`` (None without a paraphrase detector). A field, not a property: it is read on every tool call
    paraphrase_similarity: float | None = field(default=None, init=False, repr=False, compare=False)
    #: how far back a call's own earlier occurrence can matter to ``detectors`` (see ``may_fire``); None when one is
    #: not built in. Derived, like the one above
    _reach: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"LoopDetection.enabled must be a bool, got {self.enabled!r}")
        _positive("max_repeats", self.max_repeats)
        _positive("memory", self.memory, most=10_000_000)
        _positive("poll_max_repeats", self.poll_max_repeats)
        _positive("window", self.window, most=10_000)  # handed to the detectors with every admission
        if self.max_empty_results is not None:
            _positive("max_empty_results", self.max_empty_results)
        if not isinstance(self.loose_matching, bool):
            raise TypeError(f"LoopDetection.loose_matching must be a bool, got {self.loose_matching!r}")
        if not isinstance(self.poll_tools, str):
            raise TypeError(f"LoopDetection.poll_tools must be a regular expression (str), got {self.poll_tools!r}")
        try:
            re.compile(self.poll_tools)
        except re.error as exc:
            raise ValueError(f"LoopDetection.poll_tools is not a valid regular expression: {exc}") from None
        if self.similarity is not None:
            if isinstance(self.similarity, bool) or not isinstance(self.similarity, (int, float)):
                raise TypeError(f"LoopDetection.similarity must be a number in (0, 1] or None, got {self.similarity!r}")
            if not 0 < self.similarity <= 1:
                raise ValueError(f"LoopDetection.similarity must be in (0, 1], got {self.similarity}")
        check_mode("LoopDetection", self.mode)
        object.__setattr__(self, "exempt_tools", _names("LoopDetection.exempt_tools", self.exempt_tools))
        overrides = _int_mapping("LoopDetection.max_repeats_per_tool", self.max_repeats_per_tool)
        object.__setattr__(self, "max_repeats_per_tool", overrides)
        if self.detectors is None:
            chosen: list[Detector] = [Repeat(), Cycle(), Interleaved()]
            if self.similarity is not None:
                chosen.append(Paraphrase(similarity=float(self.similarity)))
            if self.max_empty_results is not None:
                chosen.append(EmptyPages(max_empty=self.max_empty_results))
            object.__setattr__(self, "detectors", tuple(chosen))
        else:
            object.__setattr__(self, "detectors", _detectors(self.detectors))
        # Derived fields (the dataclass is frozen; never compared).
        paraphrase = next((d for d in self.detectors or () if isinstance(d, Paraphrase)), None)
        object.__setattr__(self, "paraphrase_similarity", None if paraphrase is None else float(paraphrase.similarity))
        object.__setattr__(self, "_reach", _reach(self.detectors or ()))

    # -- thresholds --------------------------------------------------------------------------------------
    def repeats_allowed(self, tool: str, waiting: bool = False, own: int | None = None) -> int:
        """Repeats allowed for ``tool`` before the next one is refused.

        ``waiting``: the tool is a status poll or its last answer said "still running"; ``own``: the asking
        detector's own ``max_repeats``. An explicit ``max_repeats_per_tool`` entry always wins.
        """
        override = self.max_repeats_per_tool.get(tool)
        if override is not None:
            return override
        base = own if own is not None else self.max_repeats
        return max(self.poll_max_repeats, base) if waiting else base

    def inferred(self, tool: str) -> ToolPolicy:
        """What ``tool``'s name suggests (declarations live on the breaker: ``Breaker(tools=...)``)."""
        return infer_policy(tool.casefold(), self.poll_tools)

    def checks(self, tool: str) -> bool:
        """Whether calls of ``tool`` are loop-checked at all."""
        return self.enabled and tool not in self.exempt_tools

    # -- judging -----------------------------------------------------------------------------------------
    def may_fire(self, window: Sequence[Step], tool: str, action: str, shape: str = "", inflight: int = 0) -> bool:
        """False when no detector can find anything for this call: the built-in detectors all need this very
        call among the last few finished ones (or still in flight), a paging request, or a reworded question
        right before it. Most calls are new: they skip the detectors. True whenever a detector of another
        kind is in the policy."""
        reach = self._reach
        if reach is None or inflight or shape:
            return True
        if not window:
            return False
        if type(window) is PackedWindow and window.lacks(action):  # (the Redis store's window, still packed)
            return False
        last = window[-1]
        if last.flags & SIMILAR and last.tool == tool:
            return True
        return action in map(_ACTION, window[-reach:])

    def judge(
        self, window: Sequence[Step], call: Call, default_mode: str = "enforce"
    ) -> tuple[Finding | None, tuple[Finding, ...]]:
        """Run the detectors: the first enforced finding (or None) and the observed ones before it."""
        if not self.may_fire(window, call.tool, call.action, call.shape, call.inflight):
            return None, ()
        observed: list[Finding] = []
        for detector in self.detectors or ():
            finding = detector.check(window, call, self)
            if finding is None:
                continue
            mode = detector.mode or self.mode or default_mode
            if mode == "enforce":
                return finding._replace(mode=mode), tuple(observed)
            observed.append(finding._replace(mode=mode))
        return None, tuple(observed)

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready view (for logs and the ledger)."""
        return {
            "enabled": self.enabled,
            "max_repeats": self.max_repeats,
            "loose_matching": self.loose_matching,
            "exempt_tools": sorted(self.exempt_tools),
            "max_repeats_per_tool": dict(self.max_repeats_per_tool),
            "memory": self.memory,
            "poll_tools": self.poll_tools,
            "poll_max_repeats": self.poll_max_repeats,
            "window": self.window,
            "mode": self.mode,
            "detectors": [_describe(d) for d in self.detectors or ()],
        }


_ACTION = operator.itemgetter(2)  # Step.action
_BUILT_IN = (Repeat, Cycle, Interleaved, Paraphrase, EmptyPages)


def _reach(detectors: Sequence[Detector]) -> int | None:
    """How far back a call's own earlier occurrence can matter to these detectors (see ``may_fire``), or None
    when one of them is not built in (its needs are unknown: it always runs).

    Repeat needs the call right before; Cycle needs it ``k`` calls back for a period ``k`` up to ``max_period``;
    Interleaved needs its latest occurrence within ``max_gap + 1`` calls; Paraphrase needs a SIMILAR step of the
    same tool right before; EmptyPages needs a paging request. A call still in flight may make a repeat."""
    reach = 1
    for detector in detectors:
        kind = type(detector)
        if kind not in _BUILT_IN:
            return None
        if isinstance(detector, Cycle):
            reach = max(reach, detector.max_period)
        elif isinstance(detector, Interleaved):
            reach = max(reach, detector.max_gap + 1)
    return reach


def finding_facts(finding: Finding, call: Call) -> dict[str, Any]:
    """The facts a trip (or an observation) carries for a finding: the rule, the counts, this call's
    number and the numbers of the earlier calls that make it a loop (never their arguments)."""
    facts: dict[str, Any] = {
        "rule": finding.rule,
        "repeats": finding.repeats,
        "limit": finding.limit,
        "positions": list(finding.positions),
        "call": call.seq,
        "signature": call.action,
    }
    if finding.reason == "stall":
        facts["observed"] = finding.repeats
    facts.update(finding.detail)
    return facts


def _describe(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for name in obj.__dataclass_fields__:
            value = getattr(obj, name)
            out[name] = dict(value) if isinstance(value, Mapping) else value
        return out
    return repr(obj)


def _positive(name: str, value: object, most: int = MAX_COUNT) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"LoopDetection.{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"LoopDetection.{name} must be > 0 (got {value})")
    if value > most:
        raise ValueError(f"LoopDetection.{name} must be at most {most:,} (got {value})")


def _names(param: str, value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{param} must be a collection of tool names, got {value!r}")
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{param} must hold tool names (str), got {name!r}")
    return names


def _int_mapping(param: str, value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{param} must be a mapping of tool name to int, got {type(value).__name__}")
    checked: dict[str, int] = {}
    for key, limit in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{param} keys must be tool names (str), got {key!r}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"{param}[{key!r}] must be a positive int, got {type(limit).__name__} {limit!r}")
        if not 0 < limit <= MAX_COUNT:
            raise ValueError(f"{param}[{key!r}] must be > 0 and at most {MAX_COUNT:,} (got {limit})")
        checked[key] = limit
    return MappingProxyType(checked)


def _detectors(value: object) -> tuple[Detector, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"LoopDetection.detectors must be a list of detectors, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, Detector):
            raise TypeError(
                f"LoopDetection.detectors must hold detectors (objects with name, mode and "
                f"check(window, call, limits)), got {item!r}"
            )
    names = [d.name for d in items]
    if len(set(names)) != len(names):
        raise ValueError(f"LoopDetection.detectors have duplicate names {names}: give each its own name=")
    return items
