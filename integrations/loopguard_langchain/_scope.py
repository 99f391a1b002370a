"""One breaker run per top-level LangGraph invocation, shared by every agent nested inside it.

LangGraph hands every node of one invocation (including nested subgraphs and agents invoked from inside a
tool) the same ``RunControl`` object, and a fresh one to the next invocation. That object is the key:
the first agent that starts under a key opens a breaker run, nested agents join it, and every hook
re-enters it, so counts are shared inside an invocation and never leak into the next one.

Context variables cannot carry the run from one node to the next (LangGraph runs each node in a copied
context), hence the explicit registry. A run is closed when the outermost agent of the invocation
finishes; an invocation that ended with an exception (its after-hook never runs), or whose agents are
nodes of a larger plain graph, is released once ``capacity`` newer invocations have started.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import get_runtime

from loopguard_core import Breaker
from loopguard_core.runs import RunHandle, RunScope

from ._common import agent_name

__all__ = ["InvocationRuns", "call_invocation", "config_invocation", "current_invocation", "tool_call_scope"]


# Where LangGraph keeps a node's Runtime in its config (langgraph._internal._constants): what get_runtime() reads.
_CONFIGURABLE, _RUNTIME_KEY = "configurable", "__pregel_runtime"


def current_invocation(runtime: Any = None, config: Any = None) -> tuple[Any, bool]:
    """``(key, is_root)`` for the invocation running now; key is None outside LangGraph.

    ``runtime`` is a hook's LangGraph ``Runtime``; ``config`` a node's ``RunnableConfig`` (its runtime is read from
    it without the context lookup ``get_runtime()`` makes). With neither, the running node's is used."""
    if runtime is None and type(config) is dict:
        runtime = (config.get(_CONFIGURABLE) or {}).get(_RUNTIME_KEY)
    control = getattr(runtime, "control", None)
    info = getattr(runtime, "execution_info", None)
    if control is None:
        try:
            current = get_runtime()
        except (RuntimeError, KeyError):
            return None, False
        control = getattr(current, "control", None)
        info = getattr(current, "execution_info", None)
    namespace = getattr(info, "checkpoint_ns", "") or ""
    # A hook node of a top-level agent has a namespace like "Mw.before_agent:<task>", nested ones "a:<id>|...".
    return control, "|" not in namespace


def config_invocation(config: Any) -> Any:
    """The invocation key a node's ``RunnableConfig`` carries (its runtime's), else None: no context lookup and no
    ``is_root``, only reads of the config (every turn of a graph reads it)."""
    if type(config) is not dict:
        return None
    return getattr((config.get(_CONFIGURABLE) or {}).get(_RUNTIME_KEY), "control", None)


def call_invocation(request: Any) -> Any:
    """:func:`config_invocation` of a tool call's ``ToolCallRequest``, whose ``ToolRuntime`` carries the node's
    config (LangGraph's ``ToolNode`` always passes it)."""
    return config_invocation(getattr(getattr(request, "runtime", None), "config", None))


def tool_call_scope(request: Any) -> tuple[str | None, Any, bool]:
    """``(agent, key, is_root)`` of a tool call's ``ToolCallRequest``: read from the node's config its
    ``ToolRuntime`` carries (no context lookups on every call), else from the running node."""
    config = getattr(getattr(request, "runtime", None), "config", None)
    key, is_root = current_invocation(config=config)
    agent = agent_name(config.get("metadata") or {}) if type(config) is dict else agent_name()
    return agent, key, is_root


_ATTR = "loopguard_langgraph.invocations"
_NOTHING = nullcontext()  # reusable: it holds nothing


def _slot(key: Any) -> Hashable:
    # Objects (RunControl) are keyed by identity, names (a thread id) by value.
    return ("name", key) if isinstance(key, str) else id(key)


@dataclass
class _Entry:
    key: Any  # held so its id() cannot be reused while the entry lives
    handle: RunHandle
    depth: int
    owned_by_root: bool


