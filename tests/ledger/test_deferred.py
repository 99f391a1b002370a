"""``Ledger(defer_seconds=...)``: routine rows wait in the process and are written together, in order, in one
commit; nothing recorded is lost while the process lives and exits normally."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.ledger import Ledger, LedgerBusy, LedgerConfigError, LedgerError, _deferred
from loopguard_core.ledger._sqlite import SqliteBackend


def stored(path: Path) -> list[tuple[int, int, str, int]]:
    """(seq, turn, origin, passed) of every row in the file, read by a connection of its own."""
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute("SELECT seq, turn, origin, passed FROM loopguard_ledger ORDER BY seq")]
    finally:
        conn.close()


def tool_rows(path: Path) -> list[tuple[int, int, str, int]]:
    """Those of ``stored(path)`` a tool call wrote (a run also writes a ``checkpoint`` row when it starts)."""
    return [r for r in stored(path) if r[2] == "tool"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock the test moves by hand; the background writer is paused (record() alone writes due rows)."""
    fake = FakeClock()
    monkeypatch.setattr(_deferred, "_monotonic", fake)
    monkeypatch.setattr(_deferred, "_writer_paused", [True])
    return fake


def tool_row(ledger: Ledger, turn: int, **kw: object) -> int:
    return ledger.record(session_id="s", origin="tool", turn=turn, tool="search", input_text=f"q{turn}", **kw)  # type: ignore[arg-type]


def test_routine_rows_wait_then_are_written_together_in_the_order_recorded(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    assert [tool_row(ledger, t) for t in range(1, 6)] == [0] * 5  # no seq yet: the rows wait
    assert stored(ledger_path) == []
    ledger.flush()
    assert stored(ledger_path) == [(s, s, "tool", 1) for s in range(1, 6)]
    assert ledger.verify().ok
    ledger.flush()  # nothing waits: a no-op
    assert len(stored(ledger_path)) == 5


def test_rows_are_written_once_the_oldest_has_waited_defer_seconds(ledger_path: Path, clock: FakeClock) -> None:
    ledger = Ledger(ledger_path, defer_seconds=1.0)
    tool_row(ledger, 1)
    clock.now += 0.6
    tool_row(ledger, 2)
    assert stored(ledger_path) == []
    clock.now += 0.4  # the first row has now waited 1.0 s
    tool_row(ledger, 3)
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3]
    clock.now += 0.9  # the age counts from the oldest row still waiting, not from the last write
    tool_row(ledger, 4)
    assert len(stored(ledger_path)) == 3
    clock.now += 0.1
    tool_row(ledger, 5)
    assert len(stored(ledger_path)) == 3
    clock.now += 0.9
    tool_row(ledger, 6)
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3, 4, 5, 6]


def test_rows_are_written_in_the_background_when_no_record_follows(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=0.05)
    tool_row(ledger, 1)
    tool_row(ledger, 2)
    # Nothing else happens in this process: no record(), read or flush(). Another process still sees the rows.
    _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1, 2])
    assert ledger._waiting is not None and ledger._waiting.count == 0
    assert any(t.name == "loopguard-ledger-writer" and t.daemon for t in threading.enumerate())
    assert ledger.verify().ok
    ledger.close()


def test_a_ledger_dropped_without_close_has_its_rows_written_then_is_collected(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=0.05)
    tool_row(ledger, 1)
    backend = weakref.ref(ledger._backend)  # holds the connections: collected with it, they close
    del ledger
    _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1])
    _wait_for(lambda: gc.collect() >= 0 and backend() is None)


