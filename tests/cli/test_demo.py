"""``loopguard demo`` shows a runaway stopped, with what it saved, and needs no API key.

Its ledger lands where the commands it prints look for it, and every printed command runs as printed.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest

click = pytest.importorskip("click", reason="needs the cli extra: pip install 'loopguard-core[cli]'")
from click.testing import CliRunner  # noqa: E402

from loopguard_core import demo as demo_module  # noqa: E402
from loopguard_core.cli import build  # noqa: E402
from loopguard_core.demo import DEFAULT_DB, DemoLedgerRefused, framework_table, run_demo  # noqa: E402
from loopguard_core.ledger import Ledger  # noqa: E402

#: A command the user is told to run: "loopguard <subcommand> ..." up to the end of the line.
HINT = re.compile(r"\bloopguard (?:sessions|ledger|review|attest|replay|demo)(?=\s|$).*$")

#: What the framework adapters report (one row per framework; the real ones, plus a skip and an error).
FRAMEWORK_ROWS: tuple[dict[str, Any], ...] = (
    {
        "framework": "langchain",
        "tool_body_runs": 3,
        "reason": "loop",
        "caller_saw": "LoopGuardTripped",
        "path": "sync invoke (create_agent + LoopGuardMiddleware)",
    },
    {
        "framework": "langgraph",
        "tool_body_runs": 3,
        "reason": "loop",
        "caller_saw": "LoopGuardTripped",
        "path": "sync invoke (StateGraph + guarded_tool_node)",
    },
    {
        "framework": "crewai",
        "tool_body_runs": 3,
        "reason": "loop",
        "caller_saw": "CrewAILoopGuardTripped",
        "path": "sync Crew.kickoff (guard_crew)",
    },
    {"framework": "pydantic-ai", "skipped": "not installed (pydantic_ai)"},
    {"framework": "anthropic", "error": "RuntimeError: the demo agent was not stopped"},
)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, as a new user has, with no ledger configured and no API key."""
    monkeypatch.chdir(tmp_path)
    for name in ("LOOPGUARD_DB", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def hints(output: str) -> list[str]:
    """Every command the output tells the user to run, as they would copy it."""
    found = []
    for line in output.splitlines():
        match = HINT.search(line)
        if match:
            found.append(match.group(0).strip())
    return found


def run_hint(runner: CliRunner, command: str) -> Any:
    argv = shlex.split(command)
    assert argv[0] == "loopguard"
    return runner.invoke(build(), argv[1:])


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


def test_demo_writes_its_ledger_to_the_working_directory_and_says_so(in_tmp: Path) -> None:
    result = CliRunner().invoke(build(), ["demo", "--no-frameworks"])
    assert result.exit_code == 0, result.output
    assert (in_tmp / DEFAULT_DB).is_file()
    assert f"ledger:    {DEFAULT_DB} ({(in_tmp / DEFAULT_DB).resolve()}): created for this demo" in result.output
    sessions = CliRunner().invoke(build(), ["sessions", "--db", DEFAULT_DB, "--json"])
    assert sessions.exit_code == 0 and len(sessions.output.splitlines()) == 1


@pytest.mark.parametrize("configured", [False, True], ids=["no-LOOPGUARD_DB", "LOOPGUARD_DB-elsewhere"])
def test_every_hint_the_demo_prints_runs_as_printed(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, configured: bool
) -> None:
    if configured:  # the user's own ledger is configured: the demo neither writes to it nor depends on it
        own = in_tmp / "own.db"
        Ledger(own).record(session_id="mine", origin="model", turn=1)
        monkeypatch.setenv("LOOPGUARD_DB", str(own))
    runner = CliRunner()
    result = runner.invoke(build(), ["demo", "--no-frameworks"])
    assert result.exit_code == 0, result.output
    commands = hints(result.output)
    subcommands = {shlex.split(c)[1] for c in commands}
    assert {"sessions", "ledger", "review", "attest"} <= subcommands, commands
    for command in commands:
        done = run_hint(runner, command)
        assert done.exit_code == 0, f"{command}\n{done.output}"
    assert (in_tmp / "loopguard-demo-review.html").read_text().startswith("<!DOCTYPE html>")
    session = next(s for s in Ledger(DEFAULT_DB, read_only=True).sessions())
    review = runner.invoke(build(), ["review", session.session_id, "--db", DEFAULT_DB, "--require-attestation"])
    assert review.exit_code == 0 and "ATTESTED by NAME" in review.output
    if configured:
        assert [s.session_id for s in Ledger(in_tmp / "own.db", read_only=True).sessions()] == ["mine"]
        assert "$LOOPGUARD_DB is not used by the demo" in result.output


def test_the_demo_can_be_run_again(in_tmp: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(build(), ["demo", "--no-frameworks", "--no-review"])
    second = runner.invoke(build(), ["demo", "--no-frameworks"])
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "one more session in the demo's ledger, its 1 earlier one(s) kept" in second.output
    assert len(Ledger(DEFAULT_DB, read_only=True).sessions()) == 2
    assert Ledger(DEFAULT_DB, read_only=True).verify().ok
    for command in hints(second.output):
        assert run_hint(runner, command).exit_code == 0, command


def dump(path: Path) -> list[str]:
    """Everything a SQLite file holds (its bytes may change when a reader checkpoints the WAL)."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_the_demo_never_writes_to_a_file_it_did_not_create(in_tmp: Path) -> None:
    runner = CliRunner()
    # Not a ledger: a text file that happens to have the demo's name.
    (in_tmp / DEFAULT_DB).write_bytes(b"my notes\n")
    refused = runner.invoke(build(), ["demo", "--no-frameworks"])
    assert refused.exit_code == 2
    assert "not a loopguard ledger" in refused.output and "left untouched" in refused.output
    assert (in_tmp / DEFAULT_DB).read_bytes() == b"my notes\n"
    # Some other SQLite database.
    other = in_tmp / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = dump(other)
    assert runner.invoke(build(), ["demo", "--no-frameworks", "--db", str(other)]).exit_code == 2
    assert dump(other) == before
    # A real ledger: its rows can never be removed, so the demo adds none.
    real = in_tmp / "ledger.db"
    with Ledger(real) as ledger:
        ledger.record(session_id="production-run", origin="model", turn=1)
    before = dump(real)
    refused = runner.invoke(build(), ["demo", "--no-frameworks", "--db", str(real)])
    assert refused.exit_code == 2 and "1 session(s) the demo did not write" in refused.output
    assert dump(real) == before
    with pytest.raises(DemoLedgerRefused, match="not 'postgresql://x/y'"):
        run_demo(db_path="postgresql://x/y", say=lambda _: None, frameworks=False)


def test_a_missing_default_ledger_points_at_the_demo_ledger(in_tmp: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(build(), ["demo", "--no-frameworks", "--no-review"]).exit_code == 0
    bare = runner.invoke(build(), ["sessions"])
    assert bare.exit_code == 2 and f"add --db {DEFAULT_DB}" in bare.output


def _aligned(table: str, width: int) -> None:
    lines = table.splitlines()
    assert all(len(line) <= width for line in lines), table
    header = lines[0]
    starts = [header.index(name) for name in ("framework", "stopped by", "tool ran", "caller got", "run through")]
    assert starts == sorted(starts)
    for row in FRAMEWORK_ROWS:
        line = next(line for line in lines if line.startswith(row["framework"] + " "))
        if "reason" in row:
            cells = [row["framework"], row["reason"], f"{row['tool_body_runs']}x", row["caller_saw"]]
            assert [line.index(cell, start) for cell, start in zip(cells, starts)] == starts[:4], table
            assert line[starts[4] :].strip() and row["path"].startswith(line[starts[4] :].strip()), table
        else:
            assert line[starts[1] :].startswith("skipped" if "skipped" in row else "ERROR"), table
            assert line[starts[4] :].strip() in str(row.get("skipped") or row.get("error")), table
    # Wrapped text stays in its own column: continuation lines are blank left of "run through".
    for line in lines[2:]:
        if not any(line.startswith(r["framework"] + " ") for r in FRAMEWORK_ROWS):
            assert not line[: starts[4]].strip(), table


def test_the_framework_table_is_aligned_in_the_demo_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo_module, "_framework_demos", lambda *args: FRAMEWORK_ROWS)
    lines: list[str] = []
    run_demo(db_path=tmp_path / "d.db", say=lambda text: lines.extend(str(text).split("\n")), review=False)
    top = lines.index("the same runaway inside each framework (real runtime, scripted fake model):")
    end = lines.index("", top) if "" in lines[top:] else len(lines)
    table = "\n".join(lines[top + 1 : end])
    _aligned(table, demo_module.TABLE_WIDTH)


@pytest.mark.parametrize("width", [80, 100, 140])
def test_the_framework_table_fits_the_width(width: int) -> None:
    table = framework_table(FRAMEWORK_ROWS, width=width)
    _aligned(table, width)
    assert len(table.splitlines()[1]) == width or width > 100  # the header rule spans the table
