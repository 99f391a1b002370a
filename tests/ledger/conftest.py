from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from loopguard_core.ledger import Ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def filled(ledger_path: Path) -> Callable[[int], Ledger]:
    """A ledger with ``n`` rows over two sessions, one of them ending in a trip."""

    def make(n: int = 20) -> Ledger:
        ledger = Ledger(ledger_path)
        for i in range(1, n + 1):
            ledger.record(
                session_id="s1" if i <= n // 2 else "s2",
                origin="model" if i % 3 else "tool",
                turn=i,
                tool=None if i % 3 else "search",
                input_text=f"input {i}",
                input_tokens=10 * i,
                output_tokens=i,
                cost_usd=0.001 * i,
                duration_ms=i,
            )
        return ledger

    return make


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the append-only triggers dropped: an attacker with file access."""
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("loopguard_ledger_no_update", "loopguard_ledger_no_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    return conn


def columns(conn: sqlite3.Connection, seq: int) -> tuple[object, ...]:
    return tuple(conn.execute("SELECT * FROM loopguard_ledger WHERE seq = ?", (seq,)).fetchone())


# -- PostgreSQL -------------------------------------------------------------------------------------
# A real server (LOOPGUARD_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test). Each test gets
# a schema of its own (the ledger URL's ``schema=`` parameter) that is dropped afterwards. Unreachable:
# skipped with the reason, or failed when LOOPGUARD_REQUIRE_SERVICES=1 (CI).

POSTGRES_URL = os.environ.get("LOOPGUARD_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_ENV = "LOOPGUARD_REQUIRE_SERVICES"


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() == "1"


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema=`` set (the ledger's own URL parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _ping_postgres() -> None:
    import psycopg

    psycopg.connect(POSTGRES_URL, connect_timeout=2).close()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a reachable PostgreSQL server (skips or fails the test otherwise)."""
    if not services_required():
        pytest.importorskip("psycopg", reason="needs the postgres extra: pip install 'loopguard-core[postgres]'")
    try:
        _ping_postgres()
    except Exception as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable ({type(exc).__name__}: {exc})"
        if services_required():
            pytest.fail(f"{message}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
        pytest.skip(
            f"{message}; start one there (e.g. docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust "
            f"-e POSTGRES_DB=test postgres), or point LOOPGUARD_POSTGRES_URL at one, or set {REQUIRE_ENV}=1 "
            "to fail instead"
        )
    return POSTGRES_URL


@pytest.fixture
def pg_admin(postgres_server: str) -> Iterator[Any]:
    """A plain autocommit psycopg connection to the test database."""
    import psycopg

    conn = psycopg.connect(postgres_server, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def pg_schema(pg_admin: Any) -> Iterator[str]:
    """A fresh schema name, dropped (with everything in it) after the test."""
    name = f"lg_test_{uuid.uuid4().hex[:12]}"
    yield name
    pg_admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_url(postgres_server: str, pg_schema: str) -> str:
    """A ledger URL naming this test's own schema."""
    return with_schema(postgres_server, pg_schema)


@pytest.fixture
def pg_filled(pg_url: str) -> Iterator[Callable[[int], Ledger]]:
    """A PostgreSQL ledger with ``n`` rows over two sessions, like ``filled``."""
    ledgers: list[Ledger] = []

    def make(n: int = 20) -> Ledger:
        ledger = Ledger(pg_url)
        ledgers.append(ledger)
        fill(ledger, n)
        return ledger

    yield make
    for ledger in ledgers:
        ledger.close()


def fill(ledger: Ledger, n: int) -> None:
    for i in range(1, n + 1):
        ledger.record(
            session_id="s1" if i <= n // 2 else "s2",
            origin="model" if i % 3 else "tool",
            turn=i,
            tool=None if i % 3 else "search",
            input_text=f"input {i}",
            input_tokens=10 * i,
            output_tokens=i,
            cost_usd=0.001 * i,
            duration_ms=i,
        )


class PgRaw:
    """Raw SQL on a ledger schema with its append-only triggers disabled: an attacker with DB access."""

    def __init__(self, admin: Any, schema: str) -> None:
        self.conn, self.schema = admin, schema
        admin.execute(f'SET search_path = "{schema}"')
        for table in ("loopguard_meta", "loopguard_ledger", "loopguard_checkpoints"):
            admin.execute(f'ALTER TABLE "{schema}".{table} DISABLE TRIGGER {table}_append_only')

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params)

    def row(self, seq: int) -> tuple[Any, ...]:
        return tuple(self.execute("SELECT * FROM loopguard_ledger WHERE seq = %s", (seq,)).fetchone())


@pytest.fixture
def pg_raw(pg_admin: Any, pg_schema: str) -> Callable[[], PgRaw]:
    return lambda: PgRaw(pg_admin, pg_schema)
