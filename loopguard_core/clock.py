"""Time as an injected dependency, so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the breaker needs from time: a monotonic reading in seconds."""

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock (``time.monotonic``)."""

    __slots__ = ()

    # The C function itself: reading the clock on the hot path costs no Python frame.
    monotonic = staticmethod(time.monotonic)
