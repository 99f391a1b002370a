"""The tutorial's ledger: one SQLite row per turn or breach, the input stored only as its SHA-256.

Append-only is enforced by the database here (triggers refuse UPDATE and DELETE), where the tutorial
relies on the API having no update method. The schema is otherwise the tutorial's, column for column.
The main API (``loopguard_core.Ledger``) adds a hash chain, verification and signed checkpoints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._db import DbPath, append_only_triggers, connect, lastrowid

__all__ = ["SCHEMA", "Ledger", "LedgerRow"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    turn_count INTEGER NOT NULL,
    state_origin TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    token_delta INTEGER NOT NULL,
    execution_time_ms INTEGER NOT NULL,
    pass_fail INTEGER NOT NULL,
    breach_reason TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_ledger_session ON ledger(session_id);
"""

_COLUMNS = (
    "id, session_id, turn_count, state_origin, input_hash, "
    "token_delta, execution_time_ms, pass_fail, breach_reason, created_at"
)


@dataclass(frozen=True)
class LedgerRow:
    id: int
    session_id: str
    turn_count: int
    state_origin: str
    input_hash: str
    token_delta: int
    execution_time_ms: int
    pass_fail: bool
    breach_reason: str | None
    created_at: str


class Ledger:
    """``Ledger(db_path="ledger.db")``: append rows with :meth:`write`, read them back in insertion order."""

    def __init__(self, db_path: DbPath = "ledger.db") -> None:
        self.db_path = db_path
        with connect(self.db_path) as conn:
            conn.executescript(SCHEMA + append_only_triggers("ledger"))

    def write(
        self,
        session_id: str,
        turn_count: int,
        state_origin: str,
        input_str: str,
        token_delta: int,
        execution_time_ms: int,
        pass_fail: bool,
        breach_reason: str | None = None,
    ) -> int:
        """Append one row and return its id (1 for the first row of a fresh database)."""
        input_hash = hashlib.sha256(input_str.encode("utf-8")).hexdigest()
        created_at = datetime.now(timezone.utc).isoformat()
        with connect(self.db_path) as conn:
            cursor = conn.execute(
                "INSERT INTO ledger (session_id, turn_count, state_origin, input_hash, token_delta, "
                "execution_time_ms, pass_fail, breach_reason, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    turn_count,
                    state_origin,
                    input_hash,
                    token_delta,
                    execution_time_ms,
                    int(bool(pass_fail)),
                    breach_reason,
                    created_at,
                ),
            )
            return lastrowid(cursor)

    def get_session(self, session_id: str) -> list[LedgerRow]:
        """Every row of one session, oldest first."""
        with connect(self.db_path) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ledger WHERE session_id = ? ORDER BY id ASC", (session_id,)
            ).fetchall()
        return [self._row(r) for r in rows]

    def get_all(self) -> list[LedgerRow]:
        """Every row, oldest first."""
        with connect(self.db_path) as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM ledger ORDER BY id ASC").fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r: tuple[Any, ...]) -> LedgerRow:
        return LedgerRow(
            id=r[0],
            session_id=r[1],
            turn_count=r[2],
            state_origin=r[3],
            input_hash=r[4],
            token_delta=r[5],
            execution_time_ms=r[6],
            pass_fail=bool(r[7]),
            breach_reason=r[8],
            created_at=r[9],
        )
