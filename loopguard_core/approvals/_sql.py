"""Approval queues in a database: SQLite (a file, the default) or PostgreSQL (the ledger's database).

One table, ``loopguard_approvals``; every change is one short transaction that re-reads the row it changes,
so two people (or two processes) deciding the same request cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._extras import require
from .._sqlite_wal import use_wal
from ..errors import ApprovalError, StoreError
from ._queue import WallClock, check_status, decide, used
from ._request import OPEN, ApprovalRequest

__all__ = ["PostgresApprovals", "SQLiteApprovals"]

TABLE = "loopguard_approvals"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
COLUMNS = (
    "id",
    "scope",
    "session_id",
    "tool",
    "args_digest",
    "agent",
    "call_id",
    "preview",
    "spend",
    "turn",
    "status",
    "created_at",
    "expires_at",
    "decided_at",
    "decided_by",
    "reason",
    "edited_args",
)
_COLS = ", ".join(COLUMNS)
_TYPES = {"turn": "BIGINT", "created_at": "DOUBLE PRECISION", "expires_at": "DOUBLE PRECISION"}
_TYPES["decided_at"] = "DOUBLE PRECISION"
_OPEN_SQL = "('" + "','".join(sorted(OPEN)) + "')"


def _schema(table: str) -> list[str]:
    cols = ", ".join(
        f"{c} {_TYPES.get(c, 'TEXT')}{' PRIMARY KEY' if c == 'id' else ''}"
        + (" NOT NULL" if c in ("scope", "session_id", "tool", "args_digest", "status") else "")
        for c in COLUMNS
    )
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({cols})",
        # At most one open request per call: asking again finds it, two processes asking at once queue one.
        f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_open ON {table} (scope, session_id, tool, args_digest) "
        f"WHERE status IN {_OPEN_SQL}",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_status ON {table} (status, created_at)",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_call ON {table} (scope, call_id)",
    ]


def _values(request: ApprovalRequest) -> tuple[Any, ...]:
    data = request.to_dict()
    data["spend"] = json.dumps(data["spend"], sort_keys=True)
    return tuple(data[c] for c in COLUMNS)


def _request(row: Any) -> ApprovalRequest:
    return ApprovalRequest.from_row(dict(zip(COLUMNS, row)))


class _SqlApprovals:
    """The queue's rules over a DB-API connection; subclasses give the connection and the dialect."""

    url: str
    _mark = "?"
    _table = TABLE

    def __init__(self, wall_clock: WallClock) -> None:
        self.wall_clock = wall_clock

    def _tx(self, write: bool) -> contextlib.AbstractContextManager[Any]:  # pragma: no cover - per dialect
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        return text.replace("?", self._mark)

    def _select(self, cur: Any, where: str, params: tuple[Any, ...], lock: bool = False) -> list[ApprovalRequest]:
        cur.execute(
            self._sql(f"SELECT {', '.join(COLUMNS)} FROM {self._table} WHERE {where}{self._lock(lock)}"), params
        )
        return [_request(row) for row in cur.fetchall()]

    def _lock(self, lock: bool) -> str:
        return ""

    def _find(self, cur: Any, scope: str, session_id: str, tool: str, digest: str) -> ApprovalRequest | None:
        found = self._select(
            cur,
            f"scope = ? AND session_id = ? AND tool = ? AND args_digest = ? AND status IN {_OPEN_SQL}",
            (scope, session_id, tool, digest),
        )
        return found[0] if found else None

    def submit(self, request: ApprovalRequest) -> ApprovalRequest:
        with self._tx(write=True) as cur:
            existing = self._find(cur, request.scope, request.session_id, request.tool, request.args_digest)
            if existing is not None:
                return existing
            marks = ", ".join("?" for _ in COLUMNS)
            cur.execute(
                self._sql(f"INSERT INTO {self._table} ({', '.join(COLUMNS)}) VALUES ({marks})"), _values(request)
            )
            return request

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._tx(write=False) as cur:
            found = self._select(cur, "id = ?", (request_id,))
        return found[0] if found else None

    def find_open(self, scope: str, session_id: str, tool: str, args_digest: str) -> ApprovalRequest | None:
        with self._tx(write=False) as cur:
            return self._find(cur, scope, session_id, tool, args_digest)

    def find_by_call(self, scope: str, tool: str, call_id: str) -> ApprovalRequest | None:
        with self._tx(write=False) as cur:
            found = self._select(cur, "scope = ? AND call_id = ? AND tool = ?", (scope, call_id, tool))
        return max(found, key=lambda r: r.created_at) if found else None

    def list(self, status: str | None = None, limit: int = 100) -> list[ApprovalRequest]:
        check_status(status)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ApprovalError(f"limit must be a positive int, got {limit!r}")
        stored = "pending" if status == "expired" else status
        where, params = ("1 = 1", ()) if stored is None else ("status = ?", (stored,))
        with self._tx(write=False) as cur:
            cur.execute(
                self._sql(
                    f"SELECT {', '.join(COLUMNS)} FROM {self._table} WHERE {where} ORDER BY created_at DESC LIMIT ?"
                ),
                (*params, limit if status is None else limit * 4),
            )
            found = [_request(row) for row in cur.fetchall()]
        now = self.wall_clock()
        return [r for r in found if status is None or r.effective_status(now) == status][:limit]

    def _update(self, cur: Any, request: ApprovalRequest) -> None:
        sets = ", ".join(f"{c} = ?" for c in COLUMNS if c != "id")
        values = [v for c, v in zip(COLUMNS, _values(request)) if c != "id"]
        cur.execute(self._sql(f"UPDATE {self._table} SET {sets} WHERE id = ?"), (*values, request.id))

    def decide(
        self, request_id: str, *, approve: bool, by: str, reason: str | None = None, args: Any = None
    ) -> ApprovalRequest:
        with self._tx(write=True) as cur:
            found = self._select(cur, "id = ?", (request_id,), lock=True)
            decided = decide(
                found[0] if found else None,
                request_id,
                approve=approve,
                by=by,
                reason=reason,
                args=args,
                now=self.wall_clock(),
            )
            self._update(cur, decided)
            return decided

    def mark_used(self, request_id: str) -> ApprovalRequest:
        with self._tx(write=True) as cur:
            found = self._select(cur, "id = ?", (request_id,), lock=True)
            done = used(found[0] if found else None, request_id, self.wall_clock())
            self._update(cur, done)
            return done


