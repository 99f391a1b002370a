"""Where budget state lives: this process, a SQLite file (processes on one host), or Redis (many hosts).

Every store offers one primitive, ``transact(keys, step)``: load the states of ``keys`` atomically, let the
Python ``step`` change them (the rules in ``_rules``: the only copy), and save them all or none. Memory holds a
lock, SQLite a ``BEGIN IMMEDIATE`` transaction, Redis an optimistic ``WATCH`` / ``MULTI`` that retries when
another client changed a key first: concurrent runs can never together overspend a budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from .._extras import require
from .._sqlite_wal import use_wal
from ..errors import StoreError
from ._rules import new_state

__all__ = ["BudgetStore", "MemoryBudgets", "RedisBudgets", "SQLiteBudgets", "budget_store"]

_T = TypeVar("_T")
Step = Callable[[list[dict[str, Any]]], tuple[_T, bool]]


@runtime_checkable
class BudgetStore(Protocol):
    url: str

    def transact(self, keys: Sequence[str], step: Callable[[list[dict[str, Any]]], tuple[_T, bool]]) -> _T:
        """Load ``keys``' states (new ones empty), run ``step(states) -> (result, save)``, save if asked; atomic."""
        ...

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every stored state whose key starts with ``prefix`` (for reports)."""
        ...

    def close(self) -> None: ...


class MemoryBudgets:
    """Budgets for the breakers of this process."""

    url = "memory://"

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock
        self._states: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def transact(self, keys: Sequence[str], step: Callable[[list[dict[str, Any]]], tuple[_T, bool]]) -> _T:
        with self._lock:
            states = [json.loads(json.dumps(self._states[k])) if k in self._states else new_state() for k in keys]
            result, save = step(states)
            if save:
                for key, state in zip(keys, states):
                    self._states[key] = state
            return result

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: json.loads(json.dumps(v)) for k, v in self._states.items() if k.startswith(prefix)}

    def close(self) -> None:
        pass


class SQLiteBudgets:
    """Budgets in a SQLite file (WAL): every process on the host that opens it draws from the same budgets."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.wall_clock = wall_clock
        text = os.fspath(path)
        if not text or text == ":memory:":
            raise ValueError("SQLiteBudgets needs a file path (a ':memory:' database is not shared)")
        self.path = Path(text)
        self.url = f"sqlite:///{self.path}"
        self._timeout = float(busy_timeout)
        self._local = threading.local()
        with self._tx() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS loopguard_budgets (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "updated_at REAL NOT NULL)"
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
                use_wal(conn, self._timeout)
                conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot open the budget store {self.path}: {exc} (is the directory writable?)"
                ) from exc
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Any:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the budget store {self.path} is locked or read-only: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"the budget store {self.path} could not save: {exc}") from exc

    def transact(self, keys: Sequence[str], step: Callable[[list[dict[str, Any]]], tuple[_T, bool]]) -> _T:
        try:
            with self._tx() as conn:
                states = []
                for key in keys:
                    row = conn.execute("SELECT state FROM loopguard_budgets WHERE key = ?", (key,)).fetchone()
                    states.append(json.loads(row[0]) if row else new_state())
                result, save = step(states)
                if save:
                    now = time.time()
                    conn.executemany(
                        "INSERT INTO loopguard_budgets (key, state, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                        [(k, json.dumps(s, separators=(",", ":")), now) for k, s in zip(keys, states)],
                    )
                return result
        except sqlite3.Error as exc:
            raise StoreError(f"the budget store {self.path} failed: {exc}") from exc

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT key, state FROM loopguard_budgets WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
        )
        return {k: json.loads(s) for k, s in rows.fetchall()}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local = threading.local()


class RedisBudgets:
    """Budgets in Redis (extra ``redis``): every process on every host draws from the same budgets.

    Keys share one hash slot (``loopguard:{budgets}:...``) so a call drawing from several budgets stays atomic
    on a Redis Cluster too. A period's key expires 35 days after the period ends (kept for reports)."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 2.0,
        retries: int = 200,
        prefix: str = "loopguard:{budgets}:",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        redis = require("redis", extra="redis", purpose="budgets in Redis")
        self.wall_clock = wall_clock
        if "{" not in prefix or "}" not in prefix:
            raise ValueError(
                f"prefix must hold a hash tag such as '{{budgets}}' (one slot on a cluster), got {prefix!r}"
            )
        self._PREFIX = prefix
        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        self._watch_error = redis.WatchError
        self._redis_error = redis.RedisError
        self._retries = retries

    def transact(self, keys: Sequence[str], step: Callable[[list[dict[str, Any]]], tuple[_T, bool]]) -> _T:
        names = [self._PREFIX + k for k in keys]
        try:
            for _ in range(self._retries):
                with self._client.pipeline() as pipe:
                    try:
                        pipe.watch(*names)
                        raw = pipe.mget(names)
                        states = [json.loads(r) if r else new_state() for r in raw]
                        result, save = step(states)
                        if not save:
                            pipe.unwatch()
                            return result
                        pipe.multi()
                        for name, state in zip(names, states):
                            ttl = state.get("ttl_seconds")
                            pipe.set(name, json.dumps(state, separators=(",", ":")), ex=int(ttl) if ttl else None)
                        pipe.execute()
                        return result
                    except self._watch_error:
                        continue  # another client changed a budget first: judge again on its numbers
            raise StoreError(f"budgets in Redis at {self.url} stayed contended for {self._retries} attempts")
        except self._redis_error as exc:
            raise StoreError(f"budgets in Redis at {self.url} are unreachable: {exc}") from exc

    def states(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        try:
            for name in self._client.scan_iter(match=self._PREFIX + prefix + "*", count=500):
                raw = self._client.get(name)
                if raw:
                    key = (name.decode() if isinstance(name, bytes) else name)[len(self._PREFIX) :]
                    out[key] = json.loads(raw)
        except self._redis_error as exc:
            raise StoreError(f"budgets in Redis at {self.url} are unreachable: {exc}") from exc
        return dict(sorted(out.items()))

    def close(self) -> None:
        self._client.close()


def budget_store(url: str) -> BudgetStore:
    """``memory://``, ``sqlite:///path`` (or a path), ``redis://host:port/db``."""
    if not isinstance(url, str) or not url:
        raise TypeError(f"budget_store needs a URL such as 'sqlite:///budgets.db', got {url!r}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryBudgets()
    if scheme == "sqlite":
        return SQLiteBudgets(url.split("://", 1)[1].removeprefix("/"))
    if scheme in ("redis", "rediss", "unix"):
        return RedisBudgets(url)
    if scheme == "":
        return SQLiteBudgets(url)
    raise ValueError(f"unknown budget store URL {url!r}: use 'memory://', 'sqlite:///PATH' or 'redis://HOST:PORT/DB'")
