"""Per-run scoping: which run's counters a call belongs to.

A run is one agent invocation (an ``invoke``, a ``kickoff``, a ``run``). Counts never leak from one run into
the next unless the breaker is shared on purpose (an explicit ``scope``, or ``isolate_runs=False``).
The current run travels in a context variable, so concurrent asyncio tasks and threads that copy their
context (LangChain and asyncio executors do) each see their own run; code on a thread that did not copy
the context falls back to the most recently started run.
"""

from __future__ import annotations

import contextvars
import threading
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import StoreError

if TYPE_CHECKING:
    from .breaker import Breaker
    from .stores.base import RunSnapshot

__all__ = ["RunHandle", "RunRegistry", "RunScope", "enter_scope", "leave_scope"]


class RunRegistry:
    """Tracks the active runs of one breaker and the run a context belongs to."""

    def __init__(self, main_run_id: str) -> None:
        self.main_run_id = main_run_id
        self.latest = main_run_id
        self._var: contextvars.ContextVar[str | None] = contextvars.ContextVar("loopguard_run", default=None)
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def current(self) -> str:
        return self._var.get() or self.latest

    def in_run(self) -> bool:
        return self._var.get() is not None

    def enter(self, run_id: str | None) -> tuple[str, contextvars.Token[str | None], str | None]:
        """Start (or join) a run; returns its id, the context token, and a finished run to forget."""
        rid = run_id or uuid.uuid4().hex
        active, forget = self._active, None
        with self._lock:
            finished = self.latest
            active[rid] = active.get(rid, 0) + 1
            if finished != rid:  # (a hook entering the run that is the latest already changes nothing more)
                self.latest = rid
                if finished != self.main_run_id and finished not in active:
                    forget = finished
        return rid, self._var.set(rid), forget

    def leave(self, token: contextvars.Token[str | None]) -> None:
        """This context no longer counts against the run it entered (its previous run, if any, again)."""
        try:
            self._var.reset(token)
        except ValueError:
            # Closed from another context (e.g. a framework's after-hook): clear ours instead.
            self._var.set(None)

    def exit(self, run_id: str, token: contextvars.Token[str | None]) -> None:
        self.leave(token)
        with self._lock:
            left = self._active.get(run_id, 0) - 1
            if left > 0:
                self._active[run_id] = left
            else:
                self._active.pop(run_id, None)


class RunHandle:
    """An open run. Use as ``with breaker.run():`` / ``async with breaker.run():`` or call ``close()``."""

    def __init__(self, breaker: Breaker, run_id: str | None, *, join_current: bool) -> None:
        self._breaker = breaker
        self._requested = run_id
        self._join = join_current
        self._token: contextvars.Token[str | None] | None = None
        self.run_id: str = breaker.session_id
        self.result: RunSnapshot | None = None

    def open(self) -> RunHandle:
        if self._token is not None:  # one token per handle: a second opening would lose the first's
            raise RuntimeError("this run is open already: use one breaker.run() per `with`, and close() what you open")
        if not self._join:
            self.run_id, self._token = self._breaker._enter_run(self._requested)
            self._breaker._run_started()
        return self

    def close(self, error: BaseException | None = None) -> RunSnapshot | None:
        """End the run (its counters stay readable as ``breaker.usage()`` until the next run starts).

        When the store cannot be read at the end (Redis went away), the run still ends; under the store's
        closed failure policy that is reported as ``LoopGuardTripped(reason="store_unavailable")``, never as a
        store error, and never over an ``error`` already on its way out of the run. Ledger rows still waiting
        (``Ledger(defer_seconds=...)``) are written first."""
        try:
            self._breaker._flush_ledger(error)
            self.result = self._breaker.usage(run_id=self.run_id)
        except StoreError as exc:
            self.result = None
            trip = self._breaker._store_unavailable_at_close(exc)
            if trip is not None and error is None:
                raise trip from None
        finally:
            if self._token is not None:
                self._breaker._runs.exit(self.run_id, self._token)
                self._token = None
        return self.result

    def __enter__(self) -> RunHandle:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc)

    async def __aenter__(self) -> RunHandle:
        return self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc)


class RunScope:
    """Calls inside count against ``run_id``, a run opened (and later closed) elsewhere: a framework hook inside
    the run its agent's before/after hooks manage. Unlike ``breaker.run(run_id)`` it neither starts the run (no
    ``start`` checkpoint in the ledger) nor reads its counters from the store on the way out; every hook of every
    turn enters one, so that read would be a store round trip per hook."""

    __slots__ = ("_breaker", "_counted", "_token", "run_id")

    def __init__(self, breaker: Breaker, run_id: str) -> None:
        self._breaker = breaker
        self.run_id = run_id
        self._token: contextvars.Token[str | None] | None = None
        self._counted = False

    def __enter__(self) -> RunScope:
        if self._token is not None:  # one token per object: a second entry would lose the first's
            raise RuntimeError("a RunScope is entered once at a time: call breaker.within(run_id) for each `with`")
        self._token, self._counted = enter_scope(self._breaker, self.run_id)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        counted, self._counted = self._counted, False
        leave_scope(self._breaker, self.run_id, token, counted)

    async def __aenter__(self) -> RunScope:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def enter_scope(breaker: Breaker, run_id: str) -> tuple[contextvars.Token[str | None], bool]:
    """What entering ``RunScope(breaker, run_id)`` does, as a function: ``(token, counted)``, to hand back to
    :func:`leave_scope` (in a ``finally``). A framework hook that enters its run on every call uses the pair: no
    object and no ``with`` protocol per call.

    That run is nearly always the latest and held by its agent's handle: then only the context changes. No lock and
    no count of its own: the count keeps a run from being forgotten (when another run becomes the latest) while
    something holds it, and something does. Not covered: the holder closing while the scope is inside, and then
    another run starting before it leaves (a hook still running after its agent ended, on another thread): its last
    calls then count in a fresh run."""
    runs = breaker._runs
    if runs.latest == run_id and run_id in runs._active:
        return runs._var.set(run_id), False
    # another run is the latest: this one becomes it, counted as entered while inside
    return breaker._enter_run(run_id)[1], True


def leave_scope(breaker: Breaker, run_id: str, token: contextvars.Token[str | None], counted: bool) -> None:
    """Leave what :func:`enter_scope` entered (``counted`` and ``token`` as it returned them)."""
    runs = breaker._runs
    if counted:
        runs.exit(run_id, token)
        return
    try:
        runs._var.reset(token)  # (leave()'s usual case, inlined: every hook)
    except ValueError:
        runs.leave(token)  # closed from another context: leave() says what then
