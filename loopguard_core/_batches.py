"""Parallel tool calls of one model answer (a batch) are judged against the run as the model saw it.

A model that answers with several tool calls at once saw none of their results. When the framework runs them
in parallel, whichever finishes first would otherwise change the verdict on the others (a fresh page between
the third and the fourth identical search breaks the repeat): the outcome would depend on thread timing. A
caller that names the batch (``before_tool(..., batch=message_id, call_id=...)``) gets each sibling judged
without the steps its siblings recorded; a per-batch lock makes "read how many siblings recorded" and the
store step one move, so the count and the window always agree. Only siblings contend for it, and never while
a tool body runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict

__all__ = ["Batch", "Batches"]

_MAX = 4_096


class Batch:
    """One model answer's calls in one run: how many of them recorded their outcome, and their lock."""

    __slots__ = ("_alock", "done", "lock")

    def __init__(self) -> None:
        self.done = 0
        self.lock = threading.Lock()
        self._alock: asyncio.Lock | None = None

    def alock(self) -> asyncio.Lock:
        lock = self._alock
        if lock is None:
            lock = self._alock = asyncio.Lock()
        return lock


class Batches:
    """The batches of one breaker, bounded (the oldest are forgotten first)."""

    def __init__(self) -> None:
        self._batches: OrderedDict[tuple[str, str, str], Batch] = OrderedDict()
        self._calls: OrderedDict[tuple[str, str, str], Batch] = OrderedDict()
        self._lock = threading.Lock()

    def join(self, scope: str, run_id: str, batch: str, call_id: str) -> Batch:
        """The batch a call belongs to (made on its first call); the call is remembered for its report."""
        with self._lock:
            key = (scope, run_id, batch)
            found = self._batches.get(key)
            if found is None:
                found = self._batches[key] = Batch()
                if len(self._batches) > _MAX:
                    self._batches.popitem(last=False)
            self._calls[(scope, run_id, call_id)] = found
            if len(self._calls) > _MAX:
                self._calls.popitem(last=False)
            return found

    def of_call(self, scope: str, run_id: str, call_id: str) -> Batch | None:
        """The batch of a call reporting its outcome (once)."""
        if not self._calls:
            return None
        with self._lock:
            return self._calls.pop((scope, run_id, call_id), None)
