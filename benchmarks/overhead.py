"""Overhead per guarded call, in one process, as ratios to the bare call, to pybreaker and to raw storage.

``python -m benchmarks.overhead [--smoke] [--json PATH]``. Every variant runs in the same interleaved rounds
(:mod:`benchmarks._timing`). The groups:

- **in memory**: a bare no-op "tool"; pybreaker and purgatory circuit breakers (memory storage) wrapping it;
  loopguard ``before_tool`` + ``after_tool`` in memory (distinct arguments per call, as real work).
- **SQLite ledger**: the goal pair (issue 14, goal 5) is a full guarded turn (before + after + its ledger row)
  against a raw ``sqlite3`` autocommit INSERT (one commit per row) of a row of the same sixteen columns into a
  table of the same schema, both in WAL mode with ``synchronous=NORMAL`` (the ledger's default); the same turn
  on ``Ledger(defer_seconds=0.05)`` (routine rows committed together) is the second goal row. The ledger's
  own per-row append, ``Ledger.record`` of a tool row as the breaker writes it, is a context row.
- **PostgreSQL ledger**: ``Ledger.record`` on PostgreSQL against a raw prepared psycopg INSERT in autocommit
  mode (one commit per row) of a row of the same columns into a table of the same schema, plus the full
  guarded turn as context. Each variant writes into its own schema, dropped at the end. Server:
  ``$LOOPGUARD_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``); marked pending,
  with the reason, when unreachable.
- **Redis store**: loopguard's store check (``before_tool``, one FCALL round trip) against raw redis-py
  ``EVALSHA`` of a one-line script, plus the full turn; then what the server itself spends per guarded call
  (µs of scripts and the commands they run, from ``INFO commandstats``) against the one-line script.
  ``$LOOPGUARD_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``); pending when unreachable. Only keys this
  benchmark created are deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from loopguard_core import Breaker
from loopguard_core.signatures import compiled_fast_path

from . import _callgrind
from ._timing import Measured, Variant, interleave

__all__ = ["Goal", "OverheadResult", "main", "run"]

REDIS_URL = os.environ.get("LOOPGUARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
POSTGRES_URL = os.environ.get("LOOPGUARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

LEDGER_DEFER = 0.05  # the ledger's defer_seconds in the deferred variants (SQLite goal row, PostgreSQL context)

GROUPS = ("in memory", "per call (issue 14)", "SQLite ledger", "PostgreSQL ledger", "Redis store")
PER_CALL = "per call (issue 14)"

# A comparable stored row for the raw baselines: the ledger's sixteen columns with values of the sizes
# the ledger stores (64-hex hashes, an ISO UTC timestamp); the raw side computes nothing.
_HEX = "0123456789abcdef" * 4
_CREATED = "2026-11-21T10:00:00.000000+00:00"
_LEDGER_COLUMNS = (
    "seq, session_id, turn, origin, agent, tool, input_hash, input_tokens, output_tokens, cost_micros,"
    " duration_ms, passed, breach_reason, created_at, prev_hash, row_hash"
)


def _raw_values(seq: int | None, turn: int) -> tuple[Any, ...]:
    return (seq, "bench-run", turn, "tool", None, "noop", _HEX, 0, 0, 0, 0, 1, None, _CREATED, _HEX, _HEX)


def noop() -> str:
    # A non-empty answer, as a real tool gives: the benchmark measures the guard, not its stall rule.
    return "ok"


def _bare() -> Callable[[], object]:
    return noop


def _pybreaker() -> Callable[[], object]:
    import pybreaker

    breaker = pybreaker.CircuitBreaker()
    wrapped: Callable[[], object] = breaker(noop)
    return wrapped


def _purgatory() -> Callable[[], object]:
    from purgatory import SyncCircuitBreakerFactory

    factory = SyncCircuitBreakerFactory()
    wrapped: Callable[[], object] = factory(circuit=f"bench-{uuid.uuid4().hex[:6]}")(noop)
    return wrapped


def _guarded(breaker: Breaker) -> Callable[[], object]:
    counter = itertools.count()
    before, after = breaker.before_tool, breaker.after_tool

    def op() -> None:
        args = {"i": next(counter)}
        before("noop", args)
        result = noop()
        after("noop", args, result=result)

    ledger = breaker.ledger
    if ledger is not None:  # rows a deferring ledger still keeps are written inside the timed batch (_timing)
        op.settle = ledger.flush  # type: ignore[attr-defined]
    return op


def _record(ledger: Any) -> Callable[[], object]:
    """The ledger's own append of the row the breaker writes for one tool call."""
    counter = itertools.count(1)
    record = ledger.record
    session = f"bench-{uuid.uuid4().hex[:8]}"

    def op() -> None:
        n = next(counter)
        record(session_id=session, origin="tool", turn=n, tool="noop", input_text=f'{{"i":{n}}}')

    return op


def _loopguard_memory() -> Callable[[], object]:
    return _guarded(Breaker())


# -- issue 14: a guarded call against agentguard47's check and the floors, on the same arguments ----------------
_MEDIUM = {f"k{j}": {"a": j, "b": [1, 2, 3], "c": f"text value {j}"} for j in range(20)}


