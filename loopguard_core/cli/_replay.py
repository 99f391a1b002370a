"""``loopguard replay TRACES...``: what a breaker configuration would have refused in recorded traces."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._ledger import fail

__all__ = ["register"]

EXIT_REFUSED = 1


def _breaker_factory(config: Path | None, max_repeats: int | None, observe: bool) -> Callable[[], Any]:
    from ..breaker import Breaker
    from ..detection import LoopDetection

    if config is not None:
        spec = importlib.util.spec_from_file_location("loopguard_replay_config", config)
        if spec is None or spec.loader is None:
            fail(f"cannot load {config}: give a Python file that defines make_breaker()")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: say what broke, do not print our traceback
            fail(f"{config} failed to load: {type(exc).__name__}: {exc}")
        factory = getattr(module, "make_breaker", None)
        if not callable(factory):
            fail(f"{config} must define make_breaker() returning a loopguard_core.Breaker")
        if max_repeats is not None or observe:
            fail("--config sets the whole configuration: leave out --max-repeats and --observe (set them in the file)")
        return factory  # type: ignore[no-any-return]

    def make() -> Breaker:
        loop = LoopDetection() if max_repeats is None else LoopDetection(max_repeats=max_repeats)
        return Breaker(loop_detection=loop, mode="observe" if observe else "enforce")

    return make


def register(group: Any) -> None:
    from ..replay import FORMATS

    @group.command("replay")
    @click.argument("traces", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="auto",
        show_default=True,
        help="jsonl ({tool,args,result,error,agent} per line), corpus (loopguard's labelled corpora), otel "
        "(OpenTelemetry GenAI spans as JSON), langsmith (a run export); auto tells them apart.",
    )
    @click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="A Python file defining make_breaker() -> Breaker: replay your own configuration.",
    )
    @click.option("--max-repeats", type=click.IntRange(min=1), default=None, help="LoopDetection(max_repeats=N).")
    @click.option(
        "--observe", is_flag=True, help="Observe mode: list every call that would be refused, not just the first."
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object).")
    @click.option("-v", "--verbose", is_flag=True, help="One line per trace, refused or not.")
    def replay_command(
        traces: tuple[Path, ...],
        fmt: str,
        config: Path | None,
        max_repeats: int | None,
        observe: bool,
        as_json: bool,
        verbose: bool,
    ) -> None:
        """Replay recorded tool-call TRACES through a breaker (Breaker() defaults unless told otherwise) and
        print what it would have refused, where and why, with a summary. Labelled traces (loopguard's corpus
        format) are also scored: runaways caught by their deadline, legitimate runs refused.

        Exit status: 0 when nothing would have been refused, 1 when something would, 2 on bad input."""
        from ..replay import TraceFormatError, load_traces, replay_all, summarize

        loaded = []
        for path in traces:
            try:
                loaded.extend(load_traces(path, fmt))
            except TraceFormatError as exc:
                fail(str(exc))
        results = replay_all(loaded, _breaker_factory(config, max_repeats, observe))
        summary = summarize(results)
        if as_json:
            click.echo(json.dumps(_as_json(results, summary), indent=1, default=str))
        else:
            _print(results, summary, verbose)
        if summary.refused:
            sys.exit(EXIT_REFUSED)


def _as_json(results: Any, summary: Any) -> dict[str, Any]:
    return {
        "summary": summary.__dict__,
        "traces": [
            {
                "name": r.trace.name,
                "calls": len(r.trace.calls),
                "ran": r.ran,
                "label": r.trace.label,
                "verdict": r.verdict,
                "refusals": [refusal.__dict__ for refusal in r.refusals],
            }
            for r in results
        ],
    }


def _print(results: Any, summary: Any, verbose: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    for r in results:
        if r.first is None and not verbose:
            continue
        head = f"[bold]{escape(r.trace.name)}[/bold] ({len(r.trace.calls)} calls"
        head += f", {r.trace.label}" if r.trace.label else ""
        head += f", verdict: {r.verdict})" if r.trace.label else ")"
        console.print(head)
        if r.first is None:
            console.print("  nothing refused")
        for refusal in r.refusals:
            kind = "would refuse" if refusal.observed else "refused"
            label = (
                f"{refusal.reason}/{refusal.rule}"
                if refusal.rule and refusal.rule != refusal.reason
                else refusal.reason
            )
            console.print(f"  call {refusal.index + 1} ({escape(refusal.tool)}): {kind} {escape(f'[{label}]')}")
            console.print(f"    {escape(refusal.message)}", style="dim")
    table = Table(title="replay summary", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("traces", str(summary.traces))
    table.add_row("tool calls", str(summary.calls))
    table.add_row("traces with a refusal", str(summary.refused))
    for rule, count in summary.by_rule.items():
        table.add_row(f"  first refusal: {escape(rule)}", str(count))
    if summary.labelled:
        table.add_row("runaway caught by its deadline", f"{summary.caught}/{summary.runaway}")
        table.add_row("runaway refused before its loop began", f"{summary.early}/{summary.runaway}")
        table.add_row("runaway refused late / never", f"{summary.late} / {summary.missed}")
        table.add_row("legitimate runs refused", f"{summary.false_refusals}/{summary.legit}")
        table.add_row("runaway calls that never ran", str(summary.calls_saved))
    console.print(table)
