"""A research agent killed with ``kill -9`` in the middle of its run, resumed by run id: the budget holds.

    python examples/kill_and_resume.py

No API key, no network. A worker process runs a scripted agent (one model call, then two page fetches, again
and again) under a budget of 24 tool calls and 0.12 USD, with its breaker state in a SQLite file
(``store="sqlite:///.../runs.db"``). This script kills the worker with SIGKILL mid-run, shows what the file
still holds, and starts a new worker on the same run id: it carries on from the same counts and is stopped
by the same budget, as if the first worker had never died. With the default memory store, the second
worker would have started from zero and spent the whole budget again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopguard_core import Breaker, LoopGuardTripped, StaticPrices
from loopguard_core.stores import RunKey, RunSnapshot, SQLiteStore

SCOPE, RUN_ID = "research", "report-7"
MODEL = "scripted-model"
PRICES = StaticPrices({MODEL: (3.0, 15.0)})  # USD per million input / output tokens
MAX_TOOL_CALLS, MAX_COST_USD = 24, 0.12
KILL_AFTER = 9  # tool calls


def describe(usage: RunSnapshot) -> str:
    return (
        f"{usage.tool_calls} tool calls, {usage.turns} model turns, {usage.tokens:,} tokens, {usage.cost_usd:.4f} USD"
    )


def worker(db: str, pace: float) -> int:
    """One process's attempt at the run: a breaker on the shared file, and the scripted agent loop."""
    breaker = Breaker(
        store="sqlite:///" + db,
        scope=SCOPE,
        max_tool_calls=MAX_TOOL_CALLS,
        max_cost_usd=MAX_COST_USD,
        prices=PRICES,
    )
    pid = os.getpid()
    with breaker.run(RUN_ID):  # the same run id in every process: the run's counts are in the file
        print(f"    [worker {pid}] run {RUN_ID} starting from: {describe(breaker.usage())}", flush=True)
        turn = breaker.usage().turns
        while True:
            turn += 1
            call_id = f"{pid}-turn-{turn}"
            try:  # the model: 1,200 tokens in, at most 300 out (what a framework adapter passes)
                breaker.before_model(model=MODEL, estimated_input_tokens=1_200, max_output_tokens=300, call_id=call_id)
            except LoopGuardTripped as trip:
                print(f"    [worker {pid}] refused [{trip.reason}]: {trip}", flush=True)
                return 0
            time.sleep(pace)  # the model thinks
            breaker.after_model(input_tokens=1_200, output_tokens=250, model=MODEL, call_id=call_id)
            for source in ("a", "b"):
                args = {"url": f"https://example.invalid/turn-{turn}/source-{source}"}
                try:
                    breaker.before_tool("fetch_page", args, call_id=f"{call_id}-{source}")
                except LoopGuardTripped as trip:
                    print(f"    [worker {pid}] refused [{trip.reason}]: {trip}", flush=True)
                    return 0
                time.sleep(pace)  # the page loads
                breaker.after_tool("fetch_page", args, result=f"page {turn}{source}: 2 new facts")
            print(f"    [worker {pid}] turn {turn}: {describe(breaker.usage())}", flush=True)


def start_worker(db: Path, pace: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", str(db), str(pace)],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "runs.db"
        store = SQLiteStore(db)  # to read the run's counts from this process (a dashboard could do the same)
        run = RunKey(SCOPE, RUN_ID)
        print(f"1. A worker starts run {RUN_ID!r} on sqlite:///{db}")
        print(f"   budget: {MAX_TOOL_CALLS} tool calls, {MAX_COST_USD} USD")
        first = start_worker(db, pace=0.05)
        assert first.stdout is not None
        deadline = time.monotonic() + 60
        while store.snapshot(run).tool_calls < KILL_AFTER:
            if first.poll() is not None or time.monotonic() > deadline:
                print("the worker ended before it could be killed", file=sys.stderr)
                return 1
            time.sleep(0.01)
        before = store.snapshot(run)
        first.kill()  # SIGKILL: no cleanup, no atexit, no flush; a transaction in flight is rolled back
        first.wait()
        for line in first.stdout:
            print(line, end="")
        first.stdout.close()
        print(f"2. kill -9 (exit code {first.returncode})")
        print(f"   before the kill:      {describe(before)}")
        held = store.snapshot(run)
        print(f"   the file still holds: {describe(held)}  (state {held.state})")

        print(f"3. A new worker resumes run {RUN_ID!r} by id:")
        second = start_worker(db, pace=0.0)
        output, _ = second.communicate(timeout=60)
        print(output, end="")
        final = store.snapshot(run)
        store.close()
        started = re.search(r"starting from: (\d+) tool calls, (\d+) model turns", output)
        resumed = started is not None and (int(started[1]), int(started[2])) == (held.tool_calls, held.turns)
        print(f"4. In all: {describe(final)}")
        print(f"   allowed:  {MAX_TOOL_CALLS} tool calls, {MAX_COST_USD} USD; stopped by {final.trip_reason}")
        kept = final.tool_calls <= MAX_TOOL_CALLS and final.cost_usd <= MAX_COST_USD and final.terminal
        if second.returncode != 0 or not resumed or not kept or held.tool_calls < KILL_AFTER:
            print("the budget was NOT kept across the crash", file=sys.stderr)
            return 1
        print("   The resumed worker started from the killed one's counts: the budget held across the crash.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        raise SystemExit(worker(sys.argv[2], float(sys.argv[3])))
    raise SystemExit(main())
