"""``python -m benchmarks.compiled``: the compiled build (``LOOPGUARD_COMPILE=1``, mypyc) beside the pure-Python
install, on the same host in one run: per guarded call (goal 1, timed and in CPU instructions) and per framework
run (goal 4, in instructions).

The wheel is built from this checkout into a scratch folder. Each measurement of it runs in a child process whose
``loopguard_core`` is that wheel's (``LOOPGUARD_BENCH_BUILD``, read by ``benchmarks/__init__.py``); the timed rows
alternate children of both builds and agentguard47, round after round, so each round meets the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import _callgrind, end_to_end, overhead
from ._corpus import REPO_ROOT

__all__ = ["build", "render_markdown", "run"]

BUILD_ENV = "LOOPGUARD_BENCH_BUILD"
_TIMED_OPS = {"small": 20_000, "medium": 3_000}
_ROUNDS = 7
_BUILD_SECONDS = 900


def build(into: Path) -> Path:
    """The compiled wheel of this checkout, unpacked into ``into/site`` (what ``pip install`` would put there)."""
    wheels = into / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "LOOPGUARD_COMPILE": "1"},
        timeout=_BUILD_SECONDS,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the compiled wheel did not build: {done.stderr[-2000:]}")
    (wheel,) = wheels.glob("loopguard_core-*.whl")
    site = into / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


@contextlib.contextmanager
def _children_use(site: Path | None) -> Iterator[None]:
    """Child processes started meanwhile import loopguard from ``site`` (None: from the checkout)."""
    before = os.environ.pop(BUILD_ENV, None)
    if site is not None:
        os.environ[BUILD_ENV] = str(site)
    try:
        yield
    finally:
        os.environ.pop(BUILD_ENV, None)
        if before is not None:
            os.environ[BUILD_ENV] = before


def _timed_child(kind: str, size: str) -> None:
    """In the child: nanoseconds per op of ``kind`` (the median of 5 batches after a warm-up), printed as JSON."""
    from loopguard_core._mypyc import compiled_modules

    op = overhead._per_call(kind, size)()
    ops = _TIMED_OPS[size]
    for _ in range(ops // 10):
        op()
    batches = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(ops):
            op()
        batches.append((time.perf_counter_ns() - start) / ops)
    print(json.dumps({"ns": statistics.median(batches), "compiled": len(compiled_modules())}))


def _timed(kind: str, size: str, site: Path | None) -> tuple[float, int]:
    with _children_use(site):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.compiled", "--timed-child", f"{kind},{size}"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"timed child {kind}/{size} failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return float(out["ns"]), int(out["compiled"])


def timed(site: Path, rounds: int = _ROUNDS) -> dict[str, Any]:
    """Median ns per guarded call of each build and of agentguard47's check, small and medium args."""
    import importlib.util

    contenders: list[tuple[str, str, Path | None]] = [("pure", "loopguard", None), ("compiled", "loopguard", site)]
    if importlib.util.find_spec("agentguard") is not None:
        contenders.append(("agentguard47", "agentguard", None))
    seen: dict[str, dict[str, list[float]]] = {size: {name: [] for name, _, _ in contenders} for size in _TIMED_OPS}
    for _ in range(rounds):
        for size in _TIMED_OPS:
            for name, kind, where in contenders:
                ns, compiled = _timed(kind, size, where)
                if kind == "loopguard" and (compiled > 0) != (where is not None):
                    raise RuntimeError(f"the {name} child ran a build with {compiled} compiled modules")
                seen[size][name].append(ns)
    return {size: {name: round(statistics.median(v), 1) for name, v in each.items()} for size, each in seen.items()}


def per_call_instructions(site: Path) -> dict[str, Any]:
    """CPU instructions per guarded call (callgrind), small and medium args: the compiled build, the pure one and
    agentguard47's check, each in a child of its own."""
    contenders: list[tuple[str, str, Path | None]] = [("compiled", "loopguard", site), ("pure", "loopguard", None)]
    if "agentguard" in dict(overhead._per_call_kinds()):
        contenders.append(("agentguard47", "agentguard", None))
    with tempfile.TemporaryDirectory(prefix="lg-requests-") as folder:
        try:
            library = _callgrind.requests_library(Path(folder))
        except RuntimeError as exc:
            return {"pending": str(exc)}
        out: dict[str, Any] = {size: {} for size in overhead.INSTRUCTION_OPS}
        for size, ops in overhead.INSTRUCTION_OPS.items():
            for name, kind, where in contenders:
                with _children_use(where):
                    spec = f"{kind},{size},{ops},{library}"
                    seconds = overhead._INSTRUCTION_SECONDS
                    out[size][name] = _callgrind.count("benchmarks.overhead", spec, f"{name}/{size}", seconds) // ops
    return out


