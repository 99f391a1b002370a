"""The one error tree of loopguard.

::

    LoopGuardError                      base of everything loopguard raises on purpose
    ├── LoopGuardTripped (RuntimeError) a guarded call was refused before it ran
    ├── IllegalTransition (RuntimeError) a state change the transition table forbids
    ├── MissingExtra (ImportError)      an optional capability was used without its extra
    ├── StoreError (RuntimeError)       the breaker store could not be reached or answered badly
    ├── SpecError (ValueError)          a spec is missing, vague or malformed
    ├── LedgerError (RuntimeError)      loopguard_core.ledger: the ledger could not record or read
    │   ├── LedgerBusy                  the database stayed locked past the busy timeout
    │   ├── LedgerUnreachable (ConnectionError)  the ledger server could not be reached
    │   ├── LedgerConfigError (ValueError)  wrong key, hashing mode or path
    │   ├── LedgerUnavailable (NotImplementedError)  a backend that is not installed or reachable
    │   └── CheckpointError (ValueError)    a checkpoint note that does not parse or verify
    ├── SessionNotFound (KeyError)      loopguard_core.review: no spec or rows for a session
    └── AttestationRequired (PermissionError)  loopguard_core.review: no matching attestation yet

``LoopGuardTripped`` subclasses ``RuntimeError`` on purpose: LangGraph's default ``RetryPolicy``
retries plain ``Exception`` subclasses three times but not ``RuntimeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "ApprovalError",
    "ApprovalRequired",
    "IllegalTransition",
    "LoopGuardError",
    "LoopGuardTripped",
    "LoopGuardWarning",
    "MissingExtra",
    "SpecError",
    "StoreError",
]


class LoopGuardError(Exception):
    """Base class of every error loopguard raises on purpose."""


class LoopGuardWarning(UserWarning):
    """A configuration that will probably not do what its author expects (e.g. a swallowed trip)."""


# What a person should do about each reason; keeps the one-line message actionable.
_ADVICE: Mapping[str, str] = MappingProxyType(
    {
        "turn_ceiling": "raise max_turns or narrow the task",
        "token_ceiling": "raise max_tokens, lower the request's max_tokens, or narrow the task",
        "cost_ceiling": "raise max_cost_usd or use a cheaper model",
        "tool_ceiling": "raise max_tool_calls / max_calls_per_tool or check why the agent needs so many calls",
        "loop": "nothing new came back, so the next call would not bring anything new either: give the agent "
        "what it lacks, change the request or the tool, or, if this tool may legitimately repeat, raise "
        "LoopDetection(max_repeats_per_tool={...}) or declare it a poll",
        "failures": "the tool keeps failing; fix the tool or its credentials before retrying",
        "wall_clock": "raise max_seconds or narrow the task",
        "open": "the breaker is open after an earlier trip; wait for the recovery window or start a new run",
        "stall": "the agent keeps asking for more where there is nothing (past the last page?); "
        "change the prompt or make the tool say clearly that there is no more",
        "store_unavailable": "bring the breaker store back (or choose failure_policy='open' knowingly)",
        "refusals": "the run is stopped for good; read the refusals in the log or ledger, then change the prompt, "
        "the tools or max_refusals, and start a new run",
        "budget": "the budget is spent for this period: wait for it to reset, raise it, or move the work to another "
        "budget (`loopguard budgets` shows every budget's spend)",
        "approval_required": "a person decides: `loopguard approvals approve ID` (or reject ID --reason ...), "
        "breaker.approvals.decide(...) in code, or the dashboard; then resume the run",
        "approval_rejected": "a person rejected the call; the model is told why (on_trip='steer') or the run stops",
        "unpriced_model": "give its price (Breaker(prices=StaticPrices({model: (usd_in, usd_out)})) per million "
        "tokens), use a model genai-prices knows, or allow unpriced models knowingly (Breaker(allow_unpriced=True)); "
        "a request with no model name needs before_model(model=...)",
        "side_effect_in_flight": "the first call with this idempotency key is still running; call again once it has "
        "finished (its recorded outcome is returned then), or raise wait_seconds if the body is slow",
        "side_effect_unknown": "check the external system (was the refund, email or deploy done?); if it was not, "
        "release the record (store.release(trip.facts['key'])) and call again; for a body that is safe to repeat, "
        "use on_unknown='retry'",
        "side_effect_conflict": "a different request needs a different idempotency key: fix the key (or the key "
        "function) so it covers every argument that makes a request different, or release the old record",
    }
)
_TERMINAL_OPEN = "the run hit a budget ceiling and stays stopped: start a new run (breaker.run()) or raise the limit"


class LoopGuardTripped(LoopGuardError, RuntimeError):
    """A guarded call was refused *before* it ran.

    ``reason`` is a short stable string (``turn_ceiling``, ``token_ceiling``, ``cost_ceiling``,
    ``tool_ceiling``, ``loop``, ``stall``, ``failures``, ``wall_clock``, ``open``, ``store_unavailable``,
    ``refusals``, ``unpriced_model``, ``budget``, ``approval_required``, ``approval_rejected``,
    ``side_effect_in_flight``, ``side_effect_unknown``, ``side_effect_conflict``); ``facts`` holds what led to
    it (counts, limits, tool, agent, session; for a loop the ``rule`` and the earlier calls' ``positions``).
    Frequently used facts are also attributes.
    """

    reason: str
    facts: Mapping[str, Any]

    def __init__(self, reason: str, message: str | None = None, **facts: Any) -> None:
        self.reason = reason
        self.facts = MappingProxyType(dict(facts))
        super().__init__(message or self._default_message(reason, self.facts))

    # Convenience accessors for the facts every reason may carry.
    @property
    def tool(self) -> str | None:
        return self.facts.get("tool")

    @property
    def agent(self) -> str | None:
        return self.facts.get("agent")

    @property
    def session_id(self) -> str | None:
        return self.facts.get("session_id")

    @property
    def limit(self) -> Any:
        return self.facts.get("limit")

    @property
    def observed(self) -> Any:
        return self.facts.get("observed")

    @property
    def terminal(self) -> bool:
        """True when the run cannot recover (a budget ceiling); False for health trips."""
        return bool(self.facts.get("terminal", False))

    @property
    def steerable(self) -> bool:
        """Whether the run may go on after this refusal (``on_trip="steer"``): loops, stalls and failing tools
        may; budget ceilings, unpriced models and an unreachable store never do."""
        return not self.terminal and self.reason in _STEERABLE

    def for_model(self) -> str:
        """What to tell the model in place of the refused call's result, when the run goes on (steer)."""
        detail = _RULES.get(str(self.facts.get("rule")), _WHAT.get(self.reason, "{reason}"))
        try:
            text = detail.format_map(_Facts(self.facts, reason=self.reason))
        except (ValueError, TypeError):
            text = self.reason
        hint = _RULE_HINTS.get(str(self.facts.get("rule")), _MODEL_HINTS.get(self.reason, "Try a different action."))
        return f"loopguard refused this call and it did not run: {text}. {hint}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep reason and facts across pickling (multiprocessing, Celery, Ray).
        return (_rebuild_tripped, (type(self), self.reason, str(self), dict(self.facts)))

    @staticmethod
    def _default_message(reason: str, facts: Mapping[str, Any]) -> str:
        what = _RULES.get(str(facts.get("rule")), _WHAT.get(reason, "{reason}"))
        try:
            detail = what.format_map(_Facts(facts, reason=reason))
        except (ValueError, TypeError):  # a fact of an unexpected type: fall back, never fail here
            detail = reason
        where = f" (agent {facts['agent']!r})" if facts.get("agent") else ""
        advice = _RULE_ADVICE.get(str(facts.get("rule")), _ADVICE.get(reason, "inspect the run before continuing"))
        if reason == "open" and facts.get("terminal"):  # a budget never recovers: waiting does not help
            advice = _TERMINAL_OPEN
        rule = facts.get("rule")
        label = f"{reason}/{rule}" if isinstance(rule, str) and rule != reason else reason
        if facts.get("observe"):
            return (
                f"loopguard would have refused the call [{label}]{where}: {detail}; mode is 'observe', so it was made."
            )
        return f"loopguard refused the call [{label}]{where}: {detail}; it was not made. To continue: {advice}."


class _Facts(dict[str, Any]):
    """format_map source that renders a missing fact as '?' instead of raising."""

    def __init__(self, facts: Mapping[str, Any], **extra: Any) -> None:
        super().__init__(facts)
        self.update(extra)
        if "positions" in facts:
            self["positions"] = _Calls(facts["positions"])
        flying = facts.get("in_flight")
        self["in_flight_note"] = f", and {flying} identical still in flight" if isinstance(flying, int) else ""
        repeats = facts.get("repeats")
        if isinstance(repeats, int):
            self["repeats_th"] = _ordinal(repeats + 1)
            self["passes_th"] = _ordinal(repeats + 1)

    def __missing__(self, key: str) -> str:
        return "?"


_WHAT: Mapping[str, str] = MappingProxyType(
    {
        "turn_ceiling": "model turn {observed} would exceed max_turns={limit}",
        "token_ceiling": "projected {observed} tokens would exceed max_tokens={limit} ({spent} already spent)",
        "cost_ceiling": "projected {observed} USD would exceed max_cost_usd={limit} ({spent} USD already spent)",
        "tool_ceiling": "tool {tool!r} call {observed} would exceed its limit of {limit}",
        "loop": "{tool!r} was called again with the same arguments after returning the same result "
        "{repeats} times in a row (limit {limit})",
        "failures": "{tool!r} failed {observed} times in a row (limit {limit})",
        "stall": "{tool!r} returned nothing {observed} times in a row (limit {limit})",
        "wall_clock": "the run has taken {observed} s, over max_seconds={limit}",
        "open": "the breaker is open after an earlier {tripped_by} trip",
        "store_unavailable": "the breaker store {url} did not answer ({error}) and its failure policy is closed",
        "refusals": "the agent was told {limit} times that its calls were refused (max_refusals={limit}) and "
        "then made another refused call",
        "budget": "budget {budget!r} ({period} {window}, {timezone}) would exceed {ceiling}={limit}: {observed} "
        "with this call ({spent} already spent); it resets {resets_at}",
        "approval_required": "{tool!r} needs a person's approval before it runs (request {request_id})",
        "side_effect_in_flight": "{tool!r} is already running with the same idempotency key",
        "side_effect_unknown": "{tool!r} started earlier with the same idempotency key and never recorded an outcome",
        "side_effect_conflict": "{tool!r} was called with an idempotency key already used for other arguments",
        "approval_rejected": "{decided_by} rejected this call to {tool!r}: {decision_reason}",
        "unpriced_model": "model {model!r} has no known price, so max_cost_usd={limit} cannot be enforced for it",
    }
)


_STEERABLE = frozenset(
    {"loop", "stall", "failures", "open", "approval_rejected", "side_effect_in_flight", "side_effect_conflict"}
)
# Addressed to the model, not to a developer: what to do instead of the call it asked for.
_MODEL_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "loop": "Repeating it will not bring a different answer: use what you already have, try a different "
        "approach, or finish and report what you found.",
        "stall": "There is nothing more to fetch: stop paging and work with what you have.",
        "failures": "This tool keeps failing with the same error: do not call it again with this input.",
        "open": "Calls are paused after an earlier refusal: try a different action.",
        "approval_rejected": "Do not ask for this call again as it is: take the person's reason into account.",
        "side_effect_in_flight": "This action was already requested and is still running: do not ask for it again.",
        "side_effect_conflict": "This action was already done with other details: do not redo it with new ones.",
    }
)


