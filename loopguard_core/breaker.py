"""The breaker: checks every tool call and model call before it runs, and refuses the one that would
break a limit or continue a loop.

Typical use::

    breaker = Breaker(max_turns=40, max_tokens=200_000, max_cost_usd=2.00)
    breaker.before_tool("web_search", {"q": "..."})      # raises LoopGuardTripped: the tool never runs
    result = web_search(q="...")
    breaker.after_tool("web_search", {"q": "..."}, result=result)
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

from ._batches import Batches
from ._bounds import MAX_COUNT, clamp, label
from ._mypyc import mypyc_attr
from .approvals import ApprovalQueue, ApprovalRequest, approval_queue
from .approvals._gate import Gate, check_seconds, default_queue, record_decision
from .budgets import Budget, BudgetBook, BudgetReport, BudgetStore
from .budgets import budget_store as budget_store_from_url
from .clock import Clock, SystemClock
from .detection import FAILED, masked_digest
from .detection._observe import ProseWords, RunTail, answer_facts, outcome_flags, request_facts
from .errors import ApprovalError, ApprovalRequired, LoopGuardTripped, LoopGuardWarning, StoreError, add_note
from .events import EventListener, GuardEvent
from .idempotency import MemorySideEffects, SideEffects, SideEffectStore, SQLiteSideEffects
from .limits import MODES, UNCAPPED_OUTPUT_TOKENS, Limits, LoopDetection, usd_to_micros
from .progress import Progress
from .runs import RunHandle, RunRegistry, RunScope
from .signatures import call_signature, canonical_text
from .state import BreakerState
from .stores import MemoryStore, Store, store_from_url
from .stores.base import ModelRequest, ModelUsage, RunKey, RunSnapshot, Steering, ToolOutcome, ToolRequest, Verdict
from .tools import ToolPolicy, policy_mapping
from .typing import LedgerSink, PriceSource

__all__ = ["Breaker", "TripCallback"]

logger = logging.getLogger("loopguard")
logger.addHandler(logging.NullHandler())  # a library leaves handler choice to the application

TripCallback = Callable[[LoopGuardTripped], object]
StateCallback = Callable[[BreakerState, BreakerState, str], object]
_T = TypeVar("_T")
_MAX_PENDING = 4_096
_NO_WORDS: frozenset[int] = frozenset()
_ATTACHING = threading.Lock()  # Breaker.attachment: creates each integration's object once
# Requests and outcomes made without NamedTuple.__new__'s Python frame (the hot path makes one of each per call).
_new_request: Callable[[type[ToolRequest], tuple[Any, ...]], ToolRequest] = tuple.__new__
_new_outcome: Callable[[type[ToolOutcome], tuple[Any, ...]], ToolOutcome] = tuple.__new__
_MAX_TAILS = 1_024


def _callbacks(name: str, value: object) -> tuple[Callable[..., object], ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = tuple(value)
        for item in items:
            if not callable(item):
                raise TypeError(f"{name} must hold callables, got {item!r}")
        return items
    raise TypeError(f"{name} must be a callable or a list of callables, got {type(value).__name__}")


def _count(name: str, value: object) -> int:
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the usual case, in one test (bool is not int's type)
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {_short(value)}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {_short(value)}")
    return clamp(value)  # past every ceiling anyway: no store is handed a number it cannot hold


def _counts(first: str, a: object, second: str, b: object) -> tuple[int, int]:
    """``(_count(first, a), _count(second, b))``, the usual case (two plain ints in range) in one test."""
    if type(a) is int and type(b) is int and 0 <= a <= MAX_COUNT and 0 <= b <= MAX_COUNT:
        return a, b
    return _count(first, a), _count(second, b)


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _approval_queue(value: object) -> ApprovalQueue | None:
    if value is None or isinstance(value, ApprovalQueue):
        return value
    if isinstance(value, (str, os.PathLike)):
        return approval_queue(os.fspath(value))
    raise TypeError(f"approvals must be an ApprovalQueue or a URL such as 'sqlite:///runs.db', got {value!r}")


def _budget_book(budgets: object, store: object, store_url: str | None) -> BudgetBook | None:
    if budgets is None:
        return None
    if isinstance(budgets, Budget) or not isinstance(budgets, Iterable):
        raise TypeError(f"budgets must be a list of Budget, got {budgets!r}")
    chosen = list(budgets)
    for item in chosen:
        if not isinstance(item, Budget):
            raise TypeError(f"budgets must hold Budget objects, got {item!r}")
    if not chosen:
        return None
    if store is None:
        scheme = store_url.split("://", 1)[0].lower() if store_url and "://" in store_url else ""
        # Budgets live next to the run state when that is shared (SQLite file, Redis), else in this process.
        store = store_url if scheme in ("sqlite", "redis", "rediss", "unix") else "memory://"
    if isinstance(store, str):
        store = budget_store_from_url(store)
    if not isinstance(store, BudgetStore):
        raise TypeError(f"budget_store must be a BudgetStore or a URL such as 'sqlite:///budgets.db', got {store!r}")
    return BudgetBook(chosen, store)


def _side_effects(value: object, breaker: Breaker) -> SideEffects | None:
    if value is None:
        return None
    if isinstance(value, SideEffects):
        return value
    if isinstance(value, (str, SideEffectStore)):
        return SideEffects(value, breaker=breaker)
    raise TypeError(
        f"side_effects must be a SideEffects, a SideEffectStore or a URL such as 'sqlite:///effects.db', got {value!r}"
    )


def default_side_effect_store(ledger: object) -> SideEffectStore:
    """The ledger's SQLite file when there is one (a crash and resume finds the outcomes), else memory."""
    url = getattr(ledger, "url", None)
    if isinstance(url, str) and url and "://" not in url and url != ":memory:":
        return SQLiteSideEffects(url)
    logger.warning(
        "loopguard: a side-effect tool records its outcomes in this process only; pass "
        "side_effects='sqlite:///effects.db' (or redis://, postgresql://) so a restarted run finds them"
    )
    return MemorySideEffects()


def _tool_name(tool: object) -> str:
    if not isinstance(tool, str) or not tool:
        raise TypeError(f"tool must be the tool's name (a non-empty str), got {_short(tool)}")
    return label(tool)


def _label(name: str, value: object) -> str | None:
    if value is None:
        return None
    if type(value) is str and value.isascii():  # the usual case: label() would return it as it is
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__} {_short(value)}")
    return label(value)


class _UsedApproval:
    """An approval a call used, and where that call stands (see ``Breaker._already_approved``)."""

    __slots__ = ("done", "request", "turn")

    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        self.turn: int | None = None  # the model turn the call was admitted or refused in
        self.done = False  # the call was refused or reported its outcome