class SQLiteApprovals(_SqlApprovals):
    """The queue in a SQLite file (WAL): every process on the host that opens the same file sees it.

    ``SQLiteApprovals("runs.db")`` puts it next to the ledger's rows in the ledger's own file."""

    def __init__(self, path: str | Path, *, timeout: float = 5.0, wall_clock: WallClock = time.time) -> None:
        super().__init__(wall_clock)
        if not isinstance(path, (str, Path)) or not str(path):
            raise TypeError(f"path must be a file path, got {path!r}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._timeout = float(timeout)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        with self._tx(write=True) as cur:
            for statement in _schema(self._table):
                cur.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
                use_wal(conn, self._timeout)
                conn.execute("PRAGMA secure_delete=ON")  # erased edited arguments leave no trace in free pages
                conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot open the approval queue at {self.path}: {exc} (is the directory writable?)"
                ) from exc
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self, write: bool) -> Iterator[Any]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn.cursor()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"the approval queue at {self.path} could not be {'written' if write else 'read'}: {exc} "
                "(locked by another process for longer than the timeout, or read-only)"
            ) from exc

    def mark_used(self, request_id: str) -> ApprovalRequest:
        before = self.get(request_id)
        done = super().mark_used(request_id)
        if before is not None and before.edited_args is not None:
            # The old row version (with the edited arguments) is still in the WAL: fold it in and truncate.
            with contextlib.suppress(sqlite3.Error):
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return done

    def close(self) -> None:
        with self._guard:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()


class PostgresApprovals(_SqlApprovals):
    """The queue in PostgreSQL (psycopg 3, extra ``postgres``): people decide from any host."""

    _mark = "%s"

    def __init__(self, dsn: str, *, wall_clock: WallClock = time.time, connect: Callable[..., Any] | None = None):
        super().__init__(wall_clock)
        if not isinstance(dsn, str) or not dsn:
            raise TypeError(f"dsn must be a PostgreSQL connection string, got {dsn!r}")
        # ``schema=`` is the ledger's own URL parameter (libpq does not know it): the queue joins that schema.
        parts = urlsplit(dsn)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        if schema is not None and not _IDENT.fullmatch(schema):
            raise ValueError(f"schema={schema!r} is not a plain identifier (letters, digits, underscores)")
        self._schema = schema
        self._table = TABLE if schema is None else f'"{schema}".{TABLE}'
        self._dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
        self.url = dsn
        if connect is None:
            psycopg = require("psycopg", extra="postgres", purpose="an approval queue in PostgreSQL")
            connect = psycopg.connect
        self._connect = connect
        self._lock_conn = threading.Lock()
        self._conn: Any = None
        with self._tx(write=True) as cur:
            if schema is not None:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            for statement in _schema(self._table):
                cur.execute(statement)

    def _lock(self, lock: bool) -> str:
        return " FOR UPDATE" if lock else ""

    @contextlib.contextmanager
    def _tx(self, write: bool) -> Iterator[Any]:
        with self._lock_conn:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect(self._dsn, autocommit=False, connect_timeout=5)
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except ApprovalError:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    raise StoreError(f"the approval queue in PostgreSQL could not be used: {exc}") from exc
                raise

    def close(self) -> None:
        with self._lock_conn:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