def test_a_failed_background_write_is_logged_once_and_its_rows_wait_for_the_next_attempt(
    ledger_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deferred, "RETRY_SECONDS", 0.05)
    ledger = Ledger(ledger_path, defer_seconds=0.05, busy_timeout=0.01)
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waiting = ledger._waiting
    assert waiting is not None
    attempts = []
    write = waiting._write

    def counted(rows: Any) -> int:
        attempts.append(len(rows))
        return write(rows)

    waiting._write = counted
    with caplog.at_level(logging.WARNING, logger="loopguard.ledger"):
        tool_row(ledger, 1)
        _wait_for(lambda: len(attempts) >= 3)  # it keeps trying while the file is locked
        failures = [r for r in caplog.records if "could not write 1 waiting rows" in r.getMessage()]
        assert len(failures) == 1  # once per streak, not once per attempt
        assert waiting.count == 1 and tool_rows(ledger_path) == []
        blocker.execute("ROLLBACK")
        blocker.close()
        _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1])
        _wait_for(lambda: any("wrote the waiting rows" in r.getMessage() for r in caplog.records))
    assert waiting.count == 0
    ledger.close()


def test_a_new_failure_streak_is_logged_after_a_foreground_write_ended_the_last(
    ledger_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deferred, "RETRY_SECONDS", 0.05)
    ledger = Ledger(ledger_path, defer_seconds=0.05, busy_timeout=0.01)

    def failures() -> int:
        return sum("in the background; they keep waiting" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="loopguard.ledger"):
        for turn in (1, 2):
            blocker = sqlite3.connect(ledger_path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            tool_row(ledger, turn)
            _wait_for(lambda turn=turn: failures() == turn)  # each streak is announced once
            blocker.execute("ROLLBACK")
            blocker.close()
            ledger.flush()  # the caller's own write ends the streak, before the background writer does
    assert [r[1] for r in tool_rows(ledger_path)] == [1, 2]
    ledger.close()


def test_a_ledger_busy_in_another_thread_does_not_hold_up_the_others(ledger_path: Path, tmp_path: Path) -> None:
    busy = Ledger(ledger_path, defer_seconds=0.05)
    other = Ledger(tmp_path / "other.db", defer_seconds=0.05)
    assert busy._waiting is not None
    tool_row(busy, 1)
    with busy._waiting._lock:  # as a record() or flush() of busy's does while its file is locked
        time.sleep(0.2)  # busy's row is due: the writer has come for it, and must not wait here
        tool_row(other, 1)
        _wait_for(lambda: [r[1] for r in tool_rows(tmp_path / "other.db")] == [1])
    _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1])  # and busy's row once it is free
    busy.close()
    other.close()


def test_the_background_writer_logs_after_letting_the_ledger_go(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deferred, "RETRY_SECONDS", 0.05)
    ledger = Ledger(ledger_path, defer_seconds=0.05, busy_timeout=0.01)
    waiting = ledger._waiting
    assert waiting is not None
    held_while_logging: list[bool] = []

    class Probe(logging.Handler):  # a handler that writes to the same ledger would deadlock under its lock
        def emit(self, record: logging.LogRecord) -> None:
            held_while_logging.append(waiting._lock.locked())

    probe = Probe()
    _deferred.logger.addHandler(probe)
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        tool_row(ledger, 1)
        _wait_for(lambda: held_while_logging)
        blocker.execute("ROLLBACK")
        _wait_for(lambda: len(held_while_logging) == 2)  # the failure, then the rows written
    finally:
        _deferred.logger.removeHandler(probe)
        blocker.close()
    assert held_while_logging == [False, False]
    ledger.close()


def test_a_row_written_at_once_does_not_wake_the_writer(ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[object] = []
    hold = _deferred.WaitingRows._hold

    def counted(self: _deferred.WaitingRows) -> None:
        held.append(self)
        hold(self)

    monkeypatch.setattr(_deferred.WaitingRows, "_hold", counted)
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1, passed=False, breach_reason="loop")  # nothing waited before it: written, never held
    ledger.record(session_id="s", origin="approval", turn=2)
    assert held == []
    tool_row(ledger, 3)  # this one waits
    tool_row(ledger, 4)
    assert held == [ledger._waiting]
    ledger.close()


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "loopguard-ledger-writer"]


