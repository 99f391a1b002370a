"""The three figures of docs/benchmarks.md (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_all"]


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []

    summaries = results["detection"]["summaries"]
    labels = [s["label"].replace(" ", "\n", 2) for s in summaries]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), sharey=True)
    y = range(len(summaries))
    axes[0].barh(y, [100 * s["caught_in_time"] / s["runaways"] for s in summaries], color="#2a9d8f")
    axes[0].set_title("runaways refused by deadline (%)")
    axes[1].barh(y, [100 * s["false_stops"] / s["legit"] for s in summaries], color="#e76f51")
    axes[1].set_title("legit runs falsely stopped (%)")
    axes[2].barh(y, [s["wasted"] for s in summaries], color="#264653")
    axes[2].set_title("tool calls wasted before the stop (all runaways)")
    axes[0].set_yticks(list(y), labels, fontsize=8)
    axes[0].invert_yaxis()
    for ax in axes[:2]:
        ax.set_xlim(0, 100)
    fig.suptitle(f"Detection quality on {summaries[0]['runaways']} runaway and {summaries[0]['legit']} legit traces")
    fig.tight_layout()
    written.append(out / "detection.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    measured = results["overhead"]["measured"]
    bare = measured["bare"]["median_ns"]
    colors = {
        "in memory": "#457b9d",
        "SQLite ledger": "#2a9d8f",
        "PostgreSQL ledger": "#e9c46a",
        "Redis store": "#e76f51",
    }
    items = sorted(measured.values(), key=lambda m: list(colors).index(m.get("group", "in memory")))
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(items) + 1.8))
    y = list(range(len(items)))
    x = [m["median_ns"] / bare for m in items]
    ax.barh(y, x, color=[colors[m.get("group", "in memory")] for m in items])
    ax.errorbar(
        x,
        y,
        xerr=[
            [(m["median_ns"] - m["p25_ns"]) / bare for m in items],
            [(m["p75_ns"] - m["median_ns"]) / bare for m in items],
        ],
        fmt="none",
        ecolor="black",
        capsize=3,
    )
    for yi, m, xi in zip(y, items, x):
        ax.text(xi * 1.15, yi, f"{m['median_ns'] / 1000:,.1f} µs", va="center", fontsize=8)
    ax.set_yticks(y, [m["label"] for m in items], fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(right=max(x) * 6)
    ax.set_xlabel("time per call, x the bare call (log scale; whiskers: 25th-75th percentile; label: median)")
    ax.invert_yaxis()
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c)
        for g, c in colors.items()
        if any(m.get("group", "in memory") == g for m in items)
    ]
    names = [g for g in colors if any(m.get("group", "in memory") == g for m in items)]
    ax.legend(handles, names, loc="lower right", fontsize=8)
    ax.set_title("Overhead per call (median of interleaved rounds)")
    fig.tight_layout()
    written.append(out / "overhead.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    scale = results["scale"]
    fig, ax1 = plt.subplots(figsize=(8, 4.5))
    calls = [r["calls"] for r in scale["cost"]]
    ax1.plot(calls, [r["ns_per_call"] / 1000 for r in scale["cost"]], "o-", color="#2a9d8f", label="µs per call")
    ax1.set_xscale("log")
    ax1.set_xlabel("tool calls already made in the session")
    ax1.set_ylabel("µs per before+after")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(calls, [r["peak_bytes"] / 2**20 for r in scale["memory"]], "s--", color="#e76f51", label="peak MiB")
    ax2.set_ylabel("peak traced memory (MiB)")
    ax2.set_ylim(bottom=0)
    ax1.set_title("Cost per check vs session length (one Breaker, distinct calls)")
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.88))
    fig.tight_layout()
    written.append(out / "scale.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
