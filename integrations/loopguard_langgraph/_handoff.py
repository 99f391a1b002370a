"""What ``guard_node`` and ``guarded_tool_node`` tell each other about a tool call, so that neither repeats work the
other already did for the same call (one registry of each kind per breaker, like the run registry). A call is
known by its breaker run and its id: ids a model repeats (scripted models, replays, some servers) in another run
are other calls.

- **checked**: ``guard_node`` admitted the call as it is (no person's approval, no edited arguments). The tool node
  then runs it without its own pre-flight: that check, the same call id again, is a duplicate the store answers
  with the first verdict, at the cost of a whole pre-flight. A call it did not see admitted (a plain graph, another
  process after a resume, arguments that differ) is checked as always.
- **reported**: the tool node reported the call's outcome as its body returned. ``guard_node``, which reports the
  outcome of each call it admitted when the call's ``ToolMessage`` arrives (it may sit in front of a plain
  ``ToolNode``, which reports nothing), then skips it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from loopguard_core import Breaker

__all__ = ["CallIds"]

_CAPACITY = 4_096
_MISSING = object()


class CallIds:
    """A bounded, thread-safe map of call ids (oldest forgotten first). One per breaker and kind: use :meth:`of`."""

    @classmethod
    def of(cls, breaker: Breaker, kind: str) -> CallIds:
        return breaker.attachment(f"loopguard_langgraph.{kind}", cls)

    def __init__(self, capacity: int = _CAPACITY) -> None:
        self._ids: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, run_id: str, call_id: str | None, what: Any = None) -> None:
        if not call_id:  # without an id one call cannot be told from another: never skipped
            return
        key = (run_id, call_id)
        with self._lock:
            self._ids[key] = what
            self._ids.move_to_end(key)
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)

    def take(self, run_id: str, call_id: str | None, what: Any = None) -> bool:
        """True (once) when ``call_id`` was added in run ``run_id``, with ``what`` equal to what it was added with."""
        if not call_id:
            return False
        with self._lock:
            found = self._ids.pop((run_id, call_id), _MISSING)
        if found is _MISSING:
            return False
        try:
            return bool(found == what)
        except Exception:  # arguments whose comparison raises: not known to be the same call
            return False
