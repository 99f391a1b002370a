"""``loopguard demo`` shows a runaway stopped, with what it saved, and needs no API key."""

from __future__ import annotations

from pathlib import Path

import pytest

click = pytest.importorskip("click", reason="needs the cli extra: pip install 'loopguard-core[cli]'")
from click.testing import CliRunner  # noqa: E402

from loopguard_core.cli import build  # noqa: E402
from loopguard_core.demo import run_demo  # noqa: E402


def test_demo_stops_the_runaway_and_reports_savings(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_demo(db_path=tmp_path / "demo.db", say=lines.append, frameworks=False)
    assert report.result.trip is not None
    assert report.result.trip.reason == "loop"
    assert report.result.tool_calls == 3
    assert report.saved_usd > 0.5
    text = "\n".join(lines)
    assert "stopped:   loop" in text
    assert "saved:" in text


def test_demo_command_runs_without_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(build(), ["demo", "--no-frameworks", "--db", str(tmp_path / "d.db")])
    assert result.exit_code == 0, result.output
    assert "stopped:   loop" in result.output
