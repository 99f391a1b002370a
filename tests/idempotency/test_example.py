"""examples/refund_twice.py runs with no API key and no network, sends one refund, and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_refund_twice_example_sends_one_refund() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "refund_twice.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("-> payments API: refunding") == 1
    assert out.stdout.count("(answered from the record, the body did not run)") == 3
    assert "[side_effect_unknown]" in out.stdout