def small_args(i: int) -> dict[str, Any]:
    return {"q": f"some query {i}"}


def medium_args(i: int) -> dict[str, Any]:
    """20 keys, nested (a dict, a list, a str under each), plus a distinct counter: the issue's medium case."""
    args: dict[str, Any] = dict(_MEDIUM)
    args["i"] = i
    return args


_LETTERS = str.maketrans("0123456789", "abcdefghij")


def _per_call(kind: str, size: str) -> Callable[[], Callable[[], object]]:
    """A factory of one op: the arguments are built inside every op, the same way for every contender."""
    make_args = small_args if size == "small" else medium_args

    def make() -> Callable[[], object]:
        counter = itertools.count()
        if kind == "loopguard_answers":  # (instructions only) a distinct answer per call: no cache of it hits
            breaker = Breaker()
            before, after = breaker.before_tool, breaker.after_tool

            def op() -> None:
                n = next(counter)
                args = make_args(n)
                before("search", args)
                # In letters: digits are masked before answers are compared, and these must differ even then.
                after("search", args, result="value of " + str(n).translate(_LETTERS))

        elif kind.startswith("loopguard"):
            if kind == "loopguard_pure":  # for this batch (its Variant.finish switches it on again)
                compiled_fast_path(False)
            breaker = Breaker()
            before, after = breaker.before_tool, breaker.after_tool

            def op() -> None:
                args = make_args(next(counter))
                before("search", args)
                after("search", args, result="ok")

        elif kind == "agentguard":
            from agentguard import LoopGuard

            check = LoopGuard().check

            def op() -> None:
                check("search", make_args(next(counter)))

        elif kind == "floor_py":
            import hashlib

            seen: dict[bytes, int] = {}
            dumps, blake = json.dumps, hashlib.blake2b

            def op() -> None:
                text = dumps(make_args(next(counter)), sort_keys=True)
                seen[blake(text.encode(), digest_size=16).digest()] = 1

        else:  # floor_c
            import orjson
            import xxhash

            seen_c: dict[bytes, int] = {}
            odumps, digest, option = orjson.dumps, xxhash.xxh3_128_digest, orjson.OPT_SORT_KEYS

            def op() -> None:
                seen_c[digest(odumps(make_args(next(counter)), option=option))] = 1

        return op

    return make


def _per_call_kinds() -> list[tuple[str, str]]:
    """The per-call contenders installed here, (kind, label) each: agentguard47 and the compiled floor are optional."""
    import importlib.util

    kinds = [
        ("loopguard", "loopguard before+after"),
        ("loopguard_pure", "loopguard before+after, pure Python (compiled fast path off)"),
        ("floor_py", "floor: json.dumps(sort_keys) + blake2b + dict"),
    ]
    if importlib.util.find_spec("agentguard") is not None:
        kinds.insert(1, ("agentguard", "agentguard47 2.0.0 LoopGuard.check"))
    if importlib.util.find_spec("orjson") is not None and importlib.util.find_spec("xxhash") is not None:
        kinds.append(("floor_c", "compiled floor: orjson + xxh3_128 + dict"))
    return kinds


def _per_call_variants() -> tuple[list[Variant], list[str]]:
    notes = []
    if not compiled_fast_path():
        notes.append("the compiled fast path is not built here: 'loopguard' and 'loopguard, pure Python' are the same")
    kinds = _per_call_kinds()
    if "agentguard" not in dict(kinds):
        notes.append("agentguard47 not installed: the per-call goal against it is pending")
    variants = []
    for size, ops in (("small", 20_000), ("medium", 3_000)):
        for kind, label in kinds:
            finish = functools.partial(compiled_fast_path, True) if kind == "loopguard_pure" else None
            variants.append(
                Variant(f"{kind}_{size}", f"{label}, {size} args", _per_call(kind, size), ops, PER_CALL, finish)
            )
    return variants, notes


# Per-call contenders counted in CPU instructions (callgrind): the same ops as the timed rows, in a child each.
INSTRUCTION_OPS = {"small": 2_000, "medium": 300}
_INSTRUCTION_SECONDS = 600  # a child takes well under a minute


def _instructions_child(kind: str, size: str, ops: int, library: str) -> None:
    """Inside callgrind: build the op and warm it up, then count ``ops`` calls between the two client requests."""
    import gc

    requests = _callgrind.load(library)
    op = _per_call(kind, size)()
    for _ in range(200):
        op()
    gc.collect()
    gc.freeze()  # the collector's full passes over what is alive now would land in one contender's count or another's
    requests.lg_start()
    for _ in range(ops):
        op()
    requests.lg_measured()


