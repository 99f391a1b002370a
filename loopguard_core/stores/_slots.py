"""The Redis store's connection slots: a counting semaphore whose uncontended acquire and release are one C call each.

Every check takes a slot (one of ``max_connections``) and gives it back, so that callers past the limit wait up to
``pool_timeout`` for one instead of failing. ``threading.BoundedSemaphore`` runs a ``Condition`` in Python for both
(about 80 bytecodes and four lock operations per check); here the free slots are tokens in a ``queue.SimpleQueue``,
whose ``get`` (with its timeout) and ``put`` are C. A waiter blocks in ``get`` without holding the GIL, as it would
in the semaphore.
"""

from __future__ import annotations

import queue

__all__ = ["Slots"]


class Slots:
    """``size`` slots, with ``threading.BoundedSemaphore``'s ``acquire(blocking, timeout)`` and ``release()``."""

    __slots__ = ("_free", "size")

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"Slots needs a size >= 1, got {size!r}")
        self.size = size
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            self._free.put(None)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot: True, or False when none came free (at once without ``blocking``, else within ``timeout``
        seconds; None waits as long as it takes)."""
        try:
            self._free.get(blocking, timeout)
        except queue.Empty:
            return False
        return True

    def release(self) -> None:
        """Give a slot back. More releases than acquisitions is a bug: ValueError, as the bounded semaphore raises
        (checked without a lock: two racing over-releases may both pass, a correct caller never races here)."""
        if self._free.qsize() >= self.size:
            raise ValueError("Slots released too many times")
        self._free.put(None)

    def free(self) -> int:
        """Slots free now (a snapshot)."""
        return self._free.qsize()