def test_the_writer_ends_once_nothing_waits_and_the_next_waiting_row_starts_another(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deferred, "IDLE_SECONDS", 0.2)
    ledger = Ledger(ledger_path, defer_seconds=0.05)
    tool_row(ledger, 1)
    _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1])
    _wait_for(lambda: not _writers())  # a quiet process keeps no thread of ours (it may fork safely)
    tool_row(ledger, 2)  # waits: a writer starts again and writes it with no further record()
    assert len(_writers()) == 1
    _wait_for(lambda: [r[1] for r in tool_rows(ledger_path)] == [1, 2])
    _wait_for(lambda: not _writers())
    assert ledger.verify().ok
    ledger.close()


@pytest.mark.skipif(sys.version_info < (3, 12) or sys.platform == "win32", reason="Python 3.12+ warns on fork")
def test_a_process_whose_rows_are_written_forks_without_the_multi_threaded_warning(ledger_path: Path) -> None:
    script = f"""
        import os, sys, warnings
        from loopguard_core.ledger import Ledger, _deferred
        _deferred.IDLE_SECONDS = 0.1
        ledger = Ledger({str(ledger_path)!r}, defer_seconds=0.02)
        ledger.record(session_id="s", origin="tool", turn=1, input_text="q")
        writer = _deferred._writer[0]
        writer.join(30)  # it ends on its own once the row is written and nothing else waits
        if writer.is_alive():
            sys.exit(2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        sys.exit(1 if [w for w in caught if "multi-threaded" in str(w.message)] else 0)
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=60, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [r[1] for r in tool_rows(ledger_path)] == [1]


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_a_forked_child_gets_its_own_background_writer(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=0.05)
    tool_row(ledger, 1)  # the parent's writer thread runs; only the forking thread lives on in the child

    def child() -> None:
        ledger.record(session_id="child", origin="tool", turn=10, input_text="c")
        deadline = time.monotonic() + 30
        while ledger._waiting is not None and ledger._waiting.count and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if ledger._waiting is not None and ledger._waiting.count == 0 else 3)  # no exit handler runs

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    ledger.close()
    assert sorted(r[1] for r in stored(ledger_path)) == [1, 10]
    assert Ledger(ledger_path).verify().ok


@pytest.mark.parametrize(
    "row",
    [
        {"origin": "tool", "passed": False, "breach_reason": "loop"},
        {"origin": "model", "passed": False, "breach_reason": "max_turns"},
        {"origin": "breaker", "passed": False, "breach_reason": "loop"},
        {"origin": "approval", "passed": True},
        {"origin": "checkpoint", "passed": True},
    ],
)
def test_a_row_that_must_not_wait_is_written_at_once_after_the_waiting_rows(
    ledger_path: Path, row: dict[str, object]
) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    ledger.record(session_id="s", turn=2, **row)  # type: ignore[arg-type]
    assert [(r[1], r[2]) for r in stored(ledger_path)] == [(1, "tool"), (2, row["origin"])]
    assert ledger.verify().ok


def test_a_full_batch_is_written_however_young(ledger_path: Path, clock: FakeClock) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    for t in range(1, _deferred.BATCH_ROWS):
        tool_row(ledger, t)
    assert stored(ledger_path) == []
    tool_row(ledger, _deferred.BATCH_ROWS)
    assert len(stored(ledger_path)) == _deferred.BATCH_ROWS


def test_every_read_sees_the_waiting_rows(ledger_path: Path, tmp_path: Path) -> None:
    reads = {
        "rows": lambda led: [r.turn for r in led.rows()] == [1, 2],
        "sessions": lambda led: [s.rows for s in led.sessions()] == [2],
        "verify": lambda led: led.verify().rows_checked == 2,
        "export": lambda led: led.export_jsonl(tmp_path / "out.jsonl") == 2,
        "checkpoint": lambda led: led.checkpoint().size == 2,
    }
    for name, read in reads.items():
        path = tmp_path / f"{name}.db"
        ledger = Ledger(path, defer_seconds=60)
        tool_row(ledger, 1)
        tool_row(ledger, 2)
        assert read(ledger), name
        ledger.close()


def test_checkpoints_lists_those_of_the_waiting_rows(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60, checkpoint_every=2)
    tool_row(ledger, 1)
    tool_row(ledger, 2)
    assert [cp.size for cp in ledger.checkpoints()] == [2]


def test_threads_recording_into_one_ledger_lose_and_reorder_nothing(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=0.001, checkpoint_every=7)
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        start.wait()
        for i in range(150):
            ledger.record(session_id=f"t{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ledger.close()
    reopened = Ledger(ledger_path)
    rows = list(reopened.rows())
    assert len(rows) == 600
    for w in range(4):
        assert [r.turn for r in rows if r.session_id == f"t{w}"] == list(range(150))
    assert reopened.verify(checkpoint=reopened.checkpoints()[-1]).ok


def test_checkpoint_every_counts_rows_written_in_one_batch(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60, checkpoint_every=3)
    for t in range(1, 8):
        tool_row(ledger, t)
    ledger.flush()
    assert [cp.size for cp in ledger.checkpoints()] == [3, 6]
    for cp in ledger.checkpoints():
        result = ledger.verify(checkpoint=cp)
        assert result.ok, result.problems


def test_a_failed_write_keeps_the_earlier_rows_and_refuses_only_the_row_at_hand(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60, busy_timeout=0.05)
    tool_row(ledger, 1)
    tool_row(ledger, 2)
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerBusy, match="this row was not written") as info:
        tool_row(ledger, 3, passed=False, breach_reason="loop")  # written at once: fails while locked
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "this row was not recorded; 2 ledger rows recorded before it wait in this process" in notes
    blocker.execute("ROLLBACK")
    tool_row(ledger, 3, passed=False, breach_reason="loop")  # the retry the error invites records it once
    assert [(r[1], r[3]) for r in stored(ledger_path)] == [(1, 1), (2, 1), (3, 0)]
    tool_row(ledger, 4)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerBusy) as closing:
        ledger.close()  # close() cannot write row 4 either: it keeps it and closes nothing
    assert "1 ledger rows wait in this process" in "\n".join(getattr(closing.value, "__notes__", []))
    blocker.execute("ROLLBACK")
    blocker.close()
    ledger.close()
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3, 4]
    assert Ledger(ledger_path).verify().ok


def _interrupt(ledger: Ledger, after_commit: bool) -> Any:
    """Make the next writes of ``ledger``'s waiting rows raise KeyboardInterrupt, after their COMMIT or before it
    (Ctrl-C lands on any bytecode); returns the real write, to put back."""
    waiting = ledger._waiting
    assert waiting is not None
    write = waiting._write

    def interrupted(rows: Any) -> int:
        if after_commit:
            write(rows)
        raise KeyboardInterrupt

    waiting._write = interrupted
    return write


@pytest.mark.parametrize("after_commit", [True, False], ids=["after-commit", "before-commit"])
def test_an_interrupted_batch_write_stores_each_row_once(ledger_path: Path, after_commit: bool) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    tool_row(ledger, 2)
    write = _interrupt(ledger, after_commit)
    with pytest.raises(KeyboardInterrupt):
        ledger.flush()
    assert ledger._waiting is not None
    ledger._waiting._write = write
    assert ledger._waiting.count == (0 if after_commit else 2)  # a committed batch does not wait again
    ledger.flush()
    assert [r[1] for r in tool_rows(ledger_path)] == [1, 2]
    assert ledger.verify().ok


def test_an_interrupt_after_a_refusal_was_committed_says_it_was_written(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    write = _interrupt(ledger, after_commit=True)
    with pytest.raises(KeyboardInterrupt) as info:
        tool_row(ledger, 2, passed=False, breach_reason="loop")  # written at once, with row 1
    assert "this row and the rows before it were written" in "\n".join(getattr(info.value, "__notes__", []))
    assert ledger._waiting is not None
    ledger._waiting._write = write
    assert ledger._waiting.count == 0
    ledger.close()
    assert [(r[1], r[3]) for r in tool_rows(ledger_path)] == [(1, 1), (2, 0)]


def test_a_row_recorded_after_close_is_refused_not_kept(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    ledger.close()
    assert [r[1] for r in stored(ledger_path)] == [1]
    with pytest.raises(LedgerError, match="is closed; open a new Ledger"):
        tool_row(ledger, 2)


def test_past_the_waiting_limit_a_new_row_is_refused_loudly_not_dropped_silently(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_deferred, "MAX_WAITING", 3)
    ledger = Ledger(ledger_path, defer_seconds=60, busy_timeout=0.05)
    for t in (1, 2, 3):
        tool_row(ledger, t)
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerError, match=r"3 ledger rows already wait .* this row was not recorded"):
        tool_row(ledger, 4)
    blocker.execute("ROLLBACK")
    blocker.close()
    tool_row(ledger, 5)  # the ledger can be written again: the limit makes room by writing the waiting rows
    ledger.flush()
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3, 5]


def test_a_breaker_trip_writes_the_waiting_rows_then_the_refusal(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    breaker = Breaker(ledger=ledger, max_tool_calls=3)
    for i in range(3):
        breaker.before_tool("search", {"q": f"query {i}"})
        breaker.after_tool("search", {"q": f"query {i}"}, result=f"answer {i}")
    assert stored(ledger_path) == []  # three routine rows wait
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "query 4"})
    on_disk = stored(ledger_path)  # read by another connection: the refusal is on disk the moment it is raised
    assert [(r[2], r[3]) for r in on_disk[:3]] == [("tool", 1)] * 3
    assert on_disk[3:] and all(r[3] == 0 for r in on_disk[3:])
    assert ledger.verify().ok


def test_the_end_of_a_run_writes_its_waiting_rows(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    breaker = Breaker(ledger=ledger)
    with breaker.run("run-1"):
        for i in range(2):
            breaker.before_tool("search", {"q": f"query {i}"})
            breaker.after_tool("search", {"q": f"query {i}"}, result=f"answer {i}")
        assert tool_rows(ledger_path) == []
    assert [(r[2], r[3]) for r in tool_rows(ledger_path)] == [("tool", 1), ("tool", 1)]


def test_a_run_end_that_cannot_write_its_rows_says_so(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60, busy_timeout=0.05)
    breaker = Breaker(ledger=ledger)
    run = breaker.begin_run("run-1")
    breaker.before_tool("search", {"q": "x"})
    breaker.after_tool("search", {"q": "x"}, result="y")
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerBusy):  # ledger_failure="raise" (the default)
            run.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ledger.close()
    assert len(tool_rows(ledger_path)) == 1


def _exit_script(path: Path, body: str) -> str:
    return textwrap.dedent(
        f"""
        import gc
        from loopguard_core.ledger import Ledger
        ledger = Ledger({str(path)!r}, defer_seconds=3600)
        for turn in (1, 2, 3):
            ledger.record(session_id="s", origin="tool", turn=turn, input_text=str(turn))
        {body}
        """
    )


@pytest.mark.parametrize("body", ["pass", "del ledger; gc.collect()"], ids=["open", "dropped-without-close"])
def test_interpreter_exit_writes_the_waiting_rows(ledger_path: Path, body: str) -> None:
    subprocess.run([sys.executable, "-c", _exit_script(ledger_path, body)], check=True, timeout=60)
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3]
    assert Ledger(ledger_path).verify().ok


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_a_forked_child_does_not_write_its_parents_waiting_rows(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    tool_row(ledger, 2)

    def child() -> None:
        ledger.record(session_id="child", origin="tool", turn=10, input_text="c")
        ledger.close()

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert [r[1] for r in stored(ledger_path)] == [10]  # the child wrote its own row only
    ledger.close()
    assert [r[1] for r in stored(ledger_path)] == [10, 1, 2]
    assert Ledger(ledger_path).verify().ok


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_a_fork_while_another_thread_writes_leaves_the_child_a_working_ledger(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=60)
    tool_row(ledger, 1)
    waiting = ledger._waiting
    assert waiting is not None
    entered, release = threading.Event(), threading.Event()
    write = waiting._write

    def slow_write(rows: Any) -> object:  # a write that takes a while (a busy file, a slow disk)
        entered.set()
        release.wait(30)
        return write(rows)

    waiting._write = slow_write
    flusher = threading.Thread(target=ledger.flush)  # holds the rows' lock while it writes
    flusher.start()
    assert entered.wait(10)

    def child() -> None:
        # Only the forking thread lives on in the child: a lock the flusher held at the fork would never be
        # released, and this record() would hang. The parent's waiting row is not the child's to write.
        ledger.record(session_id="child", origin="tool", turn=10, input_text="c")
        os._exit(0 if waiting.count == 1 else 2)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(timeout=30)
    if p.exitcode is None:
        p.kill()
    release.set()
    flusher.join(timeout=30)
    assert p.exitcode == 0
    ledger.close()
    assert [r[1] for r in stored(ledger_path)] == [1]


def _record_and_return(path: str) -> None:
    ledger = Ledger(path, defer_seconds=3600)
    for turn in (1, 2, 3):
        ledger.record(session_id="worker", origin="tool", turn=turn, input_text=str(turn))
    # no close(): a multiprocessing child then ends with os._exit, which runs no atexit handler


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_a_multiprocessing_child_that_never_closes_still_writes_its_rows(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    p = multiprocessing.get_context("fork").Process(target=_record_and_return, args=(str(ledger_path),))
    p.start()
    p.join(timeout=60)
    assert p.exitcode == 0
    assert [r[1] for r in stored(ledger_path)] == [1, 2, 3]


def test_rows_lost_at_exit_are_reported_on_stderr(ledger_path: Path) -> None:
    script = _exit_script(
        ledger_path,
        "import sqlite3; blocker = sqlite3.connect(ledger.url, isolation_level=None); "
        "blocker.execute('BEGIN IMMEDIATE')",
    ).replace("defer_seconds=3600)", "defer_seconds=3600, busy_timeout=0.05)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "could not write 3 waiting ledger rows at exit; they are lost" in done.stderr


def _deferred_worker(path: str, worker: int, start: object) -> None:
    ledger = Ledger(path, busy_timeout=30, defer_seconds=0.002)
    start.wait()  # type: ignore[attr-defined]
    for i in range(200):
        ledger.record(session_id=f"proc-{worker}", origin="tool", turn=i, input_text=f"{worker}:{i}")
    ledger.close()


@pytest.mark.skipif(sys.platform == "win32", reason="uses the fork start method")
def test_processes_writing_batches_to_one_file_keep_one_chain(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_deferred_worker, args=(str(ledger_path), w, start)) for w in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    ledger = Ledger(ledger_path)
    result = ledger.verify()
    assert result.ok, result.problems
    rows = list(ledger.rows())
    assert [r.seq for r in rows] == list(range(1, 801))
    for w in range(4):  # each process's rows in the order it recorded them
        assert [r.turn for r in rows if r.session_id == f"proc-{w}"] == list(range(200))


def test_in_memory_ledger_defers_too() -> None:
    ledger = Ledger(":memory:", defer_seconds=60)
    assert ledger.record(session_id="s", origin="model", turn=1) == 0
    assert ledger.record(session_id="s", origin="model", turn=2) == 0
    assert [r.turn for r in ledger.rows()] == [1, 2]
    assert ledger.record(session_id="s", origin="model", turn=3, passed=False) == 3
    assert ledger.verify().ok


@pytest.mark.parametrize("bad", [-1, True, "0.1", float("nan"), float("inf"), 86_400])
def test_bad_defer_seconds_is_refused_with_what_to_pass(ledger_path: Path, bad: object) -> None:
    with pytest.raises(LedgerConfigError, match="defer_seconds must be None or a number of seconds from 0 to"):
        Ledger(ledger_path, defer_seconds=bad)  # type: ignore[arg-type]


def test_zero_defer_seconds_writes_each_row_at_once(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, defer_seconds=0)
    assert tool_row(ledger, 1) == 1
    assert len(stored(ledger_path)) == 1


def test_defer_seconds_with_read_only_is_refused(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    with pytest.raises(LedgerConfigError, match="defer_seconds needs a ledger it can write"):
        Ledger(ledger_path, read_only=True, defer_seconds=1)


def test_a_backend_without_append_many_refuses_defer_seconds(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(SqliteBackend, "append_many")
    with pytest.raises(LedgerConfigError, match="has none: leave defer_seconds out"):
        Ledger(ledger_path, defer_seconds=1)
    Ledger(ledger_path).close()  # the refused ledger closed what it had opened: the file opens as usual


# -- PostgreSQL: one transaction per batch, and a batch whose session dies is stored exactly once -------------
def _pg_turns(admin: Any, schema: str) -> list[tuple[int, int, int]]:
    return [tuple(r) for r in admin.execute(f'SELECT seq, turn, passed FROM "{schema}".loopguard_ledger ORDER BY seq')]


def test_postgresql_rows_wait_and_a_refusal_writes_them_first(pg_url: str, pg_admin: Any, pg_schema: str) -> None:
    ledger = Ledger(pg_url, defer_seconds=60, checkpoint_every=2)
    for t in (1, 2, 3):
        assert tool_row(ledger, t) == 0
    assert _pg_turns(pg_admin, pg_schema) == []
    tool_row(ledger, 4, passed=False, breach_reason="loop")
    assert _pg_turns(pg_admin, pg_schema) == [(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 4, 0)]
    assert [cp.size for cp in ledger.checkpoints()] == [2, 4]
    assert ledger.verify(checkpoint=ledger.checkpoints()[-1]).ok
    tool_row(ledger, 5)
    ledger.close()
    assert [r[1] for r in _pg_turns(pg_admin, pg_schema)] == [1, 2, 3, 4, 5]


def test_postgresql_batch_interrupted_after_its_commit_is_stored_once(
    pg_url: str, pg_admin: Any, pg_schema: str
) -> None:
    ledger = Ledger(pg_url, defer_seconds=60)
    tool_row(ledger, 1)
    tool_row(ledger, 2)
    write = _interrupt(ledger, after_commit=True)
    with pytest.raises(KeyboardInterrupt):
        ledger.flush()
    assert ledger._waiting is not None
    ledger._waiting._write = write
    tool_row(ledger, 3)
    ledger.close()
    assert [r[1] for r in _pg_turns(pg_admin, pg_schema)] == [1, 2, 3]


def test_postgresql_batch_whose_session_dies_after_sending_is_stored_exactly_once(
    pg_url: str, pg_admin: Any, pg_schema: str
) -> None:
    ledger = Ledger(pg_url, defer_seconds=60, busy_timeout=60)
    tool_row(ledger, 1)
    ledger.flush()
    for t in (2, 3, 4):
        tool_row(ledger, t)
    import psycopg

    # Reads pass and INSERTs wait: the batch takes the chain lock, reads the head, sends its rows, and blocks.
    blocker = psycopg.connect(pg_url.split("?")[0], autocommit=False)
    blocker.execute(f'LOCK TABLE "{pg_schema}".loopguard_ledger IN EXCLUSIVE MODE')
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            ledger.flush()
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=flush)
    try:
        worker.start()
        waiting = _wait_for(lambda: _lock_waiters(pg_admin))
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0],))
        _wait_for(lambda: waiting[0] not in _lock_waiters(pg_admin, all_sessions=True) or None)
    finally:
        blocker.rollback()
        blocker.close()
    worker.join(timeout=60)
    assert errors == []
    # The killed transaction took its rows with it: the ledger looked for the last one, did not find it, and
    # wrote the batch again, once, in order.
    assert [r[1] for r in _pg_turns(pg_admin, pg_schema)] == [1, 2, 3, 4]
    assert ledger.verify().ok
    ledger.close()


def _lock_waiters(admin: Any, all_sessions: bool = False) -> list[int]:
    where = "true" if all_sessions else "wait_event_type = 'Lock'"
    sql = "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database() AND "
    return [pid for (pid,) in admin.execute(sql + where)]


def _wait_for(check: Any) -> Any:
    deadline = time.monotonic() + 30
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        time.sleep(0.01)
