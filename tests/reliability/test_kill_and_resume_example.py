"""examples/kill_and_resume.py runs with no API key: a worker killed with SIGKILL mid-run is resumed by run id
from the same counts, the budget holds across the crash, and the script exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.skipif(sys.platform == "win32", reason="the example's worker is killed with SIGKILL"),
]

REPO = Path(__file__).resolve().parents[2]


def test_kill_and_resume_example_keeps_the_budget_across_the_crash() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "kill_and_resume.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kill -9 (exit code -9)" in out.stdout
    held = re.search(r"the file still holds: (\d+) tool calls, (\d+) model turns", out.stdout)
    resumed = re.findall(r"starting from: (\d+) tool calls, (\d+) model turns", out.stdout)
    assert held is not None and len(resumed) == 2, out.stdout
    assert resumed[0] == ("0", "0")  # the first worker started a fresh run
    assert resumed[1] == held.groups() and int(held[1]) >= 9  # the second one carried on from the killed one
    assert "refused [tool_ceiling]" in out.stdout
    assert "In all: 24 tool calls" in out.stdout
    assert "the budget held across the crash" in out.stdout
