"""AgentLoop: every model and tool call goes through the breaker; the spec becomes the system prompt."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.agent_loop import AgentLoop
from loopguard_core.spec import Spec
from loopguard_core.testing import ScriptedClient

SPEC = Spec.create(
    what_it_does="Look up one customer by email",
    what_it_does_not="Does not change the customer record",
    done_looks_like="Return the customer id for the email x@example.com, then stop",
)


def test_a_finishing_run_executes_tools_and_succeeds() -> None:
    ran: list[str] = []

    def lookup(email: str) -> str:
        ran.append(email)
        return "customer 17"

    client = ScriptedClient([("lookup", {"email": "x@example.com"}), "customer 17"])
    result = AgentLoop(client, Breaker(), tools={"lookup": lookup}, spec=SPEC).run("find x@example.com")
    assert result.success
    assert result.stop_reason == "end_turn"
    assert ran == ["x@example.com"]
    assert result.turns == 2
    assert result.final_text == "customer 17"
    assert "What this does: Look up one customer by email" in client.requests[0]["system"]
    assert client.requests[0]["tools"][0]["name"] == "lookup"
    assert result.session_id == SPEC.session_id


def test_a_runaway_is_stopped_before_the_fourth_identical_tool_body_runs() -> None:
    ran = []
    client = ScriptedClient([("lookup", {"email": "x@example.com"})] * 50)
    loop = AgentLoop(client, Breaker(), tools={"lookup": lambda email: ran.append(email) or "same"})
    result = loop.run("find")
    assert not result.success
    assert result.trip is not None
    assert result.breach_reason == "loop"
    assert len(ran) == 3
    assert len(client.requests) == 4  # the fourth model call happened; its tool call was refused


def test_model_ceiling_stops_before_the_request_is_sent() -> None:
    client = ScriptedClient([("lookup", {"email": f"{n}@x"}) for n in range(50)])
    loop = AgentLoop(client, Breaker(max_turns=4), tools={"lookup": lambda email: email}, raise_on_trip=True)
    with pytest.raises(LoopGuardTripped) as info:
        loop.run("find")
    assert info.value.reason == "turn_ceiling"
    assert len(client.requests) == 4


def test_tool_errors_become_error_results_and_count_as_failures() -> None:
    def broken(email: str) -> str:
        raise PermissionError("403")

    client = ScriptedClient([("lookup", {"email": f"{n}@x"}) for n in range(20)])
    result = AgentLoop(client, Breaker(max_consecutive_failures=3), tools={"lookup": broken}).run("find")
    assert result.breach_reason == "failures"
    last_user = result.transcript[-2]["content"][0]
    assert last_user["is_error"] is True
    assert "PermissionError" in last_user["content"]


def test_bad_construction_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"messages\.create"):
        AgentLoop(object(), Breaker())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="breaker"):
        AgentLoop(ScriptedClient([]), object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens"):
        AgentLoop(ScriptedClient([]), Breaker(), max_tokens=0)


def test_a_failing_model_call_is_reported_and_reaches_the_caller() -> None:
    class Overloaded(ScriptedClient):
        def create(self, **kwargs: object) -> dict[str, object]:
            raise ConnectionError("529 overloaded")

    breaker = Breaker(max_tokens=3_000, isolate_runs=False)  # one budget across the retries
    loop = AgentLoop(Overloaded([]), breaker, max_tokens=1_000)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            loop.run("find")
    assert breaker.usage().tokens == 0  # no reservation of the failed calls is left behind
