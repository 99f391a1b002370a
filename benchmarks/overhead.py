"""Overhead per guarded call, in one process, as ratios to the bare call and to pybreaker.

``python -m benchmarks.overhead [--smoke] [--json PATH]``. Variants, all wrapping a no-op "tool":

- bare call; pybreaker and purgatory circuit breakers (memory storage) wrapping it;
- loopguard ``before_tool`` + ``after_tool`` in memory (distinct arguments per call, as real work);
- loopguard with the SQLite ledger (one hash-chained row per call) vs a raw ``sqlite3`` insert of a
  ten-column row with one commit per row in WAL mode (synchronous=NORMAL, the ledger's default);
- loopguard's Redis store check (``before_tool``) vs raw redis-py ``EVALSHA`` of a one-line script.

Redis: ``$LOOPGUARD_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``); skipped, and said so, when
unreachable. Only keys this benchmark created are deleted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loopguard_core import Breaker

from ._timing import Measured, Variant, interleave

__all__ = ["Goal", "OverheadResult", "main", "run"]

REDIS_URL = os.environ.get("LOOPGUARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def noop() -> None:
    return None


def _bare() -> Callable[[], None]:
    return noop


def _pybreaker() -> Callable[[], None]:
    import pybreaker

    breaker = pybreaker.CircuitBreaker()
    wrapped: Callable[[], None] = breaker(noop)
    return wrapped


def _purgatory() -> Callable[[], None]:
    from purgatory import SyncCircuitBreakerFactory

    factory = SyncCircuitBreakerFactory()
    wrapped: Callable[[], None] = factory(circuit=f"bench-{uuid.uuid4().hex[:6]}")(noop)
    return wrapped


def _guarded(breaker: Breaker) -> Callable[[], None]:
    counter = itertools.count()
    before, after = breaker.before_tool, breaker.after_tool

    def op() -> None:
        args = {"i": next(counter)}
        before("noop", args)
        result = noop()
        after("noop", args, result=result)

    return op


def _loopguard_memory() -> Callable[[], None]:
    return _guarded(Breaker())


class _Dirs:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="loopguard-bench-"))
        self.count = itertools.count()

    def fresh(self, name: str) -> Path:
        return self.root / f"{name}-{next(self.count)}.db"


def _ledger_variants(dirs: _Dirs) -> tuple[list[Variant], str | None]:
    try:
        from loopguard_core.ledger import Ledger
    except ImportError as exc:
        return [], f"pending: loopguard_core.ledger not importable ({exc})"

    def loopguard_ledger() -> Callable[[], None]:
        return _guarded(Breaker(ledger=Ledger(str(dirs.fresh("ledger")))))

    def raw_sqlite() -> Callable[[], None]:
        db = sqlite3.connect(dirs.fresh("raw"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE ledger (seq INTEGER PRIMARY KEY, run_id TEXT, turn INT, ts REAL, state TEXT, tool_sig TEXT,"
            " input_sha256 TEXT, tokens_in INT, tokens_out INT, cost_usd REAL, prev_hash TEXT)"
        )
        counter = itertools.count()
        sql = "INSERT INTO ledger VALUES (NULL,?,?,?,?,?,?,?,?,?,?)"

        def op() -> None:
            n = next(counter)
            db.execute("BEGIN")
            db.execute(sql, ("run", n, 0.0, "CLOSED", "noop", "0" * 64, 0, 0, 0.0, "f" * 64))
            db.execute("COMMIT")

        return op

    return [
        Variant("sqlite_raw", "raw sqlite3 insert + commit per row (WAL)", raw_sqlite, 2_000),
        Variant("loopguard_ledger", "loopguard + SQLite ledger (before+after)", loopguard_ledger, 2_000),
    ], None


def _redis_variants() -> tuple[list[Variant], str | None, Callable[[], None]]:
    try:
        import redis
    except ImportError:
        return [], "skipped: redis-py not installed", noop
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        return [], f"skipped: no Redis at {REDIS_URL} ({exc})", noop
    try:
        from loopguard_core.stores.redis import RedisStore
    except ImportError as exc:
        return [], f"pending: RedisStore not importable ({exc})", noop
    prefix = f"lgbench-{uuid.uuid4().hex[:8]}"
    script = client.register_script("return redis.call('INCR', KEYS[1])")

    def raw_evalsha() -> Callable[[], None]:
        key = f"{prefix}:raw"

        def op() -> None:
            script(keys=[key])

        return op

    def store_check() -> Callable[[], None]:
        breaker = Breaker(store=RedisStore(REDIS_URL, namespace=prefix), scope=f"{prefix}-{uuid.uuid4().hex[:6]}")
        counter = itertools.count()

        def op() -> None:
            breaker.before_tool("noop", {"i": next(counter)})

        return op

    def store_turn() -> Callable[[], None]:
        breaker = Breaker(store=RedisStore(REDIS_URL, namespace=prefix), scope=f"{prefix}-{uuid.uuid4().hex[:6]}")
        return _guarded(breaker)

    def cleanup() -> None:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()

    return (
        [
            Variant("redis_raw", "raw redis-py EVALSHA (one INCR)", raw_evalsha, 300),
            Variant("redis_check", "loopguard Redis store: before_tool", store_check, 300),
            Variant("redis_turn", "loopguard Redis store: before+after", store_turn, 150),
        ],
        None,
        cleanup,
    )


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: float | None
    met: bool | None
    note: str


@dataclass(frozen=True)
class OverheadResult:
    rounds: int
    measured: dict[str, Measured]
    goals: list[Goal]
    notes: list[str]


def _goals(m: dict[str, Measured], notes: list[str]) -> list[Goal]:
    goals = []
    bare = m["bare"].median_ns
    lg = m["loopguard_memory"].median_ns - bare
    pb = m["pybreaker"].median_ns - bare
    ratio = lg / pb
    goals.append(
        Goal("in-memory overhead vs pybreaker", "<= 2.0x", round(ratio, 2), ratio <= 2.0, "(lg - bare)/(pb - bare)")
    )
    if "loopguard_ledger" in m:
        share = m["sqlite_raw"].median_ns / m["loopguard_ledger"].median_ns
        goals.append(
            Goal("SQLite ledger turn throughput vs raw WAL commit", ">= 50%", round(100 * share, 1), share >= 0.5, "")
        )
    else:
        goals.append(Goal("SQLite ledger turn throughput vs raw WAL commit", ">= 50%", None, None, "pending"))
    if "redis_check" in m:
        share = m["redis_raw"].median_ns / m["redis_check"].median_ns
        goals.append(Goal("Redis check throughput vs raw EVALSHA", ">= 80%", round(100 * share, 1), share >= 0.8, ""))
    else:
        goals.append(Goal("Redis check throughput vs raw EVALSHA", ">= 80%", None, None, "; ".join(notes) or "pending"))
    goals.append(Goal("PostgreSQL ledger", "-", None, None, "pending: the PostgreSQL ledger has not landed"))
    return goals


def run(*, smoke: bool = False) -> OverheadResult:
    rounds = 3 if smoke else 21
    scale = 10 if smoke else 1
    dirs = _Dirs()
    variants = [
        Variant("bare", "bare call", _bare, 200_000),
        Variant("pybreaker", "pybreaker 1.4.1 CircuitBreaker", _pybreaker, 50_000),
        Variant("purgatory", "purgatory 3.0.1 SyncCircuitBreakerFactory", _purgatory, 20_000),
        Variant("loopguard_memory", "loopguard before+after (memory)", _loopguard_memory, 20_000),
    ]
    notes: list[str] = []
    ledger, why = _ledger_variants(dirs)
    variants += ledger
    if why:
        notes.append(why)
    redis_variants, why, cleanup = _redis_variants()
    variants += redis_variants
    if why:
        notes.append(why)
    variants = [Variant(v.key, v.label, v.make, max(50, v.ops // scale)) for v in variants]
    try:
        measured = interleave(variants, rounds)
    finally:
        cleanup()
    return OverheadResult(rounds, measured, _goals(measured, notes), notes)


def render(result: OverheadResult) -> str:
    m = result.measured
    bare, pb = m["bare"].median_ns, m["pybreaker"].median_ns
    lines = [f"{'variant':50} {'ns/call':>10} {'p25-p75':>18} {'x bare':>8} {'overhead x pybreaker':>21}"]
    for item in m.values():
        over = (item.median_ns - bare) / (pb - bare) if item.key != "bare" else 0.0
        lines.append(
            f"{item.label:50} {item.median_ns:>10,.0f} {item.spread:>18} {item.median_ns / bare:>8.1f} {over:>21.2f}"
        )
    lines.append("")
    for g in result.goals:
        status = "pending" if g.met is None else ("met" if g.met else "NOT met")
        value = "-" if g.value is None else str(g.value)
        lines.append(f"goal {g.name}: {value} (target {g.target}) {status} {g.note}")
    return "\n".join(lines)


def to_json(result: OverheadResult) -> dict[str, Any]:
    return {
        "rounds": result.rounds,
        "measured": {k: asdict(v) for k, v in result.measured.items()},
        "goals": [asdict(g) for g in result.goals],
        "notes": result.notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few rounds, small batches (seconds)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
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
