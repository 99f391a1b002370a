"""The tutorial's review surface: the five-element frame, its text rendering, and attestations.

A frame joins a session's spec (the original promise and its acceptance criteria) with its ledger rows
(the diff summary, the evidence, and the unresolved assumptions). ``attest`` stores who reviewed it with a
SHA-256 over the frame's content (:func:`frame_hash`); attestations live in the ledger database, in a table
the database keeps append-only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from ._db import DbPath, append_only_triggers, connect, lastrowid
from .ledger import Ledger, LedgerRow
from .spec_writer import SpecResult, SpecWriter

__all__ = [
    "ATTESTATION_SCHEMA",
    "AttestationResult",
    "DiffResult",
    "ReviewFrame",
    "ReviewSurface",
    "SessionNotFoundError",
    "frame_hash",
]

ATTESTATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS attestations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    attested_at TEXT NOT NULL,
    notes TEXT,
    frame_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_attestation_session ON attestations(session_id);
"""


class SessionNotFoundError(KeyError):
    """The session has no spec, no ledger rows, or neither; a frame needs both."""


@dataclass(frozen=True)
class DiffResult:
    """Summary of a session's rows.

    ``first_input`` is the first row's input *hash* and ``final_output`` the ``state_origin`` of the last
    ``llm`` row (else of the last row): the tutorial's names, not model text.
    """

    first_input: str
    final_output: str
    turns_completed: int
    total_tokens: int
    breached: bool


@dataclass(frozen=True)
class ReviewFrame:
    session_id: str
    original_promise: SpecResult
    acceptance_criteria: str
    diff: DiffResult
    evidence: tuple[LedgerRow, ...]
    unresolved_assumptions: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class AttestationResult:
    id: int
    session_id: str
    reviewer: str
    attested_at: str
    notes: str
    frame_hash: str


