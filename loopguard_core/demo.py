"""``loopguard demo``: a scripted runaway agent, stopped pre-flight, with no API key.

The agent is a research assistant whose (scripted) model keeps asking for the same web search, the
failure mode that burns money in production: nothing crashes, the same decision repeats at machine speed.
The demo runs it twice on paper and once for real: unguarded cost is computed from the script, the
guarded run goes through ``AgentLoop`` + ``Breaker`` + ``Ledger``, and the report shows what was stopped
and what it saved. Then each installed framework adapter stops the same kind of runaway inside the real
framework runtime, and the demo ends with the review frame a person would attest.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agent_loop import AgentLoop, AgentResult
from .breaker import Breaker
from .pricing import GenaiPrices, StaticPrices
from .spec import Spec
from .testing import ScriptedClient
from .tokens import estimate_tokens
from .typing import PriceSource

__all__ = ["DemoReport", "run_demo"]

MODEL = "claude-sonnet-4-5"
SCRIPT_TURNS = 200  # how long the scripted model would keep going if nothing stopped it
OUTPUT_TOKENS = 60
FRAMEWORKS = ("langchain", "langgraph", "crewai", "pydantic_ai", "anthropic")

SPEC: dict[str, str] = {
    "what_it_does": "Research current best practices for retrying failed webhook deliveries",
    "what_it_does_not": "Does not send webhooks, change any system, or spend more than one dollar",
    "done_looks_like": "Return a list of at most 5 practices, each with one source URL, then stop",
}


@dataclass(frozen=True)
class DemoReport:
    result: AgentResult
    unguarded_turns: int
    unguarded_cost_usd: float
    unguarded_tool_calls: int
    db_path: str
    frameworks: tuple[dict[str, Any], ...]

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


def _framework_demos(say: Callable[[str], object]) -> tuple[dict[str, Any], ...]:
    rows = []
    for name in FRAMEWORKS:
        try:
            module = importlib.import_module(f"loopguard_{name}._demo")
        except ImportError as exc:
            rows.append({"framework": name, "skipped": f"not installed ({exc.name or exc})"})
            continue
        try:
            rows.append(module.run_demo())
        except Exception as exc:  # a demo must report, not crash, when one framework misbehaves
            rows.append({"framework": name, "error": f"{type(exc).__name__}: {exc}"})
    return tuple(rows)


def run_demo(
    *,
    db_path: str | Path | None = None,
    say: Callable[[str], object] = print,
    frameworks: bool = True,
    review: bool = True,
) -> DemoReport:
    """Run the demo and print the report through ``say``."""
    workdir = Path(db_path).parent if db_path else Path(tempfile.mkdtemp(prefix="loopguard-demo-"))
    db = str(db_path or workdir / "demo-ledger.db")
    prices = _prices()
    spec = Spec.create(
        what_it_does=SPEC["what_it_does"],
        what_it_does_not=SPEC["what_it_does_not"],
        done_looks_like=SPEC["done_looks_like"],
    )
    ledger = _ledger(db, spec)
    breaker = Breaker(max_cost_usd=1.00, max_turns=50, prices=prices, ledger=ledger, session_id=spec.session_id)
    client = ScriptedClient(
        [("web_search", {"q": "best practices for webhook retries"})] * SCRIPT_TURNS, output_tokens=OUTPUT_TOKENS
    )
    loop = AgentLoop(client, breaker, tools={"web_search": web_search}, spec=spec, model=MODEL, agent="researcher")

    say("loopguard demo: a research agent whose model keeps asking for the same search")
    say("=" * 78)
    result = loop.run("Find best practices for retrying failed webhook deliveries.")
    unguarded = _unguarded_cost(prices, SCRIPT_TURNS)
    report = DemoReport(result, SCRIPT_TURNS, unguarded, SCRIPT_TURNS, db, ())
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
    say(f"ledger:    {db} (loopguard ledger verify {db})")
    if ledger is not None:
        check = ledger.verify()
        say(f"verify:    {'ok' if check.ok else 'PROBLEMS'} ({check.rows_checked} rows, hash chain intact)")
    if frameworks:
        say("")
        say("the same runaway inside each framework (real runtime, scripted fake model):")
        rows = _framework_demos(say)
        report = DemoReport(result, SCRIPT_TURNS, unguarded, SCRIPT_TURNS, db, rows)
        for row in rows:
            if "skipped" in row or "error" in row:
                say(f"  {row['framework']:<12} {row.get('skipped') or row.get('error')}")
            else:
                say(
                    f"  {row['framework']:<12} {row.get('path', ''):<22} stopped by {row['reason']:<10} "
                    f"tool body ran {row['tool_body_runs']}x, caller got {row['caller_saw']}"
                )
    if review and ledger is not None:
        frame = _review_text(db, spec.session_id)
        if frame:
            say("")
            say(frame)
    return report


def _ledger(db: str, spec: Spec) -> Any:
    try:
        from .ledger import Ledger
        from .spec import SpecStore
    except ImportError:
        return None
    SpecStore(db).save(spec)
    return Ledger(db)


def _review_text(db: str, session_id: str) -> str | None:
    try:
        review = importlib.import_module("loopguard_core.review")
    except ImportError:
        return None
    render: Callable[..., str] | None = getattr(review, "render_session", None)
    return None if render is None else render(db, session_id, format="text")
