"""The tutorial's stateless circuit breaker: a turn ceiling and a token ceiling, checked before each turn.

Boundaries are strict (reaching a limit is allowed, exceeding it trips), the turn ceiling is checked
before the token ceiling, and a trip prints the checkpoint banner on stdout before raising. The token check
compares what was already spent, so the call that crosses the ceiling has been paid for; the main API
(``loopguard_core.Breaker``) projects the next call instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CircuitBreaker", "CircuitBreakerError"]


@dataclass
class CircuitBreakerError(Exception):
    """Raised by :meth:`CircuitBreaker.check`; ``reason`` is ``"turn_ceiling"`` or ``"token_ceiling"``."""

    reason: str
    turn_count: int
    accumulated_tokens: int

    def __post_init__(self) -> None:
        super().__init__(
            f"circuit breaker tripped: {self.reason} (turn={self.turn_count}, tokens={self.accumulated_tokens})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays ``args`` (the message); rebuild from the fields instead.
        return (type(self), (self.reason, self.turn_count, self.accumulated_tokens))


class CircuitBreaker:
    """``CircuitBreaker(turn_limit=5, token_limit=15000)``; holds no state between checks."""

    def __init__(self, turn_limit: int = 5, token_limit: int = 15000) -> None:
        self.turn_limit = turn_limit
        self.token_limit = token_limit

    def check(self, turn_count: int, accumulated_tokens: int) -> None:
        """Raise :class:`CircuitBreakerError` if either count exceeds its limit (turns win a tie)."""
        if turn_count > self.turn_limit:
            self._trip("turn_ceiling", turn_count, accumulated_tokens)
        if accumulated_tokens > self.token_limit:
            self._trip("token_ceiling", turn_count, accumulated_tokens)

    def _trip(self, reason: str, turn_count: int, accumulated_tokens: int) -> None:
        # The banner is part of the tutorial's observable behaviour: its tests read it from stdout.
        print(
            "\n=== CIRCUIT BREAKER CHECKPOINT ===\n"
            f"reason         : {reason}\n"
            f"turn_count     : {turn_count} / limit {self.turn_limit}\n"
            f"tokens_used    : {accumulated_tokens} / limit {self.token_limit}\n"
            "action         : halt loop, surface to human reviewer\n"
            "=================================="
        )
        raise CircuitBreakerError(reason=reason, turn_count=turn_count, accumulated_tokens=accumulated_tokens)
