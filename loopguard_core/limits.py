"""The breaker's configuration: hard ceilings and loop detection, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._bounds import MAX_COUNT, MAX_SECONDS, MAX_USD
from .detection import LoopDetection
from .detection._policy import _int_mapping

__all__ = ["MODES", "UNCAPPED_OUTPUT_TOKENS", "Limits", "LoopDetection", "usd_to_micros"]

#: what a request with no output cap reserves when the price data does not know the model's maximum output:
#: the largest common default maximum among current chat models (one call must not overshoot a ceiling by
#: its whole output)
UNCAPPED_OUTPUT_TOKENS = 16_384

#: ``enforce`` refuses what breaks a rule; ``observe`` checks everything, records and logs what it would
#: have refused, and refuses nothing
MODES = ("enforce", "observe")

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
    if value > MAX_COUNT:
        raise ValueError(
            f"{name} must be at most {MAX_COUNT:,} (every store counts it exactly); pass None for no limit"
        )
    return value


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (got {value})")
    if value > MAX_COUNT:
        raise ValueError(f"{name} must be at most {MAX_COUNT:,}")
    return value


def _positive_number(name: str, value: object, *, allow_none: bool = True, most: float = MAX_SECONDS) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number or None, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (got {value}); omit it or pass None for no limit")
    if value > most:
        raise ValueError(f"{name} must be at most {most:,.0f} (got {value}); pass None for no limit")
    return float(value)


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
    #: tokens reserved for a request that sets no output cap; None: the model's maximum output where the
    #: price data knows it, else UNCAPPED_OUTPUT_TOKENS (only when a token or USD ceiling is set)
    output_reserve_tokens: int | None = None
    recovery_seconds: float = 60.0
    loop: LoopDetection = field(default_factory=LoopDetection)
    #: ``enforce`` (default) or ``observe`` (see MODES); a loop detector or policy may set its own
    mode: str = "enforce"
    #: refused calls an agent may be told about (``on_trip="steer"``) before its run is stopped for good
    max_refusals: int | None = 3
    #: under ``max_cost_usd``, admit models with no known price (counted as 0 USD, with a warning)
    allow_unpriced: bool = False

    def __post_init__(self) -> None:
        _positive_int("max_turns", self.max_turns)
        _positive_int("max_tokens", self.max_tokens)
        _positive_number("max_cost_usd", self.max_cost_usd, most=MAX_USD)
        _positive_int("max_tool_calls", self.max_tool_calls)
        object.__setattr__(self, "max_calls_per_tool", _int_mapping("max_calls_per_tool", self.max_calls_per_tool))
        _positive_number("max_seconds", self.max_seconds)
        _positive_int("max_consecutive_failures", self.max_consecutive_failures)
        if self.output_reserve_tokens is not None:
            _non_negative_int("output_reserve_tokens", self.output_reserve_tokens)
        _positive_int("max_refusals", self.max_refusals)
        if not isinstance(self.allow_unpriced, bool):
            raise TypeError(f"allow_unpriced must be a bool, got {self.allow_unpriced!r}")
        _positive_number("recovery_seconds", self.recovery_seconds, allow_none=False)
        if not isinstance(self.loop, LoopDetection):
            raise TypeError(f"loop must be a LoopDetection, got {type(self.loop).__name__}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'enforce' or 'observe', got {self.mode!r}")

    @property
    def observing(self) -> bool:
        """Whether ceilings are only observed (checked, recorded, logged), never enforced."""
        return self.mode == "observe"

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
            "max_refusals": self.max_refusals,
            "allow_unpriced": self.allow_unpriced,
            "recovery_seconds": self.recovery_seconds,
            "loop": self.loop.as_dict(),
            "mode": self.mode,
        }