_RULE_ADVICE: Mapping[str, str] = MappingProxyType(
    {
        "no_progress": "look at what the agent is stuck on (its artifacts did not change); change the prompt or the "
        "tools, or give it more patience (Progress(max_stall_turns=..., max_stall_seconds=...))",
    }
)
_RULE_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "no_progress": "Your recent steps changed nothing you are meant to produce: change approach, or stop and "
        "report what blocks you.",
    }
)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class _Calls:
    """Renders call numbers for a message: '#4, #5, #6'."""

    def __init__(self, positions: Any) -> None:
        self.positions = positions

    def __format__(self, spec: str) -> str:
        try:
            numbers = [f"#{int(p)}" for p in self.positions]
        except (TypeError, ValueError):
            return "?"
        if len(numbers) > 6:  # a long streak: its first calls and its last ones say enough
            numbers = [*numbers[:2], "…", *numbers[-3:]]
        return ", ".join(numbers) or "none finished yet"


# What each loop rule saw, by the calls' numbers in the run (never their arguments).
_RULES: Mapping[str, str] = MappingProxyType(
    {
        "repeat": "call #{call} to {tool!r} would make the same request for the {repeats_th} time in a row "
        "(calls {positions}{in_flight_note}; each answered the same, volatile numbers and ids masked; limit {limit})",
        "cycle": "call #{call} to {tool!r} would complete the {passes_th} pass of a block of {period} calls that "
        "already went round {repeats} times with the same answers (passes starting at calls {positions})",
        "interleaved": "call #{call} to {tool!r} repeats calls {positions}, which got the same answer, and nothing "
        "between them made progress (only failed, no-op or repeated calls; limit {limit})",
        "paraphrase": "call #{call} to {tool!r} asks again, in other words, what calls {positions} asked, and "
        "they all got the same answer (limit {limit})",
        "empty_pages": "{tool!r} returned nothing for calls {positions}, the same request paged on (limit {limit})",
        "no_progress": "nothing the run is meant to change has changed for {turns} model turns and {seconds} s "
        "({limit}; measured by the progress probe {probe}, not by what the agent says)",
    }
)


