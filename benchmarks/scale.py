"""Scale: per-check cost and memory as one session grows, and ledger verification of a large chain.

``python -m benchmarks.scale [--smoke] [--json PATH]``:

- one ``Breaker()`` takes 10^2 ... 10^6 distinct tool calls (before + after) in one run; at each decade
  batches of the next 2,000 calls are timed, each paired (in random order) with the same batch on a fresh
  session of 100 calls, so the machine's noise of that moment hits both: the figure per decade is the
  ratio of the two medians, and the goal (flat within 1.2x) is checked on the worst ratio. In a separate
  pass under ``tracemalloc``, the peak traced memory is read;
- a SQLite ledger of N rows (10^6 in the full run) is written in a child process and verified in another,
  which reports the verify time and its peak RSS (``VmHWM`` of the child's own address space; ``ru_maxrss``
  would include the parent's memory inherited at fork): constant memory means the peak does not grow with N.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopguard_core import Breaker

__all__ = ["main", "run"]


def _ops(breaker: Breaker, counter: itertools.count[int], n: int) -> None:
    before, after = breaker.before_tool, breaker.after_tool
    for _ in range(n):
        args = {"i": next(counter)}
        before("noop", args)
        after("noop", args, result="ok")  # an answer, as a real tool gives


BATCH = 2_000
FRESH_CALLS = 100


def _batch(breaker: Breaker, counter: itertools.count[int]) -> float:
    start = time.perf_counter_ns()
    _ops(breaker, counter, BATCH)
    return (time.perf_counter_ns() - start) / BATCH


def _fresh_batch() -> float:
    fresh, counter = Breaker(), itertools.count()
    _ops(fresh, counter, FRESH_CALLS)
    return _batch(fresh, counter)


def session_cost(max_exp: int, pairs: int = 9, seed: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    breaker, counter = Breaker(), itertools.count()
    done, rows = 0, []
    for exp in range(2, max_exp + 1):
        target = 10**exp
        _ops(breaker, counter, max(0, target - done))
        done = max(done, target)
        grown, fresh = [], []
        for _ in range(pairs):
            if rng.random() < 0.5:
                fresh.append(_fresh_batch())
                grown.append(_batch(breaker, counter))
            else:
                grown.append(_batch(breaker, counter))
                fresh.append(_fresh_batch())
            done += BATCH
        med, ref = statistics.median(grown), statistics.median(fresh)
        rows.append(
            {
                "calls": target,
                "ns_per_call": med,
                "fresh_ns_per_call": ref,
                "ratio": round(med / ref, 3),
                "batches": grown,
                "fresh_batches": fresh,
            }
        )
    return rows


def session_memory(max_exp: int) -> list[dict[str, Any]]:
    breaker, counter = Breaker(), itertools.count()
    done, rows = 0, []
    tracemalloc.start()
    try:
        for exp in range(2, max_exp + 1):
            target = 10**exp
            _ops(breaker, counter, target - done)
            done = target
            rows.append({"calls": target, "peak_bytes": tracemalloc.get_traced_memory()[1]})
    finally:
        tracemalloc.stop()
    return rows


_WRITE = """
import sys, time
from loopguard_core.ledger import Ledger
path, n = sys.argv[1], int(sys.argv[2])
ledger = Ledger(path)
start = time.perf_counter()
for i in range(n):
    ledger.record(session_id=f"s{i // 1000}", origin="tool", turn=i % 1000 + 1, tool="noop", input_text=str(i))
ledger.close()
print(time.perf_counter() - start)
"""

_VERIFY = """
import json, re, resource, sys, time
from loopguard_core.ledger import Ledger
ledger = Ledger(sys.argv[1], read_only=True)
start = time.perf_counter()
result = ledger.verify()
seconds = time.perf_counter() - start
try:  # this process's own peak; ru_maxrss keeps the parent's high-water mark across fork + exec
    with open("/proc/self/status") as fh:
        peak, how = int(re.search(r"VmHWM:\\s+(\\d+)", fh.read()).group(1)), "VmHWM"
except (OSError, AttributeError):
    peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
print(json.dumps({"ok": result.ok, "seconds": seconds, "peak_rss_kb": peak, "rss_source": how}))
"""


def ledger_verify(sizes: Sequence[int]) -> list[dict[str, Any]] | str:
    try:
        import loopguard_core.ledger  # noqa: F401
    except ImportError as exc:
        return f"pending: loopguard_core.ledger not importable ({exc})"
    rows = []
    with tempfile.TemporaryDirectory(prefix="loopguard-bench-") as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"ledger-{n}.db")
            write = subprocess.run([sys.executable, "-c", _WRITE, path, str(n)], capture_output=True, text=True)
            if write.returncode != 0:
                return f"ledger write failed: {write.stderr.strip().splitlines()[-1:]}"
            check = subprocess.run([sys.executable, "-c", _VERIFY, path], capture_output=True, text=True)
            if check.returncode != 0:
                return f"ledger verify failed: {check.stderr.strip().splitlines()[-1:]}"
            info = json.loads(check.stdout)
            info.update(rows=n, write_seconds=float(write.stdout))
            rows.append(info)
    return rows


def run(*, smoke: bool = False) -> dict[str, Any]:
    max_exp = 4 if smoke else 6
    sizes = [1_000, 10_000] if smoke else [10_000, 100_000, 1_000_000]
    cost = session_cost(max_exp, pairs=3 if smoke else 9)
    medians = [r["ns_per_call"] for r in cost]
    return {
        "cost": cost,
        "flatness": round(max(r["ratio"] for r in cost), 2),
        "spread": round(max(medians) / min(medians), 2),
        "memory": session_memory(max_exp),
        "verify": ledger_verify(sizes),
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"{'calls in session':>16} {'ns/call':>10} {'fresh ns/call':>14} {'ratio':>6} {'peak traced MiB':>16}"]
    for cost, mem in zip(result["cost"], result["memory"]):
        lines.append(
            f"{cost['calls']:>16,} {cost['ns_per_call']:>10,.0f} {cost['fresh_ns_per_call']:>14,.0f}"
            f" {cost['ratio']:>6.2f} {mem['peak_bytes'] / 2**20:>16.2f}"
        )
    lines.append(
        f"worst ratio to a fresh session timed beside it: {result['flatness']}x (goal <= 1.2x);"
        f" max/min of the medians across decades: {result['spread']}x"
    )
    verify = result["verify"]
    if isinstance(verify, str):
        lines.append(f"ledger verify: {verify}")
    else:
        for row in verify:
            lines.append(
                f"ledger verify {row['rows']:>9,} rows: {row['seconds']:.2f} s, peak RSS "
                f"{row['peak_rss_kb'] / 1024:.0f} MiB, ok={row['ok']} (write {row['write_seconds']:.1f} s)"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="up to 10^4 calls and 10^4 ledger rows")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    result = run(smoke=args.smoke)
    print(render(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
