"""``kill -9`` of writers in the middle of appending, SQLite and PostgreSQL: the chain stays whole (verify ok,
seqs contiguous, every checkpoint still matches), no lock outlives its process, and the next writer appends
at once. Writers append as fast as they can, some rows with a checkpoint (the transactional path), and are
killed at random moments, a few rounds in a row.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.ledger import Ledger

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fork"),
]

WRITERS = 3
ROUNDS = 4


def _append_forever(target: str, worker: int, ready: Any) -> None:
    ledger = Ledger(target, checkpoint_every=7, busy_timeout=30)
    ready.release()
    turn = 0
    while True:  # until killed
        turn += 1
        ledger.record(session_id=f"w{worker}", origin="tool", turn=turn, tool="search", input_text=f"{worker}/{turn}")


def _kill_rounds(target: str) -> list[int]:
    """Start writers, kill -9 them at random moments; the row count after each round."""
    ctx = multiprocessing.get_context("fork")
    rng = random.Random()
    counts = []
    for _ in range(ROUNDS):
        ready = ctx.Semaphore(0)
        procs = [ctx.Process(target=_append_forever, args=(target, w, ready), daemon=True) for w in range(WRITERS)]
        for p in procs:
            p.start()
        for _ in procs:
            assert ready.acquire(timeout=30), "a writer did not start"
        for p in procs:  # one at a time, each in the middle of its appends
            time.sleep(rng.uniform(0.02, 0.15))
            assert p.pid is not None
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.join(10)
            assert p.exitcode == -signal.SIGKILL
        counts.append(_check(target))
    return counts


def _check(target: str) -> int:
    # The next writer gets the chain at once (no lock held by a dead process), and its row is linked.
    started = time.monotonic()
    writer = Ledger(target, busy_timeout=5)
    seq = writer.record(session_id="after", origin="model", turn=1)
    assert time.monotonic() - started < 5
    writer.close()
    ledger = Ledger(target, read_only=True)
    result = ledger.verify()
    assert result.ok, result.problems
    assert result.head_seq == seq == result.rows_checked
    rows = list(ledger.rows())
    assert [row.seq for row in rows] == list(range(1, seq + 1))
    checkpoints = ledger.checkpoints()
    assert all(cp.size % 7 == 0 for cp in checkpoints)
    hashes = {row.seq: row.row_hash for row in rows}
    assert all(hashes[cp.size] == cp.head_hash for cp in checkpoints)  # each one matches the row it sealed
    for checkpoint in checkpoints[-1:] + random.sample(checkpoints, min(2, len(checkpoints))):
        assert ledger.verify(checkpoint=checkpoint).ok
    ledger.close()
    return seq


def test_kill_9_during_sqlite_appends(tmp_path: Path) -> None:
    counts = _kill_rounds(str(tmp_path / "ledger.db"))
    assert counts == sorted(counts) and counts[0] > WRITERS, counts  # rows were written, none lost


@pytest.mark.postgres
def test_kill_9_during_postgres_appends(pg_url: str) -> None:
    counts = _kill_rounds(pg_url)
    assert counts == sorted(counts) and counts[0] > WRITERS, counts
