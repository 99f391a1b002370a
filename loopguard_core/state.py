"""Breaker states and the table of legal transitions between them.

A trip opens the breaker. Budget ceilings keep it open for the rest of the run; health trips (a loop, a
failing tool) half-open after the recovery window, where exactly one probe call decides: success closes
the breaker, a repeat or a failure opens it again. Any other move is a bug and raises.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from .errors import IllegalTransition

__all__ = ["TRANSITIONS", "BreakerState", "check_transition"]


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


#: (source, target) -> what causes it. Nothing else is legal.
TRANSITIONS: Mapping[tuple[BreakerState, BreakerState], str] = MappingProxyType(
    {
        (BreakerState.CLOSED, BreakerState.OPEN): "trip",
        (BreakerState.OPEN, BreakerState.HALF_OPEN): "recovery window elapsed (health trips only)",
        (BreakerState.HALF_OPEN, BreakerState.CLOSED): "probe succeeded",
        (BreakerState.HALF_OPEN, BreakerState.OPEN): "probe failed, repeated, or another trip",
        (BreakerState.OPEN, BreakerState.CLOSED): "explicit reset()",
    }
)


def check_transition(source: BreakerState, target: BreakerState) -> None:
    """Raise :class:`IllegalTransition` unless ``source -> target`` is in :data:`TRANSITIONS`."""
    if (source, target) not in TRANSITIONS:
        raise IllegalTransition(source, target)
