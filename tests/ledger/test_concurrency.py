from __future__ import annotations

import itertools
import multiprocessing
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.ledger import Ledger, LedgerBusy

PROCESSES = 4
APPENDS = 300


def _append_many(path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    ledger = Ledger(path, busy_timeout=30)
    start.wait()
    for i in range(APPENDS):
        ledger.record(session_id=f"proc-{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")
        if i % 25 == 24:  # step aside now and then, as a worker between tool calls would: the appends interleave
            time.sleep(0.001)
    ledger.close()


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_four_processes_append_to_one_file_without_forking_the_chain(ledger_path: Path) -> None:
    Ledger(ledger_path).close()  # create the schema once, as a deployment would
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(ledger_path), w, start)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * PROCESSES

    ledger = Ledger(ledger_path)
    result = ledger.verify()
    assert result.ok, result.problems
    assert result.rows_checked == PROCESSES * APPENDS
    rows = list(ledger.rows())
    assert [r.seq for r in rows] == list(range(1, PROCESSES * APPENDS + 1))
    for w in range(PROCESSES):
        assert sorted(r.turn for r in rows if r.session_id == f"proc-{w}") == list(range(APPENDS))
    # Appends really interleaved (otherwise the test proves nothing about serialization).
    switches = sum(1 for a, b in itertools.pairwise(rows) if a.session_id != b.session_id)
    assert switches > PROCESSES


def test_ledger_opened_in_parent_works_in_a_forked_child(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
    ledger.record(session_id="parent", origin="model", turn=1)
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        ledger.record(session_id="child", origin="model", turn=1)

    p = ctx.Process(target=child)
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    ledger.record(session_id="parent", origin="model", turn=2)
    assert [r.session_id for r in ledger.rows()] == ["parent", "child", "parent"]
    assert ledger.verify().ok


def test_a_locked_file_gives_a_clear_error_and_loses_nothing(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, busy_timeout=0.05)
    ledger.record(session_id="s", origin="model", turn=1)
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerBusy, match="stayed locked by another writer") as info:
        ledger.record(session_id="s", origin="model", turn=2)
    assert "busy_timeout" in str(info.value) and "every earlier row is intact" in str(info.value)
    blocker.execute("ROLLBACK")
    ledger.record(session_id="s", origin="model", turn=3)
    assert [r.turn for r in ledger.rows()] == [1, 3]
    assert ledger.verify().ok


# -- several processes create one ledger at once (a worker pool starting up) ---------------------------------
def _open_and_append(path: str, worker: int, ready: Any, appends: int) -> None:
    ready.wait()  # every worker opens the new file at the same moment
    ledger = Ledger(path)
    for i in range(appends):
        ledger.record(session_id=f"proc-{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")
    ledger.close()


def _create_at_once(path: Path, processes: int, appends: int) -> list[int | None]:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(processes)
    procs = [ctx.Process(target=_open_and_append, args=(str(path), w, ready, appends)) for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [p.exitcode for p in procs]


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_processes_that_create_one_new_ledger_at_once_all_open_it_and_append(tmp_path: Path) -> None:
    """Before: one of 4 processes opening a new file at once failed in schema set-up (PRAGMA journal_mode =
    WAL) with LedgerBusy "stayed locked ... for 5 s" most of the time, without having waited at all."""
    rounds = [(4, 500)] + [(4, 20)] * 8  # the pool of the report, then more starts to make the race likely
    for n, (processes, appends) in enumerate(rounds):
        path = tmp_path / f"new-{n}.db"
        assert _create_at_once(path, processes, appends) == [0] * processes, f"round {n}"
        ledger = Ledger(path, read_only=True)
        result = ledger.verify()
        assert result.ok, result.problems
        assert result.rows_checked == processes * appends
        assert [r.seq for r in ledger.rows()] == list(range(1, processes * appends + 1))
        ledger.close()
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
