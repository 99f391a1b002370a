"""Tampering with a PostgreSQL ledger by raw SQL (append-only triggers disabled) is found and named, as on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from loopguard_core.ledger import Ledger, row_hash

pytestmark = pytest.mark.postgres

N = 20


def kinds(result: Any) -> set[str]:
    return {p.kind for p in result.problems}


def test_intact_ledger_verifies(pg_filled: Callable[[int], Ledger]) -> None:
    result = pg_filled(N).verify()
    assert result.ok and (result.rows_checked, result.head_seq) == (N, N)


def test_empty_ledger_verifies(pg_url: str) -> None:
    result = Ledger(pg_url).verify()
    assert result.ok and result.rows_checked == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("input_tokens", 9999),
        ("cost_micros", 0),
        ("breach_reason", "none"),
        ("created_at", "2020-01-01"),
        ("passed", 0),
        ("agent", "someone-else"),
        ("session_id", "s9"),
    ],
)
def test_edited_value_is_named(
    pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any], column: str, value: object
) -> None:
    ledger = pg_filled(N)
    pg_raw().execute(f"UPDATE loopguard_ledger SET {column} = %s WHERE seq = 7", (value,))
    result = ledger.verify()
    assert not result.ok
    assert kinds(result) == {"edited"} and result.seqs("edited") == {7}


def test_edit_with_recomputed_row_hash_breaks_the_next_link(
    pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]
) -> None:
    ledger = pg_filled(N)
    raw = pg_raw()
    row = list(raw.row(7))
    row[7] = 1  # input_tokens
    new_hash = row_hash(row[14], row[1:14])
    raw.execute("UPDATE loopguard_ledger SET input_tokens = 1, row_hash = %s WHERE seq = 7", (new_hash,))
    result = ledger.verify()
    assert kinds(result) == {"unlinked"} and result.seqs() == {7, 8}


def test_deleted_rows_are_named(pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]) -> None:
    ledger = pg_filled(N)
    pg_raw().execute("DELETE FROM loopguard_ledger WHERE seq IN (5, 6)")
    result = ledger.verify()
    assert kinds(result) == {"deleted"} and result.seqs("deleted") == {5, 6}


def test_deleted_row_with_renumbering_is_found(pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]) -> None:
    ledger = pg_filled(N)
    raw = pg_raw()
    raw.execute("DELETE FROM loopguard_ledger WHERE seq = 9")
    for s in range(10, N + 1):
        raw.execute("UPDATE loopguard_ledger SET seq = %s WHERE seq = %s", (s - 1, s))
    result = ledger.verify()
    assert kinds(result) == {"unlinked"} and result.seqs() == {8, 9}


def _shift_up_from(raw: Any, seq: int) -> None:
    top = raw.execute("SELECT MAX(seq) FROM loopguard_ledger").fetchone()[0]
    for s in range(top, seq - 1, -1):
        raw.execute("UPDATE loopguard_ledger SET seq = %s WHERE seq = %s", (s + 1, s))


def test_inserted_row_with_forged_hashes_is_named(
    pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]
) -> None:
    ledger = pg_filled(N)
    raw = pg_raw()
    _shift_up_from(raw, 10)
    prev = str(raw.row(9)[15])
    values = ("s1", 99, "model", None, None, "0" * 64, 1, 1, 0, 1, 1, None, "2026-01-01T00:00:00.000000+00:00")
    raw.execute(
        "INSERT INTO loopguard_ledger VALUES (10, " + ", ".join(["%s"] * 15) + ")",
        (*values, prev, row_hash(prev, values)),
    )
    result = ledger.verify()
    assert kinds(result) == {"inserted"} and result.seqs("inserted") == {10}


def test_row_appended_by_raw_sql_with_garbage_hashes_is_named(
    pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]
) -> None:
    ledger = pg_filled(N)
    pg_raw().execute(
        "INSERT INTO loopguard_ledger VALUES (21, 's1', 4, 'model', NULL, NULL, 'x', 0, 0, 0, 0, 1, NULL, 't', %s, %s)",
        ("ab" * 32, "cd" * 32),
    )
    result = ledger.verify()
    assert not result.ok and result.seqs() == {21}


def test_swapped_rows_are_named_as_reordered(pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]) -> None:
    ledger = pg_filled(N)
    raw = pg_raw()
    raw.execute("UPDATE loopguard_ledger SET seq = -1 WHERE seq = 12")
    raw.execute("UPDATE loopguard_ledger SET seq = 12 WHERE seq = 13")
    raw.execute("UPDATE loopguard_ledger SET seq = 13 WHERE seq = -1")
    result = ledger.verify()
    assert kinds(result) == {"reordered"} and result.seqs("reordered") == {12, 13}


def test_several_tamperings_are_all_reported(pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]) -> None:
    ledger = pg_filled(N)
    raw = pg_raw()
    raw.execute("UPDATE loopguard_ledger SET turn = 0 WHERE seq = 2")
    raw.execute("DELETE FROM loopguard_ledger WHERE seq = 10")
    raw.execute("UPDATE loopguard_ledger SET seq = -1 WHERE seq = 15")
    raw.execute("UPDATE loopguard_ledger SET seq = 15 WHERE seq = 16")
    raw.execute("UPDATE loopguard_ledger SET seq = 16 WHERE seq = -1")
    result = ledger.verify()
    assert kinds(result) == {"edited", "deleted", "reordered"}
    assert (result.seqs("edited"), result.seqs("deleted"), result.seqs("reordered")) == ({2}, {10}, {15, 16})


def test_swapping_the_chain_identity_is_found(pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]) -> None:
    ledger = pg_filled(N)
    pg_raw().execute("UPDATE loopguard_meta SET value = 'other' WHERE key = 'chain_id'")
    result = Ledger(ledger.url, read_only=True).verify()
    assert not result.ok and result.seqs() == {1}
