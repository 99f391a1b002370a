"""The breaker: checks every tool call and model call before it runs, and refuses the one that would
break a limit or continue a loop.

Typical use::

    breaker = Breaker(max_turns=40, max_tokens=200_000, max_cost_usd=2.00)
    breaker.before_tool("web_search", {"q": "..."})      # raises LoopGuardTripped: the tool never runs
    result = web_search(q="...")
    breaker.after_tool("web_search", {"q": "..."}, result=result)
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .clock import Clock, SystemClock
from .detection import FAILED, ToolSemantics, masked_digest
from .detection._observe import ProseWords, RunTail, outcome_flags, request_facts
from .errors import LoopGuardTripped, LoopGuardWarning
from .limits import MODES, Limits, LoopDetection, usd_to_micros
from .runs import RunHandle, RunRegistry
from .signatures import call_signature, canonical_text
from .state import BreakerState
from .stores import MemoryStore, Store, store_from_url
from .stores.base import ModelRequest, ModelUsage, RunKey, RunSnapshot, ToolOutcome, ToolRequest, Verdict
from .typing import LedgerSink, PriceSource

__all__ = ["Breaker", "TripCallback"]

logger = logging.getLogger("loopguard")
logger.addHandler(logging.NullHandler())  # a library leaves handler choice to the application

TripCallback = Callable[[LoopGuardTripped], object]
StateCallback = Callable[[BreakerState, BreakerState, str], object]
_MAX_PENDING = 4_096
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
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _tool_name(tool: object) -> str:
    if not isinstance(tool, str) or not tool:
        raise TypeError(f"tool must be the tool's name (a non-empty str), got {tool!r}")
    return tool


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
        output_reserve_tokens: int = 0,
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
        ledger_failure: str = "raise",
        mode: str = "enforce",
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
        )
        if store is None:
            store = MemoryStore()
        elif isinstance(store, str):
            store = store_from_url(store)
        if not isinstance(store, Store):
            raise TypeError(f"store must be a Store or a URL such as 'memory://', got {type(store).__name__}")
        self._store: Store = store
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise TypeError(f"scope must be a non-empty str, got {scope!r}")
        if isolate_runs is not None and not isinstance(isolate_runs, bool):
            raise TypeError(f"isolate_runs must be a bool, got {isolate_runs!r}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise TypeError(f"session_id must be a non-empty str, got {session_id!r}")
        # An explicit scope means "share this state with everyone who names it": no per-run isolation.
        self.scope = scope or f"breaker-{uuid.uuid4().hex[:12]}"
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
        if prices is None and max_cost_usd is not None:
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
        # Breakers that name the same scope share one run (and one ledger session) unless told otherwise.
        self._runs = RunRegistry(session_id or scope or uuid.uuid4().hex)
        self._pending: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._pending_lock = threading.Lock()
        self._signatures: dict[object, tuple[ToolRequest, Any]] = {}
        self._unpriced: set[str] = set()
        self._declared: dict[str, ToolSemantics] = {}
        self._semantics: dict[str, ToolSemantics] = {}
        # Per run: the last call, to judge the next against it (see RunTail); raw values stay in this process.
        self._tails: OrderedDict[RunKey, RunTail] = OrderedDict()
        # Free-text words reach the store only as hashes keyed with this (shared by the store's processes).
        key = getattr(store, "digest_key", None)
        self._prose = ProseWords(key if isinstance(key, bytes) and key else os.urandom(16))

    def add_listener(
        self,
        *,
        on_trip: TripCallback | None = None,
        on_observe: TripCallback | None = None,
        on_state_change: StateCallback | None = None,
    ) -> None:
        """Register one more callback after construction (a replay, a test, an alert sink)."""
        if on_trip is not None:
            self._on_trip = (*self._on_trip, *_callbacks("on_trip", on_trip))
        if on_observe is not None:
            self._on_observe = (*self._on_observe, *_callbacks("on_observe", on_observe))
        if on_state_change is not None:
            self._on_state_change = (*self._on_state_change, *_callbacks("on_state_change", on_state_change))

    # -- tool semantics -----------------------------------------------------------------------------
    def declare_tool(
        self, name: str, semantics: ToolSemantics | Mapping[str, Any] | None = None, **facts: bool
    ) -> None:
        """Tell loop detection what a tool is, from what the framework carries: MCP annotations, tool metadata
        (adapters call this when they first see a tool). ``LoopDetection(tools=...)`` still wins, field by field.

        ``breaker.declare_tool("wait_for_deploy", poll=True)``,
        ``breaker.declare_tool(tool.name, tool.metadata)`` (MCP ``readOnlyHint``... or ``{"loopguard": {...}}``).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"declare_tool needs the tool's name (a non-empty str), got {name!r}")
        if semantics is None:
            declared = ToolSemantics()
        elif isinstance(semantics, ToolSemantics):
            declared = semantics
        elif isinstance(semantics, Mapping):
            declared = ToolSemantics.from_metadata(semantics)
        else:
            raise TypeError(f"semantics must be a ToolSemantics or a metadata mapping, got {type(semantics).__name__}")
        if facts:
            declared = ToolSemantics(**facts).over(declared)
        with self._pending_lock:
            if len(self._declared) >= 4_096:  # tool names can come from models: bounded
                self._declared.clear()
            self._declared[name] = declared
            self._semantics.pop(name, None)

    def tool_semantics(self, name: str) -> ToolSemantics:
        """What loop detection knows about ``name``: your declarations, then the framework's, then the name."""
        known = self._semantics.get(name)
        if known is None:
            loop = self.limits.loop
            known = loop.semantics(name)
            runtime = self._declared.get(name)
            if runtime is not None:
                declared = loop.tools.get(name)
                known = runtime.over(known) if declared is None else declared.over(runtime.over(known))
            if len(self._semantics) >= 4_096:
                self._semantics.clear()
            self._semantics[name] = known
        return known

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

    def begin_run(self, run_id: str | None = None) -> RunHandle:
        """Open a run without a ``with`` block (framework before/after hooks); call ``close()`` at the end."""
        return self.run(run_id).open()

    def _forget_run(self, run_id: str) -> None:
        run = RunKey(self.scope, run_id)
        self._store.drop(run)
        with self._pending_lock:
            self._tails.pop(run, None)

    def _key(self) -> RunKey:
        return RunKey(self.scope, self._runs.current())

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
    def before_tool(self, tool: str, args: Any = None, *, agent: str | None = None, call_id: str | None = None) -> None:
        """Pre-flight check of a tool call. Raises :class:`LoopGuardTripped`; the tool must not run."""
        request = self._tool_request(tool, args, agent, call_id)
        verdict = self._store.admit_tool(self._key(), request, self.limits)
        self._after_tool_admission(verdict, request, args)

    async def abefore_tool(
        self, tool: str, args: Any = None, *, agent: str | None = None, call_id: str | None = None
    ) -> None:
        request = self._tool_request(tool, args, agent, call_id)
        verdict = await self._astore("aadmit_tool", "admit_tool", request)
        self._after_tool_admission(verdict, request, args)

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
        outcome = self._tool_outcome(tool, args, result, error, call_id, run)
        verdict = self._store.record_tool(run, outcome, self.limits)
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
        outcome = self._tool_outcome(tool, args, result, error, call_id, run)
        verdict = await self._astore("arecord_tool", "record_tool", outcome, run)
        self._after_tool_record(verdict, outcome, args, agent)

    def _tool_request(self, tool: str, args: Any, agent: str | None, call_id: str | None) -> ToolRequest:
        name = _tool_name(tool)
        loop = self.limits.loop
        signature = call_signature(name, args, loose=loop.loose_matching)
        if not loop.enabled or name in loop.exempt_tools:
            return ToolRequest(name, signature, self.clock.monotonic(), call_id, agent)
        shape, poll = request_facts(name, args, self.tool_semantics(name))
        prose = None if loop.paraphrase_similarity is None else functools.partial(self._prose, args)
        return ToolRequest(name, signature, self.clock.monotonic(), call_id, agent, shape, frozenset(), poll, prose)

    def _after_tool_admission(self, verdict: Verdict, request: ToolRequest, args: Any) -> None:
        self._announce(verdict)
        if verdict.observed and not verdict.duplicate:
            self._observed(verdict, agent=request.agent, tool=request.tool, args=args)
        if not verdict.admitted:
            self._trip(verdict, agent=request.agent, tool=request.tool, args=args)
        if not verdict.duplicate:
            self._mark_start(("tool", request.call_id or request.signature, ""), request.now)
            # Remember the admission's request so after_tool need not canonicalise the args again: by call
            # id, or else by the identity of the args object itself (kept alive here, so the id stays its own).
            key = request.call_id if request.call_id is not None else (request.tool, id(args))
            with self._pending_lock:
                self._signatures[key] = (request, args)
                if len(self._signatures) > _MAX_PENDING:
                    self._signatures.pop(next(iter(self._signatures)))

    def _tool_outcome(
        self, tool: str, args: Any, result: Any, error: Any, call_id: str | None, run: RunKey
    ) -> ToolOutcome:
        name = _tool_name(tool)
        loop = self.limits.loop
        key = call_id if call_id is not None else (name, id(args))
        with self._pending_lock:
            known = self._signatures.pop(key, None)
        if known is not None and (call_id is not None or known[1] is args):
            request = known[0]
        else:
            request = self._tool_request(name, args, None, call_id)
        failed = error is not None and error is not False
        digest = masked_digest(result, error)
        flags, words = 0, request.words
        if loop.enabled and name not in loop.exempt_tools:
            semantics = self.tool_semantics(name)
            flags = outcome_flags(name, args, result, error, semantics)
            similarity = loop.paraphrase_similarity
            prose = self._prose if similarity is not None else None
            with self._pending_lock:
                tail = self._tails.get(run)
                if tail is None:
                    tail = self._tails[run] = RunTail()
                    if len(self._tails) > _MAX_TAILS:
                        self._tails.popitem(last=False)
                extra, words = tail.observe(
                    name,
                    request.signature,
                    digest,
                    args,
                    error if failed else result,
                    bool(flags & FAILED),
                    bool(semantics.paging),
                    prose,
                    similarity or 1.0,
                )
            flags |= extra
        now = self.clock.monotonic()
        return ToolOutcome(name, request.signature, digest, failed, now, call_id, flags, request.shape, words)

    def _after_tool_record(self, verdict: Verdict, outcome: ToolOutcome, args: Any, agent: str | None) -> None:
        self._announce(verdict)
        if verdict.duplicate:
            return
        started = self._take_start(("tool", outcome.call_id or outcome.signature, ""))
        if self.ledger is not None:
            self._write(
                origin="tool",
                turn=verdict.turn,
                agent=agent,
                tool=outcome.tool,
                input_text=canonical_text(args, loose=False),
                duration_ms=_ms(started, outcome.now),
                passed=not outcome.failed,
            )

    # -- model calls ------------------------------------------------------------------------------
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

        The projection is what was spent + ``estimated_input_tokens`` + ``max_output_tokens`` (or the
        breaker's ``output_reserve_tokens`` when the request sets no cap).
        """
        request = self._model_request(model, estimated_input_tokens, max_output_tokens, call_id)
        verdict = self._store.admit_model(self._key(), request, self.limits)
        self._after_model_admission(verdict, request, agent)

    async def abefore_model(
        self,
        *,
        model: str | None = None,
        estimated_input_tokens: int = 0,
        max_output_tokens: int = 0,
        agent: str | None = None,
        call_id: str | None = None,
    ) -> None:
        request = self._model_request(model, estimated_input_tokens, max_output_tokens, call_id)
        verdict = await self._astore("aadmit_model", "admit_model", request)
        self._after_model_admission(verdict, request, agent)

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
        usage = ModelUsage(0, 0, self.clock.monotonic(), call_id, True)
        verdict = self._store.record_model(self._key(), usage, self.limits)
        self._after_model_failure(verdict, usage, model, agent, error)

    async def amodel_failed(
        self, *, model: str | None = None, agent: str | None = None, call_id: str | None = None, error: Any = None
    ) -> None:
        usage = ModelUsage(0, 0, self.clock.monotonic(), call_id, True)
        verdict = await self._astore("arecord_model", "record_model", usage)
        self._after_model_failure(verdict, usage, model, agent, error)

    def _after_model_failure(
        self, verdict: Verdict, usage: ModelUsage, model: str | None, agent: str | None, error: Any
    ) -> None:
        self._announce(verdict)
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
        self, model: str | None, estimated_input_tokens: int, max_output_tokens: int, call_id: str | None
    ) -> ModelRequest:
        est = _count("estimated_input_tokens", estimated_input_tokens)
        out = _count("max_output_tokens", max_output_tokens) or self.limits.output_reserve_tokens
        cost = 0
        if self.limits.max_cost_usd is not None and model is not None:
            cost = self._price(model, est, out) or 0
        return ModelRequest(est + out, cost, self.clock.monotonic(), call_id)

    def _after_model_admission(self, verdict: Verdict, request: ModelRequest, agent: str | None) -> None:
        self._announce(verdict)
        if verdict.observed and not verdict.duplicate:
            self._observed(verdict, agent=agent)
        if not verdict.admitted:
            self._trip(verdict, agent=agent)
        if not verdict.duplicate:
            self._mark_start(("model", request.call_id or "", agent or ""), request.now)

    def _model_usage(
        self,
        input_tokens: int,
        output_tokens: int,
        model: str | None,
        cost_usd: float | None,
        call_id: str | None,
    ) -> ModelUsage:
        spent_in = _count("input_tokens", input_tokens)
        spent_out = _count("output_tokens", output_tokens)
        if cost_usd is not None:
            if isinstance(cost_usd, bool) or not isinstance(cost_usd, (int, float)) or not cost_usd >= 0:
                raise ValueError(f"cost_usd must be a number >= 0, got {cost_usd!r}")
            cost = usd_to_micros(cost_usd)
        elif model is not None and self.prices is not None:
            cost = self._price(model, spent_in, spent_out) or 0
        else:
            cost = 0
        return ModelUsage(spent_in + spent_out, cost, self.clock.monotonic(), call_id)

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
        self._announce(verdict)
        if verdict.duplicate:
            return
        started = self._take_start(("model", usage.call_id or "", agent or ""))
        if self.ledger is not None:
            text = canonical_text({"model": model, "input": input}, loose=False)
            self._write(
                origin="model",
                turn=verdict.turn,
                agent=agent,
                input_text=text,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=usage.cost_micros / 1_000_000,
                duration_ms=_ms(started, usage.now),
            )

    def _price(self, model: str, input_tokens: int, output_tokens: int) -> int | None:
        if self.prices is None:
            return None
        cost = self.prices.cost_micros(model, input_tokens, output_tokens)
        if cost is None and model not in self._unpriced:
            self._unpriced.add(model)
            warnings.warn(
                f"loopguard cannot price model {model!r}; its USD cost counts as 0 toward max_cost_usd. "
                "Pass cost_usd= to after_model or prices=StaticPrices({...}) to Breaker.",
                LoopGuardWarning,
                stacklevel=4,
            )
        return cost

    # -- trips and events -------------------------------------------------------------------------
    def _trip(self, verdict: Verdict, *, agent: str | None, tool: str | None = None, args: Any = None) -> None:
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
        logger.warning("%s", error, extra={"loopguard_reason": reason, "loopguard_facts": facts})
        if self.ledger is not None:
            try:
                self._write(
                    origin="breaker",
                    turn=verdict.turn,
                    agent=agent,
                    tool=tool,
                    input_text=canonical_text(args, loose=False) if tool is not None else "",
                    passed=False,
                    breach_reason=reason,
                )
            except Exception as exc:  # the trip is what matters; never let the ledger hide it
                _add_note(error, f"loopguard could not write the trip to the ledger: {exc}")
        for callback in self._on_trip:
            try:
                callback(error)
            except Exception:
                logger.exception("loopguard on_trip callback %r failed; the trip is raised anyway", callback)
        raise error

    def _observed(self, verdict: Verdict, *, agent: str | None, tool: str | None = None, args: Any = None) -> None:
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
            for callback in self._on_observe:
                try:
                    callback(note)
                except Exception:
                    logger.exception("loopguard on_observe callback %r failed", callback)

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
            if self._ledger_failure == "raise" or row.get("origin") == "breaker":
                raise
            logger.exception("loopguard could not write a %s row to the ledger", row.get("origin"))

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
        if self.ledger is None:  # durations are only recorded in the ledger
            return
        with self._pending_lock:
            self._pending[key] = now
            if len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)

    def _take_start(self, key: tuple[str, str, str]) -> float | None:
        if self.ledger is None:
            return None
        with self._pending_lock:
            return self._pending.pop(key, None)

    def __repr__(self) -> str:
        return f"<Breaker scope={self.scope!r} session={self.session_id!r} state={self.state}>"


def _add_note(error: BaseException, note: str) -> None:
    # BaseException.add_note exists from Python 3.11; keep the same effect on 3.10.
    notes = list(getattr(error, "__notes__", ()))
    notes.append(note)
    error.__notes__ = notes  # type: ignore[attr-defined,unused-ignore]


def _ms(started: float | None, now: float) -> int:
    if started is None:
        return 0
    return max(0, round((now - started) * 1000))
