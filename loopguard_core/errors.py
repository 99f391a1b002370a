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
    }
)


class LoopGuardTripped(LoopGuardError, RuntimeError):
    """A guarded call was refused *before* it ran.

    ``reason`` is a short stable string (``turn_ceiling``, ``token_ceiling``, ``cost_ceiling``,
    ``tool_ceiling``, ``loop``, ``stall``, ``failures``, ``wall_clock``, ``open``, ``store_unavailable``);
    ``facts`` holds what led to it
    (counts, limits, tool, agent, session). Frequently used facts are also attributes.
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
        advice = _ADVICE.get(reason, "inspect the run before continuing")
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
    }
)


def _rebuild_tripped(cls: type[LoopGuardTripped], reason: str, message: str, facts: dict[str, Any]) -> LoopGuardTripped:
    err = cls.__new__(cls)
    LoopGuardTripped.__init__(err, reason, message, **facts)
    return err


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
