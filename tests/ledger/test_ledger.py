from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from loopguard_core.errors import LoopGuardError
from loopguard_core.ledger import (
    APPEND_ONLY_MESSAGE,
    Ledger,
    LedgerConfigError,
    LedgerRow,
)
from loopguard_core.typing import LedgerSink


def test_ledger_is_a_ledger_sink(ledger_path: Path) -> None:
    assert isinstance(Ledger(ledger_path), LedgerSink)


def test_record_returns_seq_from_one_and_stores_every_field(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    first = ledger.record(
        session_id="s1",
        origin="tool",
        turn=3,
        agent="researcher",
        tool="search",
        input_text='search({"q": "x"})',
        input_tokens=12,
        output_tokens=7,
        cost_usd=0.0123456,
        duration_ms=41,
        passed=False,
        breach_reason="loop",
    )
    second = ledger.record(session_id="s1", origin="breaker", turn=4, passed=False, breach_reason="loop")
    assert (first, second) == (1, 2)
    row = next(ledger.rows())
    assert isinstance(row, LedgerRow)
    assert (row.seq, row.session_id, row.turn, row.origin, row.agent, row.tool) == (
        1,
        "s1",
        3,
        "tool",
        "researcher",
        "search",
    )
    assert row.input_hash == hashlib.sha256(b'search({"q": "x"})').hexdigest()
    assert (row.input_tokens, row.output_tokens, row.tokens) == (12, 7, 19)
    assert row.cost_micros == 12346 and row.cost_usd == pytest.approx(0.012346)
    assert (row.duration_ms, row.passed, row.breach_reason) == (41, False, "loop")
    created = datetime.fromisoformat(row.created_at)
    assert created.tzinfo is not None and created.utcoffset() == timezone.utc.utcoffset(None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", row.created_at)
    with pytest.raises(AttributeError):
        row.turn = 9  # type: ignore[misc]


def test_database_is_wal_and_cost_is_stored_as_integer(ledger_path: Path) -> None:
    Ledger(ledger_path).record(session_id="s", origin="model", turn=1, cost_usd=0.25)
    conn = sqlite3.connect(ledger_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT typeof(cost_micros), cost_micros FROM loopguard_ledger").fetchone() == (
        "integer",
        250000,
    )


@pytest.mark.parametrize("statement", ["UPDATE loopguard_ledger SET turn = 99", "DELETE FROM loopguard_ledger"])
def test_database_refuses_update_and_delete(ledger_path: Path, statement: str) -> None:
    ledger = Ledger(ledger_path)
    ledger.record(session_id="s", origin="model", turn=1)
    conn = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.DatabaseError, match=APPEND_ONLY_MESSAGE):
        conn.execute(statement)
    conn.rollback()
    assert [r.turn for r in ledger.rows()] == [1]
    assert ledger.verify().ok


@pytest.mark.parametrize(
    "statement",
    ["UPDATE loopguard_meta SET value = 'x' WHERE key = 'chain_id'", "DELETE FROM loopguard_checkpoints"],
)
def test_meta_and_checkpoints_are_append_only_too(ledger_path: Path, statement: str) -> None:
    Ledger(ledger_path).checkpoint()
    conn = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.DatabaseError, match=APPEND_ONLY_MESSAGE):
        conn.execute(statement)


def test_raw_inputs_never_reach_the_database_files(ledger_path: Path) -> None:
    secrets = [f"SECRET-PROMPT-{i}-{'x' * i} call the tool with password hunter{i}" for i in range(50)]
    ledger = Ledger(ledger_path)
    for i, text in enumerate(secrets):
        ledger.record(session_id="s", origin="tool", turn=i, tool="login", input_text=text)
    blobs = b"".join(
        Path(f"{ledger_path}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{ledger_path}{suffix}").exists()
    )
    assert Path(f"{ledger_path}-wal").exists()  # the rows are (at least partly) still in the WAL
    assert b"SECRET-PROMPT" not in blobs and b"hunter" not in blobs
    # The hashes are there, so an auditor can confirm a known input.
    assert hashlib.sha256(secrets[7].encode()).hexdigest().encode() in blobs
    ledger.close()


def test_hmac_mode_stores_keyed_hashes_and_refuses_another_key(ledger_path: Path) -> None:
    key = os.urandom(32)
    ledger = Ledger(ledger_path, hmac_key=key)
    ledger.record(session_id="s", origin="tool", turn=1, input_text="yes")
    row = next(ledger.rows())
    import hmac

    assert row.input_hash == hmac.new(key, b"yes", hashlib.sha256).hexdigest()
    assert row.input_hash != hashlib.sha256(b"yes").hexdigest()
    assert ledger.hash_input("yes") == row.input_hash
    ledger.close()
    assert Ledger(ledger_path, hmac_key=key).verify().ok
    with pytest.raises(LedgerConfigError, match="hmac_key it was created with"):
        Ledger(ledger_path, hmac_key=os.urandom(32))
    with pytest.raises(LedgerConfigError, match="hmac_key it was created with"):
        Ledger(ledger_path)
    with pytest.raises(LedgerConfigError, match="at least 16"):
        Ledger(ledger_path, hmac_key=b"short")


