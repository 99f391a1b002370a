from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core.ledger import Ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def filled(ledger_path: Path) -> Callable[[int], Ledger]:
    """A ledger with ``n`` rows over two sessions, one of them ending in a trip."""

    def make(n: int = 20) -> Ledger:
        ledger = Ledger(ledger_path)
        for i in range(1, n + 1):
            ledger.record(
                session_id="s1" if i <= n // 2 else "s2",
                origin="model" if i % 3 else "tool",
                turn=i,
                tool=None if i % 3 else "search",
                input_text=f"input {i}",
                input_tokens=10 * i,
                output_tokens=i,
                cost_usd=0.001 * i,
                duration_ms=i,
            )
        return ledger

    return make


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the append-only triggers dropped: an attacker with file access."""
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("loopguard_ledger_no_update", "loopguard_ledger_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn


def columns(conn: sqlite3.Connection, seq: int) -> tuple[object, ...]:
    return tuple(conn.execute("SELECT * FROM loopguard_ledger WHERE seq = ?", (seq,)).fetchone())
