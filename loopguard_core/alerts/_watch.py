"""From a breaker's events to alerts: thresholds of the run's ceilings, trips, observations, approval requests."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..events import GuardEvent
from ._alert import Alert, DedupKey

if TYPE_CHECKING:
    from ..limits import Limits
    from ..stores.base import RunSnapshot

__all__ = ["AlertWatcher"]

logger = logging.getLogger("loopguard.alerts")


class _Target(Protocol):
    def submit(self, alert: Alert) -> bool: ...

    def _known(self, key: DedupKey) -> bool: ...

    def _remember(self, key: DedupKey) -> None: ...


class _Watched(Protocol):
    limits: Limits


class AlertWatcher:
    """The ``on_event`` listener :meth:`Alerts.attach` registers on a breaker. Runs in the guarded call's thread,
    so it only builds alerts and queues them (no I/O of its own; ``event.usage()`` is read after a recorded
    call, and only when the breaker has a ceiling set: a store read, one round trip on Redis)."""

    def __init__(
        self,
        alerts: _Target,
        breaker: _Watched,
        *,
        thresholds: tuple[float, ...],
        trips: bool = True,
        observed: bool = True,
        approvals: bool = True,
    ) -> None:
        self.alerts = alerts
        self.breaker = breaker
        self.thresholds = thresholds
        self.trips = trips
        self.observed = observed
        self.approvals = approvals

    def __call__(self, event: GuardEvent) -> None:
        phase = event.phase
        if phase == "recorded":
            if self.thresholds:
                self._usage(event)
        elif phase == "refused":
            if self.trips and event.trip is not None:
                self._refused(event, observed=False)
        elif phase == "observed":
            if self.observed and event.trip is not None:
                self._refused(event, observed=True)
        elif phase == "approval_requested" and self.approvals:
            self._approval(event)

    # -- thresholds ------------------------------------------------------------------------------
    def _usage(self, event: GuardEvent) -> None:
        limits = self.breaker.limits
        per_tool = None
        if event.kind == "tool" and event.name is not None:
            per_tool = limits.max_calls_per_tool.get(event.name)
        if (
            limits.max_turns is None
            and limits.max_tokens is None
            and limits.max_cost_usd is None
            and limits.max_tool_calls is None
            and per_tool is None
        ) or event.usage is None:
            return  # no ceiling: never read the store for nothing
        try:
            snap = event.usage()
        except Exception as exc:  # the store went away: the breaker reports that itself
            logger.debug("loopguard alerts could not read the run's usage: %s", exc)
            return
        checks: list[tuple[str, float, float, float, float, dict[str, Any] | None]] = []
        if limits.max_turns is not None:
            checks.append(("max_turns", snap.turns, limits.max_turns, snap.turns, limits.max_turns, None))
        if limits.max_tokens is not None:
            checks.append(("max_tokens", snap.tokens, limits.max_tokens, snap.tokens, limits.max_tokens, None))
        if limits.max_cost_usd is not None and limits.max_cost_micros:
            checks.append(
                ("max_cost_usd", snap.cost_micros, limits.max_cost_micros, snap.cost_usd, limits.max_cost_usd, None)
            )
        if limits.max_tool_calls is not None:
            checks.append(
                ("max_tool_calls", snap.tool_calls, limits.max_tool_calls, snap.tool_calls, limits.max_tool_calls, None)
            )
        if per_tool is not None and event.name is not None:
            calls = _tool_calls(snap, event.name)
            checks.append((f"max_calls_per_tool[{event.name}]", calls, per_tool, calls, per_tool, {"tool": event.name}))
        for metric, used, limit, shown_used, shown_limit, facts in checks:
            self._check(event, metric, used / limit if limit else 0.0, shown_used, shown_limit, facts)

    def _check(
        self,
        event: GuardEvent,
        metric: str,
        share: float,
        used: float,
        limit: float,
        facts: dict[str, Any] | None,
    ) -> None:
        crossed = [t for t in self.thresholds if share >= t]
        if not crossed:
            return
        top = crossed[-1]
        key: DedupKey = ("threshold", event.scope, event.session_id, metric, top)
        if self.alerts._known(key):
            return
        for lower in crossed[:-1]:  # jumped past several at once: one alert, for the highest
            self.alerts._remember(("threshold", event.scope, event.session_id, metric, lower))
        alert = Alert.threshold(
            subject=f"run {event.session_id}",
            metric=metric,
            used=used,
            limit=limit,
            threshold=top,
            dedup_key=key,
            session_id=event.session_id,
            scope=event.scope,
            agent=event.agent,
            facts=facts,
        )
        self.alerts.submit(alert)

    # -- trips and observations -------------------------------------------------------------------
    def _refused(self, event: GuardEvent, *, observed: bool) -> None:
        trip = event.trip
        assert trip is not None
        reason = trip.reason
        rule = trip.facts.get("rule")
        label = f"{reason}/{rule}" if isinstance(rule, str) and rule and rule != reason else reason
        kind = "observed" if observed else "trip"
        if reason == "open":  # refused because an earlier trip (maybe in another process) opened it: once a run
            key: DedupKey = (kind, event.scope, event.session_id, "open")
        else:
            key = (kind, event.scope, event.session_id, label, event.name)
        if self.alerts._known(key):
            return
        if reason != "open":  # the calls refused while the breaker stays open follow from this trip
            self.alerts._remember((kind, event.scope, event.session_id, "open"))
        what = f"{event.kind} {event.name!r}" if event.name else f"a {event.kind} call"
        if observed:
            title = f"loopguard would have refused {what}: {label} (observe mode)"
        else:
            title = f"loopguard refused {what}: {label}"
        facts = {"reason": reason, **trip.facts, "call_kind": event.kind}
        if event.kind == "model" and event.name:
            facts["model"] = event.name
        self.alerts.submit(
            Alert(
                kind=kind,
                severity="warning" if observed else "critical",
                title=title,
                text=str(trip),
                facts=facts,
                session_id=event.session_id,
                scope=event.scope,
                agent=event.agent,
                dedup_key=key,
            )
        )

    # -- approvals --------------------------------------------------------------------------------
    def _approval(self, event: GuardEvent) -> None:
        request_id = (event.facts or {}).get("request_id")
        key: DedupKey = (
            ("approval", str(request_id)) if request_id else ("approval", event.scope, event.session_id, event.name)
        )
        if self.alerts._known(key):
            return
        rid = str(request_id) if request_id else "ID"
        text = (
            f"Run {event.session_id} asks to call {event.name!r}, a tool that needs a person's approval; it did not "
            f"run. Decide with `loopguard approvals approve {rid}` (or `reject {rid} --reason ...`), "
            "or breaker.decide(...) in code; then resume the run."
        )
        self.alerts.submit(
            Alert(
                kind="approval",
                severity="warning",
                title=f"loopguard: {event.name!r} waits for approval",
                text=text,
                facts={"request_id": request_id, "tool": event.name},
                session_id=event.session_id,
                scope=event.scope,
                agent=event.agent,
                dedup_key=key,
            )
        )

    def __repr__(self) -> str:
        return f"<AlertWatcher thresholds={self.thresholds}>"


def _tool_calls(snap: RunSnapshot, tool: str) -> int:
    return int(snap.calls_per_tool.get(tool, 0))
