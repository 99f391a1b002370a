"""Breaker state in one SQLite file: runs that survive a crash, shared by the processes of one host.

``Breaker(store="sqlite:///runs.db", scope="orders")`` keeps every run's counters, reservations, loop window,
breaker state and call-id memory in ``runs.db``. A process that dies (``kill -9``, an OOM kill, a deploy) and
starts again continues a run by its id (``with breaker.run("order-42"):``) with everything it had; several
processes on one host that name the same file and scope share one breaker, without Redis.

A rule is written once. Each step is one transaction: ``BEGIN IMMEDIATE`` (one writer at a time; the others
wait up to ``busy_timeout``), load the run's state (:mod:`._run_state_codec`, JSON), run the very
``RunState`` method the memory store runs, save it, ``COMMIT``. Two processes can never both take the last
unit of a budget, and a step that fails rolls back whole: nothing is half-counted. The call-id memory (up to
4,096 verdicts a run) lives in a table of its own, row by row, so a step reads and writes only the ids it
names. WAL mode, ``synchronous=NORMAL`` by default (a committed step survives the process dying at any
moment; ``FULL`` makes it survive a power cut too), one connection per thread and per process (a forked
child opens its own).

Time is the breaker's clock (``time.monotonic()``), which every process of a host shares since boot. Each
run row records the host's boot id (``/proc/sys/kernel/random/boot_id``) and the last clock reading a step
brought; after a reboot the clock starts again near zero, so the first step of a run written before the
reboot moves its stored times (start, opening, probe, reservation expiries) by the difference: elapsed time
keeps counting from where it stopped. The time the host was down is not counted; counts are never lost.
Where no boot id exists, a clock that went back by more than a second is taken for a reboot.

When the file cannot be used (locked beyond ``busy_timeout``, read-only, its folder gone, damaged),
``failure_policy="closed"`` (the default) refuses checks with reason ``store_unavailable`` whose facts say
what to fix; ``"open"`` admits them unchecked with a rate-limited warning. A report (``after_tool``,
``after_model``) that cannot be written is kept in this process and written before its next step, in order,
so no usage is lost while the process lives.

Rows live until the run is dropped (the breaker drops a finished run when it starts its next one),
``drop``/``purge`` removes them, or the file is deleted: see ``SQLiteStore.purge``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, unquote

from .._sqlite_wal import is_busy, use_wal
from ..errors import StoreError
from ..limits import Limits
from . import _run_state
from ._run_state import RunState
from ._run_state_codec import decode, decode_verdict, encode, encode_verdict, rebase
from .base import ModelRequest, ModelUsage, RunKey, RunSnapshot, ToolOutcome, ToolRequest, Verdict

__all__ = ["SQLiteStore"]

logger = logging.getLogger("loopguard.stores.sqlite")

_T = TypeVar("_T")
_LAYOUT_VERSION = 1
_RUNS = "loopguard_breaker_runs"
_SEEN = "loopguard_breaker_seen"
_META = "loopguard_breaker_meta"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_META} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS {_RUNS} (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        run_id TEXT NOT NULL,
        state TEXT NOT NULL,
        boot_id TEXT,
        last_now REAL,
        seen_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (scope, run_id)
    )""",
    f"CREATE INDEX IF NOT EXISTS {_RUNS}_updated ON {_RUNS} (updated_at)",
    f"""CREATE TABLE IF NOT EXISTS {_SEEN} (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL,
        key TEXT NOT NULL,
        verdict TEXT NOT NULL,
        UNIQUE (run, key)
    )""",
    f"CREATE INDEX IF NOT EXISTS {_SEEN}_run ON {_SEEN} (run)",
)
_SELECT_RUN = f"SELECT id, state, boot_id, last_now, seen_count FROM {_RUNS} WHERE scope = ? AND run_id = ?"
_INSERT_RUN = (
    f"INSERT INTO {_RUNS} (scope, run_id, state, boot_id, last_now, seen_count, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_RUN = f"UPDATE {_RUNS} SET state = ?, boot_id = ?, last_now = ?, seen_count = ?, updated_at = ? WHERE id = ?"
_POLICIES = ("closed", "open")
_SYNC = ("NORMAL", "FULL", "EXTRA")
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_BACKWARDS = 1.0  # seconds the clock may seem to go back (threads racing) before it counts as a restart
_WARN_EVERY = 30.0
_MAX_DEFERRED = 4_096
_MAX_CACHED = 1_024  # decoded run states kept per store (each is what the memory store would hold)
_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "busy_timeout": float,
    "synchronous": str,
    "reservation_seconds": lambda v: None if v.lower() in ("", "none") else float(v),
    "failure_policy": str,
}

