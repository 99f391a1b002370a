"""Which trips a breaker announced: ``watch(breaker)`` attaches listeners and keeps them in a :class:`TripLog`."""

from __future__ import annotations

import threading
import weakref

from loopguard_core import Breaker, LoopGuardTripped

__all__ = ["TripLog", "watch", "watched", "watched_logs"]

_KEY = "loopguard_pytest.trips"  # the breaker's attachment that holds its log
_LOGS: weakref.WeakSet[TripLog] = weakref.WeakSet()  # every log whose breaker is alive (the breaker holds its log)
_LOCK = threading.Lock()


class TripLog:
    """The trips a watched breaker announced, in order, and what observe mode would have refused. Thread-safe.

    ``trips`` holds every refusal (each one a :class:`~loopguard_core.LoopGuardTripped` handed to the breaker's
    ``on_trip`` listeners, whether or not it reached the caller); ``observed`` every call that ``mode="observe"``
    would have refused (``on_observe``). A retried request that gets the same verdict is not announced again.
    """

    def __init__(self) -> None:
        self._trips: list[LoopGuardTripped] = []
        self._observed: list[LoopGuardTripped] = []
        self._lock = threading.Lock()

    @property
    def trips(self) -> list[LoopGuardTripped]:
        """Every refusal so far, in order (a copy)."""
        with self._lock:
            return list(self._trips)

    @property
    def observed(self) -> list[LoopGuardTripped]:
        """Every would-be refusal of observe mode so far, in order (a copy)."""
        with self._lock:
            return list(self._observed)

    def on_trip(self, trip: LoopGuardTripped) -> None:
        """The breaker's ``on_trip`` listener."""
        with self._lock:
            self._trips.append(trip)

    def on_observe(self, note: LoopGuardTripped) -> None:
        """The breaker's ``on_observe`` listener."""
        with self._lock:
            self._observed.append(note)

    def __len__(self) -> int:
        with self._lock:
            return len(self._trips)

    def __repr__(self) -> str:
        return f"TripLog(trips={[t.reason for t in self.trips]}, observed={[t.reason for t in self.observed]})"


def watch(breaker: Breaker) -> TripLog:
    """Start collecting ``breaker``'s trips (once: watching it again returns the same log).

    The ``breaker`` fixture is watched from the start; call this before the run for a breaker you build yourself,
    so that ``assert_not_tripped(breaker)`` and ``assert_tripped(breaker, ...)`` see its trips afterwards.
    """
    if not isinstance(breaker, Breaker):
        raise TypeError(f"watch() takes a loopguard_core.Breaker, got {type(breaker).__name__}")
    return breaker.attachment(_KEY, lambda: _listen(breaker))


def _listen(breaker: Breaker) -> TripLog:
    log = TripLog()
    breaker.add_listener(on_trip=log.on_trip, on_observe=log.on_observe)
    with _LOCK:
        _LOGS.add(log)
    return log


def watched(breaker: Breaker) -> TripLog | None:
    """The log of ``breaker`` when it is watched, else None."""
    log = breaker.attached(_KEY)
    return log if isinstance(log, TripLog) else None


def watched_logs() -> list[TripLog]:
    """The logs of every breaker watched and still alive."""
    with _LOCK:
        return list(_LOGS)
