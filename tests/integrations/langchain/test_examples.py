"""The LangChain example and the demo hook run with no API key and report the trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

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


def test_langchain_example_reports_each_stop(capsys: pytest.CaptureFixture[str]) -> None:
    report = load("langchain_agent").main()
    assert report["middleware"] == {"reason": "loop", "searches": 3}
    assert report["end"]["searches"] == 3 and "[loopguard] run stopped" in report["end"]["final"]
    assert report["handler"] == {"reason": "loop", "searches": 3}
    assert report["steer"] == {"reason": "refusals", "searches": 3, "told": 2}  # told twice, the third stops
    assert "stopped after 3 searches" in capsys.readouterr().out


def test_demo_hook() -> None:
    from loopguard_langchain._demo import run_demo

    row = run_demo()
    assert row["framework"] == "langchain"
    assert (row["tool_body_runs"], row["reason"], row["caller_saw"]) == (3, "loop", "LoopGuardTripped")
    assert row["path"].startswith("sync invoke")
