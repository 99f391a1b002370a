"""Protocols that connect the breaker to its pluggable parts (clock, ledger, pricing, store)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .clock import Clock

__all__ = ["Clock", "LedgerSink", "PriceSource"]


@runtime_checkable
class LedgerSink(Protocol):
    """Where a breaker writes one row per model turn, per tool call and per trip.

    ``input_text`` is the canonical text of what went into the call; the sink hashes it
    (SHA-256, or keyed HMAC) and must never store it.
    """

    def record(
        self,
        *,
        session_id: str,
        origin: str,
        turn: int,
        agent: str | None = None,
        tool: str | None = None,
        input_text: str = "",
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        duration_ms: int = 0,
        passed: bool = True,
        breach_reason: str | None = None,
    ) -> int: ...


@runtime_checkable
class PriceSource(Protocol):
    """Prices a model call in integer micro-USD; ``None`` when the model is unknown."""

    def cost_micros(self, model: str, input_tokens: int, output_tokens: int) -> int | None: ...