def per_call_instructions(*, smoke: bool = False) -> dict[str, Any]:
    """CPU instructions per call of each per-call contender (loopguard with and without its compiled fast path,
    agentguard47, the floors), small and medium args: exact, so unlike the timed rows it does not move with the
    machine's load (it does not see cache misses, which time does). ``{"pending": why}`` without valgrind and gcc
    or under ``--smoke``."""
    if smoke:
        return {"pending": "skipped by --smoke"}
    kinds = [kind for kind, _label in _per_call_kinds()]
    with tempfile.TemporaryDirectory(prefix="lg-requests-") as folder:
        try:
            library = _callgrind.requests_library(Path(folder))
        except RuntimeError as exc:
            return {"pending": str(exc)}
        jobs = [(kind, size) for size in INSTRUCTION_OPS for kind in kinds]
        jobs.append(("loopguard_answers", "small"))  # context: what reading an answer costs when none repeats

        def count(job: tuple[str, str]) -> int | str:
            kind, size = job
            ops = INSTRUCTION_OPS[size]
            try:
                spec = f"{kind},{size},{ops},{library}"
                return _callgrind.count("benchmarks.overhead", spec, f"{kind}/{size}", _INSTRUCTION_SECONDS) // ops
            except RuntimeError as exc:
                return str(exc)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
            counted = list(pool.map(count, jobs))
    out: dict[str, Any] = {size: {} for size in INSTRUCTION_OPS}
    for (kind, size), value in zip(jobs, counted, strict=True):
        if isinstance(value, str):
            return {"pending": value}
        out[size][kind] = value
    return out


_SHORT_NAMES = {
    "loopguard": "loopguard",
    "loopguard_pure": "loopguard pure Python",
    "agentguard": "agentguard47",
    "floor_py": "pure-Python floor",
    "floor_c": "compiled floor",
    "loopguard_answers": "loopguard with a distinct answer per call",
}


def instructions_line(counted: dict[str, Any]) -> str:
    """The context line of :func:`per_call_instructions`: counts and the goal-1 ratios they give."""
    head = "CPU instructions per guarded call (callgrind: exact, the same on a busy machine or a quiet one)"
    if "pending" in counted:
        return f"{head}: pending ({counted['pending']})."
    parts = []
    for size, row in counted.items():
        text = ", ".join(f"{_SHORT_NAMES[kind]} {value:,}" for kind, value in row.items())
        ratios = []
        if "agentguard" in row:
            ratios.append(f"loopguard / agentguard47 {row['loopguard'] / row['agentguard']:.2f}x")
        ratios.append(f"pure Python / pure-Python floor {row['loopguard_pure'] / row['floor_py']:.2f}x")
        parts.append(f"{size} args: {text} ({'; '.join(ratios)})")
    return f"{head}: " + "; ".join(parts) + "."


