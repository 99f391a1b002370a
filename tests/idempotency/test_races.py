"""Racing the same key: 8 threads (every store) and 4 processes of 2 threads each (SQLite, Redis, PostgreSQL) run
the body exactly once, and every racer gets the one recorded outcome (the others wait for it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loopguard_core.errors import LoopGuardTripped
from loopguard_core.idempotency import SideEffects

from .conftest import Backend

CHILD = Path(__file__).with_name("_child.py")
REPO = Path(__file__).resolve().parents[2]
ARGS = {"order_id": "order-42", "amount_cents": 1500}


def test_eight_threads_racing_one_key_run_the_body_once(backend: Backend, tmp_path: Path) -> None:
    effects = SideEffects(backend.open(), wait_seconds=20)
    runs: list[int] = []
    barrier = threading.Barrier(8)
    results: list[Any] = []
    lock = threading.Lock()

    def body() -> dict[str, Any]:
        with lock:
            runs.append(threading.get_ident())
        time.sleep(0.2)  # long enough that the others find it in flight
        return {"refund": "re_1", "by": threading.get_ident()}

    def racer() -> None:
        barrier.wait()
        try:
            outcome: Any = effects.run("send_refund", ARGS, body, run_id="run-1")
        except LoopGuardTripped as trip:
            outcome = trip.reason
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(runs) == 1
    assert len(results) == 8
    assert all(result == {"refund": "re_1", "by": runs[0]} for result in results), results


def test_four_processes_racing_one_key_run_the_body_once(durable: Backend, tmp_path: Path) -> None:
    counter = tmp_path / "bodies.txt"
    go = tmp_path / "go"
    procs = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for n in range(4):
        job = {
            "mode": "race",
            "url": durable.url,
            "run_id": "run-1",
            "threads": 2,
            "hold": 0.3,
            "counter": str(counter),
            "ready": str(tmp_path / f"ready-{n}"),
            "go": str(go),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(CHILD), json.dumps(job)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"ready-{n}").exists() for n in range(4)):
        assert time.monotonic() < deadline, "the worker processes did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.005)
    go.touch()  # all four start together
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outcomes.extend(json.loads(out))
    lines = counter.read_text().splitlines()
    assert len(lines) == 1, lines  # exactly one execution, across 4 processes x 2 threads
    winner = int(lines[0].split("/")[0])
    assert outcomes == [{"refund": "re_1", "by": winner}] * 8
