"""The ledger, sessions, review and attest commands, driven through click's CliRunner."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loopguard_core.cli import build
from loopguard_core.ledger import Ledger
from loopguard_core.spec import Spec, SpecStore

DONE = "Extract every page title from https://example.com into titles.csv, then stop."


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    SpecStore(path).save(
        Spec.create(
            what_it_does="Crawl example.com and extract the page titles.",
            what_it_does_not="It does not follow external links.",
            done_looks_like=DONE,
            session_id="run-1",
        )
    )
    ledger = Ledger(path)
    for turn in range(1, 4):
        ledger.record(
            session_id="run-1",
            origin="model",
            turn=turn,
            input_text="secret prompt",
            input_tokens=100,
            output_tokens=10,
            cost_usd=0.01,
        )
        ledger.record(session_id="run-1", origin="tool", turn=turn, tool="fetch", input_text="fetch x")
    ledger.record(session_id="run-1", origin="breaker", turn=4, tool="fetch", passed=False, breach_reason="loop")
    ledger.record(session_id="other", origin="model", turn=1, input_tokens=5)
    ledger.close()
    return path


def run(runner: CliRunner, *args: Any) -> Any:
    return runner.invoke(build(), [str(a) for a in args], catch_exceptions=False)


def _tamper(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS loopguard_ledger_no_update")
    conn.execute("DROP TRIGGER IF EXISTS loopguard_ledger_no_delete")
    conn.execute(sql)
    conn.close()


def test_sessions_table_and_json(runner: CliRunner, db: Path) -> None:
    result = run(runner, "sessions", "--db", db)
    assert result.exit_code == 0
    assert "run-1" in result.output and "other" in result.output and "2 session(s)" in result.output
    lines = [json.loads(line) for line in run(runner, "sessions", "--db", db, "--json").output.splitlines()]
    assert [(s["session_id"], s["rows"], s["trips"]) for s in lines] == [("run-1", 7, 1), ("other", 1, 0)]
    assert lines[0]["tokens"] == 330 and lines[0]["cost_usd"] == pytest.approx(0.03)


def test_ledger_show(runner: CliRunner, db: Path) -> None:
    result = run(runner, "ledger", "show", db, "--session", "run-1")
    assert result.exit_code == 0 and "7 row(s)" in result.output and "breaker" in result.output
    assert "secret prompt" not in result.output
    rows = [json.loads(line) for line in run(runner, "ledger", "show", db, "--json", "--last", "2").output.splitlines()]
    assert [r["seq"] for r in rows] == [7, 8]


def test_db_path_from_environment(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(build(), ["ledger", "verify"], env={"LOOPGUARD_DB": str(db)})
    assert result.exit_code == 0 and "8 rows" in result.output


def test_verify_exit_codes(runner: CliRunner, db: Path, tmp_path: Path) -> None:
    ok = run(runner, "ledger", "verify", db)
    assert ok.exit_code == 0 and "OK" in ok.output and "8 rows" in ok.output
    assert run(runner, "ledger", "verify", db, "-q").output == ""

    _tamper(db, "UPDATE loopguard_ledger SET cost_micros = 0 WHERE seq = 3")
    bad = run(runner, "ledger", "verify", db)
    assert bad.exit_code == 1
    assert "TAMPERED" in bad.output and "edited" in bad.output and "seq 3" in bad.output
    data = json.loads(run(runner, "ledger", "verify", db, "--json").output)
    assert data["ok"] is False and data["problems"][0]["kind"] == "edited" and data["problems"][0]["seqs"] == [3]

    missing = runner.invoke(build(), ["ledger", "verify", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no ledger at" in missing.output
    assert not (tmp_path / "nope.db").exists()
    not_a_ledger = tmp_path / "other.db"
    sqlite3.connect(not_a_ledger).execute("CREATE TABLE t (x)")
    assert runner.invoke(build(), ["ledger", "verify", str(not_a_ledger)]).exit_code == 2


def test_checkpoint_keygen_and_verify_against_it(runner: CliRunner, db: Path, tmp_path: Path) -> None:
    key = tmp_path / "cp.key"
    made = run(runner, "ledger", "keygen", key)
    assert made.exit_code == 0 and key.exists() and Path(f"{key}.pub").exists()
    assert runner.invoke(build(), ["ledger", "keygen", str(key)]).exit_code == 2  # never overwrites a key

    note = tmp_path / "cp.note"
    result = run(runner, "ledger", "checkpoint", db, "--key", key, "-o", note)
    assert result.exit_code == 0 and note.read_text().splitlines()[1] == "8"
    good = run(runner, "ledger", "verify", db, "--checkpoint", note, "--public-key", f"{key}.pub")
    assert good.exit_code == 0 and "matches the signed checkpoint at row 8" in good.output

    _tamper(db, "DELETE FROM loopguard_ledger WHERE seq > 5")
    assert run(runner, "ledger", "verify", db).exit_code == 0  # the chain alone cannot see the cut...
    cut = run(runner, "ledger", "verify", db, "--checkpoint", note, "--public-key", f"{key}.pub")
    assert cut.exit_code == 1 and "truncated" in cut.output  # ...the checkpoint can

    garbage = tmp_path / "garbage.note"
    garbage.write_text("not a checkpoint\n")
    bad = runner.invoke(build(), ["ledger", "verify", str(db), "--checkpoint", str(garbage)])
    assert bad.exit_code == 2 and "not a loopguard checkpoint" in bad.output


def test_checkpoint_to_stdout_unsigned(runner: CliRunner, db: Path) -> None:
    result = run(runner, "ledger", "checkpoint", db)
    assert result.exit_code == 0 and result.output.startswith("loopguard-ledger/")
    assert "\u2014" not in result.output


def test_export(runner: CliRunner, db: Path, tmp_path: Path) -> None:
    out = run(runner, "ledger", "export", db, "--session", "other")
    assert [json.loads(line)["session_id"] for line in out.output.splitlines()] == ["other"]
    target = tmp_path / "all.jsonl"
    result = run(runner, "ledger", "export", db, "-o", target)
    assert result.exit_code == 0 and len(target.read_text().splitlines()) == 8


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_review_formats(runner: CliRunner, db: Path, tmp_path: Path, fmt: str) -> None:
    result = run(runner, "review", "run-1", "--db", db, "--format", fmt)
    assert result.exit_code == 0 and DONE in result.output
    out = tmp_path / f"review.{fmt}"
    assert run(runner, "review", "run-1", "--db", db, "--format", fmt, "-o", out).exit_code == 0
    assert out.read_text() == result.output


def test_review_unknown_session_exits_2(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(build(), ["review", "nope", "--db", str(db)])
    assert result.exit_code == 2 and "has no spec and no ledger rows" in result.output


def test_attest_and_gate(runner: CliRunner, db: Path) -> None:
    gate = runner.invoke(build(), ["review", "run-1", "--db", str(db), "--require-attestation"])
    assert gate.exit_code == 1 and "nobody has attested it" in gate.output

    frame_hash = next(
        line.split()[-1]
        for line in run(runner, "review", "run-1", "--db", db).output.splitlines()
        if line.startswith("frame hash")
    )
    done = run(
        runner, "attest", "run-1", "--reviewer", "ana", "--notes", "checked", "--frame-hash", frame_hash, "--db", db
    )
    assert done.exit_code == 0 and f"frame hash {frame_hash}" in done.output
    assert run(runner, "review", "run-1", "--db", db, "--require-attestation").exit_code == 0

    Ledger(db).record(session_id="run-1", origin="model", turn=5)
    assert runner.invoke(build(), ["review", "run-1", "--db", str(db), "--require-attestation"]).exit_code == 1
    stale = runner.invoke(
        build(), ["attest", "run-1", "--reviewer", "ana", "--frame-hash", frame_hash, "--db", str(db)]
    )
    assert stale.exit_code == 1 and "changed after the frame you reviewed" in stale.output
    assert runner.invoke(build(), ["attest", "run-1", "--db", str(db)]).exit_code == 2  # --reviewer is required


def test_verify_shows_a_progress_bar_on_a_terminal(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from loopguard_core.cli import _ledger

    monkeypatch.setattr(_ledger, "_PROGRESS_MIN_ROWS", 4)
    buf = io.StringIO()
    err = Console(file=buf, force_terminal=True, width=100)
    result = _ledger._verify_with_progress(Ledger(db, read_only=True), None, None, err)
    assert result.ok
    assert "verifying" in buf.getvalue() and "8/8" in buf.getvalue()


# -- one way to name the ledger everywhere ---------------------------------------------------------

#: Every command that reads a ledger, with the arguments it needs besides the ledger.
LEDGER_COMMANDS: dict[str, list[str]] = {
    "sessions": ["sessions"],
    "ledger show": ["ledger", "show"],
    "ledger verify": ["ledger", "verify"],
    "ledger export": ["ledger", "export"],
    "ledger checkpoint": ["ledger", "checkpoint"],
    "review": ["review", "run-1"],
    "attest": ["attest", "run-1", "--reviewer", "ana"],
}


@pytest.mark.parametrize("how", ["PATH", "--db", "$LOOPGUARD_DB", "PATH and --db"])
@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_every_ledger_command_takes_path_or_db(runner: CliRunner, db: Path, command: str, how: str) -> None:
    argv = list(LEDGER_COMMANDS[command])
    env: dict[str, str] = {}
    if how == "PATH":
        argv.append(str(db))
    elif how == "--db":
        argv += ["--db", str(db)]
    elif how == "PATH and --db":  # the same ledger twice is fine
        argv += [str(db), "--db", str(db)]
    else:
        env["LOOPGUARD_DB"] = str(db)
    result = runner.invoke(build(), argv, env=env)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_two_different_ledgers_are_refused(runner: CliRunner, db: Path, tmp_path: Path, command: str) -> None:
    result = runner.invoke(build(), [*LEDGER_COMMANDS[command], str(db), "--db", str(tmp_path / "other.db")])
    assert result.exit_code == 2 and "two ledgers given" in result.output
    assert not (tmp_path / "other.db").exists()


def test_every_ledger_command_has_the_same_help_for_the_ledger(runner: CliRunner) -> None:
    helps = {}
    for command, argv in LEDGER_COMMANDS.items():
        words = [w for w in argv if not w.startswith("-") and w not in ("run-1", "ana")]
        text = runner.invoke(build(), [*words, "--help"], terminal_width=400).output
        usage = text.splitlines()[0]
        assert "[PATH]" in usage, (command, usage)
        line = next(line for line in text.splitlines() if line.strip().startswith("--db PATH"))
        helps[command] = " ".join(line.split()[2:])
    assert len(set(helps.values())) == 1, helps
    assert "$LOOPGUARD_DB" in next(iter(helps.values()))


# -- unknown sessions and session prefixes ---------------------------------------------------------


@pytest.mark.parametrize("command", [["ledger", "show"], ["ledger", "export"], ["ledger", "show", "--json"]])
def test_an_unknown_session_exits_2(runner: CliRunner, db: Path, command: list[str]) -> None:
    result = runner.invoke(build(), [*command, str(db), "--session", "nope"])
    assert result.exit_code == 2
    assert f"no session 'nope' (nor any starting with it) in {db}" in result.output
    assert f"loopguard sessions --db {db}" in result.output


@pytest.fixture
def prefixed(db: Path) -> Path:
    """Two sessions sharing the prefix "abc1" next to run-1 and other."""
    for sid in ("abc123-first", "abc199-second"):
        SpecStore(db).save(
            Spec.create(
                what_it_does="Crawl example.com and extract the page titles.",
                what_it_does_not="It does not follow external links.",
                done_looks_like=DONE,
                session_id=sid,
            )
        )
        Ledger(db).record(session_id=sid, origin="model", turn=1, input_tokens=3)
    return db


def test_show_and_export_take_a_session_prefix(runner: CliRunner, prefixed: Path) -> None:
    rows = [
        json.loads(line)
        for line in run(runner, "ledger", "show", prefixed, "--json", "--session", "abc12").output.splitlines()
    ]
    assert [r["session_id"] for r in rows] == ["abc123-first"]
    exported = run(runner, "ledger", "export", prefixed, "--session", "ru")
    assert {json.loads(line)["session_id"] for line in exported.output.splitlines()} == {"run-1"}


def test_review_and_attest_take_a_session_prefix(runner: CliRunner, prefixed: Path) -> None:
    review = run(runner, "review", "abc19", "--db", prefixed)
    assert review.exit_code == 0 and "REVIEW FRAME  session abc199-second" in review.output
    done = run(runner, "attest", "abc19", "--db", prefixed, "--reviewer", "ana")
    assert done.exit_code == 0 and done.output.startswith("attested abc199-second by ana")
    assert run(runner, "review", "abc19", prefixed, "--require-attestation").exit_code == 0


@pytest.mark.parametrize(
    "command",
    [
        ["ledger", "show", "--session", "abc1"],
        ["ledger", "export", "--session", "abc1"],
        ["review", "abc1"],
        ["attest", "abc1", "--reviewer", "ana"],
    ],
)
def test_an_ambiguous_prefix_lists_the_candidates_and_exits_2(
    runner: CliRunner, prefixed: Path, command: list[str]
) -> None:
    result = runner.invoke(build(), [*command, "--db", str(prefixed)])
    assert result.exit_code == 2
    assert "session prefix 'abc1' is ambiguous: it starts 2 sessions" in result.output
    assert "  abc123-first\n  abc199-second\n" in result.output
    assert not Ledger(prefixed, read_only=True).verify().problems
    if command[0] == "attest":
        from loopguard_core.review import ReviewSurface

        with ReviewSurface(prefixed) as surface:
            assert surface.attestations("abc123-first") == surface.attestations("abc199-second") == []


def test_an_exact_id_wins_over_a_longer_one_it_prefixes(runner: CliRunner, prefixed: Path) -> None:
    Ledger(prefixed).record(session_id="abc1", origin="model", turn=1)
    rows = [
        json.loads(line)
        for line in run(runner, "ledger", "show", prefixed, "--json", "--session", "abc1").output.splitlines()
    ]
    assert [r["session_id"] for r in rows] == ["abc1"]


def test_review_shows_who_attested(runner: CliRunner, db: Path) -> None:
    assert "attestation   NOT ATTESTED: nobody has attested this session" in run(runner, "review", "run-1", db).output
    run(runner, "attest", "run-1", db, "--reviewer", "ana", "--notes", "titles checked")
    text = run(runner, "review", "run-1", db).output
    assert "attestation   ATTESTED by ana at " in text and "notes: titles checked" in text
    assert f"loopguard attest run-1 --db {db} --reviewer NAME --frame-hash " in text
