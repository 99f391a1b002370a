"""``--loopguard-report``: each test's guarded calls and trips, from the rows the ``breaker`` fixture's ledger kept."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._watch import TripLog

__all__ = ["REPORT_SECTION", "WATCHED", "Reporter", "Watched", "format_report"]

REPORT_SECTION = "loopguard report"
_MODEL_NAME = re.compile(r'"model":"((?:[^"\\]|\\.)*)"\}$')


@dataclass
class Watched:
    """What the ``breaker`` fixture keeps on its test for the report."""

    rows: list[dict[str, Any]]  # the Recorder's rows (the same list, read at the end of the test)
    trips: TripLog  # the breaker's trips
    limits: Mapping[str, Any] = field(default_factory=dict)  # the @pytest.mark.loopguard keyword arguments


WATCHED = pytest.StashKey[Watched]()


def _model_name(input_text: object) -> str | None:
    """The model named in a model row's canonical input text (``{"input":...,"model":"..."}``)."""
    if not isinstance(input_text, str):
        return None
    try:
        value = json.loads(input_text)
    except ValueError:
        match = _MODEL_NAME.search(input_text)
        return match.group(1) if match else None
    name = value.get("model") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


def _row_line(n: int, row: Mapping[str, Any]) -> str:
    origin, tool, agent = row.get("origin"), row.get("tool"), row.get("agent")
    where = f" (agent {agent!r})" if agent else ""
    turn = f", turn {row['turn']}" if row.get("turn") else ""  # no turn before the first model call
    if origin == "model":
        name = _model_name(row.get("input_text"))
        what = f"model {name!r}" if name else "model"
        tokens = f"{row.get('input_tokens', 0)} in + {row.get('output_tokens', 0)} out tokens"
        cost = row.get("cost_usd") or 0.0
        spent = f", {cost:.6f} USD" if cost else ""
        return f"  {n:>3}. {what}{where}{turn}: admitted ({tokens}{spent})"
    if origin == "tool":
        outcome = "" if row.get("passed", True) else ", failed"
        return f"  {n:>3}. tool {tool!r}{where}{turn}: admitted{outcome}"
    what = f"tool {tool!r}" if tool else "model call"
    reason = str(row.get("breach_reason") or "?")
    if origin == "approval":
        step, _, request = reason.partition(":")
        by = f" by {agent!r}" if agent and step != "requested" else ""
        return f"  {n:>3}. {what}{turn}: approval {step}{by} (request {request[:12]})"
    if reason.startswith("observed:"):
        return f"  {n:>3}. {what}{where}{turn}: admitted, observe mode would refuse it [{reason.split(':', 1)[1]}]"
    return f"  {n:>3}. {what}{where}{turn}: REFUSED [{reason}]"


def format_report(
    rows: Sequence[Mapping[str, Any]],
    trips: Sequence[BaseException],
    observed: Sequence[BaseException] = (),
    limits: Mapping[str, Any] | None = None,
) -> str:
    """The report of one test: its limits, its guarded calls in order, then the full message of each trip."""
    models = sum(1 for row in rows if row.get("origin") == "model")
    tools = sum(1 for row in rows if row.get("origin") == "tool")
    head = f"{models} model call(s) and {tools} tool call(s) ran, {len(trips)} trip(s)"
    if observed:
        head += f", {len(observed)} observed"
    lines = [f"  {head}"]
    if limits:
        lines.append("  breaker: " + ", ".join(f"{key}={value!r}" for key, value in limits.items()))
    # Resume points (origin "checkpoint") say where the run stood, not what it did: left out of the calls.
    calls = [row for row in rows if row.get("origin") != "checkpoint"]
    lines.extend(_row_line(n, row) for n, row in enumerate(calls, start=1))
    lines.extend(f"  trip: {trip}" for trip in trips)
    lines.extend(f"  observed: {note}" for note in observed)
    return "\n".join(lines)


class Reporter:
    """Registered when ``--loopguard-report`` is given: adds each test's report to its teardown report (so it
    travels with the report, pytest-xdist included) and prints them all in the terminal summary."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if call.when == "teardown":
            seen = item.stash.get(WATCHED, None)
            if seen is not None:
                text = format_report(seen.rows, seen.trips.trips, seen.trips.observed, seen.limits)
                report.sections.append((REPORT_SECTION, text))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, text in report.sections:
            if name == REPORT_SECTION:
                self.reports.append((report.nodeid, text))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_sep("=", REPORT_SECTION)
        if not self.reports:
            terminalreporter.write_line("no test used the `breaker` fixture: nothing to report")
            return
        for nodeid, text in self.reports:
            terminalreporter.write_line(nodeid)
            terminalreporter.write_line(text)
