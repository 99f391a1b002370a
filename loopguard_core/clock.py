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

    def monotonic(self) -> float:
        return time.monotonic()
