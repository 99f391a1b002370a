"""Attestations: a named reviewer's statement that they compared a frame (by its hash) with the spec.

They live in the ledger's own SQLite file, in an ``attestations`` table the database keeps append-only
(same columns as the tutorial's table, so both can share one file).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..ledger import LedgerError
from ..ledger._chain import utc_now
from ..ledger._sqlite import append_only_triggers

__all__ = ["Attestation", "AttestationStore"]

_SCHEMA = """
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


@dataclass(frozen=True, slots=True)
class Attestation:
    """One stored attestation."""

    id: int
    session_id: str
    reviewer: str
    attested_at: str
    notes: str
    frame_hash: str


class AttestationStore:
    """The ``attestations`` table of one SQLite file."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        if path == ":memory:" or path.startswith(("postgresql://", "postgres://")):
            raise LedgerError(
                f"attestations are stored in the ledger's SQLite file; {path!r} is not one "
                "(use a file ledger such as Ledger('ledger.db') for reviews)"
            )
        self.path = path
        self._timeout = busy_timeout
        conn = self._connect()
        try:
            with conn:
                conn.executescript(_SCHEMA + append_only_triggers("attestations"))
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self._timeout)

    def add(self, session_id: str, reviewer: str, notes: str, frame_hash: str) -> Attestation:
        at = utc_now()
        conn = self._connect()
        try:
            with conn:
                cur = conn.execute(
                    "INSERT INTO attestations (session_id, reviewer, attested_at, notes, frame_hash) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (session_id, reviewer, at, notes, frame_hash),
                )
        finally:
            conn.close()
        return Attestation(int(cur.lastrowid or 0), session_id, reviewer, at, notes, frame_hash)

    def list(self, session_id: str) -> list[Attestation]:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, session_id, reviewer, attested_at, COALESCE(notes, ''), frame_hash "
                "FROM attestations WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
        finally:
            conn.close()
        return [Attestation(*row) for row in rows]