@mypyc_attr(allow_interpreted_subclasses=True)  # subclassing stays open in the compiled build
class Breaker:
    """A pre-flight circuit breaker for one agent run (or, shared on purpose, for many).

    Limits are keyword-only and optional; ``None`` means no limit. Loop detection and a five-failure
    streak rule are on by default; no budget ceiling applies unless you set one.

    ``mode="observe"`` checks everything and refuses nothing: what would have been refused is logged,
    written to the ledger (``breach_reason="observed:<reason>"``) and handed to ``on_observe`` callbacks (a
    :class:`LoopGuardTripped` that is not raised, ``facts["observe"] is True``). A loop-detection policy or
    a single detector may set its own mode (``LoopDetection(mode="observe")`` keeps budgets enforced).
    """

    def __init__(
        self,
        *,
        max_turns: int | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        max_tool_calls: int | None = None,
        max_calls_per_tool: Mapping[str, int] | None = None,
        max_seconds: float | None = None,
        max_consecutive_failures: int | None = 5,
        loop_detection: bool | LoopDetection = True,
        tools: Mapping[str, ToolPolicy | Mapping[str, Any]] | None = None,
        output_reserve_tokens: int | None = None,
        recovery_seconds: float = 60.0,
        store: Store | str | None = None,
        scope: str | None = None,
        isolate_runs: bool | None = None,
        session_id: str | None = None,
        ledger: LedgerSink | None = None,
        prices: PriceSource | None = None,
        clock: Clock | None = None,
        on_trip: TripCallback | Iterable[TripCallback] | None = None,
        on_state_change: StateCallback | Iterable[StateCallback] | None = None,
        on_observe: TripCallback | Iterable[TripCallback] | None = None,
        on_event: EventListener | Iterable[EventListener] | None = None,
        ledger_failure: str = "raise",
        mode: str = "enforce",
        max_refusals: int | None = 3,
        allow_unpriced: bool = False,
        approvals: ApprovalQueue | str | os.PathLike[str] | None = None,
        approval_wait_seconds: float = 0.0,
        approval_expire_seconds: float | None = None,
        side_effects: SideEffects | SideEffectStore | str | None = None,
        progress: Progress | None = None,
        checkpoint_after_usd: float | None = 0.25,
        budgets: Iterable[Budget] | None = None,
        budget_store: BudgetStore | str | None = None,
    ) -> None:
        if isinstance(loop_detection, bool):
            loop = LoopDetection(enabled=loop_detection)
        elif isinstance(loop_detection, LoopDetection):
            loop = loop_detection
        else:
            raise TypeError(f"loop_detection must be a bool or a LoopDetection, got {loop_detection!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be 'enforce' or 'observe', got {mode!r}")
        self.limits = Limits(
            max_turns=max_turns,
            max_tokens=max_tokens,
            max_cost_usd=max_cost_usd,
            max_tool_calls=max_tool_calls,
            max_calls_per_tool=max_calls_per_tool if max_calls_per_tool is not None else {},
            max_seconds=max_seconds,
            max_consecutive_failures=max_consecutive_failures,
            output_reserve_tokens=output_reserve_tokens,
            recovery_seconds=recovery_seconds,
            loop=loop,
            mode=mode,
            max_refusals=max_refusals,
            allow_unpriced=allow_unpriced,
        )
        store_url = store if isinstance(store, str) else None
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = store_from_url(store)
        if not isinstance(store, Store):
            raise TypeError(f"store must be a Store or a URL such as 'memory://', got {type(store).__name__}")
        self._store: Store = store
        self._book = _budget_book(budgets, budget_store, store_url)
        chosen = () if self._book is None else self._book.budgets
        self._budget_cost = any(b.max_cost_usd is not None for b in chosen)
        self._budget_tokens = self._budget_cost or any(b.max_tokens is not None for b in chosen)
        self._budget_tools = any(b.max_tool_calls is not None for b in chosen)
        self._holds: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise TypeError(f"scope must be a non-empty str, got {scope!r}")
        if isolate_runs is not None and not isinstance(isolate_runs, bool):
            raise TypeError(f"isolate_runs must be a bool, got {isolate_runs!r}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise TypeError(f"session_id must be a non-empty str, got {session_id!r}")
        # An explicit scope means "share this state with everyone who names it": no per-run isolation.
        scope = None if scope is None else label(scope)
        session_id = None if session_id is None else label(session_id)
        self.scope = scope or f"breaker-{uuid.uuid4().hex[:12]}"
        # Approval requests are found again by run id: under the scope you named, or by run id alone when the
        # scope is this object's random one (so a restarted process resuming "order-42" finds its request).
        self._approval_scope = scope or "-"
        self.isolate_runs = (scope is None) if isolate_runs is None else isolate_runs
        if ledger is not None and not isinstance(ledger, LedgerSink):
            raise TypeError(f"ledger must provide record(...) (e.g. loopguard_core.Ledger), got {ledger!r}")
        self.ledger = ledger
        if clock is None:
            clock = SystemClock()
        if not isinstance(clock, Clock):
            raise TypeError(f"clock must provide monotonic() -> float, got {clock!r}")
        self.clock: Clock = clock
        if prices is not None and not isinstance(prices, PriceSource):
            raise TypeError(f"prices must provide cost_micros(model, input_tokens, output_tokens), got {prices!r}")
        if prices is None and (max_cost_usd is not None or self._budget_cost):
            from .pricing import GenaiPrices

            prices = GenaiPrices()
            prices._prices()  # fail now, naming the 'pricing' extra, rather than mid-run
        self.prices = prices
        if ledger_failure not in ("raise", "log"):
            raise ValueError(f"ledger_failure must be 'raise' or 'log', got {ledger_failure!r}")
        self._ledger_failure = ledger_failure
        self._on_trip = _callbacks("on_trip", on_trip)
        self._on_state_change = _callbacks("on_state_change", on_state_change)
        self._on_observe = _callbacks("on_observe", on_observe)
        self._on_event: tuple[Callable[..., object], ...] = _callbacks("on_event", on_event)
        # Breakers that name the same scope share one run (and one ledger session) unless told otherwise.
        self._runs = RunRegistry(session_id or scope or uuid.uuid4().hex)
        self._pending: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._pending_lock = threading.Lock()
        self._signatures: dict[object, tuple[ToolRequest, Any]] = {}
        self._last_key = RunKey(self.scope, "")
        self._unpriced: set[str] = set()
        # Approval gates: built on first use (the default queue lives in the ledger's database).
        self._approvals = _approval_queue(approvals)
        self._approval_wait = check_seconds("approval_wait_seconds", approval_wait_seconds, allow_none=False)
        self._approval_expire = check_seconds("approval_expire_seconds", approval_expire_seconds, allow_none=True)
        self._gate: Gate | None = None
        self._approved_calls: OrderedDict[tuple[str, str, str], _UsedApproval] = OrderedDict()  # (scope, run, call id)
        self._batches = Batches()
        self._side_effects = _side_effects(side_effects, self)
        if progress is not None and not isinstance(progress, Progress):
            raise TypeError(f"progress must be a loopguard_core.progress.Progress, got {progress!r}")
        self.progress = progress
        if checkpoint_after_usd is not None and (
            isinstance(checkpoint_after_usd, bool)
            or not isinstance(checkpoint_after_usd, (int, float))
            or not 0 <= checkpoint_after_usd < math.inf
        ):
            raise ValueError(f"checkpoint_after_usd must be a finite amount >= 0 or None, got {checkpoint_after_usd!r}")
        self._checkpoint_micros = (
            None if checkpoint_after_usd is None else usd_to_micros(min(float(checkpoint_after_usd), MAX_COUNT / 1e6))
        )
        # Tool policies: yours (``tools=``) win over the framework's (``declare_tool``), which win over names.
        self._tools: Mapping[str, ToolPolicy] = policy_mapping("tools", {} if tools is None else tools)
        self._declared: dict[str, ToolPolicy] = {}
        self._policies: dict[str, ToolPolicy] = {}
        # Per run: the last call, to judge the next against it (see RunTail); raw values stay in this process.
        self._tails: OrderedDict[RunKey, RunTail] = OrderedDict()
        # Free-text words reach the store only as hashes keyed with this (shared by the store's processes).
        key = getattr(store, "digest_key", None)
        self._prose = ProseWords(key if isinstance(key, bytes) and key else os.urandom(16))
        self._attachments: dict[str, object] = {}

    def attachment(self, key: str, factory: Callable[[], _T]) -> _T:
        """State an integration keeps with this breaker (a run registry, a lock, the tools it declared):
        ``factory()``'s object for ``key`` the first time it is asked for, the same object after, from any thread.

        Kept on the breaker itself, not in a global map, so the breaker and what an integration made for it (a
        registry that refers back to it, say) form a plain reference cycle that the garbage collector frees together.
        """
        found = self._attachments.get(key)
        if found is None:
            with _ATTACHING:
                found = self._attachments.get(key)
                if found is None:
                    found = self._attachments[key] = factory()
        return found  # type: ignore[return-value]

    def attached(self, key: str) -> object | None:
        """What :meth:`attachment` made for ``key``, or None before it is first asked for."""
        return self._attachments.get(key)

    def add_listener(
        self,
        *,
        on_trip: TripCallback | None = None,
        on_observe: TripCallback | None = None,
        on_state_change: StateCallback | None = None,
        on_event: EventListener | None = None,
    ) -> None:
        """Register one more callback after construction (a replay, a test, an alert sink, telemetry)."""
        if on_event is not None:
            self._on_event = (*self._on_event, *_callbacks("on_event", on_event))
        if on_trip is not None:
            self._on_trip = (*self._on_trip, *_callbacks("on_trip", on_trip))
        if on_observe is not None:
            self._on_observe = (*self._on_observe, *_callbacks("on_observe", on_observe))
        if on_state_change is not None:
            self._on_state_change = (*self._on_state_change, *_callbacks("on_state_change", on_state_change))

    # -- tool policies -------------------------------------------------------------------------------
    def declare_tool(self, name: str, policy: ToolPolicy | Mapping[str, Any] | None = None, **facts: Any) -> None:
        """Tell loopguard what a tool is, from what the framework carries: MCP annotations, tool metadata,
        Pydantic AI ``requires_approval`` (adapters call this when they first see a tool). What you gave as
        ``Breaker(tools=...)`` still wins, field by field.

        ``breaker.declare_tool("wait_for_deploy", poll=True)``,
        ``breaker.declare_tool(tool.name, tool.metadata)`` (MCP ``readOnlyHint``... or ``{"loopguard": {...}}``).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"declare_tool needs the tool's name (a non-empty str), got {name!r}")
        if policy is None:
            declared = ToolPolicy()
        elif isinstance(policy, ToolPolicy):
            declared = policy
        elif isinstance(policy, Mapping):
            declared = ToolPolicy.from_metadata(policy)
        else:
            raise TypeError(f"policy must be a ToolPolicy or a metadata mapping, got {type(policy).__name__}")
        if facts:
            declared = ToolPolicy(**facts).over(declared)
        with self._pending_lock:
            if len(self._declared) >= 4_096:  # tool names can come from models: bounded
                self._declared.clear()
            self._declared[name] = declared
            self._policies.pop(name, None)

    def tool_policy(self, name: str) -> ToolPolicy:
        """Everything known about ``name``: ``Breaker(tools=...)``, then the framework's declarations, then
        what the name suggests (``job_status`` is a poll, ``think`` a no-op)."""
        known = self._policies.get(name)
        if known is None:
            known = self.limits.loop.inferred(name)
            runtime = self._declared.get(name)
            if runtime is not None:
                known = runtime.over(known)
            mine = self._tools.get(name)
            if mine is not None:
                known = mine.over(known)
            if len(self._policies) >= 4_096:
                self._policies.clear()
            self._policies[name] = known
        return known

    # -- approvals ----------------------------------------------------------------------------------
    @property
    def approvals(self) -> ApprovalQueue:
        """The queue where gated calls wait for a person (see docs/approvals.md)."""
        return self._approval_gate().queue

    def _approval_gate(self) -> Gate:
        gate = self._gate
        if gate is None:
            with self._pending_lock:
                if self._gate is None:
                    queue = self._approvals if self._approvals is not None else default_queue(self.ledger)
                    self._gate = Gate(
                        queue,
                        wait_seconds=self._approval_wait or 0.0,
                        expire_seconds=self._approval_expire,
                        ledger=self.ledger,
                    )
                gate = self._gate
        return gate

    def find_approval(self, tool: str, call_id: str) -> ApprovalRequest | None:
        """The newest approval request this breaker's runs made for the framework's call id (any status):
        how an adapter finds the run a checkpointed tool call belongs to when its graph resumes."""
        return self.approvals.find_by_call(self._approval_scope, tool, call_id)

    def decide(
        self, request_id: str, *, approve: bool, by: str, reason: str | None = None, args: Any = None
    ) -> ApprovalRequest:
        """A person's decision on a pending request, written to the ledger (who, when). ``args`` replaces the
        call's arguments (approve only); ``reason`` is what the model is told on a rejection."""
        decided = self.approvals.decide(request_id, approve=approve, by=by, reason=reason, args=args)
        record_decision(self.ledger, decided)
        return decided

    def _gated(
        self, name: str, args: Any, agent: str | None, call_id: str | None, policy: ToolPolicy
    ) -> tuple[Gate, ApprovalRequest, dict[str, Any]]:
        gate = self._approval_gate()
        run = self._key()
        facts: dict[str, Any] = {"session_id": run.run_id, "scope": run.scope, "agent": agent}

        def spend() -> tuple[int, dict[str, Any]]:
            snap = self._store.snapshot(run)
            so_far = {"cost_usd": snap.cost_usd, "tokens": snap.tokens, "turns": snap.turns}
            so_far["tool_calls"] = snap.tool_calls
            return snap.turns, so_far

        request = gate.ask(
            scope=self._approval_scope,
            session_id=run.run_id,
            tool=name,
            args=args,
            policy=policy,
            agent=agent,
            call_id=call_id,
            spend=spend,
        )
        return gate, request, facts

    def _already_approved(self, name: str, args: Any, call_id: str | None) -> ApprovalRequest | None:
        """The approval this very call already used in this run: a second check of one call (two guards in one
        graph, a retry) must not ask a person again. The same call, as the store tells calls apart: its id, within
        the model turn its call came in or until that call was refused or reported (an id a server reuses in a
        later answer is another call); and the tool and arguments the person approved, as asked or as they edited
        them (a call a node rewrote under the same id is another call)."""
        if call_id is None or not self._approved_calls:
            return None
        run = self._key()
        key = (run.scope, run.run_id, call_id)
        with self._pending_lock:
            entry = self._approved_calls.get(key)
        if entry is None:
            return None
        known = entry.request
        if entry.done and self._store.snapshot(run).turns != entry.turn:  # the id again, in a later model turn
            with self._pending_lock:
                if self._approved_calls.get(key) is entry:
                    del self._approved_calls[key]
            return None
        if known.tool != name:
            return None
        digest = self._approval_gate().digest(name, args)
        if digest == known.args_digest:
            return known
        edited = known.args()
        return known if edited is not None and digest == self._approval_gate().digest(name, edited) else None

    def _approved_call(self, call_id: str, turn: int, *, done: bool) -> None:
        """Where the approved call ``call_id`` stands: admitted or refused at model turn ``turn``, or (``done``)
        refused or reported (see ``_already_approved``)."""
        with self._pending_lock:
            run = self._key()
            entry = self._approved_calls.get((run.scope, run.run_id, call_id))
            if entry is not None:
                if entry.turn is None:
                    entry.turn = turn
                entry.done = entry.done or done

    def _remember_approval(self, call_id: str | None, request: ApprovalRequest) -> ApprovalRequest:
        if call_id is not None:
            with self._pending_lock:
                run = self._key()
                self._approved_calls[(run.scope, run.run_id, call_id)] = _UsedApproval(request)
                if len(self._approved_calls) > _MAX_PENDING:
                    self._approved_calls.popitem(last=False)
        return request

    def _approve(
        self, name: str, args: Any, agent: str | None, call_id: str | None, accept_edits: bool = True
    ) -> ApprovalRequest:
        known = self._already_approved(name, args, call_id)
        if known is not None:
            return known
        policy = self.tool_policy(name)
        for attempt in range(2):
            gate, request, facts = self._gated(name, args, agent, call_id, policy)
            if gate.wait_seconds and request.status == "pending":
                request = gate.wait(request)
            try:
                return self._remember_approval(call_id, gate.settle(request, facts, accept_edits=accept_edits))
            except ApprovalError:
                if attempt:  # another process took this decision twice over: let the caller see it
                    raise
            except ApprovalRequired as waiting:
                if self._on_event:
                    self._emit("tool", "approval_requested", name, agent, facts={"request_id": waiting.request_id})
                raise
            except LoopGuardTripped as refused:  # rejected, or nobody decided in time
                self._raise(refused, request.turn, agent=agent, tool=name, args=args)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aapprove(
        self, name: str, args: Any, agent: str | None, call_id: str | None, accept_edits: bool = True
    ) -> ApprovalRequest:
        known = self._already_approved(name, args, call_id)
        if known is not None:
            return known
        policy = self.tool_policy(name)
        for attempt in range(2):
            gate, request, facts = self._gated(name, args, agent, call_id, policy)
            if gate.wait_seconds and request.status == "pending":
                request = await gate.await_(request)
            try:
                return self._remember_approval(call_id, gate.settle(request, facts, accept_edits=accept_edits))
            except ApprovalError:
                if attempt:
                    raise
            except ApprovalRequired as waiting:
                if self._on_event:
                    self._emit("tool", "approval_requested", name, agent, facts={"request_id": waiting.request_id})
                raise
            except LoopGuardTripped as refused:
                self._raise(refused, request.turn, agent=agent, tool=name, args=args)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- progress ------------------------------------------------------------------------------------
    def _check_progress(self, agent: str | None, tool: str | None, *, model_turn: bool) -> None:
        progress = self.progress
        assert progress is not None
        run = self._key()
        finding = progress.check(run, self.clock.monotonic(), model_turn=model_turn)
        if finding is None:
            return
        facts: dict[str, Any] = {
            "rule": "no_progress",
            "observed": finding.turns,
            "turns": finding.turns,
            "seconds": round(finding.seconds, 1),
            "limit": finding.limit,
            "probe": progress.probe_name,
            "session_id": run.run_id,
            "scope": run.scope,
            "agent": agent,
        }
        if tool is not None:
            facts["tool"] = tool
        self._raise(LoopGuardTripped("stall", **facts), self.usage().turns, agent=agent, tool=tool, args=None)

    # -- budgets --------------------------------------------------------------------------------------
    @property
    def budgets(self) -> list[BudgetReport]:
        """Each budget's current period: spent, in flight, limits, when it resets."""
        return [] if self._book is None else self._book.reports()

    def _budget_names(self) -> list[str]:
        return [] if self._book is None else [b.name for b in self._book.budgets]

    def _budget_rid(self, kind: str, call_id: str | None) -> str:
        run = self._key()
        return f"{kind}:{run.scope}:{run.run_id}:{call_id}" if call_id is not None else f"{kind}:{uuid.uuid4().hex}"

    def _reserve_model(self, request: ModelRequest, agent: str | None, model: str | None) -> str:
        assert self._book is not None
        rid = self._budget_rid("m", request.call_id)
        amounts = {"turns": 1, "tokens": request.projected_tokens, "cost_micros": request.projected_cost_micros}
        self._budget_reserve(rid, amounts, False, agent, None, model)
        with self._pending_lock:
            self._holds[("model", request.call_id or "", agent or "")] = rid
            if len(self._holds) > _MAX_PENDING:
                self._holds.popitem(last=False)
        return rid

    def _reserve_tool(self, request: ToolRequest) -> str:
        rid = self._budget_rid("t", request.call_id)
        self._budget_reserve(rid, {"tool_calls": 1}, True, request.agent, request.tool, None)
        return rid

    def _budget_reserve(
        self, rid: str, amounts: dict[str, int], count_now: bool, agent: str | None, tool: str | None, model: str | None
    ) -> None:
        assert self._book is not None
        run = self._key()
        facts: dict[str, Any] = {"session_id": run.run_id, "scope": run.scope, "agent": agent}
        if tool is not None:
            facts["tool"] = tool
        try:
            self._book.reserve(rid, amounts, count_now=count_now, facts=facts)
        except LoopGuardTripped as refused:
            self._raise(refused, self.usage().turns, agent=agent, tool=tool, args=None, model=model)
        except StoreError as exc:
            self._budget_store_failed(exc, facts)

    def _budget_store_failed(self, exc: StoreError, facts: dict[str, Any]) -> None:
        """The budget store cannot be used: closed (refuse, like an unreachable breaker store) unless the
        breaker store's failure policy is open."""
        if getattr(self._store, "failure_policy", "closed") == "open":
            logger.warning("loopguard could not check the budgets (%s); failure policy open: the call goes ahead", exc)
            return
        error = LoopGuardTripped("store_unavailable", error=str(exc), url=self._book_url(), step="budgets", **facts)
        self._raise(error, 0, agent=facts.get("agent"), tool=facts.get("tool"), args=None)

    def _book_url(self) -> str:
        return "?" if self._book is None else str(getattr(self._book.store, "url", "?"))

    def _take_hold(self, key: tuple[str, str, str]) -> str | None:
        with self._pending_lock:
            return self._holds.pop(key, None)

    def _settle_model(self, usage: ModelUsage, agent: str | None) -> None:
        assert self._book is not None
        rid = self._take_hold(("model", usage.call_id or "", agent or ""))
        if rid is None:
            return
        try:
            self._book.settle(rid, {"turns": 1, "tokens": usage.tokens, "cost_micros": usage.cost_micros})
        except StoreError:
            logger.exception("loopguard could not add a model call's spend to its budgets")

    def _give_back(self, rid: str) -> None:
        assert self._book is not None
        try:
            self._book.release(rid)
        except StoreError:  # the hold expires on its own
            logger.exception("loopguard could not give a refused call's budget reservation back")

    # -- side effects -------------------------------------------------------------------------------
    @property
    def side_effects(self) -> SideEffects:
        """Where side-effect tools record their outcomes (see docs/idempotency.md): ``side_effects=``, else the
        ledger's SQLite file, else this process's memory."""
        effects = self._side_effects
        if effects is None:
            with self._pending_lock:
                if self._side_effects is None:
                    self._side_effects = SideEffects(default_side_effect_store(self.ledger), breaker=self)
                effects = self._side_effects
        return effects

    def run_tool_body(self, tool: str, args: Any, body: Callable[[], _T]) -> _T:
        """Runs a tool's body the way its policy says: a ``side_effect`` tool at most once per idempotency key
        (a repeat gets the recorded outcome), any other tool as it is. Adapters call this around every body."""
        policy = self.tool_policy(tool)
        if not policy.side_effect:
            return body()
        try:
            return self.side_effects.run(tool, args, body, key=policy.idempotency_key, ttl_seconds=policy.ttl_seconds)
        except LoopGuardTripped as refused:
            if not refused.reason.startswith("side_effect_"):
                raise
            self._raise(refused, self.usage().turns, agent=refused.agent, tool=tool, args=args)

    async def arun_tool_body(self, tool: str, args: Any, body: Callable[[], Awaitable[_T]]) -> _T:
        policy = self.tool_policy(tool)
        if not policy.side_effect:
            return await body()
        try:
            return await self.side_effects.arun(
                tool, args, body, key=policy.idempotency_key, ttl_seconds=policy.ttl_seconds
            )
        except LoopGuardTripped as refused:
            if not refused.reason.startswith("side_effect_"):
                raise
            self._raise(refused, self.usage().turns, agent=refused.agent, tool=tool, args=args)

    # -- runs -------------------------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        """The id of the current run (the ledger's session id)."""
        return self._runs.current()

    def run(self, run_id: str | None = None) -> RunHandle:
        """A context (``with`` / ``async with``) in which calls count against a fresh run.

        Inside an active run, or when the breaker is shared on purpose (explicit ``scope`` or
        ``isolate_runs=False``) and no ``run_id`` is given, it joins the current run instead.
        """
        join = run_id is None and (self._runs.in_run() or not self.isolate_runs)
        return RunHandle(self, run_id, join_current=join)

    def _flush_ledger(self, error: BaseException | None) -> None:
        """A run ends: rows waiting in its ledger (``Ledger(defer_seconds=...)``) are written now, not whenever the
        process records its next row."""
        flush = getattr(self.ledger, "flush", None)
        if flush is None:
            return
        try:
            flush()
        except Exception:
            if self._ledger_failure == "raise" and error is None:
                raise
            logger.exception("loopguard could not write the ledger rows waiting at the end of the run")

    def _store_unavailable_at_close(self, exc: StoreError) -> LoopGuardTripped | None:
        """A run ends while its store cannot be read: the trip to raise (failure policy closed), else None."""
        policy = getattr(self._store, "failure_policy", "closed")
        logger.warning("loopguard could not read the run's counters at its end: %s", exc)
        if policy != "closed":
            return None
        facts = {"error": str(exc), "policy": policy, "url": getattr(self._store, "url", "?"), "step": "close"}
        return LoopGuardTripped("store_unavailable", session_id=self._runs.current(), scope=self.scope, **facts)

    def within(self, run_id: str) -> RunScope:
        """A context in which calls count against ``run_id``, a run already open (``begin_run``) and closed elsewhere.

        For framework hooks that run inside a run their agent's before/after hooks manage: entering it neither starts
        the run again nor reads its counters on the way out, as ``run(run_id)`` does (a store round trip per hook).
        """
        if type(run_id) is not str or not run_id:
            raise TypeError(f"within() needs the id of an open run (a non-empty str), got {run_id!r}")
        return RunScope(self, run_id)

    def begin_run(self, run_id: str | None = None) -> RunHandle:
        """Open a run without a ``with`` block (framework before/after hooks); call ``close()`` at the end."""
        return self.run(run_id).open()

    def _enter_run(self, run_id: str | None) -> tuple[str, contextvars.Token[str | None]]:
        """Make this context count against ``run_id`` (a fresh run for None), forgetting the run it replaces as the
        latest when nothing holds that one any more; returns the run's id and the context token to exit with."""
        rid, token, forget = self._runs.enter(run_id)
        if forget is not None:
            self._forget_run(forget)
        return rid, token

    def _forget_run(self, run_id: str) -> None:
        run = RunKey(self.scope, run_id)
        self._store.drop(run)
        with self._pending_lock:
            self._tails.pop(run, None)

    def _key(self) -> RunKey:
        run_id = self._runs.current()
        key = self._last_key
        if key[1] is not run_id:  # one RunKey per run, not per call
            key = self._last_key = RunKey(self.scope, run_id)
        return key

    # -- views ------------------------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        """CLOSED, OPEN or HALF_OPEN for the current run (lazily half-opens only on the next call)."""
        return self._store.snapshot(self._key()).state

    def usage(self, run_id: str | None = None) -> RunSnapshot:
        """Counters of the current run (or of ``run_id``)."""
        key = self._key() if run_id is None else RunKey(self.scope, run_id)
        return self._store.snapshot(key)

    def reset(self) -> None:
        """Close the breaker of the current run by hand; counts stay, loop memory is cleared."""
        verdict = self._store.reset(self._key())
        self._announce(verdict)

    # -- tool calls -------------------------------------------------------------------------------
    def before_tool(
        self,
        tool: str,
        args: Any = None,
        *,
        agent: str | None = None,
        call_id: str | None = None,
        accept_edits: bool = True,
        batch: str | None = None,
    ) -> ApprovalRequest | None:
        """Pre-flight check of a tool call. Raises :class:`LoopGuardTripped`; the tool must not run.

        ``batch`` (with ``call_id``) names the model answer the call came in: calls of one answer run in parallel
        are each judged on the run as the model saw it, whichever finishes first (adapters pass the message id).

        A gated tool (``ToolPolicy(irreversible=True)``) first needs a person's approval: until then this raises
        :class:`ApprovalRequired`; once approved it returns the request (``.args()`` holds edited arguments to
        run with instead, or ``None``); a caller that cannot run a call with other arguments passes
        ``accept_edits=False`` and gets :class:`ApprovalError` for an approval with edits, which stays unused.
        Every other call returns ``None``.
        """
        # (_label's usual case, checked here first: an ASCII str is kept as it is; every call passes here)
        if agent is not None and not (type(agent) is str and agent.isascii()):
            agent = _label("agent", agent)
        if call_id is not None and not (type(call_id) is str and call_id.isascii()):
            call_id = _label("call_id", call_id)
        request = self._tool_request(tool, args, agent, call_id)
        if self.progress is not None:
            self._check_progress(request.agent, request.tool, model_turn=False)
        approved = None
        policy = self._policies.get(request.tool)
        if (policy or self.tool_policy(request.tool)).irreversible:
            approved = self._approve(request.tool, args, request.agent, request.call_id, accept_edits)
        rid = self._reserve_tool(request) if self._budget_tools else None
        try:
            if batch is None or request.call_id is None:
                verdict = self._store.admit_tool(self._key(), request, self.limits)
            else:
                run = self._key()
                siblings = self._batches.join(run.scope, run.run_id, _label("batch", batch) or "", request.call_id)
                with siblings.lock:
                    if siblings.done:
                        request = request._replace(siblings_done=siblings.done)
                    verdict = self._store.admit_tool(run, request, self.limits)
            if approved is not None and request.call_id is not None:
                self._approved_call(request.call_id, verdict.turn, done=not verdict.admitted)
            self._after_tool_admission(verdict, request, args)
        except BaseException:
            if rid is not None:
                self._give_back(rid)
            raise
        if approved is not None and self.ledger is not None:
            self._checkpoint(f"before:{request.tool}", request.agent, request.tool)
        return approved

    async def abefore_tool(
        self,
        tool: str,
        args: Any = None,
        *,
        agent: str | None = None,
        call_id: str | None = None,
        accept_edits: bool = True,
        batch: str | None = None,
    ) -> ApprovalRequest | None:
        request = self._tool_request(tool, args, _label("agent", agent), _label("call_id", call_id))
        if self.progress is not None:
            self._check_progress(request.agent, request.tool, model_turn=False)
        approved = None
        if self.tool_policy(request.tool).irreversible:
            approved = await self._aapprove(request.tool, args, request.agent, request.call_id, accept_edits)
        rid = self._reserve_tool(request) if self._budget_tools else None
        try:
            if batch is None or request.call_id is None:
                verdict = await self._astore("aadmit_tool", "admit_tool", request)
            else:
                run = self._key()
                siblings = self._batches.join(run.scope, run.run_id, _label("batch", batch) or "", request.call_id)
                async with siblings.alock():
                    if siblings.done:
                        request = request._replace(siblings_done=siblings.done)
                    verdict = await self._astore("aadmit_tool", "admit_tool", request, run)
            if approved is not None and request.call_id is not None:
                self._approved_call(request.call_id, verdict.turn, done=not verdict.admitted)
            self._after_tool_admission(verdict, request, args)
        except BaseException:
            if rid is not None:
                self._give_back(rid)
            raise
        if approved is not None and self.ledger is not None:
            self._checkpoint(f"before:{request.tool}", request.agent, request.tool)
        return approved

    def after_tool(
        self,
        tool: str,
        args: Any = None,
        *,
        result: Any = None,
        error: Any = None,
        agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Report what a tool call returned (or how it failed). Never raises a trip."""
        run = self._key()
        if agent is not None and not (type(agent) is str and agent.isascii()):  # (as in before_tool)
            agent = _label("agent", agent)
        if call_id is not None and not (type(call_id) is str and call_id.isascii()):
            call_id = _label("call_id", call_id)
        outcome = self._tool_outcome(tool, args, result, error, call_id, run)
        siblings = None if call_id is None else self._batches.of_call(run.scope, run.run_id, call_id)
        if siblings is None:
            verdict = self._store.record_tool(run, outcome, self.limits)
        else:
            with siblings.lock:  # the step and the count of recorded siblings change together
                verdict = self._store.record_tool(run, outcome, self.limits)
                siblings.done += 0 if verdict.duplicate else 1
        self._after_tool_record(verdict, outcome, args, agent)

    async def aafter_tool(
        self,
        tool: str,
        args: Any = None,
        *,
        result: Any = None,
        error: Any = None,
        agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        run = self._key()
        agent, call_id = _label("agent", agent), _label("call_id", call_id)
        outcome = self._tool_outcome(tool, args, result, error, call_id, run)
        siblings = None if call_id is None else self._batches.of_call(run.scope, run.run_id, call_id)
        if siblings is None:
            verdict = await self._astore("arecord_tool", "record_tool", outcome, run)
        else:
            async with siblings.alock():
                verdict = await self._astore("arecord_tool", "record_tool", outcome, run)
                siblings.done += 0 if verdict.duplicate else 1
        self._after_tool_record(verdict, outcome, args, agent)

    def _tool_request(self, tool: str, args: Any, agent: str | None, call_id: str | None) -> ToolRequest:
        name = tool if type(tool) is str and tool and tool.isascii() else _tool_name(tool)
        loop = self.limits.loop
        signature = call_signature(name, args, loose=loop.loose_matching)
        if not loop.enabled or name in loop.exempt_tools:
            return ToolRequest(name, signature, self.clock.monotonic(), call_id, agent)
        policy = self._policies.get(name) or self.tool_policy(name)
        try:
            shape, poll = request_facts(name, args, policy)
        except Exception:  # arguments whose access raises (a lazy proxy, a hostile mapping): no paging, no poll
            shape, poll = "", False
        prose = None if loop.paraphrase_similarity is None else functools.partial(self._prose, args)
        return _new_request(
            ToolRequest, (name, signature, self.clock.monotonic(), call_id, agent, shape, _NO_WORDS, poll, prose, 0)
        )

    def _after_tool_admission(self, verdict: Verdict, request: ToolRequest, args: Any) -> None:
        if verdict.transitions:
            self._announce(verdict)
        if verdict.observed and not verdict.duplicate:
            self._observed(verdict, agent=request.agent, tool=request.tool, args=args)
        if not verdict.admitted:
            self._trip(verdict, agent=request.agent, tool=request.tool, args=args)
        if not verdict.duplicate:
            timed = self.ledger is not None or bool(self._on_event)  # durations go only to the ledger and observers
            if self._on_event:
                self._emit("tool", "admitted", request.tool, request.agent, call_id=request.call_id)
            # Remember the admission's request so after_tool need not canonicalise the args again: by call
            # id, or else by the identity of the args object itself (kept alive here, so the id stays its own).
            key = request.call_id if request.call_id is not None else (request.tool, id(args))
            signatures, pending = self._signatures, self._pending
            with self._pending_lock:  # one hold for both (what _mark_start does, inlined)
                if timed:
                    pending[("tool", request.call_id or request.signature, "")] = request.now
                    if len(pending) > _MAX_PENDING:
                        pending.popitem(last=False)
                signatures[key] = (request, args)
                if len(signatures) > _MAX_PENDING:
                    signatures.pop(next(iter(signatures)))

    def _tool_outcome(
        self, tool: str, args: Any, result: Any, error: Any, call_id: str | None, run: RunKey
    ) -> ToolOutcome:
        name = tool if type(tool) is str and tool and tool.isascii() else _tool_name(tool)
        loop = self.limits.loop
        key = call_id if call_id is not None else (name, id(args))
        with self._pending_lock:
            known = self._signatures.pop(key, None)
        if known is not None and (call_id is not None or known[1] is args):
            request = known[0]
        else:
            request = self._tool_request(name, args, None, call_id)
        failed = error is not None and error is not False
        flags, words = 0, request.words
        if not loop.enabled or name in loop.exempt_tools:
            digest = masked_digest(result, error)
        else:
            if not failed and type(result) is str:  # the usual answer: its digest and flags from one fold of the text
                digest, answer = answer_facts(result)
            else:
                digest, answer = masked_digest(result, error), None
            policy = self._policies.get(name) or self.tool_policy(name)
            try:
                flags = outcome_flags(name, args, result, error, policy, answer)
            except Exception:  # a result or args that raise when read: judged by its digest alone
                flags = FAILED if failed else 0
            similarity = loop.paraphrase_similarity
            prose = self._prose if similarity is not None else None
            tails = self._tails
            with self._pending_lock:
                tail = tails.get(run)
                if tail is None:
                    tail = tails[run] = RunTail()
                    if len(tails) > _MAX_TAILS:
                        tails.popitem(last=False)
                extra, words = tail.observe_safely(
                    name,
                    request.signature,
                    digest,
                    args,
                    error if failed else result,
                    bool(flags & FAILED),
                    bool(policy.paging),
                    prose,
                    similarity or 1.0,
                )
            flags |= extra
        now = self.clock.monotonic()
        return _new_outcome(
            ToolOutcome, (name, request.signature, digest, failed, now, call_id, flags, request.shape, words)
        )

    def _after_tool_record(self, verdict: Verdict, outcome: ToolOutcome, args: Any, agent: str | None) -> None:
        if self._approved_calls and outcome.call_id is not None:
            self._approved_call(outcome.call_id, verdict.turn, done=True)
        if verdict.transitions:
            self._announce(verdict)
        if verdict.duplicate or (self.ledger is None and not self._on_event):
            return
        with self._pending_lock:  # _take_start, inlined (the caller checked what it checks)
            started = self._pending.pop(("tool", outcome.call_id or outcome.signature, ""), None)
        if self._on_event:
            duration = None if started is None else max(0.0, outcome.now - started)
            self._emit(
                "tool",
                "recorded",
                outcome.tool,
                agent,
                duration_s=duration,
                failed=outcome.failed,
                call_id=outcome.call_id,
            )
        ledger = self.ledger
        if ledger is not None:
            # _write's work, spelled out: this row is written once per guarded call.
            try:
                ledger.record(
                    session_id=self._runs.current(),
                    origin="tool",
                    turn=verdict.turn,
                    agent=agent,
                    tool=outcome.tool,
                    input_text=canonical_text(args, loose=False),
                    duration_ms=_ms(started, outcome.now),
                    passed=not outcome.failed,
                )
            except Exception:
                self._ledger_failed("tool")

    # -- steering: the run goes on after a refused call ---------------------------------------------
    def steer(self, trip: LoopGuardTripped) -> str:
        """Let the run go on after ``trip`` refused a tool call (``on_trip="steer"`` in the adapters): returns what to
        tell the model in place of the call's result. The refused call never ran; the breaker closes again but
        keeps its window, so the same call is refused again. Raises ``trip`` when it may not go on (a budget
        ceiling, an unpriced model, an unreachable store), and ``LoopGuardTripped(reason="refusals")`` once the
        agent has been told ``max_refusals`` times: the run is then stopped for good."""
        if not trip.steerable:
            raise trip
        verdict = self._steer_store().steer(self._key(), self.limits, self.clock.monotonic())
        return self._after_steer(verdict, trip)

    async def asteer(self, trip: LoopGuardTripped) -> str:
        if not trip.steerable:
            raise trip
        store = self._steer_store()
        method = getattr(store, "asteer", None)
        now = self.clock.monotonic()
        verdict = (
            await method(self._key(), self.limits, now)
            if method is not None
            else store.steer(self._key(), self.limits, now)
        )
        return self._after_steer(verdict, trip)

    def _steer_store(self) -> Steering:
        if not isinstance(self._store, Steering):
            raise TypeError(f"{type(self._store).__name__} cannot steer (it has no steer step): use on_trip='raise'")
        return self._store

    def _after_steer(self, verdict: Verdict, trip: LoopGuardTripped) -> str:
        self._announce(verdict)
        if not verdict.admitted:
            facts = {**verdict.facts, "tripped_by": trip.reason}
            self._trip(verdict._replace(facts=facts), agent=trip.agent, tool=trip.tool)
        logger.info("loopguard told the agent its call was refused and lets the run go on: %s", trip)
        return trip.for_model()

    # -- model calls ------------------------------------------------------------------------------
    @property
    def needs_token_estimate(self) -> bool:
        """Whether ``before_model``'s ``estimated_input_tokens`` can change anything: only a token or USD ceiling
        and a budget's reservation read the projection. Adapters estimate a request's input only then (reading a
        conversation's new messages on every turn is most of a model hook's work) and pass 0 otherwise."""
        limits = self.limits
        return limits.max_tokens is not None or limits.max_cost_usd is not None or self._book is not None

    def before_model(
        self,
        *,
        model: str | None = None,
        estimated_input_tokens: int = 0,
        max_output_tokens: int = 0,
        agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Pre-flight check of a model call: refuses one that would cross a turn, token or USD ceiling.

        The projection is what was spent + ``estimated_input_tokens`` + ``max_output_tokens``; a request with
        no output cap (``max_output_tokens=0``) reserves ``output_reserve_tokens``, or by default what the model
        could write: its maximum output where the price data knows it, at most ``UNCAPPED_OUTPUT_TOKENS``.
        Under ``max_cost_usd`` a model with no known price (or no model name) is refused
        (``reason="unpriced_model"``) unless ``allow_unpriced=True``.
        """
        if agent is not None and not (type(agent) is str and agent.isascii()):  # (as in before_tool)
            agent = _label("agent", agent)
        if call_id is not None and not (type(call_id) is str and call_id.isascii()):
            call_id = _label("call_id", call_id)
        if self.progress is not None:
            self._check_progress(agent, None, model_turn=True)
        request = self._model_request(model, estimated_input_tokens, max_output_tokens, call_id, agent)
        rid = None if self._book is None else self._reserve_model(request, agent, model)
        try:
            verdict = self._store.admit_model(self._key(), request, self.limits)
            self._after_model_admission(verdict, request, agent, model)
        except BaseException:
            if rid is not None:
                self._give_back(rid)
            raise

    async def abefore_model(
        self,
        *,
        model: str | None = None,
        estimated_input_tokens: int = 0,
        max_output_tokens: int = 0,
        agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        agent, call_id = _label("agent", agent), _label("call_id", call_id)
        if self.progress is not None:
            self._check_progress(agent, None, model_turn=True)
        request = self._model_request(model, estimated_input_tokens, max_output_tokens, call_id, agent)
        rid = None if self._book is None else self._reserve_model(request, agent, model)
        try:
            verdict = await self._astore("aadmit_model", "admit_model", request)
            self._after_model_admission(verdict, request, agent, model)
        except BaseException:
            if rid is not None:
                self._give_back(rid)
            raise

    def after_model(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        model: str | None = None,
        agent: str | None = None,
        cost_usd: float | None = None,
        call_id: str | None = None,
        input: Any = None,
    ) -> None:
        """Record what a model call really used. An overspend is recorded; the next call is refused."""
        if agent is not None and not (type(agent) is str and agent.isascii()):  # (as in before_tool)
            agent = _label("agent", agent)
        if call_id is not None and not (type(call_id) is str and call_id.isascii()):
            call_id = _label("call_id", call_id)
        usage = self._model_usage(input_tokens, output_tokens, model, cost_usd, call_id)
        verdict = self._store.record_model(self._key(), usage, self.limits)
        self._after_model_record(verdict, usage, input_tokens, output_tokens, model, agent, input)

    async def aafter_model(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        model: str | None = None,
        agent: str | None = None,
        cost_usd: float | None = None,
        call_id: str | None = None,
        input: Any = None,
    ) -> None:
        agent, call_id = _label("agent", agent), _label("call_id", call_id)
        usage = self._model_usage(input_tokens, output_tokens, model, cost_usd, call_id)
        verdict = await self._astore("arecord_model", "record_model", usage)
        self._after_model_record(verdict, usage, input_tokens, output_tokens, model, agent, input)

    def model_failed(
        self, *, model: str | None = None, agent: str | None = None, call_id: str | None = None, error: Any = None
    ) -> None:
        """Report that an admitted model call raised instead of answering (a 5xx, a timeout, a cancel).

        Its reservation of projected tokens and USD is released at once and nothing is counted, so failed
        requests cannot add up to a false ceiling. A retry that later succeeds under the same ``call_id``
        is still counted. The ledger gets a failed model row. Never raises a trip.
        """
        agent, call_id = _label("agent", agent), _label("call_id", call_id)
        usage = ModelUsage(0, 0, self.clock.monotonic(), call_id, True)
        verdict = self._store.record_model(self._key(), usage, self.limits)
        self._after_model_failure(verdict, usage, model, agent, error)

    async def amodel_failed(
        self, *, model: str | None = None, agent: str | None = None, call_id: str | None = None, error: Any = None
    ) -> None:
        agent, call_id = _label("agent", agent), _label("call_id", call_id)
        usage = ModelUsage(0, 0, self.clock.monotonic(), call_id, True)
        verdict = await self._astore("arecord_model", "record_model", usage)
        self._after_model_failure(verdict, usage, model, agent, error)

    def _after_model_failure(
        self, verdict: Verdict, usage: ModelUsage, model: str | None, agent: str | None, error: Any
    ) -> None:
        self._announce(verdict)
        if self._book is not None:
            rid = self._take_hold(("model", usage.call_id or "", agent or ""))
            if rid is not None:
                self._give_back(rid)
        started = self._take_start(("model", usage.call_id or "", agent or ""))
        if self.ledger is not None:
            reason = type(error).__name__ if isinstance(error, BaseException) else None
            self._write(
                origin="model",
                turn=verdict.turn,
                agent=agent,
                input_text=canonical_text({"model": model, "failed": reason}, loose=False),
                duration_ms=_ms(started, usage.now),
                passed=False,
            )

    def _model_request(
        self,
        model: str | None,
        estimated_input_tokens: int,
        max_output_tokens: int,
        call_id: str | None,
        agent: str | None,
    ) -> ModelRequest:
        limits = self.limits
        est, out = _counts("estimated_input_tokens", estimated_input_tokens, "max_output_tokens", max_output_tokens)
        if not out and (limits.max_tokens is not None or limits.max_cost_usd is not None or self._budget_tokens):
            # No output cap: reserve what the call could really write, so it cannot overshoot a ceiling.
            reserve = limits.output_reserve_tokens
            out = self._uncapped_output(model) if reserve is None else reserve
        cost = 0
        if limits.max_cost_usd is not None or self._budget_cost:
            price = None if model is None else self._price(model, est, out, warn=limits.allow_unpriced)
            if price is None and not limits.allow_unpriced:
                facts = {"model": model, "limit": limits.max_cost_usd, "budgets": self._budget_names()}
                self._trip(Verdict(False, "unpriced_model", False, facts), agent=agent)
            cost = price or 0
        return ModelRequest(clamp(est + out), cost, self.clock.monotonic(), call_id)

    def _uncapped_output(self, model: str | None) -> int:
        known = getattr(self.prices, "max_output_tokens", None)
        limit = known(model) if known is not None and model is not None else None
        return min(limit, UNCAPPED_OUTPUT_TOKENS) if isinstance(limit, int) and limit > 0 else UNCAPPED_OUTPUT_TOKENS

    def _after_model_admission(
        self, verdict: Verdict, request: ModelRequest, agent: str | None, model: str | None = None
    ) -> None:
        if verdict.transitions:
            self._announce(verdict)
        if verdict.observed and not verdict.duplicate:
            self._observed(verdict, agent=agent, model=model)
        if not verdict.admitted:
            self._trip(verdict, agent=agent, model=model)
        if not verdict.duplicate and (self.ledger is not None or self._on_event):  # (what _mark_start checks)
            self._mark_start(("model", request.call_id or "", agent or ""), request.now)
            if self._on_event:
                self._emit("model", "admitted", model, agent, call_id=request.call_id)

    def _model_usage(
        self,
        input_tokens: int,
        output_tokens: int,
        model: str | None,
        cost_usd: float | None,
        call_id: str | None,
    ) -> ModelUsage:
        spent_in, spent_out = _counts("input_tokens", input_tokens, "output_tokens", output_tokens)
        if cost_usd is not None:
            if isinstance(cost_usd, bool) or not isinstance(cost_usd, (int, float)) or not 0 <= cost_usd < math.inf:
                raise ValueError(f"cost_usd must be a finite number >= 0, got {_short(cost_usd)}")
            cost = clamp(usd_to_micros(min(float(cost_usd), MAX_COUNT / 1_000_000)))
        elif model is not None and self.prices is not None:
            cost = self._price(model, spent_in, spent_out) or 0
        else:
            cost = 0
        return ModelUsage(clamp(spent_in + spent_out), cost, self.clock.monotonic(), call_id)

    def _after_model_record(
        self,
        verdict: Verdict,
        usage: ModelUsage,
        input_tokens: int,
        output_tokens: int,
        model: str | None,
        agent: str | None,
        input: Any,
    ) -> None:
        if verdict.transitions:
            self._announce(verdict)
        if verdict.duplicate:
            return
        timed = self.ledger is not None or self._on_event  # durations go only to the ledger and observers
        started = self._take_start(("model", usage.call_id or "", agent or "")) if timed else None
        if self._book is not None:
            self._settle_model(usage, agent)
        if self._on_event:
            self._emit(
                "model",
                "recorded",
                model,
                agent,
                input_tokens=clamp(input_tokens),
                output_tokens=clamp(output_tokens),
                cost_usd=usage.cost_micros / 1_000_000,
                duration_s=None if started is None else max(0.0, usage.now - started),
                failed=usage.failed,
            )
        if self.ledger is not None:
            text = canonical_text({"model": model, "input": input}, loose=False)
            self._write(
                origin="model",
                turn=verdict.turn,
                agent=agent,
                input_text=text,
                input_tokens=clamp(input_tokens),
                output_tokens=clamp(output_tokens),
                cost_usd=usage.cost_micros / 1_000_000,
                duration_ms=_ms(started, usage.now),
            )
            threshold = self._checkpoint_micros
            if threshold is not None and usage.cost_micros >= threshold:
                self._checkpoint("after:model", agent, None)

    def _run_started(self) -> None:
        """A run opened: with a ledger, a ``start`` resume point records the limits it runs under (what a
        dashboard compares its spend with)."""
        if self.ledger is None or self._checkpoint_micros is None:
            return
        limits = self.limits
        shown = {
            "max_turns": limits.max_turns,
            "max_tokens": limits.max_tokens,
            "max_cost_usd": limits.max_cost_usd,
            "max_tool_calls": limits.max_tool_calls,
            "max_seconds": limits.max_seconds,
            "budgets": ",".join(self._budget_names()) or None,
        }
        self._checkpoint("start", None, None, " ".join(f"{k}={v}" for k, v in shown.items() if v is not None))

    def _checkpoint(self, mark: str, agent: str | None, tool: str | None, text: str | None = None) -> None:
        """A resume point in the ledger: the run's totals as they stand (``origin="checkpoint"``). What resumes a
        run is its store; these rows say where it stood before an irreversible call and after an expensive one."""
        snap = self.usage()
        # The totals ride in the text: count columns would be added into the session's totals a second time.
        totals = f"turns={snap.turns} tokens={snap.tokens} cost_usd={snap.cost_usd:.6f} tool_calls={snap.tool_calls}"
        if text is not None:
            totals = f"{text} {totals}".strip()
        try:
            self._write(origin="checkpoint", turn=snap.turns, agent=agent, tool=tool, breach_reason=f"{mark} {totals}")
        except Exception:  # a resume point is a convenience: never fail the call for it
            logger.exception("loopguard could not write a checkpoint row to the ledger")

    def _price(self, model: str, input_tokens: int, output_tokens: int, *, warn: bool = True) -> int | None:
        if self.prices is None:
            return None
        cost = self.prices.cost_micros(model, input_tokens, output_tokens)
        if cost is not None:
            cost = clamp(cost)
        if cost is None and warn and model not in self._unpriced:
            self._unpriced.add(model)
            warnings.warn(
                f"loopguard cannot price model {model!r}; its USD cost counts as 0 toward max_cost_usd. "
                "Pass cost_usd= to after_model or prices=StaticPrices({...}) to Breaker.",
                LoopGuardWarning,
                stacklevel=4,
            )
        return cost

    # -- trips and events -------------------------------------------------------------------------
    def _trip(
        self,
        verdict: Verdict,
        *,
        agent: str | None,
        tool: str | None = None,
        args: Any = None,
        model: str | None = None,
    ) -> None:
        facts = dict(verdict.facts)
        facts.update(
            terminal=verdict.terminal,
            session_id=self._runs.current(),
            scope=self.scope,
            agent=agent if agent is not None else facts.get("agent"),
        )
        if tool is not None:
            facts["tool"] = tool
        reason = verdict.reason or "open"
        error = LoopGuardTripped(reason, **facts)
        if verdict.duplicate:
            raise error  # a retried request: same verdict, already recorded and announced
        self._raise(error, verdict.turn, agent=agent, tool=tool, args=args, model=model)

    def _raise(
        self,
        error: LoopGuardTripped,
        turn: int,
        *,
        agent: str | None,
        tool: str | None,
        args: Any,
        model: str | None = None,
    ) -> NoReturn:
        """Logs a refusal, writes its ledger row, tells the on_trip callbacks and observers, and raises it."""
        reason = error.reason
        logger.warning("%s", error, extra={"loopguard_reason": reason, "loopguard_facts": dict(error.facts)})
        if self.ledger is not None:
            try:
                self._write(
                    origin="breaker",
                    turn=turn,
                    agent=agent,
                    tool=tool,
                    input_text=canonical_text(args, loose=False) if tool is not None else "",
                    passed=False,
                    breach_reason=reason,
                )
            except Exception as exc:  # the trip is what matters; never let the ledger hide it
                add_note(error, f"loopguard could not write the trip to the ledger: {exc}")
        for callback in self._on_trip:
            try:
                callback(error)
            except Exception:
                logger.exception("loopguard on_trip callback %r failed; the trip is raised anyway", callback)
        if self._on_event:
            kind = "tool" if tool is not None else "model"
            self._emit(kind, "refused", tool if tool is not None else model, agent, reason=reason, trip=error)
        raise error

    def _observed(
        self,
        verdict: Verdict,
        *,
        agent: str | None,
        tool: str | None = None,
        args: Any = None,
        model: str | None = None,
    ) -> None:
        """What observe mode would have refused: logged, written to the ledger, handed to ``on_observe``."""
        for reason, facts in verdict.observed:
            full = dict(facts)
            full.update(
                terminal=False,
                session_id=self._runs.current(),
                scope=self.scope,
                agent=agent if agent is not None else full.get("agent"),
                observe=True,
            )
            if tool is not None:
                full["tool"] = tool
            note = LoopGuardTripped(reason, **full)
            logger.warning(
                "%s", note, extra={"loopguard_reason": reason, "loopguard_facts": full, "loopguard_observe": True}
            )
            if self.ledger is not None:
                try:
                    self._write(
                        origin="breaker",
                        turn=verdict.turn,
                        agent=agent,
                        tool=tool,
                        input_text=canonical_text(args, loose=False) if tool is not None else "",
                        passed=True,
                        breach_reason=f"observed:{reason}",
                    )
                except Exception:
                    logger.exception("loopguard could not write an observation to the ledger")
            if self._on_event:
                kind, name = ("tool", tool) if tool is not None else ("model", model)
                self._emit(kind, "observed", name, agent, reason=reason, trip=note)
            for callback in self._on_observe:
                try:
                    callback(note)
                except Exception:
                    logger.exception("loopguard on_observe callback %r failed", callback)

    def _emit(self, kind: str, phase: str, name: str | None, agent: str | None, **fields: Any) -> None:
        """Hands one event to every observer; an observer that raises is logged, never the caller's problem."""
        run = self._key()
        event = GuardEvent(
            kind, phase, name, run.run_id, run.scope, agent, usage=functools.partial(self.usage, run.run_id), **fields
        )
        for listener in self._on_event:
            try:
                listener(event)
            except Exception:
                logger.exception("loopguard on_event listener %r failed; the call goes on", listener)

    def _announce(self, verdict: Verdict) -> None:
        for move in verdict.transitions:
            logger.info("loopguard breaker %s -> %s (%s)", move.source, move.target, move.reason)
            for callback in self._on_state_change:
                try:
                    callback(move.source, move.target, move.reason)
                except Exception:
                    logger.exception("loopguard on_state_change callback %r failed", callback)

    def _write(self, **row: Any) -> None:
        assert self.ledger is not None
        try:
            self.ledger.record(session_id=self._runs.current(), **row)
        except Exception:
            self._ledger_failed(row.get("origin"))

    def _ledger_failed(self, origin: str | None) -> None:
        """Called while handling a ledger write's error: raises it again (``ledger_failure="raise"``, or a
        breaker row, which a trip must not lose), else logs it and the call goes on."""
        if self._ledger_failure == "raise" or origin == "breaker":
            raise  # the error being handled by the caller's except block
        logger.exception("loopguard could not write a %s row to the ledger", origin)

    # -- bookkeeping ------------------------------------------------------------------------------
    async def _astore(self, async_name: str, sync_name: str, payload: Any, run: RunKey | None = None) -> Verdict:
        key = self._key() if run is None else run
        method = getattr(self._store, async_name, None)
        if method is not None:
            result: Verdict = await method(key, payload, self.limits)
            return result
        sync: Callable[..., Verdict] = getattr(self._store, sync_name)
        return sync(key, payload, self.limits)

    def _mark_start(self, key: tuple[str, str, str], now: float) -> None:
        if self.ledger is None and not self._on_event:  # durations go only to the ledger and to observers
            return
        with self._pending_lock:
            self._pending[key] = now
            if len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)

    def _take_start(self, key: tuple[str, str, str]) -> float | None:
        if self.ledger is None and not self._on_event:
            return None
        with self._pending_lock:
            return self._pending.pop(key, None)

    def __repr__(self) -> str:
        return f"<Breaker scope={self.scope!r} session={self.session_id!r} state={self.state}>"


def _ms(started: float | None, now: float) -> int:
    if started is None:
        return 0
    return max(0, round((now - started) * 1000))
