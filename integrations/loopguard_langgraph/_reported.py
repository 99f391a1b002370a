"""Call ids whose outcome a guarded tool node already reported, so that ``guard_node`` does not report them again.

``guard_node`` reports the outcome of every call it admitted when it next sees that call's ``ToolMessage`` (it may
sit in front of a plain ``ToolNode``, which reports nothing). In front of ``guarded_tool_node``, which reports each
outcome as its body returns, that second report is a duplicate the store answers as one (same call id): no count
moves, but it costs a whole pre-flight's work again. The tool node notes what it reported here (one registry per
breaker, like the run registry), and the guard node skips those.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from loopguard_core import Breaker

__all__ = ["ReportedCalls"]

_ATTR = "_loopguard_langgraph_reported"
_CAPACITY = 4_096


class ReportedCalls:
    """A bounded, thread-safe set of reported call ids (oldest forgotten first). One per breaker: use :meth:`of`."""

    _shared_lock = threading.Lock()

    @classmethod
    def of(cls, breaker: Breaker) -> ReportedCalls:
        with cls._shared_lock:
            found = breaker.__dict__.get(_ATTR)
            if found is None:
                found = breaker.__dict__[_ATTR] = cls()
            return found  # type: ignore[no-any-return]

    def __init__(self, capacity: int = _CAPACITY) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, call_id: str | None) -> None:
        if not call_id:  # without an id a report cannot be told from another call's: never skipped
            return
        with self._lock:
            self._ids[call_id] = None
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)

    def take(self, call_id: str) -> bool:
        """True (once) when the outcome of ``call_id`` was already reported."""
        with self._lock:
            return self._ids.pop(call_id, False) is None
