"""on_trip="steer" through the real create_agent runtime: LoopGuardMiddleware and LoopGuardCallbackHandler.

Each path proves the same four things: the refused call's body never ran, the model's next request carried the
refusal (what the scripted model was sent), the run went on to a normal end once the model changed course, and a
model that keeps repeating is stopped for good (reason "refusals") at the caller; a budget ceiling still stops.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain.agents import create_agent

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_langchain import LoopGuardCallbackHandler, LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

from .helpers import answered_every_tool_call, counted_tools, user

SAME = ("lookup", {"q": "same"})
CHANGES_COURSE = [SAME, SAME, SAME, SAME, ("lookup", {"q": "other"}), "done"]
REFUSED = "loopguard refused this call and it did not run"


def refusal_sent_to(model: ScriptedChatModel, call: int) -> Any:
    """The last tool answer in what the model's ``call``-th request (1-based) carried."""
    return [m for m in model.seen[call - 1] if m.type == "tool"][-1]


def run(path: str, model: ScriptedChatModel, breaker: Breaker, counter: BodyCounter) -> dict[str, Any]:
    tools = counted_tools(counter)
    if path == "middleware":
        agent = create_agent(model, tools, middleware=[LoopGuardMiddleware(breaker, on_trip="steer")], name="r")
        return agent.invoke(user())
    agent = create_agent(model, tools, name="r")
    return agent.invoke(user(), config={"callbacks": [LoopGuardCallbackHandler(breaker, on_trip="steer")]})


@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_steer_tells_the_model_why_and_the_run_goes_on_then_stops_for_good(path: str) -> None:
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel(CHANGES_COURSE)

    result = run(path, model, breaker, counter)

    assert result["messages"][-1].content == "done"  # a normal end, after the model changed course
    assert counter.runs == [SAME, SAME, SAME, ("lookup", {"q": "other"})]  # the 4th identical call never ran
    told = refusal_sent_to(model, 5)  # the request right after the refusal
    assert told.status == "error"
    assert told.content.startswith(REFUSED)
    assert "Repeating it will not bring a different answer" in told.content
    assert answered_every_tool_call(result["messages"])
    assert breaker.usage().refusals == 1
    assert breaker.state is BreakerState.CLOSED

    # A model that keeps repeating: told twice, then stopped for good at the caller.
    breaker, counter = Breaker(max_refusals=2), BodyCounter()
    model = ScriptedChatModel(loop=SAME)
    with pytest.raises(LoopGuardTripped) as stop:
        run(path, model, breaker, counter)
    assert (stop.value.reason, stop.value.terminal) == ("refusals", True)
    assert type(stop.value) is LoopGuardTripped  # exactly what raise mode hands the caller
    assert counter.count() == 3
    assert model.calls == 6  # calls 4 and 5 were answered with refusals; the 6th call's tool call was the last
    assert refusal_sent_to(model, 6).content.startswith(REFUSED)


async def test_middleware_steer_async() -> None:
    breaker, counter = Breaker(), BodyCounter()
    model = ScriptedChatModel([("alookup", {"q": "same"})] * 4 + ["done"])
    agent = create_agent(model, counted_tools(counter), middleware=[LoopGuardMiddleware(breaker, on_trip="steer")])

    result = await agent.ainvoke(user())

    assert result["messages"][-1].content == "done"
    assert counter.count("alookup") == 3
    assert refusal_sent_to(model, 5).content.startswith(REFUSED)


@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_a_budget_ceiling_still_stops_in_steer_mode(path: str) -> None:
    breaker, counter = Breaker(max_tool_calls=3), BodyCounter()
    model = ScriptedChatModel([("lookup", {"q": q}) for q in "abcd"] + ["done"])

    with pytest.raises(LoopGuardTripped) as caught:
        run(path, model, breaker, counter)

    assert caught.value.reason == "tool_ceiling" and caught.value.terminal
    assert counter.count() == 3
    assert model.calls == 4  # no model call after the ceiling
    assert breaker.usage().refusals == 0  # a ceiling is never steered


def test_a_refused_model_call_is_raised_in_steer_mode_too() -> None:
    breaker, counter = Breaker(max_turns=2), BodyCounter()
    model = ScriptedChatModel([("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "done"])
    with pytest.raises(LoopGuardTripped) as caught:
        run("middleware", model, breaker, counter)
    assert caught.value.reason == "turn_ceiling"
    assert model.calls == 2


def test_on_trip_is_checked() -> None:
    with pytest.raises(ValueError, match="'raise', 'end' or 'steer'"):
        LoopGuardMiddleware(Breaker(), on_trip="retry")
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        LoopGuardCallbackHandler(Breaker(), on_trip="end")


def test_the_classic_agent_executor_cannot_be_steered_so_the_trip_is_raised() -> None:
    pytest.importorskip("langchain_classic", reason="needs langchain-classic for the legacy AgentExecutor")
    from .test_callback_handler import classic_executor

    breaker, counter = Breaker(), BodyCounter()
    executor = classic_executor(ScriptedChatModel(loop=SAME), counted_tools(counter))
    with pytest.raises(LoopGuardTripped) as caught:
        executor.invoke({"input": "go"}, config={"callbacks": [LoopGuardCallbackHandler(breaker, on_trip="steer")]})
    assert caught.value.reason == "loop"  # AgentExecutor turns no exception into a tool result
    assert counter.count("lookup") == 3
    assert breaker.usage().refusals == 0


@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_in_a_parallel_batch_only_the_refused_call_is_answered_for_the_model(path: str) -> None:
    # create_agent runs a batch's sync tool calls on worker threads: the sibling is checked while the refusal is
    # being steered, and must not be refused as "open" in between (the check and its steer are one step).
    page = ("fetch_page", {"page": 1})
    for _ in range(5):
        breaker, counter = Breaker(), BodyCounter()
        model = ScriptedChatModel([SAME, SAME, SAME, [SAME, page], "done"])

        result = run(path, model, breaker, counter)

        assert result["messages"][-1].content == "done"
        assert counter.runs == [SAME, SAME, SAME, page]
        answers = {m.name: m.content for m in model.seen[4] if m.type == "tool"}
        assert answers["lookup"].startswith(REFUSED) and answers["fetch_page"].startswith("page 1")
        assert breaker.usage().refusals == 1
