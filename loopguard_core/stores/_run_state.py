"""The decision rules of one run, as plain Python over a plain state object.

Ceilings and the breaker's state machine are small exact arithmetic: the memory store runs them here
under a lock and the Redis store's Lua scripts do the same steps atomically (the shared contract suite
runs against both). Loop judgement is not here: it is the detectors' (``loopguard_core.detection``), run
over the window this state keeps, the same Python code whichever store holds the window. Nothing here
blocks, allocates per session length, or calls user code except the configured detectors.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

from ..detection import Call, Step
from ..detection._policy import finding_facts
from ..detection._step import _new_step, without_siblings
from ..limits import Limits
from ..state import BreakerState, check_transition
from .base import (
    _NO_FACTS,
    ModelRequest,
    ModelUsage,
    RunSnapshot,
    ToolOutcome,
    ToolRequest,
    Transition,
    Verdict,
    _new_verdict,
)

__all__ = ["BUDGET_REASONS", "FIELDS", "RunState"]

#: Trips that end the run: no recovery window, no probe.
BUDGET_REASONS = frozenset({"turn_ceiling", "token_ceiling", "cost_ceiling", "tool_ceiling", "wall_clock", "refusals"})
_IDEMPOTENCY_MEMORY = 4_096
_MAX_RESERVATIONS = 1_024
_NO_OBSERVED: tuple[tuple[str, Any], ...] = ()
_CACHED_VERDICTS = 4_096


@functools.lru_cache(maxsize=_CACHED_VERDICTS)
def _admitted(turn: int) -> Verdict:
    """The plain admission at ``turn`` (verdicts are immutable: one object serves every such call)."""
    return Verdict(True, None, False, _NO_FACTS, (), turn)


@functools.lru_cache(maxsize=_CACHED_VERDICTS)
def _recorded(turn: int) -> Verdict:
    return Verdict(True, None, False, _NO_FACTS, (), turn)


#: every attribute of a RunState: what a store that saves a run's state must save (the SQLite codec does)
FIELDS = (
    "state",
    "terminal",
    "trip_reason",
    "trip_facts",
    "opened_at",
    "started_at",
    "probe_key",
    "probe_until",
    "turns",
    "tokens",
    "cost_micros",
    "tool_calls",
    "trips",
    "refusals",
    "calls_per_tool",
    "failures",
    "window",
    "inflight",
    "reservations",
    "reserved_tokens",
    "reserved_micros",
    "_reservation_seq",
    "seen",
)


class RunState:
    """Counters, loop memory and breaker state of one run."""

    # A fixed set of attributes, as the compiled build's native class has (one can't be set by accident).
    __slots__ = FIELDS

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.terminal = False
        self.trip_reason: str | None = None
        self.trip_facts: dict[str, Any] = {}
        self.opened_at: float | None = None
        self.started_at: float | None = None
        self.probe_key: str | None = None
        self.probe_until = 0.0
        self.turns = 0
        self.tokens = 0
        self.cost_micros = 0
        self.tool_calls = 0
        self.trips = 0
        self.refusals = 0
        self.calls_per_tool: dict[str, int] = {}
        # tool -> (failures in a row with the same error, that error's digest)
        self.failures: dict[str, tuple[int, str]] = {}
        # The run's recent finished tool calls, oldest first (what the loop detectors judge), and the calls
        # admitted but not yet reported: signature -> their call numbers, oldest first.
        self.window: list[Step] = []
        self.inflight: dict[str, list[int]] = {}
        # Model calls admitted but not yet reported hold their projection, so concurrent callers cannot
        # each take the last unit of a budget: reservation id -> (tokens, micro-USD, expires at).
        self.reservations: dict[str, tuple[int, int, float]] = {}
        self.reserved_tokens = 0
        self.reserved_micros = 0
        self._reservation_seq = 0
        self.seen: OrderedDict[str, Verdict] = OrderedDict()

    # -- state machine ---------------------------------------------------------------------------
    def _move(self, target: BreakerState, why: str, moves: list[Transition]) -> None:
        check_transition(self.state, target)
        moves.append(Transition(self.state, target, why))
        self.state = target

    def _trip(self, reason: str, now: float, moves: list[Transition], facts: dict[str, Any]) -> Verdict:
        terminal = reason in BUDGET_REASONS
        self._move(BreakerState.OPEN, reason, moves)
        self.terminal = self.terminal or terminal
        self.trip_reason = reason
        self.trip_facts = facts
        self.opened_at = now
        self.probe_key = None
        self.trips += 1
        return Verdict(False, reason, terminal, facts, tuple(moves), turn=self.turns)

    def _gate(self, now: float, limits: Limits, moves: list[Transition]) -> Verdict | None:
        """Refuse while OPEN; half-open a health trip once its recovery window has passed."""
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            retry_at = self.opened_at + limits.recovery_seconds
            if self.terminal or now < retry_at:
                facts = {
                    "tripped_by": self.trip_reason,
                    "terminal": self.terminal,
                    "retry_in_seconds": None if self.terminal else round(retry_at - now, 3),
                    **{k: v for k, v in self.trip_facts.items() if k in ("tool", "limit", "observed")},
                }
                return Verdict(False, "open", self.terminal, facts, tuple(moves), turn=self.turns)
            self._move(BreakerState.HALF_OPEN, "recovery window elapsed", moves)
        return None

    def _start(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now

    def _wall_clock(self, now: float, limits: Limits) -> dict[str, Any] | None:
        if limits.max_seconds is None or self.started_at is None:
            return None
        elapsed = now - self.started_at
        if elapsed > limits.max_seconds:
            return {"observed": round(elapsed, 3), "limit": limits.max_seconds}
        return None

    def _remember(self, key: str | None, verdict: Verdict) -> Verdict:
        if key is not None:
            self.seen[key] = verdict
            if len(self.seen) > _IDEMPOTENCY_MEMORY:
                self.seen.popitem(last=False)
        return verdict

    def _duplicate(self, key: str) -> Verdict:
        first = self.seen[key]
        return Verdict(first.admitted, first.reason, first.terminal, first.facts, (), first.turn, duplicate=True)

    # -- tool calls ------------------------------------------------------------------------------
    def admit_tool(self, req: ToolRequest, limits: Limits) -> Verdict:
        # The hot path of every guarded tool call: written flat, facts built only when refusing, the detectors
        # run only when one of them could find something (LoopDetection.may_fire).
        key = None if req.call_id is None else "t:" + req.call_id
        if key is not None and key in self.seen:
            # A retry comes within the model turn its call came in, or before the call's outcome (a second check
            # may follow another model call of the run: an LLM check in a tool wrapper, a nested agent). The id in a
            # later turn, once its call was refused or reported, names a new call: some servers number calls per
            # answer (Kimi's "list_dir:0") or send one id for all (llama.cpp). Its outcome is forgotten and it is
            # judged as any other; its verdict replaces the first in place (ids are forgotten oldest first).
            first, reported = self.seen[key], "T:" + key[2:]
            if first.turn == self.turns or (first.admitted and reported not in self.seen):
                return self._duplicate(key)
            self.seen.pop(reported, None)
        moves: list[Transition] = []
        now, tool, signature = req.now, req.tool, req.signature
        if self.started_at is None:
            self.started_at = now
        if self.state is not BreakerState.CLOSED:
            refused = self._gate(now, limits, moves)
            if refused is not None:
                return self._remember(key, refused)
        half_open = self.state is BreakerState.HALF_OPEN
        if half_open and self.probe_key is not None and now < self.probe_until:
            facts: dict[str, Any] = {"tripped_by": self.trip_reason, "probe_in_flight": True, "tool": tool}
            return self._remember(key, Verdict(False, "open", False, facts, tuple(moves), self.turns))

        observed = _NO_OBSERVED
        if (
            limits.max_seconds is not None
            or limits.max_tool_calls is not None
            or limits.max_calls_per_tool
            or (self.failures and limits.max_consecutive_failures is not None)
        ):
            refusal = self._tool_refusal(req, limits, half_open)
            if refusal is not None:
                reason, facts = refusal
                facts["tool"], facts["agent"] = tool, req.agent
                if not limits.observing:
                    return self._remember(key, self._trip(reason, now, moves, facts))
                observed = ((reason, facts),)
        loop = limits.loop
        inflight = self.inflight
        queued = inflight.get(signature)
        if queued is None and len(inflight) >= loop.memory:
            inflight.clear()  # callers that never report back: the in-flight memory starts over
        if req.siblings_done:
            window, twins = without_siblings(self.window, req.siblings_done, signature)
        else:  # (a call outside a batch, or its batch's first to finish: the whole window)
            window, twins = self.window, 0
        flying = (len(queued) if queued else 0) + twins
        if loop.enabled and tool not in loop.exempt_tools and loop.may_fire(window, tool, signature, req.shape, flying):
            call = Call(self.tool_calls + 1, tool, signature, req.shape, req.words, req.poll, flying, req.prose)
            finding, noted = loop.judge(window, call, limits.mode)
            if noted:
                observed += tuple(
                    (f.reason, {**finding_facts(f, call), "tool": tool, "agent": req.agent}) for f in noted
                )
            if finding is not None:
                facts = finding_facts(finding, call)
                facts["tool"], facts["agent"] = tool, req.agent
                return self._remember(key, self._trip(finding.reason, now, moves, facts))

        # Admit and count.
        self.tool_calls = seq = self.tool_calls + 1
        per_tool = self.calls_per_tool
        per_tool[tool] = per_tool.get(tool, 0) + 1
        if queued is None:
            inflight[signature] = [seq]
        else:
            queued.append(seq)
        if half_open:
            self.probe_key = req.call_id or signature
            self.probe_until = now + limits.recovery_seconds
            verdict = Verdict(True, None, False, _NO_FACTS, tuple(moves), self.turns, True, False, observed)
        elif moves or observed:
            verdict = Verdict(True, None, False, _NO_FACTS, tuple(moves), self.turns, False, False, observed)
        else:
            verdict = _admitted(self.turns)
        return verdict if key is None else self._remember(key, verdict)

    def _tool_refusal(self, req: ToolRequest, limits: Limits, half_open: bool) -> tuple[str, dict[str, Any]] | None:
        """Which ceiling or health rule, if any, refuses this tool call (reason and facts)."""
        tool = req.tool
        over = self._wall_clock(req.now, limits)
        if over is not None:
            return "wall_clock", over
        if limits.max_tool_calls is not None and self.tool_calls + 1 > limits.max_tool_calls:
            return "tool_ceiling", {
                "observed": self.tool_calls + 1,
                "limit": limits.max_tool_calls,
                "applies_to": "all tools",
            }
        per_tool = limits.max_calls_per_tool.get(tool) if limits.max_calls_per_tool else None
        if per_tool is not None:
            used = self.calls_per_tool.get(tool, 0)
            if used + 1 > per_tool:
                return "tool_ceiling", {"observed": used + 1, "limit": per_tool, "applies_to": "this tool"}
        # A half-open probe may retry the failing tool: that is how recovery is tested.
        cap = limits.max_consecutive_failures
        if cap is not None and not half_open and self.failures:
            failed = self.failures.get(tool, (0, ""))[0]
            if failed >= cap:
                return "failures", {"observed": failed, "limit": cap}
        return None

    def record_tool(self, out: ToolOutcome, limits: Limits) -> Verdict:
        key = None if out.call_id is None else "T:" + out.call_id
        if key is not None and key in self.seen:
            return self._duplicate(key)
        signature, tool = out.signature, out.tool
        queued = self.inflight.get(signature)
        if queued:
            seq = queued.pop(0)
            if not queued:
                del self.inflight[signature]
        else:  # reported without an admission (or after its admission was forgotten)
            seq = self.tool_calls
        window = self.window
        window.append(_new_step(Step, (seq, tool, signature, out.outcome, out.flags, out.shape, out.words)))
        if len(window) > limits.loop.window:
            del window[: len(window) - limits.loop.window]
        failures = self.failures
        if out.failed:
            # The same error again and again is a broken tool; different errors are the agent trying things.
            count, error = failures.get(tool, (0, ""))
            failures[tool] = (count + 1 if error == out.outcome else 1, out.outcome)
        elif failures:
            failures.pop(tool, None)
        if self.state is BreakerState.CLOSED or self.probe_key not in (out.call_id, signature):
            verdict = _recorded(self.turns)
            return verdict if key is None else self._remember(key, verdict)
        moves: list[Transition] = []
        is_probe = self.state is BreakerState.HALF_OPEN
        if is_probe:
            self.probe_key = None
            if out.failed:
                self._move(BreakerState.OPEN, "probe failed", moves)
                self.opened_at = out.now
                self.trip_reason = "failures"
                self.trips += 1
            else:
                self._move(BreakerState.CLOSED, "probe succeeded", moves)
                self.trip_reason = None
                self.trip_facts = {}
                self.opened_at = None
        return self._remember(key, Verdict(True, None, False, {}, tuple(moves), turn=self.turns, probe=is_probe))

    # -- model calls -----------------------------------------------------------------------------
    def admit_model(self, req: ModelRequest, limits: Limits, reservation_seconds: float | None = None) -> Verdict:
        key = None if req.call_id is None else "m:" + req.call_id
        if key is not None and key in self.seen:
            return self._duplicate(key)
        # Every model turn passes here: like admit_tool, the usual case (closed, no model ceiling) stays flat.
        moves: list[Transition] = []
        now = req.now
        if self.started_at is None:
            self.started_at = now
        if self.state is BreakerState.OPEN:
            refused = self._gate(now, limits, moves)
            if refused is not None:
                return self._remember(key, refused)
        if self.reservations:  # calls that never reported back give their reservation up
            for rid in [r for r, (_, _, expires) in self.reservations.items() if expires <= now]:
                self._release(rid)
        observed = _NO_OBSERVED
        priced = limits.max_cost_usd is not None
        if priced or limits.max_tokens is not None or limits.max_turns is not None or limits.max_seconds is not None:
            for reason, facts in self._model_refusals(req, limits):
                if not limits.observing:
                    return self._remember(key, self._trip(reason, now, moves, facts))
                observed += ((reason, facts),)
        self.turns += 1
        if reservation_seconds is not None and (limits.max_tokens is not None or priced):
            self._reservation_seq += 1
            rid = "=" + req.call_id if req.call_id is not None else f"#{self._reservation_seq}"
            self._release(rid)  # never two reservations under one id
            self.reservations[rid] = (req.projected_tokens, req.projected_cost_micros, req.now + reservation_seconds)
            self.reserved_tokens += req.projected_tokens
            self.reserved_micros += req.projected_cost_micros
            if len(self.reservations) > _MAX_RESERVATIONS:
                self._release(next(iter(self.reservations)))
        # (not the cached _admitted: a model admission's turn is always a new one, never in the cache)
        verdict = _new_verdict(
            Verdict, (True, None, False, _NO_FACTS, tuple(moves), self.turns, False, False, observed)
        )
        return verdict if key is None else self._remember(key, verdict)

    def _model_refusals(self, req: ModelRequest, limits: Limits) -> list[tuple[str, dict[str, Any]]]:
        """Every ceiling this model call would break, in the order they are enforced (reason, facts)."""
        broken: list[tuple[str, dict[str, Any]]] = []
        over = self._wall_clock(req.now, limits)
        if over is not None:
            broken.append(("wall_clock", over))
        if limits.max_turns is not None and self.turns + 1 > limits.max_turns:
            broken.append(("turn_ceiling", {"observed": self.turns + 1, "limit": limits.max_turns}))
        # Every call spends at least one token: at the ceiling exactly, the next call must be refused.
        if limits.max_tokens is not None:
            projected = self.tokens + self.reserved_tokens + max(req.projected_tokens, 1)
            if projected > limits.max_tokens:
                facts: dict[str, Any] = {"observed": projected, "limit": limits.max_tokens, "spent": self.tokens}
                if self.reserved_tokens:
                    facts["in_flight"] = self.reserved_tokens
                broken.append(("token_ceiling", facts))
        cap = limits.max_cost_micros
        if cap is not None:
            projected = self.cost_micros + self.reserved_micros + max(req.projected_cost_micros, 1)
            if projected > cap:
                facts = {
                    "observed": projected / 1_000_000,
                    "limit": limits.max_cost_usd,
                    "spent": self.cost_micros / 1_000_000,
                }
                if self.reserved_micros:
                    facts["in_flight"] = self.reserved_micros / 1_000_000
                broken.append(("cost_ceiling", facts))
        return broken

    def _release(self, rid: str) -> None:
        held = self.reservations.pop(rid, None)
        if held is not None:
            self.reserved_tokens -= held[0]
            self.reserved_micros -= held[1]

    def record_model(self, usage: ModelUsage, limits: Limits) -> Verdict:
        key = None if usage.call_id is None or usage.failed else "M:" + usage.call_id
        if key is not None and key in self.seen:
            return self._duplicate(key)
        if self.reservations and not (usage.failed and usage.call_id is not None):
            rid = "=" + usage.call_id if usage.call_id is not None else None
            if rid is None or rid not in self.reservations:
                # A report without a matching id releases the smallest reservation: what stays reserved
                # then never falls below what the calls still in flight really reserved.
                rid = min(self.reservations, key=lambda r: (self.reservations[r][0], self.reservations[r][1]))
            self._release(rid)
        elif self.reservations and usage.call_id is not None:
            # A failure names its call: release exactly that reservation (another call's stays held).
            self._release("=" + usage.call_id)
        self.tokens += usage.tokens
        self.cost_micros += usage.cost_micros
        verdict = _new_verdict(Verdict, (True, None, False, _NO_FACTS, (), self.turns, False, False, ()))
        return verdict if key is None else self._remember(key, verdict)

    # -- steering ---------------------------------------------------------------------------------------
    def steer(self, limits: Limits, now: float) -> Verdict:
        """The agent was told its call was refused (``on_trip="steer"``) and the run goes on: close a health trip
        without forgetting the window (the same call is refused again), or, past ``max_refusals``, stop the
        run for good."""
        moves: list[Transition] = []
        self.refusals += 1
        cap = limits.max_refusals
        if cap is not None and self.refusals > cap:
            if self.state is not BreakerState.OPEN:
                self._move(BreakerState.OPEN, "refusals", moves)
            facts: dict[str, Any] = {"observed": self.refusals, "limit": cap}
            self.terminal, self.trip_reason, self.trip_facts = True, "refusals", facts
            self.opened_at, self.probe_key = now, None
            self.trips += 1
            return Verdict(False, "refusals", True, facts, tuple(moves), self.turns)
        if self.state is BreakerState.OPEN and not self.terminal:
            self._move(BreakerState.CLOSED, "steered", moves)
            self.trip_reason, self.trip_facts, self.opened_at, self.probe_key = None, {}, None, None
        return Verdict(True, None, False, _NO_FACTS, tuple(moves), self.turns)

    # -- views and control -----------------------------------------------------------------------
    def snapshot(self) -> RunSnapshot:
        return RunSnapshot(
            state=self.state,
            terminal=self.terminal,
            trip_reason=self.trip_reason,
            turns=self.turns,
            tokens=self.tokens,
            cost_micros=self.cost_micros,
            tool_calls=self.tool_calls,
            calls_per_tool=dict(self.calls_per_tool),
            trips=self.trips,
            started_at=self.started_at,
            opened_at=self.opened_at,
            refusals=self.refusals,
        )

    def reset(self) -> Verdict:
        """Close the breaker by hand (OPEN/HALF_OPEN -> CLOSED); counters and loop memory stay."""
        moves: list[Transition] = []
        if self.state is BreakerState.HALF_OPEN or self.state is BreakerState.OPEN:
            self._move(BreakerState.CLOSED, "reset", moves)
        self.terminal = False
        self.trip_reason = None
        self.trip_facts = {}
        self.opened_at = None
        self.probe_key = None
        self.refusals = 0
        self.failures.clear()
        self.window.clear()
        self.inflight.clear()
        # A call refused before the reset may be retried with the same id after it (e.g. a human approved it).
        for key in [k for k, v in self.seen.items() if not v.admitted]:
            del self.seen[key]
        return Verdict(True, None, False, {}, tuple(moves), turn=self.turns)