_LIVE: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
# Connections inherited across a fork: kept referenced, never used or closed in the child.
_INHERITED: list[sqlite3.Connection] = []


def _after_fork() -> None:
    for store in list(_LIVE):
        store._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _read_boot_id() -> str | None:
    """This boot of the host (Linux), or None where the system does not say."""
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as file:
            return file.read().strip() or None
    except (OSError, ValueError):
        return None


def sqlite_url_path(url: str) -> tuple[str, str]:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (with an optional ``?query``) -> the
    file path and the query string."""
    if not isinstance(url, str) or not url.lower().startswith("sqlite://"):
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///relative.db or sqlite:////absolute/path.db)")
    rest = url[len("sqlite://") :]
    rest, _, query = rest.partition("?")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError(
            f"bad SQLite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db (three slashes, "
            "then the path; a fourth for an absolute path)"
        )
    return unquote(rest[1:]), query


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0


class _Row(NamedTuple):
    id: int | None
    text: str | None
    boot_id: str | None
    last_now: float | None
    seen_count: int


class _Step(NamedTuple):
    """One transaction to run: the clock reading it brings, the call-id entries it may read (None: all),
    and what it does to the run's state."""

    run: RunKey
    name: str
    now: float | None
    keys: tuple[str, ...] | None
    apply: Callable[[RunState], Verdict]


