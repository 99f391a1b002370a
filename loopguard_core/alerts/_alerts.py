"""``Alerts``: deduplicate, queue without blocking, deliver in the background, flush at exit."""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from ._alert import Alert, DedupKey
from ._delivery import AlertStats, Counters, DeadLetter, Lane, Retry, logger
from ._sinks import Sink
from ._watch import AlertWatcher

if TYPE_CHECKING:
    from ..breaker import Breaker

__all__ = ["DEFAULT_DEAD_LETTER", "Alerts"]

#: where alerts that could not be delivered are written, relative to the working directory
DEFAULT_DEAD_LETTER = "loopguard-alerts-dead.jsonl"

_LIVE: list[Alerts] = []  # open Alerts, flushed and closed at interpreter exit
_LIVE_LOCK = threading.Lock()
_HOOKED = False


def _thresholds(value: object) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        raise TypeError(f"thresholds must be shares of a ceiling such as (0.8,) or (0.5, 0.8, 0.95), got {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise TypeError(f"each threshold must be a number in (0, 1], got {item!r}")
        if not 0 < item <= 1:
            raise ValueError(f"each threshold must be a share of the ceiling in (0, 1] (0.8 = 80%), got {item!r}")
        out.append(float(item))
    return tuple(sorted(set(out)))


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class Alerts:
    """Soft thresholds and trips as alerts, delivered off the guarded call's path.

    ::

        alerts = Alerts([WebhookSink(SLACK_URL, format=SlackFormat())], thresholds=(0.8,))
        alerts.attach(breaker)        # trips, 80% of every ceiling, approval requests, observe-mode refusals
        alerts.submit(Alert(...))     # anything else (a budget) that builds its own alerts

    - ``submit`` never blocks and never raises for a delivery problem: it checks ``dedup_key`` (an alert whose
      key was already submitted is dropped; the last ``dedup_size`` keys are remembered) and appends the alert to
      each sink's bounded queue (``queue_size`` alerts per sink). A full queue sends the alert to the dead-letter
      log (reason ``queue full``) and counts it in ``stats().queue_full``.
    - Each sink has its own worker thread, so a sink that is down never holds up the others. A failed delivery is
      retried per ``retry`` (:class:`Retry`); what is rejected, or still failing after ``retry.max_seconds``, goes
      to ``dead_letter`` (a JSONL path, a :class:`DeadLetter`, or ``None`` to only log it).
    - ``flush(timeout)`` waits for the queues to drain; ``close(timeout)`` flushes, stops the workers and
      dead-letters what is left. At interpreter exit every open ``Alerts`` is closed with ``exit_timeout``.
    """

    def __init__(
        self,
        sinks: Sink | Iterable[Sink],
        *,
        thresholds: float | Iterable[float] = (0.8,),
        queue_size: int = 1000,
        retry: Retry | None = None,
        dead_letter: str | os.PathLike[str] | DeadLetter | None = DEFAULT_DEAD_LETTER,
        dedup_size: int = 10_000,
        exit_timeout: float = 3.0,
    ) -> None:
        items = [sinks] if isinstance(sinks, Sink) else list(sinks)
        if not items:
            raise ValueError("Alerts needs at least one sink: CallbackSink(fn) or WebhookSink(url, ...)")
        names: set[str] = set()
        for sink in items:
            if not isinstance(sink, Sink):
                raise TypeError(f"a sink must have a name and send(alert), got {sink!r}")
            if sink.name in names:
                raise ValueError(f"two sinks are named {sink.name!r}: give one of them name=...")
            names.add(sink.name)
        self.sinks: tuple[Sink, ...] = tuple(items)
        self.thresholds = _thresholds(thresholds)
        self.queue_size = _positive_int("queue_size", queue_size)
        self.dedup_size = _positive_int("dedup_size", dedup_size)
        if retry is None:
            retry = Retry()
        if not isinstance(retry, Retry):
            raise TypeError(f"retry must be a loopguard_core.alerts.Retry, got {retry!r}")
        self.retry = retry
        if isinstance(dead_letter, DeadLetter):
            self.dead_letter = dead_letter
        elif dead_letter is None or isinstance(dead_letter, (str, os.PathLike)):
            self.dead_letter = DeadLetter(dead_letter)
        else:
            raise TypeError(f"dead_letter must be a path, a DeadLetter or None, got {dead_letter!r}")
        if isinstance(exit_timeout, bool) or not isinstance(exit_timeout, (int, float)) or not exit_timeout >= 0:
            raise ValueError(f"exit_timeout must be a number of seconds >= 0, got {exit_timeout!r}")
        self.exit_timeout = float(exit_timeout)
        self._counters = Counters()
        self._lanes = tuple(Lane(sink, self.queue_size, retry, self.dead_letter, self._counters) for sink in items)
        self._keys: OrderedDict[DedupKey, None] = OrderedDict()
        self._keys_lock = threading.Lock()
        self._closed = False
        _register(self)

    # -- wiring -----------------------------------------------------------------------------------
    def attach(
        self,
        breaker: Breaker,
        *,
        thresholds: float | Iterable[float] | None = None,
        trips: bool = True,
        observed: bool = True,
        approvals: bool = True,
    ) -> AlertWatcher:
        """Alert on ``breaker``'s events: every trip (critical), each threshold of each ceiling that is set once
        per run (warning; ``thresholds`` overrides this ``Alerts``' own), refusals observe mode would have made
        (warning) and approval requests (warning). Returns the listener it registered."""
        if not hasattr(breaker, "add_listener") or not hasattr(breaker, "limits"):
            raise TypeError(f"attach needs a loopguard_core.Breaker, got {breaker!r}")
        watcher = AlertWatcher(
            self,
            breaker,
            thresholds=self.thresholds if thresholds is None else _thresholds(thresholds),
            trips=trips,
            observed=observed,
            approvals=approvals,
        )
        breaker.add_listener(on_event=watcher)
        return watcher

    # -- the hot path -----------------------------------------------------------------------------
    def submit(self, alert: Alert) -> bool:
        """Queue ``alert`` for every sink that accepts it, without blocking. Returns whether at least one sink's
        queue took it (False: a duplicate, a full queue, or a closed ``Alerts``). Never raises for delivery."""
        if not isinstance(alert, Alert):
            raise TypeError(f"submit takes an Alert, got {type(alert).__name__}")
        key = alert.dedup_key
        if key is not None:
            with self._keys_lock:
                if key in self._keys:
                    self._keys.move_to_end(key)
                    duplicate = True
                else:
                    duplicate = False
                    self._keys[key] = None
                    if len(self._keys) > self.dedup_size:
                        self._keys.popitem(last=False)
            if duplicate:
                self._counters.add("deduplicated")
                return False
        self._counters.add("submitted")
        queued = False
        for lane in self._lanes:
            accepts = getattr(lane.sink, "accepts", None)
            if accepts is not None and not accepts(alert):
                continue
            refused = lane.put(alert)
            if refused is None:
                queued = True
                continue
            if refused == "queue full":
                self._counters.add("queue_full")
                why = f"{self.queue_size} alerts were already waiting for this sink"
            else:
                why = "submitted after close()"
            lane._dead(alert, refused, why, 0)
        return queued

    def _known(self, key: DedupKey) -> bool:
        with self._keys_lock:
            return key in self._keys

    def _remember(self, key: DedupKey) -> None:
        with self._keys_lock:
            self._keys[key] = None
            if len(self._keys) > self.dedup_size:
                self._keys.popitem(last=False)

    # -- draining ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert is delivered or dead-lettered (at most ``timeout`` seconds; None: no
        limit). Returns whether all queues drained. Does not stop anything."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        return all(lane.wait(deadline) for lane in self._lanes)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush for at most ``timeout`` seconds, then stop the workers: alerts still queued, waiting for a retry
        or whose request has not answered go to the dead-letter log. Returns whether everything was delivered
        or dead-lettered by its worker in time. Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout)
        drained = self.flush(timeout)
        self._closed = True
        _unregister(self)
        clean = True
        for lane in self._lanes:
            ended = lane.close(deadline)
            clean = clean and ended
            closer = getattr(lane.sink, "close", None)
            if ended and closer is not None:
                try:
                    closer()
                except Exception:
                    logger.exception("loopguard could not close alert sink %s", lane.sink.name)
        return drained and clean

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> AlertStats:
        """Counters since this ``Alerts`` was made (see :class:`AlertStats`)."""
        c = self._counters
        pending = sum(lane.pending for lane in self._lanes)
        with c.lock:
            return AlertStats(c.submitted, c.deduplicated, c.delivered, c.dead_lettered, c.queue_full, pending)

    def _after_fork(self) -> None:
        self._keys_lock = threading.Lock()
        self._counters.lock = threading.Lock()
        self.dead_letter._after_fork()
        for lane in self._lanes:
            lane.after_fork()

    def __enter__(self) -> Alerts:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(sink.name for sink in self.sinks)
        return f"<Alerts [{names}] thresholds={self.thresholds} {'closed' if self._closed else 'open'}>"


def _register(alerts: Alerts) -> None:
    global _HOOKED
    with _LIVE_LOCK:
        _LIVE.append(alerts)
        if not _HOOKED:
            _HOOKED = True
            atexit.register(_close_all)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)


def _unregister(alerts: Alerts) -> None:
    with _LIVE_LOCK:
        if alerts in _LIVE:
            _LIVE.remove(alerts)


def _close_all() -> None:
    """At interpreter exit: give each open ``Alerts`` its ``exit_timeout`` to deliver, then dead-letter the rest."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for alerts in live:
        try:
            if not alerts.close(alerts.exit_timeout):
                logger.warning(
                    "loopguard alerts: not everything was delivered within exit_timeout=%s s; see %s",
                    alerts.exit_timeout,
                    alerts.dead_letter.path or "the log",
                )
        except Exception:  # never fail interpreter exit
            logger.exception("loopguard could not flush alerts at exit")


def _after_fork() -> None:
    global _LIVE_LOCK
    _LIVE_LOCK = threading.Lock()
    for alerts in list(_LIVE):
        alerts._after_fork()
