"""Rows that wait in the process and are written together: the ledger's ``defer_seconds``.

A SQLite commit costs more than everything else a guarded call does. With ``defer_seconds`` the routine rows
(a model turn or a tool call that passed) wait in the process and are written in one transaction, in the order
they were recorded, once the oldest has waited that long, when many wait, before a row that must not wait, on
every read of the ledger, on ``flush()``/``close()`` and at interpreter exit. A write that fails keeps every
row it was given (the error says how many wait); only a process that dies without exiting loses them.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence
from time import monotonic as _monotonic
from typing import Any

from ..errors import add_note
from ._errors import LedgerError

__all__ = ["MAX_WAITING", "WaitingRows", "flush_at_exit"]

logger = logging.getLogger("loopguard.ledger")

#: Written at once when this many wait, however young the oldest is (a bounded transaction).
BATCH_ROWS = 512
#: While the ledger cannot be written, at most this many rows wait; a row past it is refused, not dropped
#: silently (about 5 MB of row values).
MAX_WAITING = 10_000

# Bumped in a forked child: the rows waiting at the fork are the parent's to write.
_fork_generation = [0]


def _after_fork() -> None:
    _fork_generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

# Every WaitingRows that holds rows, strongly: a ledger dropped without close() still has them written at exit.
_holding: set[WaitingRows] = set()
_holding_lock = threading.Lock()


def flush_at_exit() -> None:
    with _holding_lock:
        holding = list(_holding)
    for waiting in holding:
        try:
            waiting.flush()
        except Exception as exc:  # exit path: nothing above us can take the error any more
            logger.error("loopguard could not write %d waiting ledger rows at exit: %s", waiting.count, exc)


atexit.register(flush_at_exit)


class WaitingRows:
    """The rows of one ledger that wait to be written, and the rule for when they are."""

    def __init__(self, seconds: float, write: Callable[[Sequence[Sequence[Any]]], object]) -> None:
        self._seconds = seconds
        self._write = write
        self._rows: list[Sequence[Any]] = []
        self._since = 0.0  # monotonic time the oldest waiting row was recorded
        self._generation = _fork_generation[0]
        # Held while writing, so batches reach the file in the order their rows were recorded. Never held
        # across a guarded call: only inside record(), a read or flush().
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self._rows)

    def add(self, values: Sequence[Any], at_once: bool) -> None:
        """Keep ``values``; write every waiting row now when ``at_once`` or when the batch is due."""
        with self._lock:
            self._forget_parent()
            now = _monotonic()
            if len(self._rows) >= MAX_WAITING:
                # The earlier writes failed and keep failing: refuse this row loudly rather than grow without end.
                try:
                    self._write_locked()
                except Exception as exc:
                    raise LedgerError(
                        f"{len(self._rows):,} ledger rows already wait in this process because the ledger cannot "
                        f"be written ({exc}); this row was not recorded. Fix the ledger (see the error), then call "
                        "flush() to write the waiting rows"
                    ) from exc
            if not self._rows:
                self._since = now
                with _holding_lock:
                    _holding.add(self)
            self._rows.append(values)
            if at_once or len(self._rows) >= BATCH_ROWS or now - self._since >= self._seconds:
                self._write_locked()

    def flush(self) -> None:
        """Write every waiting row now (one transaction)."""
        with self._lock:
            self._forget_parent()
            self._write_locked()

    def _write_locked(self) -> None:
        rows = self._rows
        if not rows:
            return
        try:
            self._write(rows)
        except BaseException as exc:
            # Nothing of the batch was committed (one transaction): every row still waits, in order.
            add_note(
                exc,
                f"loopguard: {len(rows):,} ledger rows wait in this process and are written by the next "
                "record(), read, flush() or close()",
            )
            raise
        self._rows = []
        with _holding_lock:
            _holding.discard(self)

    def _forget_parent(self) -> None:
        if self._generation != _fork_generation[0]:
            self._rows = []  # recorded by the parent before the fork: the parent writes them
            self._generation = _fork_generation[0]
            with _holding_lock:
                _holding.discard(self)
