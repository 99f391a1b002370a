"""``loopguard demo``: a scripted runaway agent, stopped pre-flight, with no API key.

The agent is a research assistant whose (scripted) model keeps asking for the same web search, the
failure mode that burns money in production: nothing crashes, the same decision repeats at machine speed.
The demo runs it twice on paper and once for real: unguarded cost is computed from the script, the
guarded run goes through ``AgentLoop`` + ``Breaker`` + ``Ledger``, and the report shows what was stopped
and what it saved. Then each installed framework adapter stops the same kind of runaway inside the real
framework runtime, and the demo ends with the review frame a person would attest and the commands to try
next.

The ledger goes to ``./loopguard-demo.db`` (or ``db_path``), where the printed commands find it. A missing
file is created; a ledger the demo wrote before gets one more session; anything else (a file that is not a
loopguard ledger, or a ledger holding sessions the demo did not write) is left untouched and refused with
:class:`DemoLedgerRefused`, because ledger rows can never be removed.
"""

from __future__ import annotations

import importlib
import io
import os
import shlex
import shutil
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .agent_loop import AgentLoop, AgentResult
from .breaker import Breaker
from .pricing import GenaiPrices, StaticPrices
from .spec import Spec
from .testing import ScriptedClient
from .tokens import estimate_tokens
from .typing import PriceSource

__all__ = ["DEFAULT_DB", "DemoLedgerRefused", "DemoReport", "framework_table", "run_demo"]

MODEL = "claude-sonnet-4-5"
SCRIPT_TURNS = 200  # how long the scripted model would keep going if nothing stopped it
OUTPUT_TOKENS = 60
FRAMEWORKS = ("langchain", "langgraph", "crewai", "pydantic_ai", "anthropic")
#: Where the demo writes its ledger unless told otherwise (relative to the working directory).
DEFAULT_DB = "loopguard-demo.db"
#: The framework table's width when stdout is not a terminal (on one, the terminal's, but at least MIN_WIDTH).
TABLE_WIDTH = 100
MIN_WIDTH = 80

SPEC: dict[str, str] = {
    "what_it_does": "Research current best practices for retrying failed webhook deliveries",
    "what_it_does_not": "Does not send webhooks, change any system, or spend more than one dollar",
    "done_looks_like": "Return a list of at most 5 practices, each with one source URL, then stop",
}


class DemoLedgerRefused(ValueError):
    """The demo will not write to this path (nothing was written); the message says why and what to do."""


@dataclass(frozen=True)
class DemoReport:
    result: AgentResult
    unguarded_turns: int
    unguarded_cost_usd: float
    unguarded_tool_calls: int
    db_path: str
    frameworks: tuple[dict[str, Any], ...]
    session_id: str = ""
    #: The commands printed at the end, each runnable as printed from the working directory.
    hints: tuple[str, ...] = ()

    @property
    def saved_usd(self) -> float:
        return max(0.0, self.unguarded_cost_usd - self.result.cost_usd)


def _prices() -> PriceSource:
    try:
        prices = GenaiPrices()
        prices._prices()
        return prices
    except ImportError:  # the pricing extra is missing: list price of the demo model, USD per million
        return StaticPrices({MODEL: (3.0, 15.0)})