def test_plain_ledger_refuses_to_be_reopened_with_a_key(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    with pytest.raises(LedgerConfigError, match="no hmac_key"):
        Ledger(ledger_path, hmac_key=os.urandom(32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": "llm"}, "origin must be one of"),
        ({"session_id": ""}, "session_id must be a non-empty string"),
        ({"turn": -1}, "turn must be an integer >= 0"),
        ({"input_tokens": 1.5}, "input_tokens must be an integer"),
        ({"cost_usd": float("nan")}, "cost_usd must be a finite amount"),
        ({"cost_usd": -0.01}, "cost_usd must be a finite amount"),
        ({"input_text": b"bytes"}, "input_text must be a str"),
    ],
)
def test_bad_values_are_refused_with_a_clear_error(ledger_path: Path, kwargs: dict[str, object], message: str) -> None:
    ledger = Ledger(ledger_path)
    call: dict[str, object] = {"session_id": "s", "origin": "model", "turn": 1, **kwargs}
    with pytest.raises(LedgerConfigError, match=message):
        ledger.record(**call)  # type: ignore[arg-type]
    assert list(ledger.rows()) == []


def test_sessions_summarize_rows_tokens_cost_and_trips(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    ledger.record(session_id="a", origin="model", turn=1, input_tokens=100, output_tokens=20, cost_usd=0.5)
    ledger.record(session_id="b", origin="model", turn=1, input_tokens=1)
    ledger.record(session_id="a", origin="breaker", turn=2, passed=False, breach_reason="loop")
    a, b = ledger.sessions()
    assert (a.session_id, a.rows, a.tokens, a.cost_micros, a.trips) == ("a", 2, 120, 500000, 1)
    assert a.first_at <= a.last_at and a.cost_usd == 0.5
    assert (b.session_id, b.rows, b.tokens, b.trips) == ("b", 1, 1, 0)
    assert [r.seq for r in ledger.rows("a")] == [1, 3]


def test_export_jsonl_writes_the_stored_columns(filled: Callable[[int], Ledger], tmp_path: Path) -> None:
    ledger = filled(10)
    out = tmp_path / "out.jsonl"
    assert ledger.export_jsonl(out, session_id="s2") == 5
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["seq"] for d in lines] == [6, 7, 8, 9, 10]
    assert lines[0] == next(r for r in ledger.rows() if r.seq == 6).to_dict()
    assert set(lines[0]) >= {"input_hash", "prev_hash", "row_hash", "cost_micros", "created_at"}


def test_threads_share_one_ledger_without_forking_the_chain(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                ledger.record(session_id=f"t{n}", origin="tool", turn=i, input_text=str(i))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = ledger.verify()
    assert result.ok, result.problems
    assert result.rows_checked == 600
    assert [r.seq for r in ledger.rows()] == list(range(1, 601))
    ledger.close()


def test_memory_ledger_works_for_quick_scripts() -> None:
    ledger = Ledger(":memory:")
    for i in range(5):
        ledger.record(session_id="m", origin="model", turn=i)
    assert ledger.verify().ok
    assert len(list(ledger.rows("m"))) == 5


def test_postgres_url_without_the_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from loopguard_core.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    with pytest.raises(MissingExtra, match=re.escape('pip install "loopguard-core[postgres]"')) as info:
        Ledger("postgresql://user@localhost/db")
    assert isinstance(info.value, LoopGuardError)


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerConfigError, match="unknown ledger URL scheme"):
        Ledger("mysql://x/y")


def test_sqlite_url_is_accepted(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'u.db'}")
    ledger.record(session_id="s", origin="model", turn=1)
    assert (tmp_path / "u.db").exists()


def test_read_only_opens_an_hmac_ledger_without_the_key_and_never_writes(ledger_path: Path) -> None:
    writer = Ledger(ledger_path, hmac_key=os.urandom(32))
    writer.record(session_id="s", origin="model", turn=1)
    reader = Ledger(ledger_path, read_only=True)
    assert reader.verify().ok and reader.chain_id == writer.chain_id
    from loopguard_core.ledger import LedgerError

    with pytest.raises(LedgerError, match="read_only"):
        reader.record(session_id="s", origin="model", turn=2)
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(ledger_path.with_name("missing.db"), read_only=True)
    assert not ledger_path.with_name("missing.db").exists()


def test_verify_memory_does_not_grow_with_the_ledger(tmp_path: Path) -> None:
    import tracemalloc

    def peak_for(n: int) -> int:
        ledger = Ledger(tmp_path / f"m{n}.db", synchronous="OFF")
        for i in range(n):
            ledger.record(session_id="s", origin="model", turn=i, input_text=str(i))
        tracemalloc.start()
        try:
            assert ledger.verify().ok
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            ledger.close()

    small, large = peak_for(500), peak_for(8000)
    assert large < small * 2 + 64_000, (small, large)  # 16x the rows, about the same memory
