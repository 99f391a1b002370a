"""Delivery off the hot path: one bounded queue and one worker thread per sink, retries with back-off and
jitter, and a dead-letter log for what could not be delivered. No lock is held while a sink sends."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._alert import Alert
from ._sinks import AlertDeliveryError, Sink

__all__ = ["AlertStats", "DeadLetter", "Retry"]

logger = logging.getLogger("loopguard.alerts")
logger.addHandler(logging.NullHandler())


def _seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Retry:
    """When to try a failed delivery again, and when to give up.

    The n-th wait is ``initial * multiplier**(n-1)``, capped at ``maximum``, less a random share of up to
    ``jitter`` (so many processes that failed together do not retry together). A ``Retry-After`` the receiver
    sent is waited for at least (up to ``max_retry_after``). An alert is retried until it is delivered or
    ``max_seconds`` have passed since its first attempt (or ``max_attempts`` were made); then it goes to the
    dead-letter log. The defaults ride out a receiver that is down for up to 15 minutes.
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_seconds: float = 900.0
    max_attempts: int | None = None
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        _seconds("initial", self.initial)
        _seconds("maximum", self.maximum)
        _seconds("max_seconds", self.max_seconds, allow_zero=True)
        _seconds("max_retry_after", self.max_retry_after, allow_zero=True)
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, (int, float)) or self.multiplier < 1:
            raise ValueError(f"multiplier must be a number >= 1, got {self.multiplier!r}")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a share between 0 and 1, got {self.jitter!r}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be an int >= 1 or None, got {self.max_attempts!r}")

    def delay(
        self, attempt: int, retry_after: float | None = None, *, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        exponent = min(max(attempt - 1, 0), 64)
        wait = min(self.maximum, self.initial * self.multiplier**exponent)
        wait *= 1.0 - self.jitter * rng()
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


class DeadLetter:
    """Alerts that could not be delivered, one JSON line each: ``failed_at``, ``sink`` (its name, never its
    URL or secret), ``reason`` (``queue full``, ``rejected``, ``gave up``, ``closed``, ``in flight at close``),
    ``error``, ``attempts`` and the ``alert`` (:meth:`Alert.as_dict`). ``path=None`` logs them instead."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()

    def write(self, alert: Alert, *, sink: str, reason: str, error: str | None = None, attempts: int = 0) -> None:
        record = {
            "failed_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "sink": sink,
            "reason": reason,
            "error": error,
            "attempts": attempts,
            "alert": alert.as_dict(),
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        logger.warning(
            "loopguard alert %s (%s) not delivered to %s: %s%s",
            alert.id,
            alert.title,
            sink,
            reason,
            f" ({error})" if error else "",
        )
        if self.path is None:
            return
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError:
            logger.exception(
                "loopguard could not write to the alert dead-letter log %s; the alert: %s", self.path, line
            )

    def read(self) -> list[dict[str, Any]]:
        """Every line written so far (for a replay, or a test)."""
        if self.path is None or not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DeadLetter({self.path!r})"


@dataclass(frozen=True)
class AlertStats:
    """Counters of one :class:`~loopguard_core.alerts.Alerts` since it was made. ``delivered`` and
    ``dead_lettered`` count per sink (an alert sent to two sinks counts twice)."""

    submitted: int
    deduplicated: int
    delivered: int
    dead_lettered: int
    queue_full: int
    pending: int


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted = 0
        self.deduplicated = 0
        self.delivered = 0
        self.dead_lettered = 0
        self.queue_full = 0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


_WRITE_OFF_SECONDS = 2.0  # how long close() waits for a worker's own dead-letter write of its alert to finish


class Lane:
    """One sink's bounded queue and its worker thread (started on the first alert)."""

    def __init__(self, sink: Sink, size: int, retry: Retry, dead: DeadLetter, counters: Counters) -> None:
        self.sink = sink
        self.size = size
        self.retry = retry
        self.dead = dead
        self.counters = counters
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[Alert] = deque()
        self._pending = 0
        self._current: Alert | None = None
        self._abandoned: Alert | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False

    def after_fork(self) -> None:
        # The parent's worker did not come along, and the parent delivers what it had queued.
        self._reset()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def put(self, alert: Alert) -> str | None:
        """Queue ``alert`` without blocking; returns why it could not be (``queue full``, ``closed``) or None."""
        start = False
        with self._cond:
            if self._closed:
                return "closed"
            if len(self._items) >= self.size:
                return "queue full"
            self._items.append(alert)
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name=f"loopguard-alerts[{self.sink.name}]", daemon=True
                )
                start = True
            self._cond.notify_all()
        if start:
            try:
                self._thread.start()
            except RuntimeError:  # interpreter shutdown (3.12+): close() dead-letters what is queued
                logger.warning("loopguard could not start an alert worker for %s", self.sink.name)
        return None

    def wait(self, deadline: float | None) -> bool:
        """Until nothing is queued or in flight, or ``deadline`` (monotonic) passes; returns whether drained."""
        with self._cond:
            while self._pending:
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return self._pending == 0
            return True

    def close(self, deadline: float) -> bool:
        """Stops the worker; what is still queued goes to the dead-letter log. Returns whether the worker ended."""
        with self._cond:
            if self._closed:  # closed before: what was left is in the dead-letter log already
                thread = self._thread
                return thread is None or not thread.is_alive()
            self._closed = True
            self._stop.set()
            left = list(self._items)
            self._items.clear()
            self._pending -= len(left)
            self._cond.notify_all()
            thread = self._thread
        for alert in left:
            self._dead(alert, "closed", "not delivered before close or exit", 0)
        if thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            flying = self._current
            if flying is None or thread is None or not thread.is_alive():
                flying = None
            elif self._abandoned is flying:
                # Its worker is writing it off right now (a local append): let that finish rather than write it
                # twice, but never lose it to the end of the interpreter, which stops daemon threads mid-write.
                self._cond.wait_for(lambda: self._current is not flying, _WRITE_OFF_SECONDS)
                if self._current is not flying:
                    flying = None
            else:
                self._abandoned = flying
        if flying is not None:
            self._dead(flying, "in flight at close", "its request had not answered; it may have been delivered", 0)
            return False
        return True

    def _dead(self, alert: Alert, reason: str, error: str | None, attempts: int) -> None:
        self.counters.add("dead_lettered")
        self.dead.write(alert, sink=self.sink.name, reason=reason, error=error, attempts=attempts)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop.is_set():
                    self._cond.wait()
                if not self._items:
                    return
                alert = self._items.popleft()
                self._current = alert
            try:
                self._deliver(alert)
            except Exception:  # never let the worker die: the next alert still goes out
                logger.exception("loopguard alert worker for %s failed on alert %s", self.sink.name, alert.id)
            finally:
                with self._cond:
                    self._current = None
                    self._pending -= 1
                    self._cond.notify_all()

    def _deliver(self, alert: Alert) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                self.sink.send(alert)
            except AlertDeliveryError as exc:
                error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after
            except Exception as exc:
                error, retryable = f"{type(exc).__name__}: {exc}", True
            else:
                self.counters.add("delivered")
                if attempt > 1:
                    logger.info(
                        "loopguard alert %s delivered to %s after %d attempts", alert.id, self.sink.name, attempt
                    )
                return
            with self._cond:
                if self._abandoned is alert:  # close() wrote it off while its request hung
                    return
            if not retryable:
                self._write_off(alert, "rejected", error, attempt)
                return
            wait = self.retry.delay(attempt, retry_after)
            limit = self.retry.max_attempts
            if (limit is not None and attempt >= limit) or time.monotonic() - started + wait > self.retry.max_seconds:
                self._write_off(alert, "gave up", error, attempt)
                return
            log = logger.warning if attempt == 1 else logger.debug
            log("loopguard alert %s to %s failed (%s); retrying in %.2f s", alert.id, self.sink.name, error, wait)
            if self._stop.wait(wait):
                self._write_off(alert, "closed", error, attempt)
                return

    def _write_off(self, alert: Alert, reason: str, error: str | None, attempts: int) -> None:
        """The worker dead-letters the alert in flight, unless close() gave up on it and wrote it already; the mark
        tells a close() that comes during the write to wait for it instead of writing the alert a second time."""
        with self._cond:
            if self._abandoned is alert:
                return
            self._abandoned = alert
        self._dead(alert, reason, error, attempts)
