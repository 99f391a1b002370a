"""Smoke test of the detection benchmark command (never a timed assertion).

It runs ``python -m benchmarks.detection`` as a user would and checks the bar of the public corpus:
every runaway refused by its deadline, no legitimate run refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "tool_call_scenarios.json"


@pytest.fixture
def corpus() -> Path:
    env = os.environ.get("LOOPGUARD_SCENARIOS")
    path = Path(env) if env else REPO / "tests" / "data" / PUBLIC
    assert path.is_file(), f"scenario corpus not found at {path}"
    return path


def test_detection_command_reports_the_public_bar(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "detection.json"
    env = dict(os.environ, LOOPGUARD_SCENARIOS=str(corpus))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.detection", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "runaway refused by deadline: 7/7" in proc.stdout
    assert "legit refused:               0/7" in proc.stdout
    payload = json.loads(out.read_text())
    scores = payload["scores"]
    assert len(scores) == 14
    runaways = [s for s in scores if s["kind"] == "runaway"]
    assert all(s["refused_at"] <= s["trip_by"] for s in runaways)
    # wasted calls are what ran beyond the useful prefix, never negative, never more than what ran
    assert all(0 <= s["wasted"] <= s["executed"] for s in runaways)
    (summary,) = payload["summaries"]
    assert summary["detector"] == "loopguard"
    assert summary["wasted"] == sum(s["wasted"] for s in runaways)


def test_detection_command_names_a_missing_corpus(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.detection", "--corpus", str(missing)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "--corpus" in proc.stderr
