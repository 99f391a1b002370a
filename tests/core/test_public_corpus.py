"""The public scenario corpus, under Breaker() defaults: every runaway refused by its deadline, no legit
scenario ever refused."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker
from loopguard_core.testing import Scenario, drive, load_scenarios

from ..conftest import scenarios_path

CORPUS = scenarios_path()
pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason=f"scenario corpus not found at {CORPUS}")


def scenarios() -> list[Scenario]:
    return load_scenarios(CORPUS) if CORPUS.exists() else []


@pytest.mark.parametrize("scenario", [s for s in scenarios() if s.kind == "runaway"], ids=lambda s: s.name)
def test_runaway_is_refused_by_its_deadline(scenario: Scenario) -> None:
    result = drive(Breaker(), scenario.calls)
    assert result.refused_at is not None, f"{scenario.name} was never refused"
    assert scenario.trip_by is not None
    assert result.refused_at <= scenario.trip_by
    assert result.executed == result.refused_at - 1  # the refused call's body never ran


@pytest.mark.parametrize("scenario", [s for s in scenarios() if s.kind == "legit"], ids=lambda s: s.name)
def test_legit_work_is_never_refused(scenario: Scenario) -> None:
    result = drive(Breaker(), scenario.calls)
    assert result.refused_at is None, f"{scenario.name} refused at call {result.refused_at}: {result.trip}"
    assert result.executed == len(scenario.calls)


def test_corpus_has_both_kinds() -> None:
    kinds = {s.kind for s in scenarios()}
    assert kinds == {"runaway", "legit"}
