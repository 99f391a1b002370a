"""The Redis hot path (issue 14, goal 3): a guarded tool call (before_tool + after_tool) on the Redis store
against raw redis-py EVALSHA of a one-line script, single client and N processes, plus what Redis itself
spends per script (INFO commandstats).

    python -m benchmarks.redis_path [--seconds 3] [--processes 4] [--url redis://127.0.0.1:6379/14]
    LOOPGUARD_BENCH_DEFER=0.1 python -m benchmarks.redis_path   # RedisStore(defer_seconds=0.1)

Prints per-op µs (single client: raw, check and turn in alternating chunks of 200 in one process, medians),
ops/s with N processes (the kinds alternating in 5 phases each, medians), the ratios to raw, and the server's
µs per script or function call (INFO commandstats: loopguard calls its steps as Redis Functions where the server
has them). "check" is before_tool alone, "turn" a guarded call (before_tool +
after_tool). Only keys this benchmark created are deleted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

URL = os.environ.get("LOOPGUARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TRIVIAL = "return redis.call('INCR', KEYS[1])"
KINDS = ("raw", "check", "turn")


def _defer_seconds() -> float | None:
    """``$LOOPGUARD_BENCH_DEFER``: the store's defer_seconds (unset, empty or 0: off)."""
    text = os.environ.get("LOOPGUARD_BENCH_DEFER", "").strip()
    try:
        value = float(text or "0")
    except ValueError:
        raise SystemExit(f"LOOPGUARD_BENCH_DEFER must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise SystemExit(f"LOOPGUARD_BENCH_DEFER must be >= 0, got {text!r}")
    return value or None


def _op(kind: str, url: str, prefix: str, defer: float | None) -> tuple[Callable[[], object], Callable[[], None]]:
    import redis

    if kind == "raw":
        client = redis.Redis.from_url(url)
        script = client.register_script(TRIVIAL)
        key = f"{prefix}:raw:{os.getpid()}"
        return (lambda: script(keys=[key])), client.close
    from loopguard_core import Breaker
    from loopguard_core.stores.redis import RedisStore

    store = RedisStore(url, namespace=prefix, defer_seconds=defer)
    breaker = Breaker(store=store, scope=f"{prefix}-{uuid.uuid4().hex[:6]}")
    counter = itertools.count()
    before, after = breaker.before_tool, breaker.after_tool

    if kind == "check":

        def check() -> None:
            before("noop", {"i": next(counter)})

        return check, store.close

    def turn() -> None:
        args = {"i": next(counter)}
        before("noop", args)
        after("noop", args, result="ok")

    return turn, store.close


def _interleaved(url: str, prefix: str, seconds: float, defer: float | None, chunk: int = 200) -> dict[str, float]:
    """µs per op of each kind, the kinds run in alternating chunks in this one process (so that all of them
    see the same machine load): the median over the chunks."""
    ops = {kind: _op(kind, url, prefix, defer) for kind in KINDS}
    for op, _ in ops.values():
        for _ in range(200):
            op()
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    deadline = time.perf_counter() + seconds * len(KINDS)
    while time.perf_counter() < deadline:
        for kind, (op, _) in ops.items():
            start = time.perf_counter()
            for _ in range(chunk):
                op()
            samples[kind].append((time.perf_counter() - start) / chunk * 1e6)
    for _, close in ops.values():
        close()
    return {kind: statistics.median(values) for kind, values in samples.items()}


def _worker(args: tuple[str, str, str, float, float | None, Any]) -> tuple[int, float]:
    kind, url, prefix, seconds, defer, barrier = args
    op, close = _op(kind, url, prefix, defer)
    for _ in range(200):
        op()
    barrier.wait()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            op()
        n += 50
    elapsed = time.perf_counter() - start
    close()
    return n, elapsed


def _parallel(
    url: str,
    prefix: str,
    seconds: float,
    processes: int,
    rounds: int,
    defer: float | None,
    kinds: Sequence[str] = KINDS,
) -> dict[str, float]:
    """ops/s of each kind with ``processes`` processes, the kinds alternating in short phases: the median."""
    ctx = multiprocessing.get_context("fork")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    with ctx.Manager() as manager, ctx.Pool(processes) as pool:
        for _ in range(rounds):
            for kind in kinds:
                barrier = manager.Barrier(processes)
                results = pool.map(_worker, [(kind, url, prefix, seconds / rounds, defer, barrier)] * processes)
                samples[kind].append(sum(n / elapsed for n, elapsed in results))
    return {kind: statistics.median(values) for kind, values in samples.items()}


def _commandstats(client: Any) -> tuple[int, float]:
    """Calls and µs of every script and function run so far (EVALSHA, EVAL, FCALL)."""
    stats = client.info("commandstats")
    kinds = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")
    return sum(v["calls"] for k, v in stats.items() if k in kinds), sum(
        v["usec"] for k, v in stats.items() if k in kinds
    )


def _script_cost(url: str, prefix: str, kind: str, defer: float | None, n: int = 3000) -> float:
    """Server µs per script or function call (INFO commandstats delta) while only this process runs ``kind``."""
    import redis

    client = redis.Redis.from_url(url)
    op, close = _op(kind, url, prefix, defer)
    for _ in range(100):
        op()
    before = _commandstats(client)
    for _ in range(n):
        op()
    after = _commandstats(client)
    close()
    client.close()
    calls, usec = after[0] - before[0], after[1] - before[1]
    return usec / calls if calls else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    import redis

    prefix = f"lgbench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(options.url)
    out: dict[str, Any] = {}
    try:
        defer = _defer_seconds()
        single = _interleaved(options.url, prefix, options.seconds, defer)
        p = options.processes
        parallel = _parallel(options.url, prefix, options.seconds, p, 5, defer)
        for kind in KINDS:
            out[f"{kind}_us"] = round(single[kind], 2)
            out[f"{kind}_ops_{p}p"] = round(parallel[kind])
            out[f"{kind}_server_us_per_call"] = round(_script_cost(options.url, prefix, kind, defer), 2)
        for kind in ("check", "turn"):
            out[f"{kind}_share_1p"] = round(out["raw_us"] / out[f"{kind}_us"], 3)
            out[f"{kind}_share_{p}p"] = round(out[f"{kind}_ops_{p}p"] / out[f"raw_ops_{p}p"], 3)
    finally:
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()
    if options.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
