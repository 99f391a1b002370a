"""The LangGraph examples and the demo hook run with no API key and report the trip."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from ..langchain.test_examples import load, no_keys  # noqa: F401 - the autouse fixture applies here too


def test_langgraph_example_stops_and_pauses(capsys: pytest.CaptureFixture[str]) -> None:
    report = load("langgraph_agent").main()
    assert report["tool_node"] == {"reason": "loop", "polls": 8}  # a status poll gets poll patience (8)
    assert report["interrupt"]["reason"] == "loop" and report["interrupt"]["polls"] == 8
    assert "[loopguard] run stopped" in report["interrupt"]["final"]
    assert "paused after 8 polls" in capsys.readouterr().out


def test_multi_agent_example_trips_in_the_writer() -> None:
    report = load("langgraph_multi_agent").main()
    assert report == {"stopped": True, "agent": "writer", "reason": "loop", "searches": 3}


def test_demo_hook() -> None:
    from loopguard_langgraph._demo import run_demo

    row = run_demo()
    assert row["framework"] == "langgraph"
    assert (row["tool_body_runs"], row["reason"], row["caller_saw"]) == (3, "loop", "LoopGuardTripped")
