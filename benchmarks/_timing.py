"""Interleaved, repeated timing: this machine is shared and noisy, so every figure is a median of many
rounds, each round running every variant once in a fresh random order, with the spread (25th-75th
percentile) reported beside it."""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Measured", "Variant", "interleave"]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    # Returns the op; called once per round, not timed. An op may carry a ``settle`` attribute: called once inside
    # every timed batch, after its ops, to finish what they left pending (rows a ledger keeps waiting), so that
    # its cost is counted in the batch and not paid between batches.
    make: Callable[[], Callable[[], object]]
    ops: int  # ops per timed batch
    group: str = "in memory"  # the table section it is reported in
    finish: Callable[[], object] | None = None  # undoes what make() switched (not timed), after every batch


@dataclass(frozen=True)
class Measured:
    key: str
    label: str
    median_ns: float
    p25_ns: float
    p75_ns: float
    rounds: int
    group: str = "in memory"

    @property
    def spread(self) -> str:
        return f"{self.p25_ns:,.0f}-{self.p75_ns:,.0f}"


def _time(op: Callable[[], object], ops: int, settle: Callable[[], object] | None) -> float:
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(ops):
            op()
        if settle is not None:
            settle()
        return (time.perf_counter_ns() - start) / ops
    finally:
        if gc_was:
            gc.enable()


def interleave(variants: Sequence[Variant], rounds: int, *, seed: int = 6) -> dict[str, Measured]:
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {v.key: [] for v in variants}
    for _ in range(rounds):
        order = list(variants)
        rng.shuffle(order)
        for variant in order:
            op = variant.make()
            try:
                op()  # warm up the caches this round
                settle = getattr(op, "settle", None)
                if settle is not None:
                    settle()  # what the warm-up left pending is not this batch's
                samples[variant.key].append(_time(op, variant.ops, settle))
            finally:
                if variant.finish is not None:
                    variant.finish()
    out = {}
    for v in variants:
        data = sorted(samples[v.key])
        q = statistics.quantiles(data, n=4) if len(data) >= 2 else [data[0]] * 3
        out[v.key] = Measured(v.key, v.label, statistics.median(data), q[0], q[2], len(data), v.group)
    return out
