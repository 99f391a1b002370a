"""Fixtures for the idempotency suite: every store, real servers reached or skipped (or failed when
``LOOPGUARD_REQUIRE_SERVICES=1``), a wall clock moved by hand, and raw views of what each store keeps at rest.

Redis records of a test live under a namespace of their own (deleted afterwards); PostgreSQL records in a schema
of their own (dropped afterwards). Nothing else on the shared servers is touched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.idempotency import (
    MemorySideEffects,
    PostgresSideEffects,
    RedisSideEffects,
    SideEffectStore,
    SQLiteSideEffects,
)

# The same reach-or-skip fixtures as the store and ledger suites (imported, so pytest registers them here).
from ..ledger.conftest import postgres_server, with_schema
from ..stores.conftest import redis_url

__all__ = ["postgres_server", "redis_url"]

STORES = ("memory", "sqlite", "redis", "postgres")
DURABLE = ("sqlite", "redis", "postgres")


class WallClock:
    """Epoch seconds that move only when told to (a store's ``clock=``). Thread-safe."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


def redis_namespace() -> str:
    return f"lgtest-{uuid.uuid4().hex[:12]}"


def delete_namespace(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_dump(url: str, namespace: str) -> bytes:
    """Every key and value of ``namespace``, as raw bytes."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        out = b""
        for name in client.scan_iter(match=f"{namespace}:*", count=1000):
            out += name + b"\n"
            for field, value in client.hgetall(name).items():
                out += field + b"=" + value + b"\n"
        return out
    finally:
        client.close()


class Backend:
    """How to build one kind of store for a test, with URLs a subprocess can use too."""

    def __init__(self, kind: str, url: str, cleanup: Callable[[], None], raw: Callable[[], bytes]) -> None:
        self.kind, self.url, self._cleanup, self.raw = kind, url, cleanup, raw
        self.opened: list[Any] = []

    def open(self, **options: Any) -> SideEffectStore:
        store: SideEffectStore
        if self.kind == "memory":
            store = MemorySideEffects(**options)
        elif self.kind == "sqlite":
            store = SQLiteSideEffects(self.url, **options)
        elif self.kind == "redis":
            store = RedisSideEffects(self.url, **options)
        else:
            store = PostgresSideEffects(self.url, **options)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        self._cleanup()


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "effects.db"

    def raw() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob("effects.db*"))

    return Backend("sqlite", f"sqlite:///{path}", lambda: None, raw)


def _redis_backend(url: str) -> Backend:
    namespace = redis_namespace()
    sep = "&" if "?" in url else "?"
    return Backend(
        "redis",
        f"{url}{sep}namespace={namespace}",
        lambda: delete_namespace(url, namespace),
        lambda: redis_dump(url, namespace),
    )


def _postgres_backend(server: str) -> Backend:
    import psycopg

    schema = f"lg_se_{uuid.uuid4().hex[:12]}"

    def raw() -> bytes:
        """Every value of every row: bytea as its bytes, the rest as text."""
        with psycopg.connect(server, autocommit=True) as conn:
            rows = conn.execute(f'SELECT * FROM "{schema}".loopguard_side_effects').fetchall()
        return b"\n".join(
            bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for row in rows for v in row
        )

    def cleanup() -> None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return Backend("postgres", with_schema(server, schema), cleanup, raw)


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        return Backend("memory", "memory://", lambda: None, lambda: b"")
    if kind == "sqlite":
        return _sqlite_backend(tmp_path)
    if kind == "redis":
        return _redis_backend(request.getfixturevalue("redis_url"))
    return _postgres_backend(request.getfixturevalue("postgres_server"))


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each kind of store in turn (Redis and PostgreSQL skip when their server is absent)."""
    made = make_backend(request.param, request, tmp_path)
    yield made
    made.close()


@pytest.fixture(params=DURABLE)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The stores that outlive a process: SQLite, Redis, PostgreSQL."""
    made = make_backend(request.param, request, tmp_path)
    yield made
    made.close()


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM loopguard_side_effects").fetchall()


NOBODY = 65534


def as_another_user(fn: Callable[[], Any]) -> Any:
    """``fn()`` run by a user that cannot write root's files (a forked child as ``nobody`` when run as root);
    an exception comes back as ``(type name, message)``."""
    if os.geteuid() != 0:
        try:
            return fn()
        except Exception as exc:
            return (type(exc).__name__, str(exc))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out: Any = {"result": fn()}
        except BaseException as exc:
            out = {"error": [type(exc).__name__, str(exc)]}
        with os.fdopen(write, "w") as fh:
            fh.write(json.dumps(out, default=str))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    return tuple(out["error"]) if "error" in out else out["result"]
