"""Shared fixtures: a fake clock, and the path of the synthetic scenario corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopguard_core.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]


def scenarios_path() -> Path:
    """The synthetic scenario corpus, kept in the repository (LOOPGUARD_SCENARIOS overrides it)."""
    env = os.environ.get("LOOPGUARD_SCENARIOS")
    return Path(env) if env else REPO / "tests" / "data" / "tool_call_scenarios.json"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
