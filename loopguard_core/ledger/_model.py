"""The value objects the ledger hands out: rows, session summaries, verification results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ORIGINS", "CheckpointCheck", "LedgerRow", "Problem", "SessionSummary", "VerifyResult"]

#: What produced a row: a model turn, a tool call, a breaker trip, an approval request or decision, or a
#: resume point (``checkpoint``: the run's totals before an irreversible call and after an expensive one).
ORIGINS: frozenset[str] = frozenset({"model", "tool", "breaker", "approval", "checkpoint"})

#: The stored columns of a ledger row, in storage and export order.
COLUMNS: tuple[str, ...] = (
    "seq",
    "session_id",
    "turn",
    "origin",
    "agent",
    "tool",
    "input_hash",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "duration_ms",
    "passed",
    "breach_reason",
    "created_at",
    "prev_hash",
    "row_hash",
)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One stored ledger row, exactly as it is in the database (cost in integer micro-USD)."""

    seq: int
    session_id: str
    turn: int
    origin: str
    agent: str | None
    tool: str | None
    input_hash: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    duration_ms: int
    passed: bool
    breach_reason: str | None
    created_at: str
    prev_hash: str
    row_hash: str

    @property
    def id(self) -> int:
        """Alias of ``seq``: the row's position in the chain (1 for the first row)."""
        return self.seq

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000

    @property
    def is_trip(self) -> bool:
        """A refusal the breaker enforced (an observation in observe mode is a breaker row that passed)."""
        return self.origin == "breaker" and not self.passed

    def to_dict(self) -> dict[str, Any]:
        """The stored columns as a JSON-ready dict (what ``export_jsonl`` writes per line)."""
        return {name: getattr(self, name) for name in COLUMNS}


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """Totals of one session's rows."""

    session_id: str
    first_at: str
    last_at: str
    rows: int
    tokens: int
    cost_micros: int
    trips: int

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / 1_000_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing verification found wrong, naming the rows (by ``seq``) it concerns.

    ``kind`` is one of ``edited``, ``deleted``, ``inserted``, ``reordered``, ``unlinked``,
    ``truncated``, ``rewritten``, ``checkpoint``.
    """

    kind: str
    seqs: tuple[int, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class CheckpointCheck:
    """What was checked against a saved checkpoint."""

    origin: str
    size: int
    head_hash: str
    signature_checked: bool
    matches: bool


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :meth:`Ledger.verify`. ``ok`` is true only when ``problems`` is empty."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    checkpoint: CheckpointCheck | None = None

    def __bool__(self) -> bool:
        return self.ok

    def seqs(self, kind: str | None = None) -> frozenset[int]:
        """Every row seq named by a problem (of ``kind`` when given)."""
        return frozenset(s for p in self.problems if kind is None or p.kind == kind for s in p.seqs)