def _rebuild_tripped(cls: type[LoopGuardTripped], reason: str, message: str, facts: dict[str, Any]) -> LoopGuardTripped:
    err = cls.__new__(cls)
    LoopGuardTripped.__init__(err, reason, message, **facts)
    return err


class ApprovalRequired(LoopGuardTripped):
    """A gated tool call waits for a person (``reason="approval_required"``); it did not run.

    ``request_id`` names the request in the approval queue. Not a failure: adapters suspend the run the
    framework's way (LangGraph ``interrupt``, Pydantic AI deferred tools); elsewhere the caller decides or
    waits, then runs the agent again with the same run id, and the approved call goes ahead.
    """

    def __init__(self, message: str | None = None, **facts: Any) -> None:
        super().__init__("approval_required", message, **facts)

    @property
    def request_id(self) -> str | None:
        return self.facts.get("request_id")


class ApprovalError(LoopGuardError, ValueError):
    """An approval decision that cannot be made: unknown request, already decided, edited arguments not JSON."""


class IllegalTransition(LoopGuardError, RuntimeError):
    """A state change that the breaker's transition table does not allow."""

    def __init__(self, source: object, target: object) -> None:
        self.source = source
        self.target = target
        super().__init__(f"illegal breaker transition {source} -> {target}")


class MissingExtra(LoopGuardError, ImportError):
    """An optional capability was used without installing the extra that provides it."""

    def __init__(self, extra: str, package: str, purpose: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(
            f'{purpose} needs the {package!r} package. Install it with: pip install "loopguard-core[{extra}]"'
        )


class StoreError(LoopGuardError, RuntimeError):
    """The breaker store (e.g. Redis) could not be reached or gave an unusable answer."""


class SpecError(LoopGuardError, ValueError):
    """A spec is missing, incomplete, or too vague to check a run against."""


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)``, also on Python 3.10 (where BaseException.add_note does not exist yet)."""
    notes = list(getattr(error, "__notes__", ()))
    notes.append(note)
    error.__notes__ = notes  # type: ignore[attr-defined,unused-ignore]
