"""``kill -9`` between the body and the record (SQLite, Redis, PostgreSQL): the claim stays in flight; a repeat
inside its lease is refused as in flight, a repeat after it is refused as unknown and the body does not run;
``on_unknown="retry"`` (or releasing the record after checking) runs it again, once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopguard_core.errors import LoopGuardTripped
from loopguard_core.idempotency import SideEffects

from .conftest import Backend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")

CHILD = Path(__file__).with_name("_child.py")
REPO = Path(__file__).resolve().parents[2]
TOOL = "send_refund"
ARGS = {"order_id": "order-42", "amount_cents": 1500}  # what _child.py calls
LEASE = 60.0


@pytest.mark.parametrize("resolution", ["retry", "release"])
def test_kill_9_between_the_body_and_the_record(durable: Backend, tmp_path: Path, resolution: str) -> None:
    marker = tmp_path / "refund-sent"
    job = {"mode": "hang", "url": durable.url, "run_id": "run-1", "lease": LEASE, "marker": str(marker)}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(job)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():  # the body has done its side effect and not returned
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never ran its body"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()

    runs: list[str] = []

    def body() -> dict[str, str]:
        runs.append("ran")
        return {"refund": "re_again"}

    # Inside the lease: the first may still be running somewhere; refused, not run.
    now = SideEffects(durable.open(), in_flight="refuse")
    with pytest.raises(LoopGuardTripped) as caught:
        now.run(TOOL, ARGS, body, run_id="run-1")
    assert caught.value.reason == "side_effect_in_flight"

    # After the lease (the store's clock moved past it): unknown, refused, never silently run again.
    later = durable.open(clock=lambda: time.time() + LEASE + 5)
    with pytest.raises(LoopGuardTripped) as caught:
        SideEffects(later).run(TOOL, ARGS, body, run_id="run-1")
    trip = caught.value
    assert trip.reason == "side_effect_unknown" and trip.facts["cause"] == "lease_expired"
    assert "check the external system" in str(trip)
    assert runs == []

    if resolution == "retry":  # a body known to be safe to repeat
        assert SideEffects(later, on_unknown="retry").run(TOOL, ARGS, body, run_id="run-1") == {"refund": "re_again"}
    else:  # someone checked the payments system, found no refund, and released the record
        assert later.release(trip.facts["key"])
        assert SideEffects(later).run(TOOL, ARGS, body, run_id="run-1") == {"refund": "re_again"}
    assert runs == ["ran"]
    assert SideEffects(later).run(TOOL, ARGS, body, run_id="run-1") == {"refund": "re_again"}
    assert runs == ["ran"]
