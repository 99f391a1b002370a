"""``loopguard ledger verify|show`` and ``loopguard sessions`` on a postgresql:// URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from loopguard_core.cli import build
from loopguard_core.ledger import Ledger

pytestmark = pytest.mark.postgres


def run(*args: Any) -> Any:
    return CliRunner().invoke(build(), [str(a) for a in args])


def test_verify_exits_0_when_intact_and_1_when_tampered(
    pg_filled: Callable[[int], Ledger], pg_raw: Callable[[], Any]
) -> None:
    url = pg_filled(12).url
    ok = run("ledger", "verify", url)
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "12 rows" in ok.output and url in ok.output

    pg_raw().execute("UPDATE loopguard_ledger SET cost_micros = 0 WHERE seq = 3")
    bad = run("ledger", "verify", url)
    assert bad.exit_code == 1
    assert "TAMPERED" in bad.output and "edited" in bad.output and "seq 3" in bad.output
    data = json.loads(run("ledger", "verify", url, "--json").output)
    assert data["ok"] is False and data["problems"][0]["seqs"] == [3]


def test_sessions_and_show_read_postgres(pg_filled: Callable[[int], Ledger]) -> None:
    url = pg_filled(10).url
    lines = [json.loads(line) for line in run("sessions", "--db", url, "--json").output.splitlines()]
    assert [(s["session_id"], s["rows"]) for s in lines] == [("s1", 5), ("s2", 5)]
    rows = [json.loads(line) for line in run("ledger", "show", url, "--json", "--session", "s2").output.splitlines()]
    assert [r["seq"] for r in rows] == [6, 7, 8, 9, 10]
    exported = run("ledger", "export", url)
    assert exported.exit_code == 0 and len(exported.output.splitlines()) == 10


def test_unreachable_server_exits_2_without_the_password() -> None:
    pytest.importorskip("psycopg")
    result = run("ledger", "verify", "postgresql://u:hunter2@127.0.0.1:1/test?connect_timeout=2")
    assert result.exit_code == 2
    assert "cannot reach the PostgreSQL ledger at postgresql://u@127.0.0.1:1/test" in result.output
    assert "hunter2" not in result.output


def test_missing_ledger_schema_exits_2(postgres_server: str, pg_schema: str) -> None:
    from .conftest import with_schema

    result = run("ledger", "verify", with_schema(postgres_server, pg_schema))
    assert result.exit_code == 2 and "no loopguard ledger" in result.output
