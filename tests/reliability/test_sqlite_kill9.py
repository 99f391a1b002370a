"""``kill -9`` of a guarded agent on the SQLite store, 20 times at random moments: every resumed run keeps its
counts, no ceiling is ever exceeded across the restarts, and a loop begun before a kill is refused after it.

A child process (a fresh interpreter each time) runs an agent loop on ``store="sqlite:///..."`` under a budget
(``max_tool_calls``, ``max_tokens``, ``max_cost_usd`` priced with StaticPrices) with a fixed run id: one model
call, then two tool calls, again and again. After every step it appends what it did and the run's counts to
a progress file (fsync'd). The parent kills it with SIGKILL at a random moment and starts it again with the
same run id, 20 times, then lets the last one run until the budget stops it.

What is checked, from the progress file and the database:

- every resumed child starts from the counts its predecessor logged last, or one step more (the step the kill
  interrupted after its commit and before its log line: a call admitted whose body never reported is
  counted), never fewer, never more;
- the final counts in the file are the last child's, and no count ever exceeds its ceiling;
- model calls admitted and never reported still hold their reservation (``reservation_seconds``, 600 s):
  spent plus held never exceeds a ceiling;
- a loop begun before a kill (the same lookup, the same answer, three times) is refused right after it.

``LOOPGUARD_KILL9_SEED`` replays a run; the seed is printed (and named in every assertion).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices
from loopguard_core.stores import SQLiteStore
from loopguard_core.stores.base import RunKey

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL"),
]

REPO = Path(__file__).resolve().parents[2]
KILLS = 20
SCOPE, RUN_ID = "kill9", "order-42"
MODEL = "scripted-model"
PRICES = {MODEL: (2.0, 8.0)}  # USD per million tokens: 2 micro-USD an input token, 8 an output token
EST_IN, MAX_OUT = 100, 60  # each model call projects 160 tokens, 200 + 480 = 680 micro-USD
USED_IN, USED_OUT = 100, 50  # and uses 150 tokens, 200 + 400 = 600 micro-USD
TOKENS, MICROS = USED_IN + USED_OUT, USED_IN * 2 + USED_OUT * 8
MAX_TOOL_CALLS, MAX_TOKENS, MAX_COST_USD = 1_250, 93_000, 0.36
MAX_MICROS = round(MAX_COST_USD * 1_000_000)
BUDGET_REASONS = ("tool_ceiling", "token_ceiling", "cost_ceiling")


# -- the child: a guarded agent loop ----------------------------------------------------------------
def child() -> None:
    """``python -c "...; child()" DB PROGRESS LIFE MODE PACE_MS SEED``"""
    db, progress, life, mode, pace_ms, seed = sys.argv[1:7]
    rng = random.Random(f"{seed}-{life}")
    breaker = Breaker(
        store="sqlite:///" + db,
        scope=SCOPE,
        max_tool_calls=MAX_TOOL_CALLS,
        max_tokens=MAX_TOKENS,
        max_cost_usd=MAX_COST_USD,
        prices=StaticPrices(PRICES),
    )
    pace = float(pace_ms) / 1000
    with open(progress, "a", encoding="utf-8") as log:

        def note(kind: str) -> None:
            snap = breaker.usage()
            counts = f"{snap.tool_calls} {snap.turns} {snap.tokens} {snap.cost_micros}"
            log.write(f"{life} {kind} {counts} {snap.state.value} {os.getpid()}\n")
            log.flush()
            os.fsync(log.fileno())

        def work() -> None:  # a tool's or a model's body: takes a moment (a kill may land in it)
            if pace:
                time.sleep(rng.uniform(0, pace))

        with breaker.run(RUN_ID):
            note("start")
            if mode in ("loop-begin", "loop-check"):
                sku = {"sku": "A-1"}
                for _ in range(3 if mode == "loop-begin" else 1):
                    try:
                        breaker.before_tool("lookup", sku)
                    except LoopGuardTripped as trip:
                        note(f"loop-refused:{trip.reason}:{trip.facts.get('rule')}")
                        breaker.steer(trip)  # the agent is told, the window stays, the run goes on
                        break
                    breaker.after_tool("lookup", sku, result="out of stock; no restock date known yet")
                    note("lookup")
                if mode == "loop-begin":
                    note("loop-begun")
                    time.sleep(3_600)  # until killed: nothing runs between the loop and the kill
            step = 0
            while True:
                step += 1
                call_id = f"{life}-m{step}"
                try:
                    breaker.before_model(
                        model=MODEL, estimated_input_tokens=EST_IN, max_output_tokens=MAX_OUT, call_id=call_id
                    )
                except LoopGuardTripped as trip:
                    note(f"done:{trip.reason}:{trip.facts.get('tripped_by')}")
                    return
                note("model-admitted")
                work()
                breaker.after_model(input_tokens=USED_IN, output_tokens=USED_OUT, model=MODEL, call_id=call_id)
                note("model-reported")
                for j in range(2):
                    args = {"item": f"{life}-{step}-{j}"}
                    try:
                        breaker.before_tool("fetch", args, call_id=f"{life}-t{step}-{j}")
                    except LoopGuardTripped as trip:
                        note(f"done:{trip.reason}:{trip.facts.get('tripped_by')}")
                        return
                    note("tool-admitted")
                    work()
                    breaker.after_tool(
                        "fetch", args, result=f"item {args['item']}: 3 in stock", call_id=f"{life}-t{step}-{j}"
                    )
                    note("tool-reported")


# -- the parent --------------------------------------------------------------------------------------
class Line(NamedTuple):
    life: int
    kind: str
    tools: int
    turns: int
    tokens: int
    micros: int
    state: str
    pid: int


def read_lines(progress: Path) -> list[Line]:
    lines = []
    for text in progress.read_text(encoding="utf-8").splitlines():
        parts = text.split()
        if len(parts) == 8:  # a line cut short by the kill would have fewer parts (fsync makes that unlikely)
            life, kind, *numbers, state, pid = parts
            lines.append(Line(int(life), kind, *(int(n) for n in numbers), state, int(pid)))
    return lines


def start_child(db: Path, progress: Path, life: int, mode: str, pace_ms: float, seed: int) -> subprocess.Popen[bytes]:
    code = "from tests.reliability.test_sqlite_kill9 import child; child()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", code, str(db), str(progress), str(life), mode, str(pace_ms), str(seed)]
    return subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE)


def wait_for(progress: Path, life: int, kind: str, proc: subprocess.Popen[bytes], why: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if progress.exists() and any(line.life == life and line.kind == kind for line in read_lines(progress)):
            return
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{why}: life {life} exited ({proc.returncode}) before '{kind}':\n{stderr}")
        time.sleep(0.005)
    raise AssertionError(f"{why}: life {life} never logged '{kind}'")


def test_kill_9_twenty_times_and_every_resumed_run_keeps_its_counts(tmp_path: Path) -> None:
    seed = int(os.environ.get("LOOPGUARD_KILL9_SEED") or random.randrange(2**31))
    why = f"seed {seed} (LOOPGUARD_KILL9_SEED={seed} replays it)"
    print(f"kill -9 test: {why}")
    rng = random.Random(seed)
    db, progress = tmp_path / "runs.db", tmp_path / "progress.log"
    loop_at = rng.randrange(3, KILLS - 3)  # the kill that lands right after a loop began
    killed = 0
    started = time.monotonic()
    for life in range(KILLS):
        mode = "loop-begin" if life == loop_at else "loop-check" if life == loop_at + 1 else "work"
        # Some children pace their calls (a kill then mostly lands in a tool's or a model's body), others
        # run flat out (it then lands in a store step, a commit, or between a commit and its log line).
        fast = rng.random() < 0.4
        proc = start_child(db, progress, life, mode, 0.0 if fast else 6.0, seed)
        try:
            wait_for(progress, life, "loop-begun" if mode == "loop-begin" else "start", proc, why)
            if mode != "loop-begin":
                time.sleep(rng.uniform(0.005, 0.06) if fast else rng.uniform(0.01, 0.25))
            assert proc.poll() is None, f"{why}: life {life} finished before it was killed: raise the budget"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL, why
            killed += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
    final = start_child(db, progress, KILLS, "work", 0.0, seed)  # the last one runs to the end of the budget
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, f"{why}: {stderr.decode(errors='replace')}"
    assert killed == KILLS, why
    lines = read_lines(progress)
    check_progress(lines, loop_at, why)
    check_store(db, lines, why)
    assert time.monotonic() - started < 90, why


def check_progress(lines: list[Line], loop_at: int, why: str) -> None:
    by_life: dict[int, list[Line]] = {}
    for line in lines:
        by_life.setdefault(line.life, []).append(line)
        assert line.tools <= MAX_TOOL_CALLS, f"{why}: {line}"
        assert line.tokens <= MAX_TOKENS, f"{why}: {line}"
        assert line.micros <= MAX_MICROS, f"{why}: {line}"
    assert sorted(by_life) == list(range(KILLS + 1)), why
    for life in range(1, KILLS + 1):
        last, start = by_life[life - 1][-1], by_life[life][0]
        assert start.kind == "start", f"{why}: {start}"
        grown = (start.tools - last.tools, start.turns - last.turns, start.tokens - last.tokens)
        # What the previous child did is all there; at most the one step the kill cut off before its log line
        # is there too (its commit happened): one admitted tool call, one admitted model call, or one report.
        assert grown in ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, TOKENS)), f"{why}: {last} -> {start}"
        assert start.micros - last.micros == (MICROS if grown[2] else 0), f"{why}: {last} -> {start}"
        if grown[2]:
            assert last.kind == "model-admitted", f"{why}: only a model call's report adds tokens: {last}"
        # Counts never go back within a life either.
        for before, after in zip(by_life[life], by_life[life][1:]):
            assert before.tools <= after.tools and before.turns <= after.turns and before.tokens <= after.tokens, why
    begun = [line.kind for line in by_life[loop_at]]
    assert begun[-4:] == ["lookup", "lookup", "lookup", "loop-begun"], f"{why}: {begun}"
    assert by_life[loop_at + 1][1].kind == "loop-refused:loop:repeat", f"{why}: {by_life[loop_at + 1][:2]}"
    done = by_life[KILLS][-1]
    kind, reason, tripped_by = done.kind.split(":")
    assert kind == "done", f"{why}: {done}"
    assert reason in BUDGET_REASONS or (reason == "open" and tripped_by in BUDGET_REASONS), f"{why}: {done}"


def check_store(db: Path, lines: list[Line], why: str) -> None:
    store = SQLiteStore(db)
    key = RunKey(SCOPE, RUN_ID)
    snap = store.snapshot(key)
    last = lines[-1]
    assert (snap.tool_calls, snap.turns, snap.tokens, snap.cost_micros) == (
        last.tools,
        last.turns,
        last.tokens,
        last.micros,
    ), f"{why}: {snap} vs {last}"
    assert snap.terminal and snap.trip_reason in BUDGET_REASONS, f"{why}: {snap}"
    assert snap.tool_calls <= MAX_TOOL_CALLS and snap.tokens <= MAX_TOKENS and snap.cost_micros <= MAX_MICROS, why
    assert snap.tokens == TOKENS * (snap.cost_micros // MICROS) and snap.cost_micros % MICROS == 0, why
    # Model calls admitted and never reported (their child was killed first) still hold their reservation.
    state: Any = store._read(key)
    orphans = snap.turns - snap.tokens // TOKENS
    assert len(state.reservations) == orphans, f"{why}: {state.reservations}"
    assert state.reserved_tokens == orphans * (EST_IN + MAX_OUT), why
    assert state.reserved_micros == orphans * (EST_IN * 2 + MAX_OUT * 8), why
    now = time.monotonic()
    assert all(now < expires <= now + 600 for _, _, expires in state.reservations.values()), why
    assert snap.tokens + state.reserved_tokens <= MAX_TOKENS, why  # spent plus held, never past a ceiling
    assert snap.cost_micros + state.reserved_micros <= MAX_MICROS, why
    store.close()
