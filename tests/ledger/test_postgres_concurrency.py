"""Many processes append to one PostgreSQL ledger at once: no row lost, the chain never forks, verify is ok."""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import uuid
from typing import Any

import pytest

from loopguard_core.ledger import Ledger

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method"),
]

PROCESSES = 8
APPENDS = 100


def _append_many(url: str, worker: int, start: Any, checkpoint_every: int | None, appends: int) -> None:
    ledger = Ledger(url, busy_timeout=60, checkpoint_every=checkpoint_every)
    start.wait()
    for i in range(appends):
        ledger.record(session_id=f"proc-{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")
    ledger.close()


def _run(url: str, processes: int, appends: int, checkpoint_every: int | None = None) -> Ledger:
    Ledger(url).close()  # create the schema once, as a deployment would
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_append_many, args=(url, w, start, checkpoint_every, appends)) for w in range(processes)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * processes
    return Ledger(url, read_only=True)


def _check(ledger: Ledger, processes: int, appends: int) -> list[Any]:
    total = processes * appends
    result = ledger.verify()
    assert result.ok, result.problems
    assert result.rows_checked == total
    rows = list(ledger.rows())
    assert [r.seq for r in rows] == list(range(1, total + 1))  # no row lost, no gap
    # Never forked: every row names a different predecessor, and it is the row before it.
    assert len({r.prev_hash for r in rows}) == total
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
    for w in range(processes):
        assert sorted(r.turn for r in rows if r.session_id == f"proc-{w}") == list(range(appends))
    # The appends really interleaved (otherwise the test proves nothing about serialization).
    switches = sum(1 for a, b in itertools.pairwise(rows) if a.session_id != b.session_id)
    assert switches > processes
    return rows


def test_eight_processes_append_concurrently_without_forking_the_chain(pg_url: str) -> None:
    ledger = _run(pg_url, PROCESSES, APPENDS)
    _check(ledger, PROCESSES, APPENDS)
    ledger.close()


def test_concurrent_appends_with_checkpoints_keep_the_chain_and_checkpoints_right(pg_url: str) -> None:
    # checkpoint_every takes the other append path (lock, read head, insert row and checkpoint, commit).
    ledger = _run(pg_url, 4, 50, checkpoint_every=10)
    rows = _check(ledger, 4, 50)
    checkpoints = ledger.checkpoints()
    assert [cp.size for cp in checkpoints] == list(range(10, 201, 10))
    for cp in checkpoints:
        assert cp.head_hash == rows[cp.size - 1].row_hash
        assert ledger.verify(checkpoint=cp).ok
    ledger.close()


def _open_and_append(url: str, worker: int, ready: Any, appends: int) -> None:
    ready.wait()  # every worker opens the new schema at the same moment
    ledger = Ledger(url, busy_timeout=60)
    for i in range(appends):
        ledger.record(session_id=f"proc-{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")
    ledger.close()


def test_processes_that_create_one_new_schema_at_once_all_open_it_and_append(
    postgres_server: str, pg_admin: Any
) -> None:
    from .conftest import with_schema

    for n in range(3):
        schema = f"lg_test_create_{uuid.uuid4().hex[:10]}"
        url = with_schema(postgres_server, schema)
        try:
            ctx = multiprocessing.get_context("fork")
            ready = ctx.Barrier(4)
            procs = [ctx.Process(target=_open_and_append, args=(url, w, ready, 50)) for w in range(4)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=120)
            assert [p.exitcode for p in procs] == [0] * 4, f"round {n}"
            ledger = Ledger(url, read_only=True)
            result = ledger.verify()
            assert (result.ok, result.rows_checked) == (True, 200), result.problems
            ledger.close()
        finally:
            pg_admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
