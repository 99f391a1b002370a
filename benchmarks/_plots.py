"""The three figures of docs/benchmarks.md (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

__all__ = ["plot_all"]


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if results.get("real_traces"):
        written.append(_plot_real(results["real_traces"], out, plt))

    summaries = results["detection"]["summaries"]
    labels = [textwrap.fill(s["label"], 22, break_long_words=False) for s in summaries]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6), sharey=True)
    y = list(range(len(summaries)))
    panels = [
        (
            "runaways refused by deadline (higher is better)",
            [100 * s["caught_in_time"] / s["runaways"] for s in summaries],
            [f"{s['caught_in_time']}/{s['runaways']}" for s in summaries],
            "#2a9d8f",
        ),
        (
            "legit runs falsely stopped (lower is better)",
            [100 * s["false_stops"] / s["legit"] for s in summaries],
            [f"{s['false_stops']}/{s['legit']}" for s in summaries],
            "#e76f51",
        ),
        (
            "tool calls wasted before the stop, all runaways (lower is better)",
            [s["wasted"] for s in summaries],
            [str(s["wasted"]) for s in summaries],
            "#264653",
        ),
    ]
    for ax, (title, values, texts, color) in zip(axes, panels):
        ax.barh(y, values, color=color)
        ax.set_title(title, fontsize=10)
        top = max(max(values), 1)
        for yi, value, text in zip(y, values, texts):
            ax.text(value + top * 0.01, yi, text, va="center", fontsize=9)
        ax.set_xlim(0, top * 1.15)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_xlim(0, 115)
    axes[1].set_xlim(0, 115)
    axes[0].set_xlabel("% of runaways")
    axes[1].set_xlabel("% of legit runs")
    axes[2].set_xlabel("tool calls")
    axes[0].set_yticks(y, labels, fontsize=9)
    axes[0].invert_yaxis()
    axes[0].get_yticklabels()[0].set_fontweight("bold")
    fig.suptitle(
        f"Detection quality on {summaries[0]['runaways']} runaway and {summaries[0]['legit']} legit traces"
        " (each detector on its defaults)"
    )
    fig.tight_layout()
    written.append(out / "detection.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    measured = results["overhead"]["measured"]
    bare = measured["bare"]["median_ns"]
    colors = {
        "in memory": "#457b9d",
        "per call (issue 14)": "#8d99ae",
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
    for yi, m in zip(y, items):
        ax.text(m["p75_ns"] / bare * 1.12, yi, f"{m['median_ns'] / 1000:,.1f} µs", va="center", fontsize=8)
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
    ax.legend(handles, names, loc="upper right", fontsize=8)
    ax.set_title("Overhead per call (median of interleaved rounds)")
    fig.tight_layout()
    written.append(out / "overhead.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    scale = results["scale"]
    fig, ax1 = plt.subplots(figsize=(9, 5))
    calls = [r["calls"] for r in scale["cost"]]
    ax1.plot(calls, [r["ns_per_call"] / 1000 for r in scale["cost"]], "o-", color="#2a9d8f", label="µs per call")
    ax1.plot(
        calls,
        [r["fresh_ns_per_call"] / 1000 for r in scale["cost"]],
        "^:",
        color="#264653",
        label="µs per call, fresh 100-call session timed beside it",
    )
    ax1.set_xscale("log")
    ax1.set_xlabel("tool calls already made in the session")
    ax1.set_ylabel("µs per before+after")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(calls, [r["peak_bytes"] / 2**20 for r in scale["memory"]], "s--", color="#e76f51", label="peak MiB")
    ax2.set_ylabel("peak traced memory (MiB)")
    ax2.set_ylim(bottom=0)
    ax1.set_title("Cost per check vs session length (one Breaker, distinct calls)")
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    written.append(out / "scale.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def _plot_real(real: dict[str, Any], out: Path, plt: Any) -> Path:
    """Runaways refused by their deadline and legit runs refused, per detector and real corpus."""
    available = [d for d in real["detectors"] if not d["unavailable"]]
    corpora = list(real["corpora"].items())
    fig, axes = plt.subplots(1, 2, figsize=(14, 1.2 + 0.9 * len(available) * len(corpora)), sharey=True)
    labels, caught, refused, caught_text, refused_text = [], [], [], [], []
    for name, corpus in corpora:
        for d in available:
            r = corpus["results"][d["key"]]
            labels.append(f"{d['label']}\n{name} corpus")
            caught.append(100 * r["caught_by_deadline"] / max(r["runaways"], 1))
            refused.append(100 * r["false_refusals"] / max(r["legit"], 1))
            caught_text.append(f"{r['caught_by_deadline']}/{r['runaways']}")
            refused_text.append(f"{r['false_refusals']}/{r['legit']}")
    y = list(range(len(labels)))
    colors = ["#2a9d8f" if "loopguard" in label else "#8d99ae" for label in labels]
    for ax, values, texts, title in (
        (axes[0], caught, caught_text, "runaways refused by their deadline (higher is better)"),
        (axes[1], refused, refused_text, "legitimate runs refused (lower is better)"),
    ):
        ax.barh(y, values, color=colors)
        for yi, value, text in zip(y, values, texts):
            ax.text(value + 1, yi, text, va="center", fontsize=9)
        ax.set_xlim(0, 115)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("%")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Loop detection on real agent trajectories (each detector on its defaults)")
    fig.tight_layout()
    path = out / "real_traces.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
