"""The timing harness's bookkeeping (never a timed assertion): what an op leaves pending is paid inside the batch
that is timed, not between batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import _timing, overhead
from benchmarks._timing import Variant
from loopguard_core import Breaker
from loopguard_core.ledger import Ledger


class _Clock:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def perf_counter_ns(self) -> int:
        self.events.append("clock")
        return len(self.events)


def test_an_ops_settle_runs_inside_every_timed_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(_timing, "time", _Clock(events))

    def make() -> Any:
        def op() -> None:
            events.append("op")

        op.settle = lambda: events.append("settle")  # type: ignore[attr-defined]
        return op

    _timing.interleave([Variant("v", "v", make, ops=3)], rounds=2)
    one_round = ["op", "settle", "clock", "op", "op", "op", "settle", "clock"]  # the warm-up's own settle untimed
    assert events == one_round * 2


def test_a_deferring_ledgers_turn_writes_every_row_when_its_batch_settles(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db", defer_seconds=3600)
    op = overhead._guarded(Breaker(ledger=ledger))
    for _ in range(5):
        op()
    assert ledger._waiting is not None and ledger._waiting.count == 5
    op.settle()  # type: ignore[attr-defined]
    assert ledger._waiting.count == 0
    assert sum(1 for row in ledger.rows() if row.origin == "tool") == 5
    ledger.close()
