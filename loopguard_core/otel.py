"""OpenTelemetry for loopguard: every guarded step on the traces you already have, and metrics.

``Telemetry().attach(breaker)`` listens to the breaker's events (:mod:`loopguard_core.events`) and, for each
guarded step, adds a span event to the span that is current when the step happens (the framework's tool or
model span when the framework traces), or, with ``spans="spans"``, starts a short child span of it. Refusals
add a ``loopguard.trip`` event there. Counters count calls by verdict and reason, trips, tokens and USD spent;
an observable gauge reports what registered budgets have left. See docs/telemetry.md.

Only ``opentelemetry-api`` is needed (extra ``otel``); without an SDK configured every call is a no-op. No
attribute ever holds a tool's arguments or result, a prompt or a completion: the events this module reads
carry none (names, counts and the verdict only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from ._extras import require
from .events import GuardEvent

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from .breaker import Breaker

__all__ = [
    "BUDGET_REMAINING",
    "CALLS",
    "CHECK_EVENT",
    "COST",
    "RECORD_EVENT",
    "TOKENS",
    "TRIPS",
    "TRIP_EVENT",
    "Telemetry",
    "unwatch_budget",
    "watch_budget",
]

logger = logging.getLogger("loopguard")

# Span events (mode "events") and what a child span carries (mode "spans").
#: a pre-flight decision: admitted, refused, observed (observe mode would have refused) or approval_requested
CHECK_EVENT = "loopguard.check"
#: a call's outcome was reported: tokens, USD, duration, failure
RECORD_EVENT = "loopguard.record"
#: a refusal, with its reason, rule and message; added to the current span (never sets its status by default)
TRIP_EVENT = "loopguard.trip"

# Metric instruments.
CALLS = "loopguard.calls"
TRIPS = "loopguard.trips"
TOKENS = "loopguard.tokens"
COST = "loopguard.cost"
BUDGET_REMAINING = "loopguard.budget.remaining"

# OpenTelemetry GenAI semantic conventions (registry: gen_ai.*, status Development), spelled exactly.
_OPERATION = "gen_ai.operation.name"  # "execute_tool" | "chat"
_TOOL = "gen_ai.tool.name"
_TOOL_CALL_ID = "gen_ai.tool.call.id"
_MODEL = "gen_ai.request.model"
_AGENT = "gen_ai.agent.name"
_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_TOKEN_TYPE = "gen_ai.token.type"  # "input" | "output"
# OpenTelemetry exception attributes (general semantic conventions, stable).
_EXC_TYPE = "exception.type"
_EXC_MESSAGE = "exception.message"
#: the fallback value the semantic conventions use for a value outside a bounded set
_OTHER = "_OTHER"

_OPERATIONS: Mapping[str, str] = {"tool": "execute_tool", "model": "chat"}
_CALL_PHASES = frozenset({"admitted", "refused", "approval_requested"})  # one per pre-flight decision
_TRIP_PHASES = frozenset({"refused", "observed"})

Primitive = str | bool | int | float
Attributes = dict[str, Primitive]
BudgetProbe = Callable[[], int | float | None]


class Telemetry:
    """Turns breaker events into OpenTelemetry span events or spans, and metrics.

    ``tracer_provider`` / ``meter_provider``: the providers to use (default: the global ones, so an SDK set up
    later, or by the framework's own instrumentation, is picked up). ``spans``: ``"events"`` (default) adds
    span events to the current span; ``"spans"`` starts a short INTERNAL child span per guarded step.
    ``error_on_refusal``: also set the span's status to ERROR on a refusal (off by default: a refusal is the
    guard working, and a steered run goes on; a trip that escapes the framework's span is recorded as its
    exception by the framework's own instrumentation). ``max_metric_names``: distinct tool, model and agent
    names kept as metric attributes before further ones are counted as ``_OTHER`` (cardinality bound).
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        spans: Literal["events", "spans"] = "events",
        error_on_refusal: bool = False,
        max_metric_names: int = 200,
    ) -> None:
        purpose = "loopguard's OpenTelemetry telemetry"
        require("opentelemetry.trace", extra="otel", purpose=purpose)
        require("opentelemetry.metrics", extra="otel", purpose=purpose)
        from opentelemetry import metrics, trace

        if spans not in ("events", "spans"):
            raise ValueError(f"spans must be 'events' or 'spans', got {spans!r}")
        if isinstance(max_metric_names, bool) or not isinstance(max_metric_names, int) or max_metric_names < 0:
            raise ValueError(f"max_metric_names must be an int >= 0, got {max_metric_names!r}")
        self.spans = spans
        self.error_on_refusal = bool(error_on_refusal)
        self._trace = trace
        version = _version()
        self._tracer = trace.get_tracer("loopguard", version, tracer_provider=tracer_provider)
        meter = metrics.get_meter("loopguard", version, meter_provider=meter_provider)
        self._calls = meter.create_counter(
            CALLS, unit="{call}", description="Guarded calls by pre-flight verdict (admitted, refused, approval)"
        )
        self._trips = meter.create_counter(
            TRIPS, unit="{trip}", description="Refusals (verdict refused) and observe-mode would-be refusals"
        )
        self._tokens = meter.create_counter(
            TOKENS, unit="{token}", description="Tokens reported by guarded model calls, by gen_ai.token.type"
        )
        self._cost = meter.create_counter(COST, unit="{USD}", description="USD spent by guarded model calls")
        meter.create_observable_gauge(
            BUDGET_REMAINING,
            callbacks=[self._observe_budgets],
            description="What a named budget has left, in the unit named by loopguard.budget.unit",
        )
        self._names = _BoundedNames(max_metric_names)

    # -- wiring ---------------------------------------------------------------------------------------
    def attach(self, breaker: Breaker) -> Telemetry:
        """Listen to ``breaker``'s events (``breaker.add_listener(on_event=...)``); returns ``self``."""
        add = getattr(breaker, "add_listener", None)
        if add is None:
            raise TypeError(f"attach needs a loopguard Breaker, got {type(breaker).__name__}")
        add(on_event=self.on_event)
        # The breaker's budgets feed loopguard.budget.remaining (one gauge series per budget and ceiling).
        for budget in getattr(getattr(breaker, "_book", None), "budgets", ()):
            for ceiling, unit in (
                ("max_cost_usd", "{USD}"),
                ("max_tokens", "{token}"),
                ("max_turns", "{turn}"),
                ("max_tool_calls", "{call}"),
            ):
                if getattr(budget, ceiling) is not None:
                    watch_budget(budget.name, _remaining(breaker, budget.name, ceiling), unit=unit)
        return self

    def __call__(self, event: GuardEvent) -> None:
        """So ``Breaker(on_event=Telemetry())`` works too."""
        self.on_event(event)

    def watch_budget(self, name: str, remaining: BudgetProbe, *, unit: str = "{USD}") -> None:
        """Same as the module's :func:`watch_budget` (budgets are watched process-wide)."""
        watch_budget(name, remaining, unit=unit)

    def unwatch_budget(self, name: str, *, unit: str = "{USD}") -> None:
        """Same as the module's :func:`unwatch_budget`."""
        unwatch_budget(name, unit=unit)

    # -- the listener ---------------------------------------------------------------------------------
    def on_event(self, event: GuardEvent) -> None:
        """Handle one breaker event: metrics, then the span event or span."""
        self._measure(event)
        if self.spans == "spans":
            self._child_span(event)
        else:
            self._span_events(event)

    def _span_events(self, event: GuardEvent) -> None:
        span = self._trace.get_current_span()
        if not span.is_recording():  # no span to join: the metrics still count
            return
        name = RECORD_EVENT if event.phase == "recorded" else CHECK_EVENT
        span.add_event(name, _attributes(event, genai=True))
        if event.phase == "refused":
            self._trip(event, span, span)

    def _child_span(self, event: GuardEvent) -> None:
        from opentelemetry.trace import SpanKind

        parent = self._trace.get_current_span()
        title = f"loopguard {event.kind}" if not event.name else f"loopguard {event.kind} {event.name}"
        span = self._tracer.start_span(title, kind=SpanKind.INTERNAL, attributes=_attributes(event, genai=False))
        try:
            if event.phase == "refused":
                self._trip(event, parent if parent.is_recording() else span, span)
        finally:
            span.end()

    def _trip(self, event: GuardEvent, where: Span, status_of: Span) -> None:
        where.add_event(TRIP_EVENT, _trip_attributes(event))
        if self.error_on_refusal:
            from opentelemetry.trace import Status, StatusCode

            status_of.set_status(Status(StatusCode.ERROR, f"loopguard refused the call: {event.reason}"))

    # -- metrics ---------------------------------------------------------------------------------------
    def _measure(self, event: GuardEvent) -> None:
        phase = event.phase
        if phase in _CALL_PHASES:
            labels = self._labels(event)
            labels["loopguard.verdict"] = phase
            if event.reason:
                labels["loopguard.reason"] = event.reason
            self._calls.add(1, labels)
        if phase in _TRIP_PHASES and event.reason:
            labels = self._labels(event)
            labels["loopguard.verdict"] = phase
            labels["loopguard.reason"] = event.reason
            rule = _rule(event)
            if rule is not None:
                labels["loopguard.rule"] = rule
            self._trips.add(1, labels)
        if phase == "recorded" and event.kind == "model":
            labels = self._labels(event)
            if event.input_tokens > 0:
                self._tokens.add(event.input_tokens, {**labels, _TOKEN_TYPE: "input"})
            if event.output_tokens > 0:
                self._tokens.add(event.output_tokens, {**labels, _TOKEN_TYPE: "output"})
            if event.cost_usd > 0:
                self._cost.add(event.cost_usd, labels)

    def _labels(self, event: GuardEvent) -> Attributes:
        # Bounded by the application: kind, tool/model name and agent name. Never run ids or scopes.
        labels: Attributes = {"loopguard.kind": event.kind}
        if event.name:
            key = _TOOL if event.kind == "tool" else _MODEL
            labels[key] = self._names.bound(key, event.name)
        if event.agent:
            labels[_AGENT] = self._names.bound(_AGENT, event.agent)
        return labels

    def _observe_budgets(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        with _BUDGETS_LOCK:
            watched = list(_BUDGETS.items())
        seen: list[Observation] = []
        for (name, unit), remaining in watched:
            try:
                value = remaining()
            except Exception:
                logger.exception("loopguard budget probe for %r failed; its remaining amount is not reported", name)
                continue
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            seen.append(Observation(value, {"loopguard.budget": name, "loopguard.budget.unit": unit}))
        return seen


# Watched budgets are process-wide: a budget is a fact of the process, not of one Telemetry, and every
# Telemetry's gauge reports them all (an SDK meter keeps the first gauge of a name and ignores the callbacks
# of a second one, so a per-instance registry would lose budgets).
_BUDGETS: dict[tuple[str, str], BudgetProbe] = {}
_BUDGETS_LOCK = threading.Lock()


def watch_budget(name: str, remaining: BudgetProbe, *, unit: str = "{USD}") -> None:
    """Report ``remaining()`` on the ``loopguard.budget.remaining`` gauge, with attributes
    ``loopguard.budget=name`` and ``loopguard.budget.unit=unit``, at every metric collection of every
    :class:`Telemetry`. Needs no OpenTelemetry package: without one (or with no ``Telemetry``) nothing reads it.

    ``remaining`` is called on the exporter's thread: keep it cheap (return a cached value); return ``None`` to
    skip a collection; one that raises is logged and skipped. Watching the same name and unit again replaces
    the callable. Units: ``{USD}``, ``{token}``, ``{turn}``, ``{call}``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"watch_budget needs the budget's name (a non-empty str), got {name!r}")
    if not callable(remaining):
        raise TypeError(f"remaining must be a callable returning a number, got {remaining!r}")
    if not isinstance(unit, str) or not unit:
        raise TypeError(f"unit must be a non-empty str such as '{{USD}}' or '{{token}}', got {unit!r}")
    with _BUDGETS_LOCK:
        _BUDGETS[(name, unit)] = remaining


def unwatch_budget(name: str, *, unit: str = "{USD}") -> None:
    """Stop reporting a budget (no error if it was not watched)."""
    with _BUDGETS_LOCK:
        _BUDGETS.pop((name, unit), None)


def _attributes(event: GuardEvent, *, genai: bool) -> Attributes:
    """What one step carries. ``genai=False`` (child spans) leaves out ``gen_ai.operation.name`` and
    ``gen_ai.usage.*``, so backends that type spans by operation or add up usage over spans do not see the
    check as a second tool execution or chat, nor count its tokens twice."""
    out: Attributes = {}
    tool = event.kind == "tool"
    if genai:
        out[_OPERATION] = _OPERATIONS.get(event.kind, event.kind)
    if event.name:
        out[_TOOL if tool else _MODEL] = event.name
    call_id = getattr(event, "call_id", None) or (event.facts or {}).get("call_id")
    if tool and isinstance(call_id, str) and call_id:
        out[_TOOL_CALL_ID] = call_id
    if event.agent:
        out[_AGENT] = event.agent
        out["loopguard.agent"] = event.agent
    out["loopguard.kind"] = event.kind
    out["loopguard.verdict"] = event.phase
    out["loopguard.run_id"] = event.session_id
    out["loopguard.scope"] = event.scope
    if event.reason:
        out["loopguard.reason"] = event.reason
    rule = _rule(event)
    if rule is not None:
        out["loopguard.rule"] = rule
    if event.phase == "recorded":
        if not tool:
            out[_INPUT_TOKENS if genai else "loopguard.input_tokens"] = event.input_tokens
            out[_OUTPUT_TOKENS if genai else "loopguard.output_tokens"] = event.output_tokens
            out["loopguard.cost_usd"] = event.cost_usd
        out["loopguard.failed"] = event.failed
        if event.duration_s is not None:
            out["loopguard.duration_s"] = event.duration_s
    budget = (event.facts or {}).get("budget") or (event.trip.facts.get("budget") if event.trip is not None else None)
    if isinstance(budget, str) and budget:
        out["loopguard.budget"] = budget
    request_id = (event.facts or {}).get("request_id")
    if isinstance(request_id, str) and request_id:
        out["loopguard.approval.request_id"] = request_id
    if event.phase == "refused" and event.trip is not None:
        out["loopguard.terminal"] = event.trip.terminal
    return out


def _trip_attributes(event: GuardEvent) -> Attributes:
    out = _attributes(event, genai=True)
    trip = event.trip
    if trip is None:
        return out
    for fact in ("limit", "observed"):
        value = trip.facts.get(fact)
        if isinstance(value, (str, bool, int, float)):
            out[f"loopguard.{fact}"] = value
    out[_EXC_TYPE] = f"{type(trip).__module__}.{type(trip).__qualname__}"
    # The one-line message loopguard also logs: names, counts, limits and call numbers; never arguments.
    out[_EXC_MESSAGE] = str(trip)
    return out


def _rule(event: GuardEvent) -> str | None:
    rule = event.trip.facts.get("rule") if event.trip is not None else None
    return rule if isinstance(rule, str) and rule else None


class _BoundedNames:
    """Keeps at most ``limit`` distinct values per attribute key; later ones become ``_OTHER``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def bound(self, key: str, value: str) -> str:
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) < self._limit:
                seen.add(value)
                return value
        return _OTHER


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("loopguard-core")
    except Exception:  # running from a source tree that was never installed
        return "0+unknown"


_AMOUNT = {"max_cost_usd": "cost_micros", "max_tokens": "tokens", "max_turns": "turns", "max_tool_calls": "tool_calls"}


def _remaining(breaker: Breaker, name: str, ceiling: str) -> BudgetProbe:
    """What is left of one ceiling of one of ``breaker``'s budgets in its current period."""
    amount = _AMOUNT[ceiling]

    def probe() -> float | None:
        for report in breaker.budgets:
            if report.name == name:
                left = report.remaining().get(amount)
                if left is None:
                    return None
                return left / 1_000_000 if amount == "cost_micros" else float(left)
        return None

    return probe