def _unguarded_cost(prices: PriceSource, turns: int) -> float:
    """What the script would cost if it ran to its end: the conversation grows every turn."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "research"}]
    total = 0
    for n in range(turns):
        cost = prices.cost_micros(MODEL, estimate_tokens(messages), OUTPUT_TOKENS) or 0
        total += cost
        call = {"type": "tool_use", "id": f"t{n}", "name": "web_search", "input": {"q": "webhook retry"}}
        messages.append({"role": "assistant", "content": [call]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "content": "10 results"}]})
    return total / 1_000_000


def web_search(q: str) -> str:
    """Search the web (scripted: the same ten results every time)."""
    return "10 results about webhook retries: exponential backoff, idempotency keys, dead-letter queues"


def _framework_demos() -> tuple[dict[str, Any], ...]:
    rows = []
    for name in FRAMEWORKS:
        shown = name.replace("_", "-")
        try:
            module = importlib.import_module(f"loopguard_{name}._demo")
        except ImportError as exc:
            rows.append({"framework": shown, "skipped": f"not installed ({exc.name or exc})"})
            continue
        try:
            rows.append(module.run_demo())
        except Exception as exc:  # a demo must report, not crash, when one framework misbehaves
            rows.append({"framework": shown, "error": f"{type(exc).__name__}: {exc}"})
    return tuple(rows)


_COLUMNS = ("framework", "stopped by", "tool ran", "caller got", "run through")


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    framework = str(row["framework"])
    if "skipped" in row:
        return (framework, "skipped", "", "", str(row["skipped"]))
    if "error" in row:
        return (framework, "ERROR", "", "", str(row["error"]))
    return (
        framework,
        str(row.get("reason") or "nothing"),
        f"{row.get('tool_body_runs', '?')}x",
        str(row.get("caller_saw", "")),
        str(row.get("path", "")),
    )


def _table_width() -> int:
    if sys.stdout.isatty():
        return max(MIN_WIDTH, shutil.get_terminal_size().columns)
    return TABLE_WIDTH


def framework_table(rows: Sequence[dict[str, Any]], *, width: int | None = None) -> str:
    """The per-framework results as an aligned table, ``width`` columns at most (default: the terminal's,
    at least 80; 100 when not a terminal; never less than 80).

    Only the last column ("run through") wraps when the width is short. Uses rich (the ``cli`` extra);
    without it the columns are aligned by hand and nothing wraps.
    """
    width = max(MIN_WIDTH, _table_width() if width is None else width)
    cells = [_cells(r) for r in rows]
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the core has no dependencies
        widths = [max(len(line[i]) for line in [_COLUMNS, *cells]) for i in range(len(_COLUMNS))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [_COLUMNS, *cells]]
        return "\n".join(lines)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, header_style="bold")
    for name in _COLUMNS[:-1]:
        table.add_column(name, no_wrap=True)
    table.add_column(_COLUMNS[-1], overflow="fold", min_width=16)
    for line in cells:
        table.add_row(*line)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _is_url(db: str) -> bool:
    return db == ":memory:" or "://" in db


def _demo_sessions(db: str) -> set[str]:
    """Session ids whose spec is the demo's (the demo's own sessions in that file)."""
    conn = sqlite3.connect(f"file:{quote(Path(db).resolve().as_posix())}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT session_id FROM specs WHERE what_it_does = ?", (SPEC["what_it_does"],))
        return {str(sid) for (sid,) in rows}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def _check_target(db: str) -> int:
    """How many earlier demo sessions ``db`` holds (0: a new file); raise DemoLedgerRefused to leave it alone."""
    from .ledger import Ledger, LedgerError

    other = "pass --db with a path that does not exist yet (for example --db loopguard-demo-2.db)"
    if _is_url(db):
        raise DemoLedgerRefused(f"the demo writes a SQLite file (its review frame needs one), not {db!r}: {other}")
    path = Path(db)
    if not path.exists():
        if not path.parent.is_dir():
            raise DemoLedgerRefused(f"cannot create {db}: the directory {str(path.parent)!r} does not exist")
        return 0
    if path.is_dir():
        raise DemoLedgerRefused(f"{db} is a directory; the demo writes its ledger to a file: {other}")
    try:
        with Ledger(db, read_only=True) as existing:
            ids = {s.session_id for s in existing.sessions()}
    except LedgerError as exc:
        raise DemoLedgerRefused(
            f"{db} exists and is not a loopguard ledger ({exc}); it was left untouched: {other}"
        ) from None
    ours = _demo_sessions(db)
    foreign = ids - ours
    if foreign or not (ids or ours):
        what = f"with {len(foreign)} session(s) the demo did not write" if foreign else "the demo did not create"
        raise DemoLedgerRefused(
            f"{db} is a loopguard ledger {what}; the demo adds no rows to it (ledger rows can never be "
            f"removed) and left it untouched: {other}"
        )
    return len(ids)


def _short(session_id: str, others: Sequence[str]) -> str:
    """The shortest prefix of ``session_id`` (8 characters at least) that no other session starts with."""
    for n in range(8, len(session_id)):
        prefix = session_id[:n]
        if not any(o != session_id and o.startswith(prefix) for o in others):
            return prefix
    return session_id


def _hints(db: str, session_id: str, frame_hash: str | None, sessions: Sequence[str]) -> tuple[str, ...]:
    q = shlex.quote
    where = f"--db {q(db)}"
    sid = q(_short(session_id, sessions))
    pin = f" --frame-hash {frame_hash}" if frame_hash is not None else ""
    return (
        f"loopguard sessions {where}",
        f"loopguard ledger verify {where}",
        f"loopguard ledger show {where} --session {sid}",
        f"loopguard review {sid} {where} --format html -o loopguard-demo-review.html",
        f"loopguard attest {sid} {where} --reviewer NAME{pin}",
    )


def run_demo(
    *,
    db_path: str | Path | None = None,
    say: Callable[[str], object] = print,
    frameworks: bool = True,
    review: bool = True,
) -> DemoReport:
    """Run the demo and print the report through ``say``.

    The ledger goes to ``db_path`` (default ``./loopguard-demo.db``); raises :class:`DemoLedgerRefused`,
    before writing anything, when that path holds anything but a ledger the demo wrote.
    """
    db = os.fspath(db_path) if db_path is not None else DEFAULT_DB
    earlier = _check_target(db)
    prices = _prices()
    spec = Spec.create(
        what_it_does=SPEC["what_it_does"],
        what_it_does_not=SPEC["what_it_does_not"],
        done_looks_like=SPEC["done_looks_like"],
    )
    ledger = _ledger(db, spec)
    if ledger is None:  # pragma: no cover - the ledger is part of the core
        raise DemoLedgerRefused("the ledger module is not importable")
    breaker = Breaker(max_cost_usd=1.00, max_turns=50, prices=prices, ledger=ledger, session_id=spec.session_id)
    client = ScriptedClient(
        [("web_search", {"q": "best practices for webhook retries"})] * SCRIPT_TURNS, output_tokens=OUTPUT_TOKENS
    )
    loop = AgentLoop(client, breaker, tools={"web_search": web_search}, spec=spec, model=MODEL, agent="researcher")

    say("loopguard demo: a research agent whose model keeps asking for the same search")
    say("=" * 78)
    result = loop.run("Find best practices for retrying failed webhook deliveries.")
    unguarded = _unguarded_cost(prices, SCRIPT_TURNS)
    report = DemoReport(result, SCRIPT_TURNS, unguarded, SCRIPT_TURNS, db, (), spec.session_id)
    trip = result.trip
    say(f"stopped:   {trip.reason if trip else 'nothing (the run ended by itself)'}")
    if trip is not None:
        say(f"           {trip}")
    say(
        f"ran:       {result.turns} model calls, {result.tool_calls} tool calls, {result.total_tokens} tokens, "
        f"${result.cost_usd:.4f}"
    )
    say(
        f"unguarded: the script would have made {SCRIPT_TURNS} model calls and {SCRIPT_TURNS} tool calls, "
        f"${unguarded:.4f}"
    )
    say(
        f"saved:     ${report.saved_usd:.4f} and {SCRIPT_TURNS - result.tool_calls} tool calls that would have "
        "repeated the same search"
    )
    where = str(Path(db).resolve())
    if earlier:
        say(f"ledger:    {db} ({where}): one more session in the demo's ledger, its {earlier} earlier one(s) kept")
    else:
        say(f"ledger:    {db} ({where}): created for this demo")
    if os.environ.get("LOOPGUARD_DB") and db_path is None:
        say("           ($LOOPGUARD_DB is not used by the demo: the ledger you point it at gets no demo rows)")
    check = ledger.verify()
    if check.ok:
        say(f"verify:    ok ({check.rows_checked} rows in the ledger, every hash and link checked)")
    else:
        say(f"verify:    {len(check.problems)} PROBLEM(S) in {check.rows_checked} rows: {check.problems[0]}")
    rows: tuple[dict[str, Any], ...] = ()
    if frameworks:
        say("")
        say("the same runaway inside each framework (real runtime, scripted fake model):")
        rows = _framework_demos()
        say(framework_table(rows))
    frame_hash = None
    if review:
        frame_hash, frame = _review(db, spec.session_id)
        if frame:
            say("")
            say(frame.rstrip("\n"))
    sessions = [s.session_id for s in ledger.sessions()]
    ledger.close()
    hints = _hints(db, spec.session_id, frame_hash, sessions)
    say("")
    say(f"try next (these read the demo's ledger, {db}; NAME is yours; any unambiguous prefix of a session id works):")
    for hint in hints:
        say(f"  {hint}")
    return DemoReport(result, SCRIPT_TURNS, unguarded, SCRIPT_TURNS, db, rows, spec.session_id, hints)


def _ledger(db: str, spec: Spec) -> Any:
    try:
        from .ledger import Ledger
        from .spec import SpecStore
    except ImportError:
        return None
    SpecStore(db).save(spec)
    return Ledger(db)


def _review(db: str, session_id: str) -> tuple[str | None, str | None]:
    """(frame hash, text frame) of the demo's session."""
    try:
        from .review import ReviewSurface
    except ImportError:  # pragma: no cover - the review surface is part of the core
        return None, None
    from .review import render

    with ReviewSurface(db) as surface:
        frame = surface.frame(session_id)
        return frame.frame_hash, render(frame, "text", attestations=surface.attestations(session_id), db=db)
