"""Shared fixtures: a fake clock, and the path of the synthetic scenario corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopguard_core.testing import FakeClock

REPO = Path(__file__).resolve().parents[1]

try:
    from hypothesis import settings
except ImportError:  # (the dev extra brings it; the tests that use it import it themselves)
    pass
else:
    # Properties, not timings: one example that ran past hypothesis's 200 ms deadline on a loaded machine (CI runs
    # the suite beside the compatibility matrix) failed a codec test that had nothing wrong.
    settings.register_profile("loopguard", deadline=None)
    settings.load_profile("loopguard")


def scenarios_path() -> Path:
    """The synthetic scenario corpus, kept in the repository (LOOPGUARD_SCENARIOS overrides it)."""
    env = os.environ.get("LOOPGUARD_SCENARIOS")
    return Path(env) if env else REPO / "tests" / "data" / "tool_call_scenarios.json"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
