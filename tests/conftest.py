"""Shared fixtures: a fake clock, and the path of the public scenario corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopguard_core.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]


def scenarios_path() -> Path:
    """The public corpus lives in ../shared beside the repo; LOOPGUARD_SCENARIOS overrides it."""
    env = os.environ.get("LOOPGUARD_SCENARIOS")
    if env:
        return Path(env)
    for candidate in (
        REPO.parent / "shared" / "scenarios" / "tool_call_scenarios.json",
        REPO / "tests" / "data" / "tool_call_scenarios.json",
    ):
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "scenarios" / "tool_call_scenarios.json"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