def frameworks(site: Path, keys: Sequence[str], pure: dict[str, Any] | None = None) -> dict[str, Any]:
    """Goal 4 in instructions, guarded / pass-through per framework run, with each build (``pure``: the default
    install's counts of the same run, ``benchmarks.end_to_end``'s, when it made them)."""
    with _children_use(site):
        compiled = end_to_end._instructions(keys, end_to_end.INSTRUCTION_RUNS)
    if pure is None or "pending" in pure:
        with _children_use(None):
            pure = end_to_end._instructions(keys, end_to_end.INSTRUCTION_RUNS)
    return {"compiled": compiled, "pure": pure}


def run(
    *, smoke: bool = False, only: Sequence[str] | None = None, pure_frameworks: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything above (``only``: these framework runs; ``pure_frameworks``: see :func:`frameworks`);
    ``{"pending": why}`` under ``--smoke`` (the build alone takes about a minute)."""
    if smoke:
        return {"pending": "skipped by --smoke (building the compiled wheel takes about a minute)"}
    with tempfile.TemporaryDirectory(prefix="lg-compiled-") as folder:
        try:
            site = build(Path(folder))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return {"pending": str(exc)}
        keys = [r.key for r in end_to_end.RUNTIMES if end_to_end._available(r) is None and (not only or r.key in only)]
        return {
            "timed": timed(site),
            "instructions": per_call_instructions(site),
            "frameworks": frameworks(site, keys, pure_frameworks),
            "platform": platform.platform(),
        }


def render_markdown(result: dict[str, Any]) -> str:
    """This measurement's section of docs/benchmarks.md."""
    if "pending" in result:
        return f"Pending: {result['pending']}."
    lines = [
        "The hot path compiled with mypyc (`LOOPGUARD_COMPILE=1`, [deployment](deployment.md#the-compiled-build-"
        "loopguard_compile1)) beside the default install, measured side by side in one"
        f" run ({result['platform']}).",
        "",
        "| per guarded call, µs (median of rounds) | default install (pure Python + C signatures) | compiled |"
        " agentguard47 | compiled / agentguard47 (goal 1: <= 1.0x) |",
        "|---|---|---|---|---|",
    ]
    for size, each in result["timed"].items():
        peer = each.get("agentguard47")
        ratio = f"{each['compiled'] / peer:.2f}x, **{'met' if each['compiled'] <= peer else 'not met'}**"
        lines.append(
            f"| {size} args | {each['pure'] / 1000:,.2f} | {each['compiled'] / 1000:,.2f} |"
            + (f" {peer / 1000:,.2f} | {ratio} |" if peer else " - | - |")
        )
    counted = result["instructions"]
    if "pending" in counted:
        lines += ["", f"CPU instructions per guarded call: pending ({counted['pending']})."]
    else:
        parts = []
        for size, each in counted.items():
            text = f"{size} args: compiled {each['compiled']:,}, default install {each['pure']:,}"
            if "agentguard47" in each:
                text += f", agentguard47 {each['agentguard47']:,} (compiled / agentguard47"
                text += f" {each['compiled'] / each['agentguard47']:.2f}x)"
            parts.append(text)
        lines += ["", "CPU instructions per guarded call (callgrind): " + "; ".join(parts) + "."]
    fw = result["frameworks"]
    lines += [
        "",
        "| framework run: guarded / pass-through instructions (goal 4: <= 1.02) | default install | compiled |"
        " instructions the guard adds per turn, default / compiled |",
        "|---|---|---|---|",
    ]
    compiled, pure = fw["compiled"], fw["pure"]
    for key in [k for k in compiled if isinstance(compiled[k], dict)]:
        c, p = compiled[key], pure.get(key, {})
        if "pending" in c or "pending" in p:
            lines.append(f"| {key} | pending ({c.get('pending') or p.get('pending')}) | | |")
            continue
        status = "met" if c["ratio"] <= 1.02 else "not met"
        lines.append(
            f"| {key} | {p['ratio']:.4f} | {c['ratio']:.4f} (**{status}**) |"
            f" {p['added_per_turn']:,} / {c['added_per_turn']:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compiled", description=__doc__.splitlines()[0])
    parser.add_argument("--timed-child", help=argparse.SUPPRESS)
    parser.add_argument("--frameworks", nargs="*", help="only these framework runs (default: every one installed)")
    args = parser.parse_args(argv)
    if args.timed_child:
        kind, size = args.timed_child.split(",")
        _timed_child(kind, size)
        return 0
    result = run(only=args.frameworks)
    raw = REPO_ROOT / "benchmarks" / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "compiled.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
