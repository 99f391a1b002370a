"""The decision rules of one run, as plain Python over a plain state object.

This is the reference semantics: the memory store runs it under a lock, and the Redis store's Lua
scripts implement the same steps (the shared test-suite runs against both). Nothing here blocks,
allocates per session length, or calls user code.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from ..limits import Limits, LoopDetection
from ..signatures import word_overlap
from ..state import BreakerState, check_transition
from .base import ModelRequest, ModelUsage, RunSnapshot, ToolOutcome, ToolRequest, Transition, Verdict

__all__ = ["BUDGET_REASONS", "RunState"]

#: Trips that end the run: no recovery window, no probe.
BUDGET_REASONS = frozenset({"turn_ceiling", "token_ceiling", "cost_ceiling", "tool_ceiling", "wall_clock"})
_IDEMPOTENCY_MEMORY = 4_096
_RECENT_QUESTIONS = 8  # free-text requests remembered per tool for paraphrase detection


class _Signature:
    __slots__ = ("inflight", "last_outcome", "streak")

    def __init__(self) -> None:
        self.streak = 0  # identical outcomes in a row, plus calls admitted but not yet reported
        self.inflight = 0
        self.last_outcome: str | None = None


class RunState:
    """Counters, loop memory and breaker state of one run."""

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
        self.calls_per_tool: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.empties: dict[str, int] = {}
        self.recent: dict[str, deque[tuple[str, str]]] = {}
        self.signatures: OrderedDict[str, _Signature] = OrderedDict()
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

    def _duplicate(self, key: str | None) -> Verdict | None:
        if key is None or key not in self.seen:
            return None
        first = self.seen[key]
        return Verdict(first.admitted, first.reason, first.terminal, first.facts, (), first.turn, duplicate=True)

    # -- tool calls ------------------------------------------------------------------------------
    def admit_tool(self, req: ToolRequest, limits: Limits) -> Verdict:
        key = None if req.call_id is None else "t:" + req.call_id
        dup = self._duplicate(key)
        if dup is not None:
            return dup
        moves: list[Transition] = []
        self._start(req.now)
        refused = self._gate(req.now, limits, moves)
        if refused is not None:
            return self._remember(key, refused)
        half_open = self.state is BreakerState.HALF_OPEN
        if half_open and self.probe_key is not None and req.now < self.probe_until:
            facts: dict[str, Any] = {"tripped_by": self.trip_reason, "probe_in_flight": True, "tool": req.tool}
            return self._remember(key, Verdict(False, "open", False, facts, tuple(moves), turn=self.turns))

        base: dict[str, Any] = {"tool": req.tool, "agent": req.agent}
        over = self._wall_clock(req.now, limits)
        if over is not None:
            return self._remember(key, self._trip("wall_clock", req.now, moves, {**base, **over}))
        if limits.max_tool_calls is not None and self.tool_calls + 1 > limits.max_tool_calls:
            facts = {**base, "observed": self.tool_calls + 1, "limit": limits.max_tool_calls, "applies_to": "all tools"}
            return self._remember(key, self._trip("tool_ceiling", req.now, moves, facts))
        per_tool = limits.max_calls_per_tool.get(req.tool)
        used = self.calls_per_tool.get(req.tool, 0)
        if per_tool is not None and used + 1 > per_tool:
            facts = {**base, "observed": used + 1, "limit": per_tool, "applies_to": "this tool"}
            return self._remember(key, self._trip("tool_ceiling", req.now, moves, facts))
        # A half-open probe may retry the failing tool: that is how recovery is tested.
        failed = self.failures.get(req.tool, 0)
        cap = limits.max_consecutive_failures
        if cap is not None and not half_open and failed >= cap:
            facts = {**base, "observed": failed, "limit": cap}
            return self._remember(key, self._trip("failures", req.now, moves, facts))
        loop = limits.loop
        sig = self.signatures.get(req.signature)
        if loop.enabled and req.tool not in loop.exempt_tools and sig is not None:
            allowed = loop.repeats_allowed(req.tool)
            if sig.streak >= allowed:
                facts = {**base, "repeats": sig.streak, "limit": allowed, "signature": req.signature}
                return self._remember(key, self._trip("loop", req.now, moves, facts))
        if loop.enabled and req.tool not in loop.exempt_tools:
            refusal = self._no_progress(req, loop, base)
            if refusal is not None:
                reason, facts = refusal
                return self._remember(key, self._trip(reason, req.now, moves, facts))

        # Admit and count.
        self.tool_calls += 1
        self.calls_per_tool[req.tool] = used + 1
        if sig is None:
            sig = _Signature()
            self.signatures[req.signature] = sig
            if len(self.signatures) > loop.memory:
                self.signatures.popitem(last=False)
        else:
            self.signatures.move_to_end(req.signature)
        # Counted as a repeat until its outcome shows otherwise (pre-flight-only callers still catch loops).
        sig.streak += 1
        sig.inflight += 1
        probe = False
        if half_open:
            self.probe_key = req.call_id or req.signature
            self.probe_until = req.now + limits.recovery_seconds
            probe = True
        return self._remember(key, Verdict(True, None, False, {}, tuple(moves), turn=self.turns, probe=probe))

    def _no_progress(
        self, req: ToolRequest, loop: LoopDetection, base: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """Repeats that a signature cannot see: empty answers in a row, the same question reworded."""
        empties = self.empties.get(req.tool, 0)
        if loop.max_empty_results is not None and empties >= loop.max_empty_results:
            return "stall", {**base, "observed": empties, "limit": loop.max_empty_results}
        threshold = loop.similarity
        ring = self.recent.get(req.tool) if threshold is not None and req.words else None
        if ring and threshold is not None:
            allowed = loop.repeats_allowed(req.tool)
            answers = [o for w, o in reversed(ring) if word_overlap(req.words, w) >= threshold][:allowed]
            if len(answers) >= allowed and len(set(answers)) == 1:
                return "loop", {**base, "repeats": allowed, "limit": allowed, "similar": True}
        return None

    def record_tool(self, out: ToolOutcome, limits: Limits) -> Verdict:
        key = None if out.call_id is None else "T:" + out.call_id
        dup = self._duplicate(key)
        if dup is not None:
            return dup
        moves: list[Transition] = []
        sig = self.signatures.get(out.signature)
        if sig is not None:
            sig.inflight = max(0, sig.inflight - 1)
            if sig.last_outcome != out.outcome:
                # A new answer restarts the streak; identical calls still in flight (parallel tool calls)
                # keep counting, so a burst of copies cannot slip past the limit together.
                sig.streak = 1 + sig.inflight
                sig.last_outcome = out.outcome
        if out.failed:
            self.failures[out.tool] = self.failures.get(out.tool, 0) + 1
        else:
            self.failures.pop(out.tool, None)
        if out.empty and not out.failed:
            self.empties[out.tool] = self.empties.get(out.tool, 0) + 1
        else:
            self.empties.pop(out.tool, None)
        if out.words:
            ring = self.recent.get(out.tool)
            if ring is None:
                ring = self.recent[out.tool] = deque(maxlen=_RECENT_QUESTIONS)
            ring.append((out.words, out.outcome))
        is_probe = self.state is BreakerState.HALF_OPEN and self.probe_key in (out.call_id, out.signature)
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
    def admit_model(self, req: ModelRequest, limits: Limits) -> Verdict:
        key = None if req.call_id is None else "m:" + req.call_id
        dup = self._duplicate(key)
        if dup is not None:
            return dup
        moves: list[Transition] = []
        self._start(req.now)
        refused = self._gate(req.now, limits, moves)
        if refused is not None:
            return self._remember(key, refused)
        over = self._wall_clock(req.now, limits)
        if over is not None:
            return self._remember(key, self._trip("wall_clock", req.now, moves, over))
        facts: dict[str, Any]
        if limits.max_turns is not None and self.turns + 1 > limits.max_turns:
            facts = {"observed": self.turns + 1, "limit": limits.max_turns}
            return self._remember(key, self._trip("turn_ceiling", req.now, moves, facts))
        # Every call spends at least one token: at the ceiling exactly, the next call must be refused.
        if limits.max_tokens is not None:
            projected = self.tokens + max(req.projected_tokens, 1)
            if projected > limits.max_tokens:
                facts = {"observed": projected, "limit": limits.max_tokens, "spent": self.tokens}
                return self._remember(key, self._trip("token_ceiling", req.now, moves, facts))
        cap = limits.max_cost_micros
        if cap is not None:
            projected = self.cost_micros + max(req.projected_cost_micros, 1)
            if projected > cap:
                facts = {
                    "observed": projected / 1_000_000,
                    "limit": limits.max_cost_usd,
                    "spent": self.cost_micros / 1_000_000,
                }
                return self._remember(key, self._trip("cost_ceiling", req.now, moves, facts))
        self.turns += 1
        return self._remember(key, Verdict(True, None, False, {}, tuple(moves), turn=self.turns))

    def record_model(self, usage: ModelUsage, limits: Limits) -> Verdict:
        key = None if usage.call_id is None else "M:" + usage.call_id
        dup = self._duplicate(key)
        if dup is not None:
            return dup
        self.tokens += usage.tokens
        self.cost_micros += usage.cost_micros
        return self._remember(key, Verdict(True, None, False, {}, (), turn=self.turns))

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
        self.failures.clear()
        self.empties.clear()
        self.recent.clear()
        self.signatures.clear()
        # A call refused before the reset may be retried with the same id after it (e.g. a human approved it).
        for key in [k for k, v in self.seen.items() if not v.admitted]:
            del self.seen[key]
        return Verdict(True, None, False, {}, tuple(moves), turn=self.turns)
