"""A Breaker writing its rows to a PostgreSQL ledger, end to end."""

from __future__ import annotations

import json

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.ledger import Ledger

pytestmark = pytest.mark.postgres


def test_breaker_writes_turns_tools_and_the_trip_to_postgres(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    breaker = Breaker(max_turns=3, ledger=ledger, session_id="run-pg")
    ran: list[str] = []

    def agent_loop() -> None:
        for i in range(10):
            breaker.before_model(agent="planner", max_output_tokens=50)
            breaker.after_model(input_tokens=100, output_tokens=20, agent="planner", cost_usd=0.002)
            args = {"q": f"secret query {i}"}
            breaker.before_tool("search", args, agent="planner")
            ran.append(args["q"])  # the tool body
            breaker.after_tool("search", args, result=f"r{i}", agent="planner")

    with pytest.raises(LoopGuardTripped) as info:
        agent_loop()
    assert info.value.reason == "turn_ceiling"
    rows = list(ledger.rows())
    assert [r.origin for r in rows] == ["model", "tool"] * 3 + ["breaker"]
    assert len(ran) == 3  # the refused call's body never ran
    trip = rows[-1]
    assert (trip.breach_reason, trip.passed, trip.session_id) == ("turn_ceiling", False, "run-pg")
    assert rows[0].input_tokens == 100 and rows[0].cost_micros == 2000 and rows[0].agent == "planner"
    assert [s.session_id for s in ledger.sessions()] == ["run-pg"] and ledger.sessions()[0].trips == 1
    # Raw inputs never reach the database.
    dumped = json.dumps([r.to_dict() for r in rows])
    assert "secret query" not in dumped
    assert ledger.verify().ok
    ledger.close()
