"""The Anthropic example and the demo hook run with no API key and report the trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_agent_example_reports_the_trip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    spec = importlib.util.spec_from_file_location("example_anthropic_agent", EXAMPLES / "anthropic_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    report = module.main()

    assert (report["stopped"], report["reason"], report["searches"]) == (True, "loop", 3)
    assert "loopguard stopped the run" in capsys.readouterr().out


def test_demo_hook_stops_the_runaway() -> None:
    from loopguard_anthropic._demo import run_demo

    result = run_demo()

    assert result["framework"] == "anthropic"
    assert result["tool_body_runs"] == 3
    assert result["reason"] == "loop"
    assert result["caller_saw"] == "LoopGuardTripped"
    assert result["model_requests"] == 4
