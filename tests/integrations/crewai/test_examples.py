"""The CrewAI examples and the `loopguard demo` hook run with no API key and report the stopped runaway."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)


def test_agent_example_reports_the_stopped_runaway(capsys: pytest.CaptureFixture[str]) -> None:
    report = load("crewai_agent").main()
    assert report["stopped"] is True
    assert report["reason"] == "loop"
    assert report["searches"] == 3
    assert "loopguard stopped the crew" in capsys.readouterr().out


def test_crew_example_stops_the_ping_pong_and_attributes_rows_per_agent(tmp_path: Path) -> None:
    report = load("crewai_crew").main(str(tmp_path / "ledger.db"))
    assert report["stopped"] is True
    assert report["reason"] == "loop"
    assert report["tool"] == "delegate_work_to_coworker"
    assert report["rows"]["triage/tool"] == 3
    assert report["rows"]["billing/model"] == 3
    assert report["rows"]["triage/breaker"] == 1
    assert report["verified"] is True


def test_demo_hook_stops_the_runaway_fast_and_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    from loopguard_crewai._demo import run_demo

    row = run_demo()
    assert row == {
        "framework": "crewai",
        "tool_body_runs": 3,
        "reason": "loop",
        "caller_saw": "CrewAILoopGuardTripped",
        "path": "sync Crew.kickoff (guard_crew)",
        "model_requests": 4,
    }
    assert capsys.readouterr().out == ""  # CrewAI's console chatter stays out of the demo report
