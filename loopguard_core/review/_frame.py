"""The review frame: the five things a person compares before accepting a run's result.

1. original promise      the spec's three answers, written before the run
2. acceptance criteria   the spec's "done looks like" sentence
3. diff                  what the run actually did: turns, tool calls, tokens, cost, how it ended
4. evidence              the session's ledger rows, and whether the ledger verifies
5. unresolved assumptions what the evidence leaves open: trips, failures, a vague spec, a damaged ledger

The frame hash is SHA-256 over a canonical JSON of everything the reviewer is shown, so an attestation
pins exactly that content: a row appended later, a spec replaced, or a ledger edited changes the hash.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..ledger import Ledger, LedgerRow, VerifyResult
from ..spec import Spec, SpecStore
from ._errors import SessionNotFound

__all__ = ["FRAME_VERSION", "Diff", "ReviewFrame", "build_frame"]

#: Part of the hashed content; bumped when the frame's shape changes so old attestations stop matching.
FRAME_VERSION = "loopguard-review-frame/1"


@dataclass(frozen=True, slots=True)
class Diff:
    """What the run did, to hold against what it promised."""

    rows: int
    model_turns: int
    tool_calls: int
    tools: tuple[tuple[str, int], ...]  # (tool, calls), most used first
    input_tokens: int
    output_tokens: int
    cost_micros: int
    failures: int
    trips: tuple[tuple[int, int, str], ...]  # (seq, turn, reason)
    first_at: str
    last_at: str

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000

    @property
    def outcome(self) -> str:
        if self.trips:
            seq, turn, reason = self.trips[0]
            return f"stopped by loopguard at turn {turn} ({reason}, ledger row {seq})"
        return "ran to its end without a trip"


@dataclass(frozen=True, slots=True)
class ReviewFrame:
    """Everything a reviewer is shown about one session. Build it with :func:`build_frame`."""

    session_id: str
    spec: Spec
    diff: Diff
    evidence: tuple[LedgerRow, ...]
    ledger_ok: bool
    ledger_problems: tuple[str, ...]
    assumptions: tuple[str, ...]

    @property
    def original_promise(self) -> Spec:
        return self.spec

    @property
    def acceptance_criteria(self) -> str:
        return self.spec.done_looks_like

    def content(self) -> dict[str, Any]:
        """The hashed content: every value the renderers show, in a canonical shape."""
        return {
            "version": FRAME_VERSION,
            "session_id": self.session_id,
            "original_promise": {
                "what_it_does": self.spec.what_it_does,
                "what_it_does_not": self.spec.what_it_does_not,
                "done_looks_like": self.spec.done_looks_like,
                "created_at": self.spec.created_at,
            },
            "acceptance_criteria": self.acceptance_criteria,
            "diff": {
                "rows": self.diff.rows,
                "model_turns": self.diff.model_turns,
                "tool_calls": self.diff.tool_calls,
                "tools": [list(t) for t in self.diff.tools],
                "input_tokens": self.diff.input_tokens,
                "output_tokens": self.diff.output_tokens,
                "cost_micros": self.diff.cost_micros,
                "failures": self.diff.failures,
                "trips": [list(t) for t in self.diff.trips],
                "first_at": self.diff.first_at,
                "last_at": self.diff.last_at,
                "outcome": self.diff.outcome,
            },
            "evidence": [row.to_dict() for row in self.evidence],
            "ledger": {"ok": self.ledger_ok, "problems": list(self.ledger_problems)},
            "unresolved_assumptions": list(self.assumptions),
        }

    @property
    def frame_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`content`; deterministic for the same content."""
        data = json.dumps(self.content(), ensure_ascii=True, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode("ascii")).hexdigest()


def _diff(rows: list[LedgerRow]) -> Diff:
    tools = Counter(r.tool or "?" for r in rows if r.origin == "tool")
    return Diff(
        rows=len(rows),
        model_turns=sum(1 for r in rows if r.origin == "model"),
        tool_calls=sum(tools.values()),
        tools=tuple(sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=sum(r.output_tokens for r in rows),
        cost_micros=sum(r.cost_micros for r in rows),
        failures=sum(1 for r in rows if not r.passed and r.origin != "breaker"),
        trips=tuple((r.seq, r.turn, r.breach_reason or "unknown") for r in rows if r.is_trip),
        first_at=rows[0].created_at,
        last_at=rows[-1].created_at,
    )


def _assumptions(spec: Spec, rows: list[LedgerRow], verified: VerifyResult) -> tuple[str, ...]:
    notes: list[str] = []
    if not verified.ok:
        notes.append(
            "the ledger does not verify, so this evidence may have been altered: "
            + "; ".join(p.message for p in verified.problems[:5])
        )
    check = spec.check()
    if not check.ok:
        notes.append("the spec's acceptance criteria are not checkable as written: " + "; ".join(check.problems))
    for r in rows:
        who = f" (agent {r.agent})" if r.agent else ""
        if r.origin == "breaker" and r.passed:  # observe mode: it would have refused, and the call was made
            agent = f", agent {r.agent}" if r.agent else ""
            why = f"{r.breach_reason}{agent}"
            notes.append(f"turn {r.turn}: loopguard would have refused a call ({why}) in observe mode")
        elif r.origin == "breaker":
            agent = f", agent {r.agent}" if r.agent else ""
            notes.append(
                f"turn {r.turn}: loopguard stopped the run ({r.breach_reason or 'unknown'}{agent}); the work is "
                "incomplete, and nothing after this point was done"
            )
        elif not r.passed:
            what = f"tool {r.tool!r}" if r.tool else f"{r.origin} call"
            reason = f": {r.breach_reason}" if r.breach_reason else ""
            notes.append(f"turn {r.turn}: {what} failed{reason}{who}; check that the result does not rely on it")
    return tuple(notes)


def build_frame(
    ledger: Ledger,
    session_id: str,
    *,
    specs: SpecStore | None = None,
    verified: VerifyResult | None = None,
) -> ReviewFrame:
    """Build the frame for ``session_id`` from its spec and its ledger rows.

    ``specs`` defaults to a :class:`SpecStore` on the ledger's own file. ``verified`` lets a caller that
    already verified the ledger pass the result (otherwise the whole ledger is verified here).
    Raises :class:`SessionNotFound` when the session has no spec or no rows.
    """
    store = specs if specs is not None else SpecStore(ledger.url)
    spec = store.load(session_id)
    rows = list(ledger.rows(session_id))
    if spec is None or not rows:
        missing = " and ".join(
            part for part, absent in (("no spec", spec is None), ("no ledger rows", not rows)) if absent
        )
        where = "" if ledger.url == "ledger.db" else f" --db {shlex.quote(ledger.url)}"
        raise SessionNotFound(
            f"session {session_id!r} has {missing} in {ledger.url!r}; "
            "a review needs the spec written before the run and the run's ledger rows "
            f"(list sessions with `loopguard sessions{where}`)"
        )
    result = verified if verified is not None else ledger.verify()
    return ReviewFrame(
        session_id=session_id,
        spec=spec,
        diff=_diff(rows),
        evidence=tuple(rows),
        ledger_ok=result.ok,
        ledger_problems=tuple(str(p) for p in result.problems),
        assumptions=_assumptions(spec, rows, result),
    )
