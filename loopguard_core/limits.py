"""The breaker's configuration: hard ceilings and loop detection, validated at construction."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Limits", "LoopDetection", "usd_to_micros"]

_MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float) -> int:
    """USD to integer micro-USD (rounded up so a ceiling is never loosened by rounding)."""
    return math.ceil(round(usd * _MICROS_PER_USD, 6))


def _positive_int(name: str, value: object, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int or None, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0 (got {value}); omit it or pass None for no limit")
    return value


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (got {value})")
    return value


def _positive_number(name: str, value: object, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number or None, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (got {value}); omit it or pass None for no limit")
    return float(value)


@dataclass(frozen=True)
class LoopDetection:
    """How loops are recognised (see docs/loop-detection.md).

    A call's *signature* is its tool name plus its arguments in canonical form (key order, case and
    whitespace of strings, word order of free text do not matter). A signature whose last
    ``max_repeats`` outcomes were identical is refused the next time: repeating a call is fine while
    the world changes, not when it keeps answering the same thing.
    """

    enabled: bool = True
    #: identical outcomes of one signature allowed before the next identical call is refused
    max_repeats: int = 2
    #: fold case, whitespace and word order of free-text arguments before comparing calls
    loose_matching: bool = True
    #: tools never subject to loop detection (e.g. a deliberate ``wait`` or ``poll_job``)
    exempt_tools: frozenset[str] = frozenset()
    #: per-tool overrides of ``max_repeats`` (a status poll may repeat more than a search)
    max_repeats_per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: signatures remembered per run; the least recently used are forgotten beyond this
    memory: int = 10_000
    #: tools that report a status (matched on the tool name) get ``poll_max_repeats`` instead: waiting
    #: for a job legitimately sees "running" several times before "done"
    poll_tools: str = r"status|poll|progress|wait|health|heartbeat|is_?done|is_?ready|check_?job"
    poll_max_repeats: int = 8
    #: empty answers ([] / {} / "" / None) in a row from one tool, with any arguments, before the next
    #: call of that tool is refused (paging past the end, searching into nothing); None turns it off
    max_empty_results: int | None = 4
    #: word-overlap (Jaccard) at which two free-text requests to one tool count as the same question
    #: when they also got the same answer (paraphrased queries); None turns it off
    similarity: float | None = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError(f"LoopDetection.enabled must be a bool, got {self.enabled!r}")
        _positive_int("LoopDetection.max_repeats", self.max_repeats, allow_none=False)
        _positive_int("LoopDetection.memory", self.memory, allow_none=False)
        _positive_int("LoopDetection.poll_max_repeats", self.poll_max_repeats, allow_none=False)
        _positive_int("LoopDetection.max_empty_results", self.max_empty_results)
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
        object.__setattr__(self, "exempt_tools", _names("LoopDetection.exempt_tools", self.exempt_tools))
        overrides = _int_mapping("LoopDetection.max_repeats_per_tool", self.max_repeats_per_tool)
        object.__setattr__(self, "max_repeats_per_tool", overrides)

    def repeats_allowed(self, tool: str, waiting: bool = False) -> int:
        """Identical outcomes allowed for ``tool``; ``waiting``: its last answer said "still running"."""
        override = self.max_repeats_per_tool.get(tool)
        if override is not None:
            return override
        poll = waiting or _is_poll_tool(self.poll_tools, tool)
        return max(self.poll_max_repeats, self.max_repeats) if poll else self.max_repeats


@functools.lru_cache(maxsize=4096)
def _is_poll_tool(pattern: str, tool: str) -> bool:
    return pattern != "" and re.search(pattern, tool.casefold()) is not None


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
        checked[key] = _positive_int(f"{param}[{key!r}]", limit, allow_none=False)  # type: ignore[assignment]
    return MappingProxyType(checked)


@dataclass(frozen=True)
class Limits:
    """Hard ceilings for one run. ``None`` means no limit. Reaching a limit exactly is allowed."""

    max_turns: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_tool_calls: int | None = None
    max_calls_per_tool: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    max_seconds: float | None = None
    max_consecutive_failures: int | None = 5
    output_reserve_tokens: int = 0
    recovery_seconds: float = 60.0
    loop: LoopDetection = field(default_factory=LoopDetection)

    def __post_init__(self) -> None:
        _positive_int("max_turns", self.max_turns)
        _positive_int("max_tokens", self.max_tokens)
        _positive_number("max_cost_usd", self.max_cost_usd)
        _positive_int("max_tool_calls", self.max_tool_calls)
        object.__setattr__(self, "max_calls_per_tool", _int_mapping("max_calls_per_tool", self.max_calls_per_tool))
        _positive_number("max_seconds", self.max_seconds)
        _positive_int("max_consecutive_failures", self.max_consecutive_failures)
        _non_negative_int("output_reserve_tokens", self.output_reserve_tokens)
        _positive_number("recovery_seconds", self.recovery_seconds, allow_none=False)
        if not isinstance(self.loop, LoopDetection):
            raise TypeError(f"loop must be a LoopDetection, got {type(self.loop).__name__}")

    @property
    def max_cost_micros(self) -> int | None:
        return None if self.max_cost_usd is None else usd_to_micros(self.max_cost_usd)

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready view (for logs, the ledger and the Redis scripts)."""
        return {
            "max_turns": self.max_turns,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "max_tool_calls": self.max_tool_calls,
            "max_calls_per_tool": dict(self.max_calls_per_tool),
            "max_seconds": self.max_seconds,
            "max_consecutive_failures": self.max_consecutive_failures,
            "output_reserve_tokens": self.output_reserve_tokens,
            "recovery_seconds": self.recovery_seconds,
            "loop": {
                "enabled": self.loop.enabled,
                "max_repeats": self.loop.max_repeats,
                "loose_matching": self.loop.loose_matching,
                "exempt_tools": sorted(self.loop.exempt_tools),
                "max_repeats_per_tool": dict(self.loop.max_repeats_per_tool),
                "memory": self.loop.memory,
                "poll_tools": self.loop.poll_tools,
                "poll_max_repeats": self.loop.poll_max_repeats,
                "max_empty_results": self.loop.max_empty_results,
                "similarity": self.loop.similarity,
            },
        }
