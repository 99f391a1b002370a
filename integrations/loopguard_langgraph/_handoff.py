"""The tool calls ``guard_node`` admitted whose outcome is not reported yet, shared with ``guarded_tool_node`` (one
registry per breaker, like the run registry), so that neither node repeats work the other did for the same call.

- ``guard_node`` admits a call (:meth:`Handoff.admit`) and, on its next visit, reports the outcome of every call
  still here whose ``ToolMessage`` has arrived (it may sit in front of a plain ``ToolNode``, which reports nothing).
  A call is found by its id alone: a graph resumed after an interrupt out of a tool body runs as a new invocation
  (a new breaker run), and the call it admitted before is still answered there.
- ``guarded_tool_node`` claims the call it is about to run (:meth:`Handoff.claim`). A call the guard admitted as it
  is (no person's approval, no edited arguments) in the same breaker run leaves the registry there: the tool node
  runs it without its own pre-flight (that check, the same call id again, is a duplicate the store answers with the
  first verdict, at the cost of a whole pre-flight) and reports its outcome itself; when the body pauses the graph
  (``interrupt()``) it puts the admission back, for the resumed graph to claim or the guard to report. Ids a model
  repeats (scripted models, replays, some servers) in another run are other calls: never claimed there. Any other
  call is checked as always, and marked once the tool node reported it (:meth:`Handoff.reported`): the guard then
  does not report it again in that run. One the tool node refused stays, and the guard reports the answer that
  refusal got.
- ``guard_node(on_trip="interrupt")`` counts in the thread's run (:func:`thread_run`), which outlives invocations.
  ``guarded_tool_node`` runs a call the guard admitted there in that run too (:meth:`Handoff.run_of`), so that the
  call is checked and reported once, in one run, not once in the thread's run and again in the invocation's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

from loopguard_core import Breaker

__all__ = ["THREAD_RUN", "Admitted", "Handoff", "thread_run"]

_CAPACITY = 4_096
THREAD_RUN = "langgraph-thread-"  # how the id of a thread's run begins


def thread_run(config: Any) -> tuple[str, str] | None:
    """``(invocation key, run id)`` of the run ``guard_node(on_trip="interrupt")`` counts a thread's calls in, for a
    node's config with a ``thread_id`` (else None): one run per thread, so that a resumed run keeps its counts."""
    configurable = config.get("configurable") if isinstance(config, dict) else None
    thread = configurable.get("thread_id") if isinstance(configurable, dict) else None
    if thread is None:
        return None
    return f"thread:{thread}", f"{THREAD_RUN}{thread}"


class Admitted(NamedTuple):
    """A call ``guard_node`` let through: what it reports the outcome under."""

    name: str
    args: Any
    agent: str | None
    checked: bool  # admitted as it is: the tool node need not check it again


class Handoff:
    """A bounded, thread-safe map of admitted calls by call id (with the run that admitted each), oldest forgotten
    first. One per breaker: use :meth:`of`."""

    @classmethod
    def of(cls, breaker: Breaker) -> Handoff:
        return breaker.attachment("loopguard_langgraph.handoff", cls)

    def __init__(self, capacity: int = _CAPACITY) -> None:
        # call id -> (the run that admitted it, the call, the runs in which a tool node reported it). Read-only
        # outside this class: the nodes test its truth (any call waiting?) on every turn, one read and no lock.
        self.calls: OrderedDict[str, tuple[str, Admitted, tuple[str, ...]]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.calls)  # (one read of a dict's size: no lock needed)

    def admit(self, run_id: str, call_id: str | None, call: Admitted) -> None:
        # Without an id a call cannot be told from another: it is never claimed (checked as always), and only a
        # ToolMessage answering "" reports it.
        key = call_id or ""
        calls = self.calls
        with self._lock:
            if key in calls:  # (a new id goes last as it is set)
                calls.move_to_end(key)
            calls[key] = (run_id, call, ())
            while len(calls) > self._capacity:
                calls.popitem(last=False)

    def claim(self, run_id: str, call_id: str | None, name: str, args: Any) -> Admitted | None:
        """The admission (once) when ``guard_node`` admitted this very call as it is in run ``run_id``: it leaves the
        registry and the caller reports its outcome (or, when the body paused the graph, :meth:`admit` s it again,
        so that the resumed graph finds it). None for any other call."""
        if not call_id:
            return None
        with self._lock:
            entry = self.calls.get(call_id)
            if entry is None or entry[0] != run_id or not entry[1].checked:
                return None
            found = entry[1]
            if found.args is args and found.name == name:  # the usual case, the very call: no caller's code to run
                del self.calls[call_id]
                return found
        try:  # (compared outside the lock: arguments are the caller's objects)
            same = bool(found.name == name and found.args == args)
        except Exception:  # arguments whose comparison raises: not known to be the same call
            same = False
        with self._lock:
            if self.calls.get(call_id) is not entry:  # admitted again meanwhile: that call is not this one
                return None
            if same:
                del self.calls[call_id]
            else:  # another call under this id: checked as always from now on, reported by whoever reports it
                self.calls[call_id] = (run_id, found._replace(checked=False), entry[2])
        return found if same else None

    def run_of(self, call_id: str | None) -> str | None:
        """The run in which ``guard_node`` admitted ``call_id`` as it is (None for any other call)."""
        entry = self.calls.get(call_id) if call_id else None  # (one read of a dict: no lock needed)
        return entry[0] if entry is not None and entry[1].checked else None

    def reported(self, run_id: str, call_id: str | None) -> None:
        """The caller reported the outcome of ``call_id`` (one it did not claim) in run ``run_id``: ``guard_node``
        does not again in that run."""
        if call_id:
            with self._lock:
                entry = self.calls.get(call_id)
                if entry is not None and run_id not in entry[2]:
                    self.calls[call_id] = (entry[0], entry[1], (*entry[2], run_id))

    def take(self, run_id: str, call_ids: list[str]) -> list[tuple[str, Admitted]]:
        """The calls among ``call_ids`` whose outcome run ``run_id`` has not had yet, each out of the registry
        (whichever run admitted it). A call a tool node reported in another run is reported here too:
        ``guard_node(on_trip="interrupt")`` counts in the thread's run, a tool node in the invocation's."""
        found = []
        with self._lock:
            for call_id in call_ids:
                entry = self.calls.pop(call_id, None)
                if entry is not None and run_id not in entry[2]:
                    found.append((call_id, entry[1]))
        return found
