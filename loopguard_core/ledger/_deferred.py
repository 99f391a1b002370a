"""Rows that wait in the process and are written together: the ledger's ``defer_seconds``.

A commit costs more than everything else a guarded call does. With ``defer_seconds`` the routine rows (a model
turn or a tool call that passed) wait in the process and are written in one transaction, in the order they were
recorded, once the oldest has waited that long (by the next ``record()``, or, once it has waited twice that,
by one background thread shared by every deferring ledger of the process, so a process that goes quiet does
not keep its rows), when many wait, before a row that must not wait, on every read of the ledger, on
``flush()``/``close()`` and when the process exits (interpreter exit, or the end of a ``multiprocessing``
child). A write that fails keeps every row recorded before it (the error says how many wait); only a process
that dies without exiting loses them.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from time import monotonic as _monotonic
from typing import Any

from ..errors import add_note
from ._errors import LedgerError

__all__ = ["BATCH_ROWS", "IDLE_SECONDS", "MAX_WAITING", "WaitingRows", "flush_at_exit"]

logger = logging.getLogger("loopguard.ledger")

#: Written at once when this many wait, however young the oldest is (a bounded transaction).
BATCH_ROWS = 512
#: While the ledger cannot be written, at most this many rows wait; a row past it is refused, not dropped
#: silently (about 5 MB of row values).
MAX_WAITING = 10_000

# Every WaitingRows (for the fork hook), and those holding rows, strongly: a ledger dropped without close()
# still has its rows written (by the background writer, or at exit), and is freed once they are.
_every: weakref.WeakSet[WaitingRows] = weakref.WeakSet()
_holding: set[WaitingRows] = set()
_holding_lock = threading.Lock()
# Wakes the background writer when a ledger starts holding rows (shares _holding_lock).
_wake = threading.Condition(_holding_lock)
# The background writer of this process (started with the first waiting row; a forked child starts its own).
_writer: list[threading.Thread | None] = [None]
# The process whose multiprocessing exit hook runs flush_at_exit (a forked child registers its own).
_hooked_pid = [0]
#: After a failed background write, the next background attempt waits at least this long (the next due
#: ``record()``, read or ``flush()`` still tries at once and raises the error to its caller).
RETRY_SECONDS = 1.0
#: The background writer ends once no row has waited for this long, and the next waiting row starts it again:
#: a process that went quiet has no thread of ours (forking a process with threads is unsafe, and Python 3.12+
#: warns about it), while a busy one keeps the same thread.
IDLE_SECONDS = 2.0
# The exit handler has run: the writer stops (what it could not write was reported as lost, and stays so).
_exiting = [False]
# Tests that move the clock by hand pause the writer (tests/ledger/test_deferred.py, the `clock` fixture).
_writer_paused = [False]


def flush_at_exit() -> None:
    with _holding_lock:
        _exiting[0] = True
        _wake.notify_all()
        holding = list(_holding)
    for waiting in holding:
        count = waiting.count
        try:
            waiting.flush()
        except Exception as exc:  # exit path: nothing above us can take the error any more, so say it loudly
            message = f"loopguard could not write {count:,} waiting ledger rows at exit; they are lost: {exc}"
            logger.error(message)
            if not _reaches_a_handler(logger):
                print(message, file=sys.stderr)


atexit.register(flush_at_exit)


def _after_fork_in_child() -> None:
    # Only the forking thread lives on in the child: a lock another thread held at the fork would never be
    # released. The rows waiting at the fork are the parent's to write.
    global _holding_lock, _wake
    _holding_lock = threading.Lock()
    _wake = threading.Condition(_holding_lock)
    _exiting[0] = False
    _writer[0] = None  # the parent's writer thread does not exist here; the first waiting row starts one
    _holding.clear()
    for waiting in list(_every):
        waiting._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _hook_multiprocessing_exit() -> None:
    """A ``multiprocessing`` child ends with ``os._exit``, which runs no atexit handler, but runs its own exit
    finalizers: have them write the waiting rows too (once per process)."""
    pid = os.getpid()
    if _hooked_pid[0] == pid:
        return
    util = sys.modules.get("multiprocessing.util")
    if util is None:  # not using multiprocessing (yet): the atexit handler serves
        return
    _hooked_pid[0] = pid
    util.Finalize(None, flush_at_exit, exitpriority=0)


def _start_writer() -> None:
    """Start this process's background writer unless it runs (called with ``_holding_lock`` held)."""
    thread = _writer[0]
    if thread is not None and thread.is_alive():
        return
    thread = threading.Thread(target=_write_due_rows, name="loopguard-ledger-writer", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # interpreter shutdown: the exit handler writes the rows
        return
    _writer[0] = thread


def _write_due_rows() -> None:
    """The background writer: write each ledger's rows once the oldest has waited twice ``defer_seconds`` and no
    ``record()`` came to write them. It holds a ledger's lock only while writing that ledger's rows, and never
    waits for one another thread holds (that thread writes them, or they are tried again later). It ends once
    nothing has waited for ``IDLE_SECONDS``; the next waiting row starts another."""
    while not _exiting[0]:
        with _wake:
            idle_until = None  # set while no ledger holds rows
            while True:
                now = _monotonic()
                due = [] if _writer_paused[0] else [w for w in _holding if w._due_at <= now]
                if due or _exiting[0]:
                    break
                # Wait until the soonest row is due, until woken while paused, or until the idle time is over.
                deadline = None if _writer_paused[0] else min((w._due_at for w in _holding), default=None)
                if deadline is not None or _writer_paused[0]:
                    idle_until = None
                else:
                    if idle_until is None:
                        idle_until = now + IDLE_SECONDS
                    elif now >= idle_until:
                        # Decided under the lock _hold() takes: a row that waits from now on starts a new writer.
                        if _writer[0] is threading.current_thread():
                            _writer[0] = None
                        return
                    deadline = idle_until
                _wake.wait(None if deadline is None else deadline - now)
        while due:  # hold no ledger past its write: a ledger dropped without close() can then be collected
            due.pop()._write_if_due()


def _reaches_a_handler(log: logging.Logger) -> bool:
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class WaitingRows:
    """The rows of one ledger that wait to be written, and the rule for when they are."""

    def __init__(
        self,
        seconds: float,
        write: Callable[[Sequence[Sequence[Any]]], int],
        name: str,
        stored: Callable[[Sequence[Any]], bool] | None = None,
    ) -> None:
        self._seconds = seconds
        self._write = write
        # Whether a row is in the ledger: asked when an interrupt cut a write short, which may have committed.
        self._stored = stored
        self._name = name
        self._rows: list[Sequence[Any]] = []
        self._since = 0.0  # monotonic time the oldest waiting row was recorded
        self._due_at = 0.0  # when the background writer writes them (2x defer_seconds; later after a failure)
        self._failing = False  # the last background attempt failed and no write succeeded since (logged once)
        self._closed = False
        # Held while writing, so batches reach the file in the order their rows were recorded. Never held
        # across a guarded call: only inside record(), a read, flush() or close().
        self._lock = threading.Lock()
        _every.add(self)

    @property
    def count(self) -> int:
        return len(self._rows)

    def add(self, values: Sequence[Any], at_once: bool) -> int:
        """Keep ``values``; write every waiting row now when ``at_once`` or when the batch is due, and return the
        seq ``values`` got (0 while it waits). When that write fails, ``values`` is not kept (the error is this
        row's: recording it again records it once) and the rows recorded before it still wait."""
        with self._lock:
            if self._closed:
                raise LedgerError(f"ledger {self._name!r} is closed; open a new Ledger to record more rows")
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
            first = not self._rows
            if first:
                self._since = now
                # The background writer steps in only once no record() has written them for another
                # defer_seconds: in a busy process record() writes them, and the two never contend for them.
                self._due_at = now + 2 * self._seconds
            self._rows.append(values)
            if not (at_once or len(self._rows) >= BATCH_ROWS or now - self._since >= self._seconds):
                if first:  # the writer and the exit handler learn of rows that wait, not of those written now
                    self._hold()
                return 0
            try:
                return self._write_locked()
            except BaseException as exc:
                if not self._rows or self._rows[-1] is not values:  # an interrupt after the commit: stored
                    add_note(exc, "loopguard: this row and the rows before it were written before the interruption")
                    raise
                self._rows.pop()
                if not self._rows:
                    self._release()
                add_note(exc, f"loopguard: this row was not recorded; {self._waiting_note(before_it=True)}")
                raise

    def flush(self) -> None:
        """Write every waiting row now (one transaction)."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Write every waiting row, then refuse new ones (a row kept after close would never be written)."""
        with self._lock:
            self._flush_locked()
            self._closed = True

    def _flush_locked(self) -> None:
        try:
            self._write_locked()
        except BaseException as exc:
            add_note(exc, f"loopguard: {self._waiting_note()}")
            raise

    def _waiting_note(self, before_it: bool = False) -> str:
        if not self._rows:
            return "no other row waits"
        which = "rows recorded before it" if before_it else "rows"
        return (
            f"{len(self._rows):,} ledger {which} wait in this process; flush(), close() or a read of this Ledger "
            "writes them, as do a record() and the background writer once they are due"
        )

    def _write_locked(self) -> int:
        """Write the waiting rows; return the last one's seq (0 when none waited)."""
        rows = self._rows
        if not rows:
            return 0
        # Nothing of the batch is committed unless all of it is (one transaction): on an error every row still
        # waits, in order.
        try:
            last = self._write(rows)
            self._rows = []
            self._failing = False
            self._release()
        except BaseException as exc:
            # An interrupt (KeyboardInterrupt, or SystemExit from a signal handler) can land between the COMMIT
            # and the lines above: ask the ledger for the batch's last row, so that it is not written twice.
            if self._rows is rows and not isinstance(exc, Exception) and self._was_stored(rows[-1]):
                self._rows = []
                self._release()
            raise
        return last

    def _was_stored(self, values: Sequence[Any]) -> bool:
        if self._stored is None:
            return False
        try:
            return self._stored(values)
        except Exception:  # cannot tell: keep the rows (written twice at worst, never lost)
            logger.debug("loopguard could not tell whether an interrupted ledger write committed", exc_info=True)
            return False

    def _write_if_due(self) -> None:
        """The background writer's turn: write the rows if they are still due (a record() may have written them,
        or a failed attempt pushed the next one back). A failure is logged once per streak, after the lock is
        let go; the rows keep waiting, and the next due record(), read or flush() meets the error itself."""
        if not self._lock.acquire(blocking=False):
            # Another thread records or writes (a due record() writes them; a write may wait on a locked file):
            # look again later rather than make every other ledger's rows wait behind this one.
            self._due_at = _monotonic() + max(self._seconds, 0.01)
            return
        message: tuple[Any, ...] = ()
        try:
            if not self._rows:
                self._release()  # nothing left to write (an interrupt stopped short of releasing): no spinning
                return
            if _monotonic() < self._due_at:
                return
            was_failing = self._failing
            try:
                self._write_locked()
            except Exception as exc:
                self._due_at = _monotonic() + max(self._seconds, RETRY_SECONDS)
                if not was_failing:
                    self._failing = True
                    message = (
                        "loopguard could not write %s waiting rows of ledger %r in the background; they keep "
                        "waiting, and the next record(), read or flush() writes them or raises the error: %s",
                        f"{len(self._rows):,}",
                        self._name,
                        exc,
                    )
                return
            if was_failing:
                message = ("loopguard wrote the waiting rows of ledger %r in the background", self._name)
        finally:
            self._lock.release()
            if message:
                logger.warning(*message)

    def _hold(self) -> None:
        with _wake:
            _holding.add(self)
            _start_writer()
            _wake.notify()
        _hook_multiprocessing_exit()

    def _release(self) -> None:
        with _holding_lock:
            _holding.discard(self)

    def _forget_parent(self) -> None:
        self._lock = threading.Lock()
        self._rows = []
        self._failing = False
