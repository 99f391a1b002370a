"""The PostgreSQL ledger against a real server: same rows, chain and verify as SQLite; the database refuses
UPDATE/DELETE; connections are safe across threads and forks; failures say what happened and lose nothing."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.errors import LoopGuardError
from loopguard_core.ledger import (
    APPEND_ONLY_MESSAGE,
    Ledger,
    LedgerBusy,
    LedgerConfigError,
    LedgerError,
    LedgerUnreachable,
    canonical,
    generate_signing_key,
    genesis_hash,
    row_hash,
)
from loopguard_core.ledger._postgres import _lock_key, redact_url

from .conftest import fill, with_schema

pytestmark = pytest.mark.postgres


def _comparable(row: Any) -> dict[str, Any]:
    d = dict(row.to_dict())
    for name in ("created_at", "prev_hash", "row_hash"):
        d.pop(name)
    return d


def test_rows_are_stored_exactly_as_in_sqlite(pg_url: str, tmp_path: Path) -> None:
    pg, lite = Ledger(pg_url), Ledger(tmp_path / "l.db")
    for ledger in (pg, lite):
        fill(ledger, 12)
        ledger.record(session_id="s3", origin="breaker", turn=13, tool="t", passed=False, breach_reason="loop")
        ledger.record(session_id='é ünï "q" \\', origin="model", turn=2**62, agent="a", cost_usd=1234.5)
    pg_rows, lite_rows = list(pg.rows()), list(lite.rows())
    assert [_comparable(r) for r in pg_rows] == [_comparable(r) for r in lite_rows]
    # Same Python types back from both databases, so the same canonical bytes are hashed and verified.
    for a, b in zip(pg_rows, lite_rows):
        assert [type(v) for v in a.to_dict().values()] == [type(v) for v in b.to_dict().values()]
    # Every stored row hashes, byte for byte, to what was stored.
    prev = genesis_hash(pg.chain_id)
    for r in pg_rows:
        values = tuple(r.to_dict().values())[1:14]
        values = (*values[:10], int(values[10]), *values[11:])
        assert r.prev_hash == prev and r.row_hash == row_hash(prev, values)
        prev = r.row_hash
    assert pg.verify().ok and pg.verify().rows_checked == 14
    pg.close()


def test_sessions_export_and_read_only_reopen(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    fill(ledger, 10)
    ledger.record(session_id="s2", origin="breaker", turn=11, passed=False, breach_reason="cost_ceiling")
    sessions = {s.session_id: s for s in ledger.sessions()}
    assert list(sessions) == ["s1", "s2"]
    assert (sessions["s1"].rows, sessions["s2"].rows, sessions["s2"].trips) == (5, 6, 1)
    assert sessions["s1"].tokens == sum(11 * i for i in range(1, 6))
    assert isinstance(sessions["s1"].cost_micros, int) and sessions["s1"].cost_micros == 15_000
    assert sessions["s1"].first_at <= sessions["s1"].last_at
    buf = io.StringIO()
    assert ledger.export_jsonl(buf, session_id="s2") == 6
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [line["seq"] for line in lines] == list(range(6, 12)) and lines[-1]["breach_reason"] == "cost_ceiling"

    reader = Ledger(pg_url, read_only=True)
    assert reader.chain_id == ledger.chain_id and reader.verify().ok
    with pytest.raises(LedgerError, match="read_only"):
        reader.record(session_id="s", origin="model", turn=1)
    assert [r.seq for r in reader.rows("s1")] == [1, 2, 3, 4, 5]
    reader.close()
    ledger.close()


def test_read_only_on_a_missing_ledger_creates_nothing(postgres_server: str, pg_schema: str, pg_admin: Any) -> None:
    with pytest.raises(LedgerError, match="no loopguard ledger in schema") as info:
        Ledger(with_schema(postgres_server, pg_schema), read_only=True)
    assert "nothing was created" in str(info.value)
    assert pg_admin.execute("SELECT to_regnamespace(%s)", (pg_schema,)).fetchone() == (None,)


def test_the_database_refuses_update_delete_and_truncate(pg_filled: Callable[[int], Ledger], pg_admin: Any) -> None:
    ledger = pg_filled(5)
    schema = ledger.url.rsplit("schema=", 1)[1]
    import psycopg

    statements = [
        "UPDATE {s}.loopguard_ledger SET turn = 0 WHERE seq = 2",
        "DELETE FROM {s}.loopguard_ledger WHERE seq = 5",
        "TRUNCATE {s}.loopguard_ledger",
        "UPDATE {s}.loopguard_meta SET value = 'x' WHERE key = 'chain_id'",
        "DELETE FROM {s}.loopguard_meta",
        "DELETE FROM {s}.loopguard_checkpoints",
    ]
    for sql in statements:
        with pytest.raises(psycopg.Error, match=APPEND_ONLY_MESSAGE):
            pg_admin.execute(sql.format(s=schema))
    assert [r.turn for r in ledger.rows()] == [1, 2, 3, 4, 5]
    assert ledger.verify().ok


def test_a_writer_turns_a_disabled_append_only_trigger_back_on(
    pg_filled: Callable[[int], Ledger], pg_admin: Any
) -> None:
    ledger = pg_filled(3)
    schema = ledger.url.rsplit("schema=", 1)[1]
    pg_admin.execute(f"ALTER TABLE {schema}.loopguard_ledger DISABLE TRIGGER loopguard_ledger_append_only")
    Ledger(ledger.url).close()
    import psycopg

    with pytest.raises(psycopg.Error, match=APPEND_ONLY_MESSAGE):
        pg_admin.execute(f"DELETE FROM {schema}.loopguard_ledger")


def test_checkpoints_on_postgres(pg_url: str, tmp_path: Path, pg_raw: Callable[[], Any]) -> None:
    pytest.importorskip("cryptography")
    key = tmp_path / "k"
    generate_signing_key(key)
    ledger = Ledger(pg_url, checkpoint_every=5, signing_key=key)
    fill(ledger, 12)
    stored = ledger.checkpoints()
    assert [cp.size for cp in stored] == [5, 10]
    assert all(cp.signed and cp.origin == ledger.origin for cp in stored)
    note = ledger.checkpoint().note
    assert ledger.verify(checkpoint=note, public_key=f"{key}.pub").ok
    assert ledger.verify(checkpoint=stored[0].note, public_key=f"{key}.pub").checkpoint.signature_checked  # type: ignore[union-attr]
    # Cut the tail: the chain alone cannot see it, the saved checkpoint can.
    pg_raw().execute("DELETE FROM loopguard_ledger WHERE seq > 10")
    assert ledger.verify().ok
    result = ledger.verify(checkpoint=note, public_key=f"{key}.pub")
    assert not result.ok and {p.kind for p in result.problems} == {"truncated"}
    ledger.close()


def test_hmac_mode_is_remembered(pg_url: str) -> None:
    key = os.urandom(32)
    ledger = Ledger(pg_url, hmac_key=key)
    ledger.record(session_id="s", origin="model", turn=1, input_text="yes")
    assert next(ledger.rows()).input_hash == ledger.hash_input("yes") != Ledger(":memory:").hash_input("yes")
    with pytest.raises(LedgerConfigError, match="hmac"):
        Ledger(pg_url)
    with pytest.raises(LedgerConfigError, match="hmac_key it was created with"):
        Ledger(pg_url, hmac_key=os.urandom(32))
    assert Ledger(pg_url, read_only=True).verify().ok
    ledger.close()


def test_values_postgres_cannot_store_are_refused_clearly_and_nothing_is_lost(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ledger.record(session_id="s", origin="model", turn=1)
    with pytest.raises(LedgerConfigError, match="NUL"):
        ledger.record(session_id="bad\x00id", origin="model", turn=2)
    with pytest.raises(LedgerConfigError, match="64 bits"):
        ledger.record(session_id="s", origin="model", turn=2**70)
    ledger.record(session_id="s", origin="model", turn=3)
    assert [r.turn for r in ledger.rows()] == [1, 3]
    assert ledger.verify().ok
    ledger.close()


def test_threads_share_one_ledger_without_forking_the_chain(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                ledger.record(session_id=f"t{t}", origin="tool", turn=i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = list(ledger.rows())
    assert [r.seq for r in rows] == list(range(1, 321))
    assert len({r.prev_hash for r in rows}) == 320
    assert ledger.verify().ok
    ledger.close()


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_ledger_opened_in_parent_works_in_a_forked_child_and_the_parent_keeps_its_connection(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ledger.record(session_id="parent", origin="model", turn=1)
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        ledger.record(session_id="child", origin="model", turn=1)
        ledger.close()  # must not end the parent's session on the shared socket

    pooled = ledger._backend._idle[-1]  # type: ignore[attr-defined]
    p = ctx.Process(target=child)
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    # The child neither used nor ended the parent's session: the pooled connection still answers.
    assert pooled.execute("SELECT 1").fetchone() == (1,)
    ledger.record(session_id="parent", origin="model", turn=2)
    assert [r.session_id for r in ledger.rows()] == ["parent", "child", "parent"]
    assert ledger.verify().ok
    ledger.close()


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def _backends(admin: Any, where: str, *params: Any) -> list[int]:
    sql = "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database() AND "
    return [pid for (pid,) in admin.execute(sql + where, params)]


def test_a_connection_the_server_dropped_is_replaced_and_nothing_is_lost(pg_url: str, pg_admin: Any) -> None:
    ledger = Ledger(pg_url)
    ledger.record(session_id="s", origin="model", turn=1)
    pids = _backends(pg_admin, "query LIKE %s", f"%{pg_url.rsplit('schema=', 1)[1]}%")
    assert pids
    for pid in pids:
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    _wait_until(lambda: not set(pids) & set(_backends(pg_admin, "true")), "the sessions to end")
    ledger.record(session_id="s", origin="model", turn=2)  # e.g. after a server restart
    assert [r.turn for r in ledger.rows()] == [1, 2]
    assert ledger.verify().ok
    ledger.close()


@pytest.mark.parametrize("checkpoint_every", [None, 1000])
def test_an_append_whose_session_is_killed_mid_write_is_stored_exactly_once(
    pg_url: str, pg_admin: Any, checkpoint_every: int | None
) -> None:
    ledger = Ledger(pg_url, checkpoint_every=checkpoint_every, busy_timeout=60)
    ledger.record(session_id="s", origin="model", turn=1)
    key = _lock_key("chain", ledger.chain_id)
    pg_admin.execute("SELECT pg_advisory_lock(%s)", (key,))
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(ledger.record(session_id="s", origin="model", turn=2)))
    try:
        worker.start()
        # The append has been sent and waits for the chain lock; now its session dies.
        waiting: list[int] = []
        _wait_until(
            lambda: bool(waiting.extend(_backends(pg_admin, "wait_event_type = 'Lock'")) or waiting), "the wait"
        )
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))
        _wait_until(lambda: waiting[0] not in _backends(pg_admin, "true"), "the session to end")
    finally:
        pg_admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
    worker.join(timeout=60)
    # Its transaction was rolled back with the session, so the ledger wrote the row again: once, in order.
    assert outcome == [2]
    assert [r.turn for r in ledger.rows()] == [1, 2]
    assert ledger.verify().ok
    ledger.close()


def test_a_writer_holding_the_chain_lock_gives_ledger_busy(pg_url: str, pg_admin: Any) -> None:
    ledger = Ledger(pg_url, busy_timeout=0.2)
    ledger.record(session_id="s", origin="model", turn=1)
    key = _lock_key("chain", ledger.chain_id)
    pg_admin.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        with pytest.raises(LedgerBusy, match="stayed locked by another writer") as info:
            ledger.record(session_id="s", origin="model", turn=2)
        assert "every earlier row is intact" in str(info.value)
        with pytest.raises(LedgerBusy):
            ledger.checkpoint()
    finally:
        pg_admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
    ledger.record(session_id="s", origin="model", turn=3)
    assert [r.turn for r in ledger.rows()] == [1, 3]
    assert ledger.verify().ok
    ledger.close()


def test_unreachable_server_gives_a_clear_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://loopguard:s3cr3t-pw@127.0.0.1:1/test?connect_timeout=2"
    with pytest.raises(LedgerUnreachable) as info:
        Ledger(url)
    message = str(info.value)
    assert "s3cr3t-pw" not in message
    assert "postgresql://loopguard@127.0.0.1:1/test" in message and "connect_timeout 2 s" in message
    assert "nothing was written" in message
    assert isinstance(info.value, LoopGuardError) and isinstance(info.value, ConnectionError)


def test_redact_url_drops_every_password() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db?schema=x") == "postgresql://u@h:5432/db?schema=x"
    assert redact_url("postgresql://u@h/db?password=pw&sslmode=require") == "postgresql://u@h/db?sslmode=require"
    assert redact_url("postgresql://h1:5432,h2:5433/db") == "postgresql://h1:5432,h2:5433/db"


def test_bad_schema_name_is_refused() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(LedgerConfigError, match="plain identifier"):
        Ledger('postgresql://u@127.0.0.1/db?schema=x";drop')


def test_canonical_bytes_are_what_the_server_hashes(pg_url: str) -> None:
    # The server-side fast append hashes canonical() bytes; the sealed path hashes in Python. Both must agree
    # with the one chain rule, which verify() re-checks.
    fast = Ledger(pg_url)
    fast.record(session_id="s", origin="model", turn=1, agent="ä\u2028", input_tokens=3)
    sealed = Ledger(pg_url, checkpoint_every=1000)
    sealed.record(session_id="s", origin="model", turn=2)
    fast.record(session_id="s", origin="model", turn=3)
    rows = list(fast.rows())
    assert rows[0].row_hash == row_hash(
        rows[0].prev_hash,
        (
            "s",
            1,
            "model",
            "ä\u2028",
            None,
            rows[0].input_hash,
            3,
            0,
            0,
            0,
            1,
            None,
            rows[0].created_at,
        ),
    )
    assert canonical(["ä"]) == b'["\\u00e4"]'
    assert fast.verify().ok and [r.seq for r in rows] == [1, 2, 3]
    fast.close()
    sealed.close()