class InvocationRuns:
    """Maps LangGraph invocations to breaker runs (thread-safe). One per breaker: use :meth:`of`."""

    @classmethod
    def of(cls, breaker: Breaker) -> InvocationRuns:
        """The registry of ``breaker``, shared by every middleware and node that uses it.

        Kept on the breaker itself (not in a global map), so breaker, registry and open runs form a plain
        reference cycle that the garbage collector frees together.
        """
        return breaker.attachment(_ATTR, lambda: cls(breaker))

    def __init__(self, breaker: Breaker, *, capacity: int = 512) -> None:
        self._breaker = breaker
        self._capacity = capacity
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def enter(self, key: Any, *, is_root: bool, run_id: str | None = None) -> None:
        """An agent starts (before_agent): open the invocation's run or join it."""
        if key is None:
            return
        evicted: list[_Entry] = []
        slot = _slot(key)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is not None:
                entry.depth += 1
                self._entries.move_to_end(slot)
                return
        # begin_run joins a run the caller opened (``with breaker.run():`` around invoke), else starts one.
        handle = self._breaker.begin_run(run_id)
        with self._lock:
            raced = self._entries.get(slot)
            if raced is not None:  # a parallel agent of the same invocation got there first: join its run
                raced.depth += 1
                evicted.append(_Entry(key, handle, 0, False))
            else:
                self._entries[slot] = _Entry(key, handle, 1, is_root)
                while len(self._entries) > self._capacity:
                    evicted.append(self._entries.popitem(last=False)[1])
        for old in evicted:
            old.handle.close()

    def touch(self, key: Any, run_id: str | None = None) -> None:
        """Open the invocation's run on first sight (graphs without agent hooks); released by capacity."""
        if key is None:
            return
        slot = _slot(key)
        with self._lock:
            if slot in self._entries:
                self._entries.move_to_end(slot)
                return
        self.enter(key, is_root=False, run_id=run_id)

    def exit(self, key: Any) -> None:
        """An agent finished (after_agent): close the run when the top-level agent is done."""
        if key is None:
            return
        slot = _slot(key)
        with self._lock:
            entry = self._entries.get(slot)
            if entry is None:
                return
            entry.depth -= 1
            if entry.depth > 0 or not entry.owned_by_root:
                return
            del self._entries[slot]
        entry.handle.close()

    def adopt(self, key: Any, run_id: str, *, is_root: bool) -> None:
        """A resumed invocation (LangGraph ``Command(resume=...)``) continues the run ``run_id`` it suspended:
        every hook of the invocation counts against that run from now on, not against a fresh one."""
        if key is None:
            return
        with self._lock:
            entry = self._entries.get(_slot(key))
            if entry is not None and entry.handle.run_id == run_id:
                return
        handle = self._breaker.begin_run(run_id)
        replaced: _Entry | None = None
        with self._lock:
            old = self._entries.get(_slot(key))
            if old is not None and old.handle.run_id == run_id:  # a parallel call adopted it first
                replaced = _Entry(key, handle, 0, False)
            else:
                depth, owned = (old.depth, old.owned_by_root) if old is not None else (1, is_root)
                self._entries[_slot(key)] = _Entry(key, handle, depth, owned)
                self._entries.move_to_end(_slot(key))
                replaced = old
        if replaced is not None:
            replaced.handle.close()

    def run_of(self, key: Any) -> str | None:
        """The id of the run open for invocation ``key``, None when there is none (one read: no lock)."""
        if key is None:
            return None
        entry = self._entries.get(("name", key) if isinstance(key, str) else id(key))
        return None if entry is None else entry.handle.run_id

    def scope(self, key: Any, *, touch: bool = False) -> AbstractContextManager[RunScope | None]:
        """Make the breaker count the calls inside against this invocation's run (which stays open: every hook of
        every turn enters it, and only the agent's after-hook or eviction closes it). ``touch``: open the run on
        first sight, as :meth:`touch` does (one hold of the lock when it is open already, the usual case).
        A hook on every turn uses :meth:`run_for` with ``loopguard_core.runs.enter_scope`` instead: no object."""
        run_id = self.run_for(key, touch=touch)
        # (RunScope, not breaker.within(): the id is an open run's, nothing to check on every hook)
        return _NOTHING if run_id is None else RunScope(self._breaker, run_id)

    def run_for(self, key: Any, *, touch: bool = False) -> str | None:
        """The id of the run :meth:`scope` enters for invocation ``key`` (None: none, the calls count as they
        would outside)."""
        if key is None:
            return None
        slot = ("name", key) if isinstance(key, str) else id(key)  # (_slot, inlined: every hook)
        entry = self._entries.get(slot)  # (one read: the lock guards the changes)
        if entry is not None and touch and next(reversed(self._entries), None) != slot:  # the newest stays put
            with self._lock:
                if slot in self._entries:
                    self._entries.move_to_end(slot)
        if entry is None and touch:
            self.enter(key, is_root=False)
            with self._lock:
                entry = self._entries.get(slot)
        return None if entry is None else entry.handle.run_id

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
