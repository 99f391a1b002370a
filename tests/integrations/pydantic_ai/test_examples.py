"""The Pydantic AI examples and the demo hook run with no API key and report the trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_agent_example_reports_the_trip(capsys: pytest.CaptureFixture[str]) -> None:
    report = load("pydantic_ai_agent").main()

    assert report["stopped"] is True
    assert report["reason"] == "loop"
    assert report["searches"] == 3
    assert "loopguard stopped the run" in capsys.readouterr().out


def test_delegation_example_attributes_both_agents_in_one_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    report = load("pydantic_ai_delegation").main()

    assert report["stopped"] is True
    assert (report["reason"], report["agent"], report["tool"]) == ("loop", "editor", "ask_researcher")
    assert report["per_agent"]["editor/tool"] == 3
    assert report["per_agent"]["researcher/tool"] >= 1
    assert report["per_agent"]["editor/breaker"] == 1
    assert report["ledger_ok"] is True
    assert "loopguard stopped the" in capsys.readouterr().out  # the example names who it stopped


def test_demo_hook_stops_the_runaway() -> None:
    from loopguard_pydantic_ai._demo import run_demo

    result = run_demo()

    assert result["framework"] == "pydantic-ai"
    assert result["tool_body_runs"] == 3
    assert result["reason"] == "loop"
    assert result["caller_saw"] == "LoopGuardTripped"
    assert result["path"]