def large_args(*, smoke: bool = False) -> list[dict[str, Any]]:
    """Goal 2: before+after with one large string argument, distinct per call (a new body each time), as µs/MB.

    An ``edit`` with a 100 kB file body and a ``write`` with a 5 MB string; the median of several calls."""
    import statistics
    import time

    rows = []
    for label, tool, size, calls in (
        ("edit, 100 kB body", "edit", 100_000, 40),
        ("write, 5 MB string", "write", 5_000_000, 6),
    ):
        calls = max(3, calls // (4 if smoke else 1))
        base = ("    x = compute(value, 42)  # a line of code\n" * (size // 44 + 1))[:size]
        breaker, times = Breaker(), []
        for n in range(calls + 1):
            args = {"path": f"src/module_{n}.py", "content": f"{n}\n" + base[len(str(n)) + 1 :]}
            start = time.perf_counter()
            breaker.before_tool(tool, args)
            breaker.after_tool(tool, args, result="File updated.")
            if n:  # the first call warms the caches
                times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append(
            {"case": label, "bytes": size, "us_per_call": seconds * 1e6, "us_per_mb": seconds * 1e6 / (size / 1e6)}
        )
    return rows


def cold_calls(*, smoke: bool = False) -> list[dict[str, Any]]:
    """The per-call contenders (small args) with the CPU caches flushed before every call, as a framework's own work
    between two tool calls flushes them: CPU time of each call alone (``time.thread_time_ns``), median over calls
    taken in rounds that interleave the contenders. Warm-loop figures (the goal rows) understate what a guard costs
    inside a framework; this shows by how much, for every contender alike."""
    import importlib.util
    import statistics
    import time

    kinds = [("loopguard", "loopguard before+after"), ("floor_py", "floor: json.dumps(sort_keys) + blake2b + dict")]
    if importlib.util.find_spec("agentguard") is not None:
        kinds.insert(1, ("agentguard", "agentguard47 2.0.0 LoopGuard.check"))
    ops = {kind: _per_call(kind, "small")() for kind, _ in kinds}
    junk = [str(i) * 3 for i in range(300_000)]  # some 20 MB of objects: more than the caches hold

    def flush() -> int:
        return sum(map(len, junk[::3]))

    now = time.thread_time_ns
    times: dict[str, list[int]] = {kind: [] for kind, _ in kinds}
    rounds, per_round = (3, 100) if smoke else (10, 300)
    for _ in range(rounds):
        for kind, _label in kinds:
            op = ops[kind]
            for _n in range(per_round):
                flush()
                start = now()
                op()
                times[kind].append(now() - start)
    rows = [
        {"kind": kind, "label": label, "us_per_call": statistics.median(times[kind]) / 1000} for kind, label in kinds
    ]
    floor = next(r["us_per_call"] for r in rows if r["kind"] == "floor_py")
    for row in rows:
        row["x_floor"] = round(row["us_per_call"] / floor, 2)
    return rows


@dataclass
class _Resources:
    """What the variants opened, closed and removed once the rounds are done."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="loopguard-bench-")))
    count: itertools.count[int] = field(default_factory=itertools.count)
    closers: list[Callable[[], object]] = field(default_factory=list)

    def fresh(self, name: str) -> str:
        return str(self.root / f"{name}-{next(self.count)}.db")

    def cleanup(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception as exc:  # cleanup must reach every resource; report, do not hide
                print(f"warning: benchmark cleanup step failed: {exc}", file=sys.stderr)
        shutil.rmtree(self.root, ignore_errors=True)


# -- SQLite --------------------------------------------------------------------------------------------
def _sqlite_variants(res: _Resources) -> tuple[list[Variant], str | None]:
    try:
        from loopguard_core.ledger import Ledger
    except ImportError as exc:
        return [], f"SQLite ledger pending: loopguard_core.ledger not importable ({exc})"

    def ledger(name: str, **options: Any) -> Any:
        opened = Ledger(res.fresh(name), synchronous="NORMAL", **options)
        res.closers.append(opened.close)
        return opened

    def raw_sqlite() -> Callable[[], object]:
        db = sqlite3.connect(res.fresh("raw"), isolation_level=None)  # autocommit: each INSERT commits
        res.closers.append(db.close)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE ledger (seq INTEGER PRIMARY KEY, session_id TEXT NOT NULL, turn INTEGER NOT NULL,"
            " origin TEXT NOT NULL, agent TEXT, tool TEXT, input_hash TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
            " output_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, duration_ms INTEGER NOT NULL,"
            " passed INTEGER NOT NULL, breach_reason TEXT, created_at TEXT NOT NULL, prev_hash TEXT NOT NULL,"
            " row_hash TEXT NOT NULL)"
        )
        counter = itertools.count(1)
        execute = db.execute
        sql = f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES ({', '.join(['?'] * 16)})"

        def op() -> None:
            execute(sql, _raw_values(None, next(counter)))

        return op

    return [
        Variant("sqlite_raw", "raw sqlite3 INSERT, one commit per row (WAL)", raw_sqlite, 2_000, group="SQLite ledger"),
        Variant(
            "sqlite_record",
            "loopguard Ledger.record, one row (SQLite, WAL)",
            lambda: _record(ledger("ledger")),
            2_000,
            group="SQLite ledger",
        ),
        Variant(
            "sqlite_turn",
            "guarded turn, before+after + ledger row (SQLite, one commit per row)",
            lambda: _guarded(Breaker(ledger=ledger("turn"))),
            2_000,
            group="SQLite ledger",
        ),
        Variant(
            "sqlite_turn_deferred",
            f"guarded turn, before+after + ledger row, Ledger(defer_seconds={LEDGER_DEFER}) (rows committed together)",
            lambda: _guarded(Breaker(ledger=ledger("deferred", defer_seconds=LEDGER_DEFER))),
            2_000,
            group="SQLite ledger",
        ),
    ], None


# -- PostgreSQL ----------------------------------------------------------------------------------------
def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def _postgres_variants(res: _Resources) -> tuple[list[Variant], str | None]:
    try:
        import psycopg
    except ImportError:
        return [], "PostgreSQL ledger pending: psycopg not installed (pip install 'psycopg[binary]')"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [], f"PostgreSQL ledger pending: no server at {POSTGRES_URL} ({reason})"
    from loopguard_core.ledger import Ledger

    tag = f"lgbench_{uuid.uuid4().hex[:8]}"
    schemas: list[str] = []

    def drop_schemas() -> None:
        for schema in schemas:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

    res.closers.insert(0, drop_schemas)  # runs last (closers run in reverse): after every ledger is closed

    def schema(name: str) -> str:
        schemas.append(f"{tag}_{name}")
        return schemas[-1]

    def once(make: Callable[[], Callable[[], object]]) -> Callable[[], Callable[[], object]]:
        # One table per variant for the whole run (creating a schema per round would dominate the run).
        made: list[Callable[[], object]] = []

        def get() -> Callable[[], object]:
            if not made:
                made.append(make())
            return made[0]

        return get

    def ledger(name: str, **options: Any) -> Any:
        opened = Ledger(_with_schema(POSTGRES_URL, schema(name)), synchronous="NORMAL", **options)
        res.closers.append(opened.close)
        return opened

    def raw_insert() -> Callable[[], object]:
        where = schema("raw")
        conn = psycopg.connect(POSTGRES_URL, autocommit=True)  # autocommit: each INSERT commits
        res.closers.append(conn.close)
        conn.execute(f'CREATE SCHEMA "{where}"')
        conn.execute(
            f'CREATE TABLE "{where}".ledger (seq BIGINT PRIMARY KEY, session_id TEXT NOT NULL, turn BIGINT NOT NULL,'
            " origin TEXT NOT NULL, agent TEXT, tool TEXT, input_hash TEXT NOT NULL, input_tokens BIGINT NOT NULL,"
            " output_tokens BIGINT NOT NULL, cost_micros BIGINT NOT NULL, duration_ms BIGINT NOT NULL,"
            " passed SMALLINT NOT NULL, breach_reason TEXT, created_at TEXT NOT NULL, prev_hash TEXT NOT NULL,"
            " row_hash TEXT NOT NULL)"
        )
        conn.execute(f'CREATE INDEX ON "{where}".ledger (session_id, seq)')  # the ledger table has this index
        sql = f'INSERT INTO "{where}".ledger ({_LEDGER_COLUMNS}) VALUES ({", ".join(["%s"] * 16)})'
        counter = itertools.count(1)
        execute = conn.execute

        def op() -> None:
            n = next(counter)
            execute(sql, _raw_values(n, n), prepare=True)

        return op

    group = "PostgreSQL ledger"
    return [
        Variant("pg_raw", "raw psycopg prepared INSERT, one commit per row", once(raw_insert), 300, group=group),
        Variant(
            "pg_record",
            "loopguard Ledger.record, one row (PostgreSQL)",
            once(lambda: _record(ledger("ledger"))),
            300,
            group=group,
        ),
        Variant(
            "pg_turn",
            "context: guarded turn, before+after + ledger row (PostgreSQL)",
            once(lambda: _guarded(Breaker(ledger=ledger("turn")))),
            300,
            group=group,
        ),
        Variant(
            "pg_turn_deferred",
            f"context: guarded turn, before+after + ledger row, Ledger(defer_seconds={LEDGER_DEFER}) (PostgreSQL)",
            once(lambda: _guarded(Breaker(ledger=ledger("deferred", defer_seconds=LEDGER_DEFER)))),
            300,
            group=group,
        ),
    ], None


# -- Redis ---------------------------------------------------------------------------------------------
def _redis_variants(res: _Resources) -> tuple[list[Variant], str | None]:
    try:
        import redis
    except ImportError:
        return [], "Redis store pending: redis-py not installed"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        return [], f"Redis store pending: no Redis at {REDIS_URL} ({exc})"
    try:
        from loopguard_core.stores.redis import RedisStore
    except ImportError as exc:
        return [], f"Redis store pending: RedisStore not importable ({exc})"
    prefix = f"lgbench-{uuid.uuid4().hex[:8]}"
    script = client.register_script("return redis.call('INCR', KEYS[1])")

    def cleanup() -> None:
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()

    res.closers.insert(0, cleanup)

    def raw_evalsha() -> Callable[[], object]:
        key = f"{prefix}:raw"

        def op() -> None:
            script(keys=[key])

        return op

    def breaker(defer: float | None = None) -> Breaker:
        store = RedisStore(REDIS_URL, namespace=prefix, defer_seconds=defer)
        res.closers.append(getattr(store, "close", noop))
        return Breaker(store=store, scope=f"{prefix}-{uuid.uuid4().hex[:6]}")

    def store_check() -> Callable[[], object]:
        before = breaker().before_tool
        counter = itertools.count()

        def op() -> None:
            before("noop", {"i": next(counter)})

        return op

    group = "Redis store"
    return [
        Variant("redis_raw", "raw redis-py EVALSHA (one INCR)", raw_evalsha, 300, group=group),
        Variant("redis_check", "loopguard Redis store: before_tool", store_check, 300, group=group),
        Variant(
            "redis_turn",
            "loopguard guarded call, before+after (Redis store)",
            lambda: _guarded(breaker()),
            150,
            group=group,
        ),
        Variant(
            "redis_turn_deferred",
            "loopguard guarded call, before+after, defer_seconds=0.1 (one round trip)",
            lambda: _guarded(breaker(0.1)),
            150,
            group=group,
        ),
    ], None


def redis_server_cost(ops: int = 2_000) -> dict[str, dict[str, float]] | None:
    """What Redis itself spends per op (goal 3's "a script cost near a trivial script's"): µs of scripts and
    functions, and the Redis commands they run inside, from ``INFO commandstats`` deltas while only this process
    runs: raw EVALSHA of the trivial script, and a guarded call (before + after), default and deferred. None when
    no Redis answers. Counted on the server, so the machine's noise barely moves the command counts."""
    with _bench_redis() as found:
        return None if found is None else _server_cost(*found, ops)


def _server_cost(client: Any, prefix: str, ops: int) -> dict[str, dict[str, float]]:
    from loopguard_core.stores.redis import RedisStore

    scripts = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")

    def totals() -> tuple[float, int]:
        stats = client.info("commandstats")
        usec = sum(v["usec"] for k, v in stats.items() if k in scripts)
        inner = sum(v["calls"] for k, v in stats.items() if k not in scripts and not k.startswith("cmdstat_info"))
        return usec, inner

    def measure(op: Callable[[], object]) -> dict[str, float]:
        for _ in range(100):
            op()
        usec, inner = totals()
        for _ in range(ops):
            op()
        usec_after, inner_after = totals()
        return {"server_us": round((usec_after - usec) / ops, 1), "commands": round((inner_after - inner) / ops, 1)}

    out: dict[str, dict[str, float]] = {}
    stores: list[Any] = []
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        out["raw"] = measure(functools.partial(script, keys=[f"{prefix}:raw"]))
        for name, defer in (("turn", None), ("turn_deferred", 0.1)):
            store = RedisStore(REDIS_URL, namespace=prefix, defer_seconds=defer)
            stores.append(store)
            op = _guarded(Breaker(store=store, scope=f"{prefix}-{name}"))
            out[name] = measure(op)
    finally:
        for store in stores:
            store.close()
    return out


PROCESSES = 4  # goal 3's "4 processes"


def redis_processes(*, smoke: bool = False) -> dict[str, dict[str, float]] | None:
    """Goal 3 with ``PROCESSES`` processes: ops/s of all of them together, raw EVALSHA of the trivial script against
    a guarded call (before + after), default and ``defer_seconds=0.1``, the two kinds alternating in short phases
    (``benchmarks.redis_path``'s measurement, medians). None when no Redis answers. Only keys it made are deleted."""
    from . import redis_path

    seconds, rounds = (0.4, 1) if smoke else (6.0, 5)
    with _bench_redis() as found:
        if found is None:
            return None
        prefix = found[1]
        out: dict[str, dict[str, float]] = {}
        for key, defer in (("default", None), ("deferred", 0.1)):
            ops = redis_path._parallel(REDIS_URL, prefix, seconds, PROCESSES, rounds, defer, kinds=("raw", "turn"))
            out[key] = {kind: round(value) for kind, value in ops.items()}
        return out


@contextlib.contextmanager
def _bench_redis() -> Iterator[tuple[Any, str] | None]:
    """A client of the benchmark's Redis and a fresh key prefix, or None when no Redis answers; every key under the
    prefix is deleted at the end."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        client.ping()
    except Exception:
        yield None
        return
    prefix = f"lgbench-{uuid.uuid4().hex[:8]}"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()


# -- goals ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    name: str
    target: str  # "<= 2.0x", ">= 50%", or "none" (a measured comparison the issue sets no target for)
    value: float | None  # in the target's unit (x or %)
    unit: str
    status: str  # "met", "not met", "pending", "no target"
    note: str


@dataclass(frozen=True)
class OverheadResult:
    rounds: int
    measured: dict[str, Measured]
    goals: list[Goal]
    context: list[str]
    notes: list[str]
    large: list[dict[str, Any]] = field(default_factory=list)
    cold: list[dict[str, Any]] = field(default_factory=list)
    redis_server: dict[str, dict[str, float]] | None = None
    redis_processes: dict[str, dict[str, float]] | None = None  # redis_processes()
    instructions: dict[str, Any] = field(default_factory=dict)  # per_call_instructions()


def _share(m: dict[str, Measured], floor: str, ours: str) -> float:
    """Our throughput as a share of the floor's (= floor time / our time)."""
    return m[floor].median_ns / m[ours].median_ns


def _share_goals(
    m: dict[str, Measured], floor: str, name: str, least: float, rows: Sequence[tuple[str, str]], note: str = ""
) -> list[Goal]:
    """One throughput goal row per measured variant in ``rows`` ((key, how) pairs): its share of ``floor``."""
    goals = []
    for key, how in rows:
        if key in m:
            share = _share(m, floor, key)
            status = "met" if share >= least else "not met"
            goals.append(Goal(f"{name}, {how}", f">= {100 * least:.0f}%", round(100 * share, 1), "%", status, note))
    return goals


def _goals(
    m: dict[str, Measured], notes: list[str], processes: dict[str, dict[str, float]] | None = None
) -> tuple[list[Goal], list[str]]:
    """The goal rows and context lines; ``processes``: :func:`redis_processes`'s ops/s (None: pending)."""

    def why(prefix: str) -> str:
        return next((n for n in notes if n.startswith(prefix)), "pending")

    goals, context = [], []
    bare = m["bare"].median_ns
    ratio = (m["loopguard_memory"].median_ns - bare) / (m["pybreaker"].median_ns - bare)
    goals.append(
        Goal(
            "in-memory overhead vs pybreaker's",
            "<= 2.0x",
            round(ratio, 2),
            "x",
            "met" if ratio <= 2.0 else "not met",
            "(loopguard before+after - bare) / (pybreaker - bare)",
        )
    )
    for size in ("small", "medium"):
        ours = m.get(f"loopguard_{size}")
        if ours is None:
            continue
        peer = m.get(f"agentguard_{size}")
        name = f"per guarded call, {size} args, vs agentguard47 LoopGuard.check (issue 14)"
        if peer is not None:
            ratio = ours.median_ns / peer.median_ns
            how = "same args; " + ("default install (compiled fast path)" if compiled_fast_path() else "pure Python")
            goals.append(Goal(name, "<= 1.0x", round(ratio, 2), "x", "met" if ratio <= 1.0 else "not met", how))
        else:
            goals.append(Goal(name, "<= 1.0x", None, "x", "pending", why("agentguard47")))
        floor = m[f"floor_py_{size}"]
        pure = m.get(f"loopguard_pure_{size}", ours)
        ratio = pure.median_ns / floor.median_ns
        goals.append(
            Goal(
                f"per guarded call, {size} args, vs the pure-Python floor (issue 14)",
                "<= 2.0x",
                round(ratio, 2),
                "x",
                "met" if ratio <= 2.0 else "not met",
                "pure Python, compiled fast path off",
            )
        )
        if peer is not None:
            context.append(
                f"{size} args, pure Python (compiled fast path off): {pure.median_ns / 1000:,.2f} µs per call,"
                f" {pure.median_ns / peer.median_ns:.2f}x agentguard47's check;"
                f" with it: {ours.median_ns / 1000:,.2f} µs."
            )
        compiled = m.get(f"floor_c_{size}")
        if compiled is not None:
            context.append(
                f"{size} args: loopguard {ours.median_ns / 1000:,.2f} µs per call, agentguard47 "
                + (f"{peer.median_ns / 1000:,.2f} µs, " if peer is not None else "- , ")
                + f"pure-Python floor {floor.median_ns / 1000:,.2f} µs, compiled floor (orjson + xxh3)"
                f" {compiled.median_ns / 1000:,.2f} µs ({ours.median_ns / compiled.median_ns:,.1f}x it)."
            )
    name = "SQLite: guarded call with its ledger row vs raw sqlite3 per-row WAL commit (throughput, issue 14)"
    if "sqlite_record" in m:
        goals += _share_goals(
            m,
            "sqlite_raw",
            name,
            0.7,
            (
                ("sqlite_turn", "default: one commit per row"),
                ("sqlite_turn_deferred", f"defer_seconds={LEDGER_DEFER}: routine rows committed together"),
            ),
            "synchronous=NORMAL",
        )
        share = _share(m, "sqlite_raw", "sqlite_record")
        context.append(
            f"SQLite: the ledger's append alone (`Ledger.record`) runs at {100 * share:.1f}% of the raw per-row"
            f" commit's throughput (earlier goal: >= 50%); a guarded turn with its row takes"
            f" {m['sqlite_turn'].median_ns / 1000:,.0f} µs against {m['sqlite_raw'].median_ns / 1000:,.0f} µs raw."
        )
    else:
        goals.append(Goal(name, ">= 70%", None, "%", "pending", why("SQLite")))
    name = "Redis: guarded call (before + after) vs raw EVALSHA (throughput, single client, issue 14)"
    if "redis_turn" in m:
        rows = (("redis_turn", "default: two round trips"), ("redis_turn_deferred", "defer_seconds=0.1"))
        goals += _share_goals(m, "redis_raw", name, 0.8, rows)
        check = _share(m, "redis_raw", "redis_check")
        context.append(
            f"Redis: before_tool alone runs at {100 * check:.1f}% of a raw EVALSHA's throughput; a guarded call takes"
            f" {m['redis_turn'].median_ns / 1000:,.0f} µs, one raw EVALSHA {m['redis_raw'].median_ns / 1000:,.0f} µs"
            " (more of the Redis path: python -m benchmarks.redis_path)."
        )
    else:
        goals.append(Goal(name, ">= 80%", None, "%", "pending", why("Redis")))
    name = f"Redis: guarded call (before + after) vs raw EVALSHA (throughput, {PROCESSES} processes, issue 14)"
    for key, how in (("default", "default: two round trips"), ("deferred", "defer_seconds=0.1")):
        if processes and key in processes:
            ops = processes[key]
            share = ops["turn"] / ops["raw"]
            status = "met" if share >= 0.8 else "not met"
            note = f"{ops['turn']:,.0f} vs {ops['raw']:,.0f} ops/s, all processes together"
            goals.append(Goal(f"{name}, {how}", ">= 80%", round(100 * share, 1), "%", status, note))
        else:
            goals.append(Goal(f"{name}, {how}", ">= 80%", None, "%", "pending", why("Redis")))
    name = "PostgreSQL ledger per-row append vs raw prepared INSERT + commit (throughput)"
    if "pg_record" in m:
        share = _share(m, "pg_raw", "pg_record")
        goals.append(
            Goal(name, "none", round(100 * share, 1), "%", "no target", "issue 6 lists the variant without a target")
        )
        turn = _share(m, "pg_raw", "pg_turn")
        context.append(
            f"PostgreSQL: a full guarded turn (before + after + one ledger row) runs at {100 * turn:.1f}% of the"
            f" raw per-row commit's throughput ({m['pg_turn'].median_ns / 1000:,.0f} µs vs"
            f" {m['pg_raw'].median_ns / 1000:,.0f} µs)"
            + (
                f"; with `defer_seconds={LEDGER_DEFER}` (rows committed together) a turn takes"
                f" {m['pg_turn_deferred'].median_ns / 1000:,.0f} µs, {_share(m, 'pg_raw', 'pg_turn_deferred'):,.1f}x"
                " the raw per-row commit's throughput."
                if "pg_turn_deferred" in m
                else "."
            )
        )
    else:
        goals.append(Goal(name, "none", None, "%", "pending", why("PostgreSQL")))
    return goals, context


def run(*, smoke: bool = False) -> OverheadResult:
    rounds = 3 if smoke else 21
    scale = 10 if smoke else 1
    variants = [
        Variant("bare", "bare call", _bare, 200_000),
        Variant("pybreaker", "pybreaker 1.4.1 CircuitBreaker", _pybreaker, 50_000),
        Variant("purgatory", "purgatory 3.0.1 SyncCircuitBreakerFactory", _purgatory, 20_000),
        Variant("loopguard_memory", "loopguard before+after (memory)", _loopguard_memory, 20_000),
    ]
    more_variants, notes = _per_call_variants()
    variants += more_variants
    res = _Resources()
    try:
        for add in (_sqlite_variants, _postgres_variants, _redis_variants):
            more, why = add(res)
            variants += more
            if why:
                notes.append(why)
        variants = [replace(v, ops=max(30 if v.ops < 1_000 else 50, v.ops // scale)) for v in variants]
        measured = interleave(variants, rounds)
    finally:
        res.cleanup()
    processes = redis_processes(smoke=smoke) if "redis_turn" in measured else None
    goals, context = _goals(measured, notes, processes)
    large = large_args(smoke=smoke)
    for row in large:
        context.append(
            f"large arguments (issue 14, goal 2): {row['case']}: {row['us_per_call']:,.0f} µs per before+after,"
            f" {row['us_per_mb']:,.0f} µs per MB"
        )
    server = redis_server_cost(200 if smoke else 2_000) if "redis_turn" in measured else None
    if server is not None:
        context.append(redis_server_line(server))
    instructions = per_call_instructions(smoke=smoke)
    context.append(instructions_line(instructions))
    cold = cold_calls(smoke=smoke)
    by_kind = {row["kind"]: row for row in cold}
    line = ", ".join(f"{row['label']} {row['us_per_call']:,.1f} µs ({row['x_floor']}x the floor)" for row in cold)
    if "agentguard" in by_kind:
        ratio = by_kind["loopguard"]["us_per_call"] / by_kind["agentguard"]["us_per_call"]
        line += f"; loopguard / agentguard47 {ratio:.2f}x"
    context.append(
        "caches flushed before every call (as a framework's own work between two tool calls flushes them), small"
        f" args, CPU time per call: {line}"
    )
    return OverheadResult(rounds, measured, goals, context, notes, large, cold, server, processes, instructions)


def redis_server_line(server: dict[str, dict[str, float]]) -> str:
    raw, turn, deferred = server["raw"], server["turn"], server["turn_deferred"]
    return (
        f"Redis server time per guarded call (INFO commandstats, issue 14 goal 3's script cost): default"
        f" {turn['server_us']} µs running {turn['commands']} Redis commands, defer_seconds=0.1"
        f" {deferred['server_us']} µs running {deferred['commands']}; the trivial script {raw['server_us']} µs"
        f" running {raw['commands']} ({turn['server_us'] / raw['server_us']:.1f}x and"
        f" {deferred['server_us'] / raw['server_us']:.1f}x it)."
    )


def goal_status(goal: Goal) -> str:
    value = "-" if goal.value is None else f"{goal.value}{goal.unit}"
    return f"{value} (target {goal.target}): {goal.status}"


def render(result: OverheadResult) -> str:
    m = result.measured
    bare, pb = m["bare"].median_ns, m["pybreaker"].median_ns
    lines = [f"{'variant':62} {'ns/call':>12} {'p25-p75':>22} {'x bare':>9} {'overhead x pybreaker':>21}"]
    for item in m.values():
        over = (item.median_ns - bare) / (pb - bare) if item.key != "bare" else 0.0
        lines.append(
            f"{item.label:62} {item.median_ns:>12,.0f} {item.spread:>22} {item.median_ns / bare:>9.1f} {over:>21.2f}"
        )
    lines.append("")
    lines += [f"goal {g.name}: {goal_status(g)} {g.note}".rstrip() for g in result.goals]
    lines += result.context
    return "\n".join(lines)


def to_json(result: OverheadResult) -> dict[str, Any]:
    return {
        "rounds": result.rounds,
        "measured": {k: asdict(v) for k, v in result.measured.items()},
        "goals": [asdict(g) for g in result.goals],
        "context": result.context,
        "notes": result.notes,
        "large_args": result.large,
        "cold_calls": result.cold,
        "redis_server": result.redis_server,
        "redis_processes": result.redis_processes,
        "instructions": result.instructions,
        "postgres_url": POSTGRES_URL,
        "redis_url": REDIS_URL,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few rounds, small batches (seconds)")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--instructions-child", help=argparse.SUPPRESS)  # KIND,SIZE,OPS,LIBRARY: under callgrind
    args = parser.parse_args(argv)
    if args.instructions_child:
        kind, size, ops, library = args.instructions_child.split(",", 3)
        _instructions_child(kind, size, int(ops), library)
        return 0
    try:
        import purgatory  # noqa: F401
        import pybreaker  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc}; install the benchmark environment (docs/benchmarks.md)", file=sys.stderr)
        return 2
    result = run(smoke=args.smoke)
    print(render(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(to_json(result), indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
