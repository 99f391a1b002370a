"""A real world for the dashboard: a ledger written by real breakers (a loop trip, a cost trip, a gated call
waiting for a person, hostile names), specs and an attestation, and budgets in a SQLite budget store with a week
of history."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import ApprovalRequired, Breaker, Ledger, LoopGuardTripped, ToolPolicy
from loopguard_core.budgets import Budget, SQLiteBudgets
from loopguard_core.pricing import StaticPrices
from loopguard_core.review import attest
from loopguard_core.spec import Spec, SpecStore
from tests.stores.conftest import REQUIRE_ENV, services_required

_MISSING = [m for m in ("starlette", "jinja2", "uvicorn") if importlib.util.find_spec(m) is None]
if _MISSING:
    _WHY = f"needs the dashboard extra (pip install 'loopguard-core[dashboard]'): {', '.join(_MISSING)} missing"
    if services_required():  # CI installs every extra: a missing one is a failure there, not a skip
        pytest.fail(f"{_WHY}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
    pytest.skip(_WHY, allow_module_level=True)

TOKEN = "test-token-0123456789abcdef"
PRICES = StaticPrices({"sonnet": (3.0, 15.0)})
MODEL: dict[str, Any] = {"model": "sonnet", "estimated_input_tokens": 20_000, "max_output_tokens": 2_000}
SPENT: dict[str, Any] = {"model": "sonnet", "input_tokens": 20_000, "output_tokens": 2_000}  # $0.09 a call
EVIL_SID = '<script>alert("sid")</script>'
EVIL_AGENT = "<img src=x onerror=alert(1)>"


def tenant() -> Budget:
    return Budget("tenant-acme", period="day", max_cost_usd=5.0)


def app_budget() -> Budget:
    return Budget("support-bot", period="month", max_cost_usd=50.0, max_tool_calls=500)


def refund_tools() -> dict[str, ToolPolicy]:
    return {"refund": ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['amount_eur']} EUR on {a['order']}")}


@dataclass
class World:
    db: Path
    budgets: Path
    loop_sid: str
    cost_sid: str
    ok_sid: str
    waiting_sid: str
    request_id: str
    built_at: float

    @property
    def budgets_url(self) -> str:
        return f"sqlite:///{self.budgets}"


def _model(breaker: Breaker, agent: str) -> None:
    breaker.before_model(agent=agent, **MODEL)
    breaker.after_model(agent=agent, **SPENT)


def _until_trip(step: Callable[[], None], most: int = 20) -> LoopGuardTripped:
    for _ in range(most):
        try:
            step()
        except LoopGuardTripped as trip:
            return trip
    raise AssertionError(f"no trip in {most} steps")


def build_world(root: Path, *, hostile: bool = True) -> World:
    db, budgets = root / "runs.db", root / "budgets.db"
    now = time.time()
    # A week of history in the tenant's daily budget (no ledger: only the budget store remembers it).
    for days_ago, calls in ((6, 22), (5, 31), (4, 12), (3, 44), (2, 51), (1, 27)):
        store = SQLiteBudgets(budgets, wall_clock=lambda d=days_ago: now - d * 86_400)
        past = Breaker(prices=PRICES, budgets=[tenant()], budget_store=store, loop_detection=False)
        with past.run():
            for _ in range(calls):
                _model(past, "researcher")
        store.close()

    ledger = Ledger(db)
    store = SQLiteBudgets(budgets)
    specs = SpecStore(db)

    def breaker(**options: Any) -> Breaker:
        options.setdefault("budgets", [tenant(), app_budget()])
        return Breaker(ledger=ledger, prices=PRICES, budget_store=store, **options)

    # 1. a research agent asking the same search again and again: refused on the 4th identical call
    loop_sid = "research-7f3a"
    specs.save(
        Spec.create(
            what_it_does="Finds three sources on webhook retry policies and summarises them",
            what_it_does_not="Does not call any paid API or write to the wiki",
            done_looks_like="Write summary.md with 3 links that each return HTTP 200, and stop",
            session_id=loop_sid,
        )
    )
    research = breaker(max_turns=40, max_cost_usd=2.0)
    with research.run(loop_sid):
        _model(research, "researcher")
        research.before_tool("fetch_page", {"url": "https://example.com/a"}, agent="researcher")
        research.after_tool("fetch_page", {"url": "https://example.com/a"}, result="page a", agent="researcher")

        def search() -> None:
            _model(research, "researcher")
            research.before_tool("web_search", {"q": "webhook retry"}, agent="researcher")
            research.after_tool("web_search", {"q": "webhook retry"}, result="same 10 links", agent="researcher")

        _until_trip(search)

    # 2. a batch job whose next model call would cross its 0.25 USD ceiling
    cost_sid = "batch-0912"
    batch = breaker(max_cost_usd=0.25, max_turns=10)
    with batch.run(cost_sid):
        docs = iter(range(100))

        def read() -> None:
            i = next(docs)
            _model(batch, "summariser")
            batch.before_tool("read_file", {"path": f"doc-{i}.md"}, agent="summariser")
            batch.after_tool("read_file", {"path": f"doc-{i}.md"}, result=f"doc {i}", agent="summariser")

        _until_trip(read)

    # 3. a run that ended well, attested by a reviewer
    ok_sid = "triage-41c2"
    specs.save(
        Spec.create(
            what_it_does="Labels the 5 newest support tickets by product area",
            what_it_does_not="Does not reply to customers or close tickets",
            done_looks_like="Label each of the 5 newest tickets with one product area, and stop",
            session_id=ok_sid,
        )
    )
    triage = breaker(max_turns=20, max_cost_usd=1.0)
    with triage.run(ok_sid):
        for i in range(3):
            _model(triage, "triager")
            triage.before_tool("label_ticket", {"ticket": i}, agent="triager")
            triage.after_tool("label_ticket", {"ticket": i}, result="ok", agent="triager")
    attest(ok_sid, "ana@example.com", "labels checked against the tracker", db=db)

    # 4. a support agent whose refund waits for a person
    waiting_sid = "support-2291"
    support = breaker(max_turns=30, max_cost_usd=1.5, tools=refund_tools())
    with support.run(waiting_sid):
        _model(support, "support")
        support.before_tool("lookup_order", {"order": "A-17"}, agent="support")
        support.after_tool("lookup_order", {"order": "A-17"}, result="paid 20 EUR", agent="support")
        with pytest.raises(ApprovalRequired) as asked:
            support.before_tool("refund", {"order": "A-17", "amount_eur": 20}, agent="support")
    request_id = asked.value.request_id or ""

    if hostile:
        write_hostile(ledger)
    store.close()
    ledger.close()
    return World(db, budgets, loop_sid, cost_sid, ok_sid, waiting_sid, request_id, time.time())


def write_hostile(ledger: Ledger) -> None:
    """Hostile names: whatever lands in the ledger is shown as text, never as markup."""
    ledger.record(session_id=EVIL_SID, origin="model", turn=1, agent=EVIL_AGENT, input_text="x", input_tokens=10)
    ledger.record(session_id=EVIL_SID, origin="tool", turn=1, agent=EVIL_AGENT, tool="<b>bold</b>", input_text="y")
    ledger.record(
        session_id=EVIL_SID,
        origin="breaker",
        turn=1,
        agent=EVIL_AGENT,
        tool="<b>bold</b>",
        input_text="y",
        passed=False,
        breach_reason="<svg onload=alert(3)>",
    )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(tmp_path)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One world for the tests that only read."""
    return build_world(tmp_path_factory.mktemp("world"))
