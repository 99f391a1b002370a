"""A worker process for the race and kill -9 tests: ``python _child.py '<json job>'``.

``race``: wait for the ``go`` file, then run ``threads`` threads that all call the same side effect; the body
appends one line to ``counter`` and takes ``hold`` seconds; prints each thread's result as JSON.
``hang``: claim, run a body that writes ``marker`` and then blocks for ever (the test kills the process).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loopguard_core.errors import LoopGuardTripped
from loopguard_core.idempotency import SideEffects, side_effect_store

TOOL = "send_refund"
ARGS = {"order_id": "order-42", "amount_cents": 1500}


def race(job: dict[str, Any]) -> None:
    store = side_effect_store(job["url"])
    effects = SideEffects(store, wait_seconds=20)
    counter = Path(job["counter"])
    Path(job["ready"]).touch()
    go = Path(job["go"])
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.001)

    def body() -> dict[str, Any]:
        with counter.open("a") as fh:
            fh.write(f"{os.getpid()}/{threading.get_ident()}\n")
        time.sleep(job["hold"])
        return {"refund": "re_1", "by": os.getpid()}

    results: list[Any] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            outcome: Any = effects.run(TOOL, ARGS, body, run_id=job["run_id"])
        except LoopGuardTripped as trip:
            outcome = {"trip": trip.reason}
        except Exception as exc:  # reported, so the test shows it
            outcome = {"error": f"{type(exc).__name__}: {exc}"}
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(job["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(results))


def hang(job: dict[str, Any]) -> None:
    effects = SideEffects(side_effect_store(job["url"]), lease_seconds=job["lease"])

    def body() -> None:
        Path(job["marker"]).write_text(str(os.getpid()))
        while True:  # until kill -9
            time.sleep(1)

    effects.run(TOOL, ARGS, body, run_id=job["run_id"])


if __name__ == "__main__":
    task = json.loads(sys.argv[1])
    {"race": race, "hang": hang}[task["mode"]](task)
