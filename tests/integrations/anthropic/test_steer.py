"""guard(client, breaker, on_trip="steer") through the real Anthropic client: your own messages.create loop and
the beta tool runner, over a scripted Messages API.

Each path proves: the refused tool_use never reached the code that runs tools (its body never ran), the model's
next request carried the refusal (an is_error tool_result, in the bodies the scripted API received), the run went
on to a normal end once the model changed course, and a model that keeps repeating is stopped for good (reason
"refusals") at the caller; a budget ceiling still stops.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

from anthropic import beta_async_tool, beta_tool

from loopguard_anthropic import LoopGuardMiddleware, guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter

from .test_messages import MODEL, SAME, agent_loop, async_agent_loop

OTHER = ("lookup", {"q": "other"})
CHANGES_COURSE = [SAME, SAME, SAME, SAME, OTHER, "done"]
REFUSED = "loopguard refused this call and it did not run"
PROMPT = [{"role": "user", "content": "find it"}]


def refusals_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The is_error tool_result blocks a request body carried."""
    return [
        block
        for message in body["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result" and block.get("is_error")
    ]


def run(path: str, api: ScriptedAPI, breaker: Breaker, counter: BodyCounter) -> Any:
    client = guard(api.client(), breaker, on_trip="steer")
    if path == "manual_loop":
        return agent_loop(client, counter)

    @beta_tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", {"q": q})
        return f"nothing new about {q}"

    runner = client.beta.messages.tool_runner(model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup])
    return runner.until_done()


@pytest.mark.parametrize("path", ["manual_loop", "tool_runner"])
def test_steer_tells_the_model_why_and_the_run_goes_on_then_stops_for_good(path: str) -> None:
    api, breaker, counter = ScriptedAPI(CHANGES_COURSE), Breaker(), BodyCounter()

    final = run(path, api, breaker, counter)

    assert final.content[0].text == "done"
    assert counter.runs == [SAME, SAME, SAME, OTHER]  # the 4th identical tool_use never ran
    # The 5th request is loopguard asking again, the refused tool_use answered with an is_error tool_result.
    (told,) = refusals_in(api.bodies[4])
    assert told["content"].startswith(REFUSED)
    assert told["tool_use_id"] == "toolu_003_0"
    # And the caller's next request still shows the model what happened (history put back, or the server thread).
    assert refusals_in(api.bodies[5]) == [told] or api.bodies[5].get("thread")
    usage = breaker.usage()
    assert (usage.refusals, usage.turns, usage.tokens) == (1, 6, 6 * 120)  # the re-ask is a model call like any
    assert breaker.state is BreakerState.CLOSED

    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(max_refusals=2), BodyCounter()
    with pytest.raises(LoopGuardTripped) as stop:
        run(path, api, breaker, counter)
    assert (stop.value.reason, stop.value.terminal) == ("refusals", True)
    assert type(stop.value) is LoopGuardTripped  # exactly what raise mode hands the caller
    assert counter.count() == 3
    assert api.calls == 6  # replies 4 and 5 were refused and answered; the 6th refusal stopped the run
    assert refusals_in(api.bodies[5])[-1]["content"].startswith(REFUSED)


async def test_steer_async_manual_loop() -> None:
    api, breaker, counter = ScriptedAPI(CHANGES_COURSE), Breaker(), BodyCounter()
    final = await async_agent_loop(guard(api.async_client(), breaker, on_trip="steer"), counter)
    assert final.content[0].text == "done"
    assert counter.count() == 4
    assert refusals_in(api.bodies[4])[0]["content"].startswith(REFUSED)


async def test_steer_async_tool_runner() -> None:
    api, breaker, counter = ScriptedAPI(CHANGES_COURSE), Breaker(), BodyCounter()
    client = guard(api.async_client(), breaker, on_trip="steer")

    @beta_async_tool
    async def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", {"q": q})
        return "nothing new"

    runner = client.beta.messages.tool_runner(model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup])
    final = await runner.until_done()
    assert final.content[0].text == "done"
    assert counter.count() == 4
    assert refusals_in(api.bodies[4])[0]["content"].startswith(REFUSED)


@pytest.mark.parametrize("path", ["manual_loop", "tool_runner"])
def test_in_a_parallel_reply_only_the_refused_call_is_held_back_and_answered(path: str) -> None:
    fresh = ("lookup", {"q": "fresh"})
    api, breaker, counter = ScriptedAPI([SAME, SAME, SAME, [SAME, fresh], OTHER, "done"]), Breaker(), BodyCounter()

    final = run(path, api, breaker, counter)

    assert final.content[0].text == "done"
    assert counter.runs == [SAME, SAME, SAME, fresh, OTHER]  # the admitted sibling ran, the refused call did not
    # The caller answered only what it was handed; the next request carries both answers to that reply.
    answers = {
        block["tool_use_id"]: block
        for message in api.bodies[4]["messages"]
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("tool_use_id", "").startswith("toolu_003")
    }
    assert answers["toolu_003_0"]["is_error"] and answers["toolu_003_0"]["content"].startswith(REFUSED)
    assert not answers["toolu_003_1"].get("is_error")
    if path == "manual_loop":  # the refused tool_use is back in the assistant message the caller kept
        assistant = [m for m in api.bodies[4]["messages"] if m["role"] == "assistant"][-1]
        assert {b["id"] for b in assistant["content"] if b["type"] == "tool_use"} == {"toolu_003_0", "toolu_003_1"}


@pytest.mark.parametrize("path", ["manual_loop", "tool_runner"])
def test_a_budget_ceiling_still_stops_in_steer_mode(path: str) -> None:
    api, counter = ScriptedAPI([("lookup", {"q": q}) for q in "abcd"] + ["done"]), BodyCounter()
    breaker = Breaker(max_tool_calls=3)

    with pytest.raises(LoopGuardTripped) as caught:
        run(path, api, breaker, counter)

    assert caught.value.reason == "tool_ceiling" and caught.value.terminal
    assert counter.count() == 3
    assert api.calls == 4  # no model call after the ceiling
    assert breaker.usage().refusals == 0


def streamed_loop(client: Any, counter: BodyCounter) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "find it"}]
    for _ in range(10):
        with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as events:
            message = events.get_final_message()
        messages.append({"role": "assistant", "content": [block.model_dump() for block in message.content]})
        results = []
        for block in message.content:
            counter.hit(block.name, block.input)
            results.append({"type": "tool_result", "tool_use_id": block.id, "content": "nothing new"})
        messages.append({"role": "user", "content": results})


def test_a_streamed_reply_is_not_steered_its_refusal_is_raised() -> None:
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    with pytest.raises(LoopGuardTripped) as caught:
        streamed_loop(guard(api.client(), breaker, on_trip="steer"), counter)
    assert caught.value.reason == "loop"
    assert counter.count() == 3


def test_on_trip_is_checked_and_a_guarded_client_keeps_its_mode() -> None:
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        LoopGuardMiddleware(Breaker(), on_trip="end")
    breaker = Breaker()
    client = guard(ScriptedAPI().client(), breaker, on_trip="steer")
    assert guard(client, breaker, on_trip="steer") is client
    with pytest.raises(ValueError, match="already guarded"):
        guard(client, breaker)
