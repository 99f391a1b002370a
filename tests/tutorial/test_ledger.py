from __future__ import annotations

import hashlib
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from loopguard_core.tutorial import Ledger, LedgerRow

# The tutorial's ledger DDL, verbatim: the drop-in layer must produce the same table.
TUTORIAL_LEDGER_DDL = """
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


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(db_path=str(tmp_path / "test.db"))


def _table_info(path: str | Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return [tuple(r) for r in conn.execute(f"PRAGMA table_info({table})")]


def test_schema_type_map_is_the_tutorials(tmp_path: Path) -> None:
    db_path = tmp_path / "fresh.db"
    Ledger(db_path=str(db_path))
    assert {r[1]: r[2] for r in _table_info(db_path, "ledger")} == {
        "id": "INTEGER",
        "session_id": "TEXT",
        "turn_count": "INTEGER",
        "state_origin": "TEXT",
        "input_hash": "TEXT",
        "token_delta": "INTEGER",
        "execution_time_ms": "INTEGER",
        "pass_fail": "INTEGER",
        "breach_reason": "TEXT",
        "created_at": "TEXT",
    }


def test_full_table_info_and_index_equal_a_tutorial_database(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    Ledger(db_path=str(ours))
    with sqlite3.connect(theirs) as conn:
        conn.executescript(TUTORIAL_LEDGER_DDL)
    assert _table_info(ours, "ledger") == _table_info(theirs, "ledger")
    with sqlite3.connect(ours) as conn:
        assert [r[1] for r in conn.execute("PRAGMA index_list(ledger)")] == ["idx_ledger_session"]


def test_init_is_idempotent(tmp_path: Path) -> None:
    db_path = str(tmp_path / "idem.db")
    Ledger(db_path=db_path).write("s", 1, "p", "x", 1, 1, True)
    Ledger(db_path=db_path)
    assert len(Ledger(db_path=db_path).get_all()) == 1


def test_default_path_is_ledger_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Ledger().db_path == "ledger.db"
    assert (tmp_path / "ledger.db").exists()


def test_first_write_returns_1_and_persists(ledger: Ledger) -> None:
    row_id = ledger.write(
        session_id="s1",
        turn_count=1,
        state_origin="planner",
        input_str="hello world",
        token_delta=120,
        execution_time_ms=350,
        pass_fail=True,
    )
    assert row_id == 1
    assert ledger.write("s1", 2, "planner", "x", 1, 1, True) == 2
    r = ledger.get_all()[0]
    assert (r.session_id, r.turn_count, r.state_origin, r.token_delta, r.execution_time_ms) == (
        "s1",
        1,
        "planner",
        120,
        350,
    )
    assert r.pass_fail is True
    assert r.breach_reason is None


def test_input_hash_is_sha256_hex_of_the_input(ledger: Ledger) -> None:
    ledger.write("s1", 1, "x", "the quick brown fox", 10, 5, True)
    row = ledger.get_all()[0]
    assert row.input_hash == hashlib.sha256(b"the quick brown fox").hexdigest()
    assert len(row.input_hash) == 64


def test_raw_input_never_reaches_the_file(ledger: Ledger) -> None:
    secret = "customer-ssn-078-05-1120"
    ledger.write("s", 1, "x", secret, 0, 0, True)
    assert secret.encode() not in Path(ledger.db_path).read_bytes()


def test_pass_fail_is_stored_as_integer_0_or_1(ledger: Ledger) -> None:
    ledger.write("s", 1, "x", "a", 0, 0, False)
    ledger.write("s", 2, "x", "a", 0, 0, "yes")  # type: ignore[arg-type]
    with sqlite3.connect(ledger.db_path) as conn:
        raw = [r[0] for r in conn.execute("SELECT pass_fail FROM ledger ORDER BY id")]
    assert raw == [0, 1]
    assert all(type(v) is int for v in raw)
    assert [r.pass_fail for r in ledger.get_all()] == [False, True]


def test_breach_reason_is_stored(ledger: Ledger) -> None:
    ledger.write("s", 6, "executor", "x", 0, 12, False, breach_reason="turn_ceiling")
    assert ledger.get_all()[0].breach_reason == "turn_ceiling"


def test_get_session_filters_and_keeps_order(ledger: Ledger) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    for i in range(3):
        ledger.write(a, i, "p", f"in-{i}", 10, 5, True)
        ledger.write(b, i, "p", f"in-{i}", 20, 5, False)
    rows_a = ledger.get_session(a)
    assert [r.turn_count for r in rows_a] == [0, 1, 2]
    assert all(r.session_id == a and r.token_delta == 10 and r.pass_fail for r in rows_a)
    assert [r.id for r in ledger.get_session(b)] == [2, 4, 6]
    assert ledger.get_session("missing") == []


def test_get_all_is_in_insertion_order(ledger: Ledger) -> None:
    assert ledger.get_all() == []
    for i in range(5):
        ledger.write("s", i, "p", str(i), 1, 1, True)
    rows = ledger.get_all()
    assert [r.turn_count for r in rows] == [0, 1, 2, 3, 4]
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]


def test_ledger_row_is_frozen() -> None:
    row = LedgerRow(1, "s", 1, "p", "h", 0, 0, True, None, "2026-06-10T00:00:00+00:00")
    with pytest.raises(AttributeError):
        row.turn_count = 99  # type: ignore[misc]


def test_created_at_is_timezone_aware_iso8601(ledger: Ledger) -> None:
    ledger.write("s", 1, "p", "x", 0, 0, True)
    assert datetime.fromisoformat(ledger.get_all()[0].created_at).utcoffset() is not None


# -- added by loopguard: the database itself refuses edits ------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger SET token_delta = 0",
        "UPDATE ledger SET pass_fail = 1 WHERE id = 1",
        "DELETE FROM ledger WHERE id = 1",
        "DELETE FROM ledger",
    ],
)
def test_raw_update_and_delete_are_refused(ledger: Ledger, statement: str) -> None:
    ledger.write("s", 1, "p", "x", 50, 5, False, "turn_ceiling")
    before = ledger.get_all()
    conn = sqlite3.connect(ledger.db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="ledger is append-only"):
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    assert ledger.get_all() == before


def test_raw_insert_is_still_allowed(ledger: Ledger) -> None:
    with sqlite3.connect(ledger.db_path) as conn:
        conn.execute(
            "INSERT INTO ledger (session_id, turn_count, state_origin, input_hash, token_delta, "
            "execution_time_ms, pass_fail, breach_reason, created_at) VALUES ('s', 1, 'p', 'h', 1, 1, 1, NULL, 't')"
        )
    assert len(ledger.get_all()) == 1


def test_a_database_made_by_the_tutorial_gains_the_triggers_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(TUTORIAL_LEDGER_DDL)
        conn.execute(
            "INSERT INTO ledger (session_id, turn_count, state_origin, input_hash, token_delta, "
            "execution_time_ms, pass_fail, breach_reason, created_at) VALUES ('s', 1, 'llm', 'h', 7, 1, 1, NULL, 't')"
        )
    ledger = Ledger(db_path=str(path))
    assert ledger.get_all()[0].token_delta == 7
    assert ledger.write("s", 2, "llm", "x", 1, 1, True) == 2
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM ledger")
    finally:
        conn.close()