def frame_hash(frame: ReviewFrame) -> str:
    """SHA-256 (hex) of the frame's canonical text, the tutorial's recipe.

    Covers the session id, the spec's three answers, the acceptance criteria, the diff, one
    ``row:turn|origin|input_hash|tokens|pass|breach`` line per evidence row and one ``assumption:`` line per
    unresolved assumption. It leaves out the frame's load time, row ids, row timestamps, latencies, the
    reviewer and the notes, so every reviewer of the same session at any time gets the same hash.
    """
    promise = frame.original_promise
    parts = [
        f"session_id:{frame.session_id}",
        f"what_it_does:{promise.what_it_does}",
        f"what_it_does_not:{promise.what_it_does_not}",
        f"done_looks_like:{promise.done_looks_like}",
        f"acceptance_criteria:{frame.acceptance_criteria}",
        f"diff.first_input:{frame.diff.first_input}",
        f"diff.final_output:{frame.diff.final_output}",
        f"diff.turns_completed:{frame.diff.turns_completed}",
        f"diff.total_tokens:{frame.diff.total_tokens}",
        f"diff.breached:{frame.diff.breached}",
    ]
    parts.extend(
        f"row:{row.turn_count}|{row.state_origin}|{row.input_hash}|"
        f"{row.token_delta}|{int(row.pass_fail)}|{row.breach_reason or ''}"
        for row in frame.evidence
    )
    parts.extend(f"assumption:{note}" for note in frame.unresolved_assumptions)
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class ReviewSurface:
    """``ReviewSurface(spec_db_path="spec.db", ledger_db_path="ledger.db")``."""

    def __init__(self, spec_db_path: DbPath = "spec.db", ledger_db_path: DbPath = "ledger.db") -> None:
        self.spec_db_path = spec_db_path
        self.ledger_db_path = ledger_db_path
        self._spec_writer = SpecWriter(db_path=spec_db_path, input_fn=lambda _: "", output_fn=lambda _: None)
        self._ledger = Ledger(db_path=ledger_db_path)
        with connect(self.ledger_db_path) as conn:
            conn.executescript(ATTESTATION_SCHEMA + append_only_triggers("attestations"))

    def load(self, session_id: str) -> ReviewFrame:
        """Build the frame; raises :class:`SessionNotFoundError` unless both spec and rows exist."""
        spec = self._spec_writer.load(session_id)
        rows = self._ledger.get_session(session_id)
        if spec is None and not rows:
            raise SessionNotFoundError(f"no spec or ledger rows found for session_id={session_id!r}")
        if spec is None:
            raise SessionNotFoundError(f"ledger rows exist but spec missing for session_id={session_id!r}")
        if not rows:
            raise SessionNotFoundError(f"spec exists but no ledger rows for session_id={session_id!r}")
        return ReviewFrame(
            session_id=session_id,
            original_promise=spec,
            acceptance_criteria=spec.done_looks_like,
            diff=self._build_diff(rows),
            evidence=tuple(rows),
            unresolved_assumptions=tuple(self._unresolved_assumptions(rows)),
            created_at=datetime.now(timezone.utc).isoformat(),
        )

    def render(self, session_id: str) -> str:
        """The frame as the tutorial's fixed-width text (returned, not printed)."""
        frame = self.load(session_id)
        promise = frame.original_promise
        bar = "=" * 64
        lines = [
            bar,
            "REVIEW SURFACE",
            f"session_id: {frame.session_id}",
            f"loaded_at:  {frame.created_at}",
            bar,
            "",
            "[1] ORIGINAL PROMISE",
            f"    What this does:      {promise.what_it_does}",
            f"    What this does NOT:  {promise.what_it_does_not}",
            f"    Done looks like:     {promise.done_looks_like}",
            "",
            "[2] ACCEPTANCE CRITERIA",
            f"    {frame.acceptance_criteria}",
            "",
            "[3] DIFF",
            f"    First input hash:    {frame.diff.first_input}",
            f"    Final state origin:  {frame.diff.final_output}",
            f"    Turns completed:     {frame.diff.turns_completed}",
            f"    Total tokens:        {frame.diff.total_tokens}",
            f"    Breached:            {frame.diff.breached}",
            "",
            "[4] EVIDENCE",
        ]
        for row in frame.evidence:
            verdict = "PASS" if row.pass_fail else "FAIL"
            breach = f" breach={row.breach_reason}" if row.breach_reason else ""
            lines.append(
                f"    turn={row.turn_count:<3} state={row.state_origin:<16} "
                f"tokens={row.token_delta:<6} ms={row.execution_time_ms:<6} {verdict}{breach}"
            )
        lines += ["", "[5] UNRESOLVED ASSUMPTIONS"]
        if frame.unresolved_assumptions:
            lines += [f"    - {note}" for note in frame.unresolved_assumptions]
        else:
            lines.append("    No unresolved assumptions detected.")
        lines += ["", bar]
        return "\n".join(lines)

    def attest(self, session_id: str, reviewer: str, notes: str = "") -> AttestationResult:
        """Record that ``reviewer`` reviewed the session's current frame; returns the stored attestation."""
        digest = self._frame_hash(self.load(session_id))
        attested_at = datetime.now(timezone.utc).isoformat()
        with connect(self.ledger_db_path) as conn:
            cursor = conn.execute(
                "INSERT INTO attestations (session_id, reviewer, attested_at, notes, frame_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, reviewer, attested_at, notes, digest),
            )
            row_id = lastrowid(cursor)
        return AttestationResult(
            id=row_id,
            session_id=session_id,
            reviewer=reviewer,
            attested_at=attested_at,
            notes=notes,
            frame_hash=digest,
        )

    def get_attestations(self, session_id: str) -> list[AttestationResult]:
        """Every attestation of the session, oldest first."""
        with connect(self.ledger_db_path) as conn:
            rows = conn.execute(
                "SELECT id, session_id, reviewer, attested_at, notes, frame_hash "
                "FROM attestations WHERE session_id = ? ORDER BY id ASC",
                (session_id,),
            ).fetchall()
        return [
            AttestationResult(
                id=r[0], session_id=r[1], reviewer=r[2], attested_at=r[3], notes=r[4] or "", frame_hash=r[5]
            )
            for r in rows
        ]

    @staticmethod
    def _build_diff(rows: Sequence[LedgerRow]) -> DiffResult:
        llm_rows = [r for r in rows if r.state_origin == "llm"]
        final_row = llm_rows[-1] if llm_rows else rows[-1]
        return DiffResult(
            first_input=rows[0].input_hash,
            final_output=final_row.state_origin,
            turns_completed=len(llm_rows),
            total_tokens=sum(r.token_delta for r in rows),
            breached=any(r.state_origin == "circuit_breaker" or not r.pass_fail for r in rows),
        )

    @staticmethod
    def _unresolved_assumptions(rows: Sequence[LedgerRow]) -> list[str]:
        notes: list[str] = []
        for r in rows:
            if r.breach_reason:
                notes.append(f"turn {r.turn_count}: circuit_breaker fired ({r.breach_reason})")
            elif not r.pass_fail:
                notes.append(f"turn {r.turn_count}: pass_fail=False")
        return notes

    @staticmethod
    def _frame_hash(frame: ReviewFrame) -> str:
        # Kept under the tutorial's private name for code that re-checks an attestation with it.
        return frame_hash(frame)