class SQLiteStore:
    """Breaker state in the SQLite file at ``path`` (a path, or ``sqlite:///relative.db`` /
    ``sqlite:////absolute/path.db``); the folder must exist. Build one from a URL with query options with
    :meth:`from_url` (``Breaker(store="sqlite:///runs.db?busy_timeout=10")`` does this for you).

    ``busy_timeout``: seconds a step waits for another writer before the store counts as unavailable (5).
    ``synchronous``: ``"NORMAL"`` (default: a committed step survives a crash of the process) or ``"FULL"``
    (it survives a power cut too, at an fsync per step). ``reservation_seconds``: how long an admitted model
    call that never reports holds its projected tokens and USD (600; ``None``: no reservations).
    ``failure_policy``: ``"closed"`` (refuse checks when the file cannot be used) or ``"open"``.
    ``digest_key`` (default ``$LOOPGUARD_DIGEST_KEY``): when given, every digest written to the file (calls,
    answers, request shapes) is keyed with it and the word hashes of reworded questions too, and the key
    itself is never written: whoever reads the file cannot confirm a guessed argument. Every process of the
    file must then use the same key. Without one, a random key kept in the file keys the word hashes (so
    processes and restarts recognise each other's reworded questions) and digests are plain BLAKE2b, as in
    a ledger without ``hmac_key``.

    The file is opened (and its tables made) here: a folder that does not exist, a file that is not a
    SQLite database or was written by a newer loopguard, or one this process cannot write raises
    :class:`StoreError` at once, saying what to fix.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        reservation_seconds: float | None = 600.0,
        failure_policy: str = "closed",
        digest_key: str | bytes | None = None,
    ) -> None:
        text = os.fspath(path)
        if not isinstance(text, str):
            raise TypeError(f"path must be a str or os.PathLike[str], got {path!r}")
        if text.lower().startswith("sqlite:"):
            text, query = sqlite_url_path(text)
            if query:
                raise ValueError(f"SQLiteStore({path!r}): options in a URL need SQLiteStore.from_url(url)")
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ValueError(
                f"path must name a file, got {text!r}: an in-memory SQLite database is private to one "
                "connection; use 'memory://' (MemoryStore) for state that lives in this process only"
            )
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise TypeError(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if not 0 < busy_timeout <= 86_400:
            raise ValueError(f"busy_timeout must be > 0 and at most 86,400 seconds, got {busy_timeout!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNC:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC)}, got {synchronous!r}")
        if reservation_seconds is not None and (
            isinstance(reservation_seconds, bool)
            or not isinstance(reservation_seconds, (int, float))
            or not reservation_seconds > 0
        ):
            raise ValueError(f"reservation_seconds must be > 0 or None, got {reservation_seconds!r}")
        if failure_policy not in _POLICIES:
            raise ValueError(f"failure_policy must be 'closed' or 'open', got {failure_policy!r}")
        if digest_key is None:
            digest_key = os.environ.get("LOOPGUARD_DIGEST_KEY") or None
        if digest_key is not None and (not isinstance(digest_key, (str, bytes)) or not digest_key):
            raise ValueError("digest_key must be a non-empty str or bytes (or None)")
        self.path = os.path.abspath(text)
        self.url = "sqlite:///" + text
        self.failure_policy = failure_policy
        self._busy = float(busy_timeout)
        self._sync = synchronous.upper()
        self._reservation_seconds = reservation_seconds
        secret = digest_key.encode("utf-8", "surrogatepass") if isinstance(digest_key, str) else digest_key
        self._secret = secret
        self._mac_key = None if secret is None else _mac_key(secret)
        #: the key the breaker hashes the words of free-text requests with (see the class docstring)
        self.digest_key: bytes | None = None if secret is None else _word_key(secret)
        self._boot_id = _read_boot_id()
        self._pid = os.getpid()
        self._local = _Local()
        self._lock = threading.Lock()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._deferred: deque[_Step] = deque()
        self._deferred_lock = threading.Lock()
        self._signature_names: dict[str, str] = {}
        self._cache: dict[RunKey, tuple[str, RunState]] = {}
        self._prepared = False
        self._closed = False
        self._warned_at = -_WARN_EVERY
        self._suppressed = 0
        _LIVE.add(self)
        self._guard(self._conn)  # open the file now: a bad path fails here, not at the first check

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db``; the query string may carry
        ``busy_timeout``, ``synchronous``, ``reservation_seconds`` (``none`` for no reservations) and
        ``failure_policy``, e.g. ``sqlite:///runs.db?busy_timeout=10&synchronous=FULL``. Keyword options win."""
        if not isinstance(url, str):
            raise TypeError(f"store URL must be a str, got {type(url).__name__}")
        path, query = sqlite_url_path(url)
        from_query: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            convert = _URL_OPTIONS.get(key)
            if convert is None:
                known = ", ".join(_URL_OPTIONS)
                raise ValueError(f"unknown option {key!r} in store URL {url!r} (known: {known})")
            try:
                from_query[key] = convert(value)
            except ValueError:
                raise ValueError(f"store URL option {key}={value!r} is not valid in {url!r}") from None
        return cls(path, **{**from_query, **options})

    # -- connections ------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            return conn
        return self._open()

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the SQLite breaker store {self.url} is closed")
        if self._pid != os.getpid():  # forked without the at-fork hook (it runs for os.fork)
            self._forked()
        conn = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy * 1000)}")
            use_wal(conn, self._busy)
            conn.execute(f"PRAGMA synchronous = {self._sync}")
            if not self._prepared:
                self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        ident = threading.get_ident()
        with self._lock:
            alive = {thread.ident for thread in threading.enumerate()}
            for other in [t for t in self._conns if t not in alive or t == ident]:
                with suppress(sqlite3.Error):  # a thread that ended (or this one's connection from before)
                    self._conns.pop(other).close()
            self._conns[ident] = conn
        self._local.conn, self._local.pid = conn, self._pid
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Make the tables (once per file), check the layout version and settle the digest key."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"INSERT OR IGNORE INTO {_META} VALUES ('layout_version', ?)", (str(_LAYOUT_VERSION),))
            meta = dict(conn.execute(f"SELECT key, value FROM {_META}").fetchall())
            version = meta.get("layout_version", "")
            if not version.isdigit() or int(version) > _LAYOUT_VERSION:
                raise StoreError(
                    f"the SQLite breaker store {self.url} has layout version {version!r}, newer than this "
                    f"loopguard knows ({_LAYOUT_VERSION}): it was written by a newer loopguard-core; upgrade "
                    "this one, or point the store at another file"
                )
            self._settle_key(conn, meta)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self._prepared = True

    def _settle_key(self, conn: sqlite3.Connection, meta: dict[str, str]) -> None:
        empty = conn.execute(f"SELECT 1 FROM {_RUNS} LIMIT 1").fetchone() is None
        if self._secret is not None:
            check = hashlib.blake2b(self._secret, digest_size=8, person=b"lg-store-check").hexdigest()
            stored = meta.get("digest_key_check")
            if stored != check and not empty:
                raise StoreError(
                    f"the runs in the SQLite breaker store {self.url} were written "
                    + ("with another digest_key" if stored else "without a digest_key")
                    + ": give every process the same key (LOOPGUARD_DIGEST_KEY), or use another file"
                )
            conn.execute(f"DELETE FROM {_META} WHERE key = 'digest_key'")  # the key never stays in the file
            conn.execute(f"INSERT OR REPLACE INTO {_META} VALUES ('digest_key_check', ?)", (check,))
            return
        if "digest_key_check" in meta and not empty:
            raise StoreError(
                f"the runs in the SQLite breaker store {self.url} were written with a digest_key: give this "
                "process the same key (digest_key= or LOOPGUARD_DIGEST_KEY), or use another file"
            )
        conn.execute(f"DELETE FROM {_META} WHERE key = 'digest_key_check'")
        conn.execute(f"INSERT OR IGNORE INTO {_META} VALUES ('digest_key', ?)", (os.urandom(16).hex(),))
        row = conn.execute(f"SELECT value FROM {_META} WHERE key = 'digest_key'").fetchone()
        try:
            self.digest_key = bytes.fromhex(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"the digest key kept in {self.url} is damaged: use another file") from None

    def _forked(self) -> None:
        """In a forked child: the parent's connections, locks and pending reports are not this process's."""
        _INHERITED.extend(self._conns.values())
        self._conns = {}
        self._local = _Local()
        self._lock = threading.Lock()
        self._deferred = deque()
        self._deferred_lock = threading.Lock()
        self._cache = {}
        self._pid = os.getpid()

    def close(self) -> None:
        """Write the reports still pending if the file allows, and close this process's connections."""
        with suppress(StoreError):
            self._flush()
        self._closed = True
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = _Local()

    # -- one step, one transaction -------------------------------------------------------------------
    def _transact(self, step: _Step) -> Verdict:
        conn = self._conn()
        scope, run_id = _text(step.run.scope), _text(step.run.run_id)
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute(_SELECT_RUN, (scope, run_id)).fetchone()
            row = _Row(None, None, None, None, 0) if found is None else _checked(_Row(*found), self.url)
            # The state this process wrote last, if no other process wrote since: no need to decode it again.
            # Taken out of the cache while the step runs, so a step that fails leaves no half-changed state.
            cached = self._cache.pop(step.run, None)
            if row.text is None:
                state = RunState()
            elif cached is not None and cached[0] == row.text:
                state = cached[1]
            else:
                state = decode(row.text)
            loaded = OrderedDict() if row.id is None else self._load_seen(conn, row.id, step.keys)
            state.seen = OrderedDict(loaded)
            boot_id, last_now = row.boot_id, row.last_now
            if step.now is not None:
                shift = self._shift(row, step.now)
                if shift:
                    rebase(state, shift)
                    last_now = step.now
                elif last_now is None or step.now > last_now:
                    last_now = step.now
                boot_id = self._boot_id
            verdict = step.apply(state)
            text = self._save(conn, step.run, row, state, loaded, boot_id, last_now)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        cache = self._cache
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        state.seen = OrderedDict()  # the call-id memory is read from its table, step by step
        cache[step.run] = (text, state)
        return verdict

    def _shift(self, row: _Row, now: float) -> float:
        """How far the stored times must move for ``now`` (non-zero only after the host restarted)."""
        if row.last_now is None:
            return 0.0
        if self._boot_id is not None and row.boot_id is not None:
            restarted = self._boot_id != row.boot_id
        elif self._boot_id is None and row.boot_id is None:
            restarted = now < row.last_now - _BACKWARDS
        else:
            restarted = True  # the file moved between a host that names its boots and one that does not
        return now - row.last_now if restarted else 0.0

    def _load_seen(self, conn: sqlite3.Connection, run: int, keys: tuple[str, ...] | None) -> OrderedDict[str, Verdict]:
        """The run's remembered verdicts by call id: only ``keys`` (all of them, oldest first, for None)."""
        found: OrderedDict[str, Verdict] = OrderedDict()
        if keys is None:
            rows = conn.execute(f"SELECT key, verdict FROM {_SEEN} WHERE run = ? ORDER BY id", (run,)).fetchall()
            for key, text in rows:
                found[key] = decode_verdict(_json(text))
            return found
        stored = {_text(key): key for key in keys}  # call ids as the caller gave them
        if not stored:
            return found
        if len(stored) == 1:
            sql = f"SELECT key, verdict FROM {_SEEN} WHERE run = ? AND key = ?"
        else:
            sql = (
                f"SELECT key, verdict FROM {_SEEN} WHERE run = ? AND key IN ({','.join('?' * len(stored))}) ORDER BY id"
            )
        for key, text in conn.execute(sql, (run, *stored)).fetchall():
            found[stored.get(key, key)] = decode_verdict(_json(text))
        return found

    def _save(
        self,
        conn: sqlite3.Connection,
        run: RunKey,
        row: _Row,
        state: RunState,
        loaded: Mapping[str, Verdict],
        boot_id: str | None,
        last_now: float | None,
    ) -> str:
        """Write what the step changed; returns the state's text as the row now holds it."""
        text = encode(state, seen=False)
        after = state.seen
        added = [(key, verdict) for key, verdict in after.items() if key not in loaded]
        changed = [(key, verdict) for key, verdict in after.items() if key in loaded and loaded[key] is not verdict]
        gone = [key for key in loaded if key not in after]
        count = row.seen_count + len(added) - len(gone)
        limit = _run_state._IDEMPOTENCY_MEMORY
        evict = max(0, count - limit)
        count -= evict
        wall = time.time()
        rid = row.id
        if rid is None:
            cursor = conn.execute(
                _INSERT_RUN, (_text(run.scope), _text(run.run_id), text, boot_id, last_now, count, wall, wall)
            )
            rid = cursor.lastrowid
        elif text != row.text or added or changed or gone or boot_id != row.boot_id:
            conn.execute(_UPDATE_RUN, (text, boot_id, last_now, count, wall, rid))
        else:
            return text  # nothing changed: no write (a refused call of an open breaker, a duplicate)
        if gone:
            conn.executemany(f"DELETE FROM {_SEEN} WHERE run = ? AND key = ?", [(rid, _text(key)) for key in gone])
        if changed:
            conn.executemany(
                f"UPDATE {_SEEN} SET verdict = ? WHERE run = ? AND key = ?",
                [(_dumps(encode_verdict(v)), rid, _text(key)) for key, v in changed],
            )
        if added:
            conn.executemany(
                f"INSERT INTO {_SEEN} (run, key, verdict) VALUES (?, ?, ?)",
                [(rid, _text(key), _dumps(encode_verdict(v))) for key, v in added],
            )
        if evict:  # the oldest call ids are forgotten first, as the memory store does
            conn.execute(
                f"DELETE FROM {_SEEN} WHERE id IN (SELECT id FROM {_SEEN} WHERE run = ? ORDER BY id LIMIT ?)",
                (rid, evict),
            )
        return text

    # -- failures ----------------------------------------------------------------------------------
    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (a whole transaction, rolled back when it fails); sqlite3 errors become a StoreError that
        says what to fix. Waiting for another writer is SQLite's busy handler's, up to ``busy_timeout`` (it
        measured faster under contention than retrying from Python: its waiters sleep and leave the CPU to
        the writer)."""
        try:
            return fn()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = f"{type(exc).__name__}: {exc}"
        lower = str(exc).lower()
        folder = os.path.dirname(self.path)
        if is_busy(exc):
            fix = (
                f"it stayed locked for more than busy_timeout={self._busy:g} s: another process holds a write "
                "transaction on it; find that process, or raise busy_timeout"
            )
        elif "not a database" in lower or "malformed" in lower or "corrupt" in lower:
            fix = (
                "it is not a loopguard SQLite store or it is damaged: point the store at another file, or restore "
                "this one from a backup"
            )
        elif not os.path.isdir(folder):
            fix = f"its folder {folder!r} does not exist: create it, or choose another path"
        elif "readonly" in lower or "read-only" in lower or "unable to open" in lower or "permission" in lower:
            fix = (
                f"this process may not write the file or its folder {folder!r}: give it write access to both "
                "(SQLite writes -wal and -shm files beside the file), or choose another path"
            )
        elif "disk i/o" in lower or "full" in lower:
            fix = "the disk failed or is full: free space (or fix the disk), then the store works again"
        elif "closed" in lower:
            fix = "the store was closed: make a new SQLiteStore"
        else:
            fix = "see the SQLite error"
        return StoreError(f"the SQLite breaker store {self.url} cannot be used ({text}): {fix}")

    def _unavailable(self, step: str, exc: StoreError) -> Verdict:
        facts = {"url": self.url, "policy": self.failure_policy, "error": str(exc), "store": "sqlite", "step": step}
        if self.failure_policy == "open":
            self._warn(
                "loopguard SQLite store %s cannot be used (%s); failure_policy='open' admits calls unchecked%s", exc
            )
            return Verdict(True, None, False, facts)
        return Verdict(False, "store_unavailable", False, facts)

    def _warn(self, message: str, exc: StoreError, *, error: bool = False) -> None:
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._warned_at = self._suppressed, 0, now
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        (logger.error if error else logger.warning)(message, self.url, exc, more)

    def _admit(self, step: _Step) -> Verdict:
        try:
            self._flush()
            return self._guard(lambda: self._transact(step))
        except StoreError as exc:
            return self._unavailable(step.name, exc)

    def _record(self, step: _Step) -> Verdict:
        try:
            self._flush()
            return self._guard(lambda: self._transact(step))
        except StoreError as exc:
            self._defer(step)
            self._warn(
                "loopguard could not write a report to the SQLite store %s (%s); it is kept in this process and "
                "written with the run's next step%s",
                exc,
                error=True,
            )
            facts = {"url": self.url, "policy": self.failure_policy, "error": str(exc), "store": "sqlite"}
            return Verdict(True, None, False, {**facts, "step": step.name, "deferred": True})

    def _defer(self, step: _Step) -> None:
        with self._deferred_lock:
            self._deferred.append(step)
            if len(self._deferred) > _MAX_DEFERRED:
                lost = self._deferred.popleft()
                logger.error(
                    "loopguard dropped a pending %s of run %r: more than %d reports could not be written to %s",
                    lost.name,
                    lost.run.run_id,
                    _MAX_DEFERRED,
                    self.url,
                )

    def _flush(self) -> None:
        """Write the reports that could not be written before, oldest first (StoreError if still not)."""
        if not self._deferred:
            return
        with self._deferred_lock:
            while self._deferred:
                self._guard(lambda: self._transact(self._deferred[0]))
                self._deferred.popleft()

    # -- digests -------------------------------------------------------------------------------------
    def _digest(self, value: str, size: int) -> str:
        assert self._mac_key is not None
        return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=size, key=self._mac_key).hexdigest()

    def _keyed_request(self, request: ToolRequest) -> ToolRequest:
        if self._mac_key is None:
            return request
        signature = self._digest(request.signature, 16)
        names = self._signature_names
        if len(names) >= 4_096:
            names.clear()
        names[signature] = request.signature
        shape = request.shape and self._digest(request.shape, 16)
        return request._replace(signature=signature, shape=shape)

    def _keyed_outcome(self, outcome: ToolOutcome) -> ToolOutcome:
        if self._mac_key is None:
            return outcome
        return outcome._replace(
            signature=self._digest(outcome.signature, 16),
            outcome=self._digest(outcome.outcome, 8),
            shape=outcome.shape and self._digest(outcome.shape, 16),
        )

    def _own(self, verdict: Verdict) -> Verdict:
        """The verdict with the caller's own signature in its facts (the file holds only the keyed digest)."""
        if self._mac_key is None:
            return verdict
        observed = tuple((reason, self._own_facts(facts)) for reason, facts in verdict.observed)
        return verdict._replace(facts=self._own_facts(verdict.facts), observed=observed)

    def _own_facts(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        stored = facts.get("signature")
        if not isinstance(stored, str) or stored not in self._signature_names:
            return facts
        return {**facts, "signature": self._signature_names[stored]}

    # -- the Store protocol ---------------------------------------------------------------------------
    def admit_tool(self, run: RunKey, request: ToolRequest, limits: Limits) -> Verdict:
        keyed = self._keyed_request(request)
        # (its outcome's key too: an id reused in a later model turn is a new call, whose admission forgets both)
        keys = () if request.call_id is None else ("t:" + request.call_id, "T:" + request.call_id)
        step = _Step(run, "admit_tool", request.now, keys, lambda state: state.admit_tool(keyed, limits))
        return self._own(self._admit(step))

    def record_tool(self, run: RunKey, outcome: ToolOutcome, limits: Limits) -> Verdict:
        keyed = self._keyed_outcome(outcome)
        keys = () if outcome.call_id is None else ("T:" + outcome.call_id,)
        return self._record(_Step(run, "record_tool", outcome.now, keys, lambda s: s.record_tool(keyed, limits)))

    def admit_model(self, run: RunKey, request: ModelRequest, limits: Limits) -> Verdict:
        keys = () if request.call_id is None else ("m:" + request.call_id,)
        reserve = self._reservation_seconds
        step = _Step(run, "admit_model", request.now, keys, lambda s: s.admit_model(request, limits, reserve))
        return self._admit(step)

    def record_model(self, run: RunKey, usage: ModelUsage, limits: Limits) -> Verdict:
        keys = () if usage.call_id is None or usage.failed else ("M:" + usage.call_id,)
        return self._record(_Step(run, "record_model", usage.now, keys, lambda s: s.record_model(usage, limits)))

    def steer(self, run: RunKey, limits: Limits, now: float) -> Verdict:
        return self._admit(_Step(run, "steer", now, (), lambda state: state.steer(limits, now)))

    def reset(self, run: RunKey) -> Verdict:
        """Close the breaker by hand; :class:`StoreError` when the file cannot be used."""
        self._flush()
        return self._guard(lambda: self._transact(_Step(run, "reset", None, None, RunState.reset)))

    def snapshot(self, run: RunKey) -> RunSnapshot:
        """The run's counters (one read; :class:`StoreError` when the file cannot be read)."""
        try:
            self._flush()
        except StoreError as exc:
            logger.warning("loopguard could not write pending reports to %s before a read: %s", self.url, exc)
        return self._guard(lambda: self._read(run)).snapshot()

    def _read(self, run: RunKey) -> RunState:
        found = self._conn().execute(_SELECT_RUN, (_text(run.scope), _text(run.run_id))).fetchone()
        return RunState() if found is None else decode(found[1])

    def drop(self, run: RunKey) -> None:
        """Forget a run now: its row and its call-id memory are deleted."""

        def delete() -> None:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                where = f"SELECT id FROM {_RUNS} WHERE scope = ? AND run_id = ?"
                key = (_text(run.scope), _text(run.run_id))
                conn.execute(f"DELETE FROM {_SEEN} WHERE run IN ({where})", key)
                conn.execute(f"DELETE FROM {_RUNS} WHERE scope = ? AND run_id = ?", key)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

        self._cache.pop(run, None)
        try:
            self._guard(delete)
        except StoreError as exc:
            logger.warning("loopguard could not drop run %r from %s (%s); purge() removes it later", run, self.url, exc)

    # -- housekeeping --------------------------------------------------------------------------------
    def purge(self, older_than_seconds: float) -> int:
        """Delete the runs not written for ``older_than_seconds`` (wall-clock time); returns how many.

        Rows otherwise live until their run is dropped (the breaker drops a finished run when it starts its
        next one) or reset by hand: call this from a periodic job (``store.purge(7 * 86_400)``)."""
        if isinstance(older_than_seconds, bool) or not isinstance(older_than_seconds, (int, float)):
            raise TypeError(f"older_than_seconds must be a number, got {older_than_seconds!r}")
        if not older_than_seconds >= 0:
            raise ValueError(f"older_than_seconds must be >= 0, got {older_than_seconds!r}")
        cutoff = time.time() - older_than_seconds

        def delete() -> int:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                where = f"SELECT id FROM {_RUNS} WHERE updated_at < ?"
                conn.execute(f"DELETE FROM {_SEEN} WHERE run IN ({where})", (cutoff,))
                count = conn.execute(f"DELETE FROM {_RUNS} WHERE updated_at < ?", (cutoff,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return int(count)

        return self._guard(delete)

    def runs(self) -> list[RunKey]:
        """Every run the file holds (for housekeeping and tests)."""
        rows = self._guard(lambda: self._conn().execute(f"SELECT scope, run_id FROM {_RUNS} ORDER BY id").fetchall())
        return [RunKey(scope, run_id) for scope, run_id in rows]

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.url} failure_policy={self.failure_policy!r}>"


def _checked(row: _Row, url: str) -> _Row:
    """A run's row as this store wrote it (a file edited by something else gives a StoreError, not a crash)."""
    if (
        type(row.id) is int
        and type(row.text) is str
        and (row.boot_id is None or type(row.boot_id) is str)
        and (row.last_now is None or type(row.last_now) in (int, float))
        and type(row.seen_count) is int
    ):
        return row
    raise StoreError(
        f"a run's row in the SQLite breaker store {url} is malformed (a column of the wrong type); the file was "
        "damaged or written by something else: drop the run (store.drop(RunKey(scope, run_id))) or restore the "
        "file from a backup"
    )


def _mac_key(secret: bytes) -> bytes:
    """The BLAKE2b key of the digests written to the file, derived from ``digest_key`` (kept apart from the
    key of the word hashes)."""
    return hashlib.blake2b(b"loopguard sqlite digests v1", key=hashlib.blake2b(secret).digest()).digest()


def _word_key(secret: bytes) -> bytes:
    # The breaker keys BLAKE2b with it: at most 64 bytes.
    return secret if len(secret) <= 64 else hashlib.blake2b(secret, digest_size=32).digest()


def _text(value: str) -> str:
    """A scope, run id or call id SQLite can store (lone surrogates become their escape, as the breaker's
    ``label`` makes them before they reach a store)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=True)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise StoreError(
            "a remembered verdict in the SQLite breaker store is not valid JSON; the file was damaged: drop the "
            "run or restore the file from a backup"
        ) from None
