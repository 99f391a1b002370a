"""The SQLite append path: one statement per row in the steady state, and still correct when another
writer got in between (the cached head is only a hint the primary key confirms)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopguard_core.ledger import HASHED_COLUMNS, Ledger, canonical
from loopguard_core.ledger._chain import _canonical_row

from .conftest import raw

_values = st.lists(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text()), max_size=16)


@given(_values)
def test_canonical_bytes_are_the_compact_ascii_json_array(values: list[object]) -> None:
    # Stored ledgers were hashed with this exact encoding; a faster encoder must not change one byte.
    assert canonical(values) == json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")


_any = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
_text = st.one_of(st.text(), st.sampled_from(["tool", '\u00e9"\\\n\x00\x7f', "\ud800", "\U0001f600"]))
_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_opt = st.one_of(st.none(), _text)
# Rows shaped as every writer stores them (the append's and verify's fast path), with any column swapped for
# a value of another type now and then (a tampered row takes the encoder itself; the bytes must not differ).
_row = st.tuples(_text, _int, _text, _opt, _opt, _text, _int, _int, _int, _int, _int, _opt, _text)


@given(_row, st.lists(st.tuples(st.integers(min_value=0, max_value=len(HASHED_COLUMNS) - 1), _any), max_size=3))
def test_canonical_bytes_of_row_shaped_values_are_the_encoders(row: tuple[object, ...], swaps: list[Any]) -> None:
    values = list(row)
    for index, value in swaps:
        values[index] = value
    expected = json.dumps(values, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    assert canonical(values) == expected
    assert canonical(tuple(values)) == expected
    if not swaps:  # the row shape the ledger stores takes the fast path
        assert _canonical_row(values) == expected


def test_canonical_of_a_value_json_cannot_hold_still_fails() -> None:
    # verify() reports such a row as edited: the fast path must fail it the same way, not hash something.
    row: list[object] = ["s", 1, "tool", None, b"blob", "h", 0, 0, 0, 0, 1, None, "t"]
    with pytest.raises(TypeError):
        canonical(row)


def _statements(ledger: Ledger) -> list[str]:
    seen: list[str] = []
    conn = ledger._backend._conn()  # type: ignore[attr-defined]
    conn.set_trace_callback(seen.append)
    return seen


def test_steady_appends_take_one_statement_each(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    ledger.record(session_id="s", origin="model", turn=0)
    seen = _statements(ledger)
    for i in range(1, 6):
        ledger.record(session_id="s", origin="model", turn=i)
    assert len(seen) == 5 and all(s.startswith("INSERT INTO loopguard_ledger") for s in seen)
    assert ledger.verify().ok


def test_alternating_writers_never_fork_the_chain(ledger_path: Path) -> None:
    a, b = Ledger(ledger_path), Ledger(ledger_path)
    for i in range(60):
        (a if i % 3 else b).record(session_id="a" if i % 3 else "b", origin="tool", turn=i)
    rows = list(a.rows())
    assert [r.seq for r in rows] == list(range(1, 61))
    assert [r.turn for r in rows] == list(range(60))
    assert all(y.prev_hash == x.row_hash for x, y in itertools.pairwise(rows))
    assert a.verify().ok and b.verify().ok


def test_a_writer_whose_cached_head_is_stale_loses_nothing(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    ledger.record(session_id="s", origin="model", turn=1)
    Ledger(ledger_path).record(session_id="other", origin="model", turn=1)  # the cached head is now stale
    assert ledger.record(session_id="s", origin="model", turn=2) == 3
    assert [r.session_id for r in ledger.rows()] == ["s", "other", "s"]
    assert ledger.verify().ok


def test_rows_cut_from_the_end_under_a_writer_are_reported(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    for i in range(10):
        ledger.record(session_id="s", origin="model", turn=i)
    raw(ledger_path).execute("DELETE FROM loopguard_ledger WHERE seq > 8")
    ledger.record(session_id="s", origin="model", turn=10)
    result = ledger.verify()
    assert not result.ok and result.seqs("deleted") == {9, 10}
