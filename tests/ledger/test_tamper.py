"""Every kind of tampering an attacker with file access can do, done with raw SQL, must be found and named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core.ledger import Ledger, row_hash

from .conftest import columns, raw

N = 20


def kinds(result: object) -> set[str]:
    return {p.kind for p in result.problems}  # type: ignore[attr-defined]


def test_intact_ledger_verifies(filled: Callable[[int], Ledger]) -> None:
    result = filled(N).verify()
    assert result.ok and bool(result)
    assert (result.rows_checked, result.head_seq, result.problems) == (N, N, ())


def test_empty_ledger_verifies(ledger_path: Path) -> None:
    result = Ledger(ledger_path).verify()
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
    ],
)
def test_edited_value_is_named(filled: Callable[[int], Ledger], ledger_path: Path, column: str, value: object) -> None:
    ledger = filled(N)
    raw(ledger_path).execute(f"UPDATE loopguard_ledger SET {column} = ? WHERE seq = 7", (value,))
    result = ledger.verify()
    assert not result.ok
    assert kinds(result) == {"edited"}
    assert result.seqs("edited") == {7}
    assert "7" in str(result.problems[0])


def test_edit_with_recomputed_row_hash_breaks_the_next_link(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    row = list(columns(conn, 7))
    row[7] = 1  # input_tokens
    new_hash = row_hash(row[14], row[1:14])
    conn.execute("UPDATE loopguard_ledger SET input_tokens = 1, row_hash = ? WHERE seq = 7", (new_hash,))
    result = ledger.verify()
    assert kinds(result) == {"unlinked"}
    assert result.seqs() == {7, 8}


def test_deleted_row_is_named(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    raw(ledger_path).execute("DELETE FROM loopguard_ledger WHERE seq IN (5, 6)")
    result = ledger.verify()
    assert kinds(result) == {"deleted"}
    assert result.seqs("deleted") == {5, 6}


def test_deleted_first_row_is_named(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    raw(ledger_path).execute("DELETE FROM loopguard_ledger WHERE seq = 1")
    result = ledger.verify()
    assert kinds(result) == {"deleted"} and result.seqs() == {1}


def test_deleted_row_with_renumbering_is_found(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    conn.execute("DELETE FROM loopguard_ledger WHERE seq = 9")
    conn.execute("UPDATE loopguard_ledger SET seq = seq - 1 WHERE seq > 9")
    result = ledger.verify()
    assert not result.ok
    assert kinds(result) == {"unlinked"} and result.seqs() == {8, 9}


def _shift_up_from(conn: object, seq: int) -> None:
    # Make room at ``seq`` the way an attacker would: move the later rows up by one, highest first.
    top = conn.execute("SELECT MAX(seq) FROM loopguard_ledger").fetchone()[0]  # type: ignore[attr-defined]
    for s in range(top, seq - 1, -1):
        conn.execute("UPDATE loopguard_ledger SET seq = ? WHERE seq = ?", (s + 1, s))  # type: ignore[attr-defined]


def test_inserted_row_with_forged_hashes_is_named(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    _shift_up_from(conn, 10)
    # A well-formed forgery: links to row 9 and carries a correct hash of its own content.
    prev = columns(conn, 9)[15]
    values = ("s1", 99, "model", None, None, "0" * 64, 1, 1, 0, 1, 1, None, "2026-01-01T00:00:00.000000+00:00")
    conn.execute(
        "INSERT INTO loopguard_ledger VALUES (10, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, str(prev), row_hash(str(prev), values)),
    )
    result = ledger.verify()
    assert kinds(result) == {"inserted"}
    assert result.seqs("inserted") == {10}


def test_inserted_row_with_garbage_hashes_is_named(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    _shift_up_from(conn, 4)
    conn.execute(
        "INSERT INTO loopguard_ledger VALUES (4, 's1', 4, 'model', NULL, NULL, 'x', 0, 0, 0, 0, 1, NULL, 't', ?, ?)",
        ("ab" * 32, "cd" * 32),
    )
    result = ledger.verify()
    assert kinds(result) == {"inserted"}
    assert result.seqs() == {4}


def test_row_inserted_before_the_first_is_named(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    first = columns(raw(ledger_path), 1)
    raw(ledger_path).execute(
        "INSERT INTO loopguard_ledger VALUES (0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*first[1:15], "ee" * 32),
    )
    result = ledger.verify()
    assert kinds(result) == {"inserted"} and result.seqs() == {0}


def test_swapped_rows_are_named_as_reordered(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    conn.execute("UPDATE loopguard_ledger SET seq = -1 WHERE seq = 12")
    conn.execute("UPDATE loopguard_ledger SET seq = 12 WHERE seq = 13")
    conn.execute("UPDATE loopguard_ledger SET seq = 13 WHERE seq = -1")
    result = ledger.verify()
    assert kinds(result) == {"reordered"}
    assert result.seqs("reordered") == {12, 13}


def test_row_moved_far_is_named_as_reordered(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    # Move row 3 to the place after row 8: rows 4..8 move down by one.
    conn.execute("UPDATE loopguard_ledger SET seq = -3 WHERE seq = 3")
    for s in range(4, 9):
        conn.execute("UPDATE loopguard_ledger SET seq = ? WHERE seq = ?", (s - 1, s))
    conn.execute("UPDATE loopguard_ledger SET seq = 8 WHERE seq = -3")
    result = ledger.verify()
    assert kinds(result) == {"reordered"}
    assert 8 in result.seqs("reordered") and result.seqs() <= set(range(3, 9))


def test_several_tamperings_are_all_reported(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    conn.execute("UPDATE loopguard_ledger SET turn = 0 WHERE seq = 2")
    conn.execute("DELETE FROM loopguard_ledger WHERE seq = 10")
    conn.execute("UPDATE loopguard_ledger SET seq = -1 WHERE seq = 15")
    conn.execute("UPDATE loopguard_ledger SET seq = 15 WHERE seq = 16")
    conn.execute("UPDATE loopguard_ledger SET seq = 16 WHERE seq = -1")
    result = ledger.verify()
    assert kinds(result) == {"edited", "deleted", "reordered"}
    assert result.seqs("edited") == {2}
    assert result.seqs("deleted") == {10}
    assert result.seqs("reordered") == {15, 16}


def test_swapping_the_chain_identity_is_found(filled: Callable[[int], Ledger], ledger_path: Path) -> None:
    ledger = filled(N)
    conn = raw(ledger_path)
    conn.execute("DROP TRIGGER loopguard_meta_no_update")
    conn.execute("UPDATE loopguard_meta SET value = 'other' WHERE key = 'chain_id'")
    result = Ledger(ledger_path).verify()
    assert not result.ok and result.seqs() == {1}
    del ledger


def test_verify_reports_progress(filled: Callable[[int], Ledger]) -> None:
    seen: list[tuple[int, int]] = []
    filled(N).verify(progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (N, N)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_EDITABLE = [
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
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_tampering_is_found_and_names_the_rows(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("h") / "l.db"
    ledger = Ledger(path)
    n = data.draw(st.integers(3, 25), label="rows")
    for i in range(n):
        ledger.record(session_id="s", origin="model", turn=i, input_text=str(i), input_tokens=i)
    conn = raw(path)
    op = data.draw(st.sampled_from(["edit", "delete", "swap"]), label="op")
    if op == "edit":
        seq = data.draw(st.integers(1, n), label="seq")
        column = data.draw(st.sampled_from(_EDITABLE), label="column")
        conn.execute(f"UPDATE loopguard_ledger SET {column} = 'tampered' WHERE seq = ?", (seq,))
        touched = {seq}
    elif op == "delete":
        seqs = data.draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=3), label="seqs")
        conn.executemany("DELETE FROM loopguard_ledger WHERE seq = ?", [(s,) for s in seqs])
        touched = seqs
    else:
        i, j = sorted(data.draw(st.sets(st.integers(1, n), min_size=2, max_size=2), label="pair"))
        conn.execute("UPDATE loopguard_ledger SET seq = -1 WHERE seq = ?", (i,))
        conn.execute("UPDATE loopguard_ledger SET seq = ? WHERE seq = ?", (i, j))
        conn.execute("UPDATE loopguard_ledger SET seq = ? WHERE seq = -1", (j,))
        touched = {i, j}
    result = ledger.verify()
    assert not result.ok
    assert touched <= result.seqs(), (op, touched, result.problems)
    ledger.close()
