"""LoopGuardLogger(breaker, on_trip="steer") through the real ``litellm.completion`` / ``acompletion`` (openai
provider, the real ``openai`` client over a scripted transport: no network).

As for the OpenAI client: the refused tool call never reached the caller's loop (its body never ran), the model's
next request carried the refusal (a ``role: "tool"`` message), the run went on to a normal end once the model
changed course, and a model that keeps repeating is stopped for good (reason "refusals") at the caller.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price map in tests
pytest.importorskip("litellm", reason="needs the litellm extra: pip install 'loopguard-core[litellm]'")

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_litellm import LoopGuardLogger
from loopguard_pytest import assert_tripped

from ..openai.fakes import ScriptedOpenAI, async_client, runaway, script, sync_client

MODEL = "openai/gpt-4o"
SAME = ("lookup", {"q": "same"})
OTHER = ("lookup", {"q": "other"})
CHANGES_COURSE = script(SAME, SAME, SAME, SAME, OTHER, "done")
REFUSED = "loopguard refused this call and it did not run"


def tool_messages(body: dict[str, Any]) -> dict[str, str]:
    """call id -> the tool message answering it, in a request the scripted API received."""
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}


def refusals_in(body: dict[str, Any]) -> list[str]:
    return [call_id for call_id, content in tool_messages(body).items() if content.startswith(REFUSED)]


def run_tools(message: Any, messages: list[Any], bodies: BodyCounter) -> None:
    messages.append(message)  # the reply as LiteLLM returned it (a Message object), as its docs show
    for call in message.tool_calls:
        bodies.hit(call.function.name, json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "nothing new"})


def agent(guard: LoopGuardLogger, client: Any, bodies: BodyCounter) -> str:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(12):
        message = guard.completion(model=MODEL, messages=list(messages), client=client).choices[0].message
        if not message.tool_calls:
            return str(message.content)
        run_tools(message, messages, bodies)
    raise AssertionError("the loop never ended")


async def aagent(guard: LoopGuardLogger, client: Any, bodies: BodyCounter) -> str:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(12):
        reply = await guard.acompletion(model=MODEL, messages=list(messages), client=client)
        message = reply.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        run_tools(message, messages, bodies)
    raise AssertionError("the loop never ended")


def assert_steered_then_done(final: str, api: ScriptedOpenAI, breaker: Breaker, bodies: BodyCounter) -> None:
    assert final == "done"
    assert bodies.runs == [SAME, SAME, SAME, OTHER]  # the 4th identical call never ran
    assert refusals_in(api.requests[4]) == ["call_4"]  # loopguard asking again, with the refusal
    assert refusals_in(api.requests[5]) == ["call_4"]  # and the caller's next request: the history is put back
    usage = breaker.usage()
    assert (usage.refusals, usage.turns) == (1, 6)  # the re-ask is a model call like any other
    assert breaker.state is BreakerState.CLOSED


def test_steer_tells_the_model_why_and_the_run_goes_on(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    api = ScriptedOpenAI(CHANGES_COURSE)
    final = agent(LoopGuardLogger(breaker, on_trip="steer"), sync_client(api), loopguard_bodies)
    assert_steered_then_done(final, api, breaker, loopguard_bodies)


async def test_steer_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    api = ScriptedOpenAI(CHANGES_COURSE)
    final = await aagent(LoopGuardLogger(breaker, on_trip="steer"), async_client(api), loopguard_bodies)
    assert_steered_then_done(final, api, breaker, loopguard_bodies)


@pytest.mark.loopguard(max_refusals=2)
def test_a_model_that_keeps_repeating_is_stopped_for_good(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    api = ScriptedOpenAI(runaway())
    with assert_tripped(reason="refusals", max_body_runs=3, bodies=loopguard_bodies) as stop:
        agent(LoopGuardLogger(breaker, on_trip="steer"), sync_client(api), loopguard_bodies)
    assert type(stop.trip) is LoopGuardTripped and stop.trip.terminal
    assert len(api.requests) == 6  # replies 4 and 5 were refused and answered; the 6th refusal stopped the run
    assert refusals_in(api.requests[5]) == ["call_4", "call_5"]


@pytest.mark.loopguard(max_refusals=2)
async def test_a_model_that_keeps_repeating_is_stopped_for_good_async(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    api = ScriptedOpenAI(runaway())
    async with assert_tripped(reason="refusals", max_body_runs=3, bodies=loopguard_bodies):
        await aagent(LoopGuardLogger(breaker, on_trip="steer"), async_client(api), loopguard_bodies)
    assert len(api.requests) == 6


def test_in_a_parallel_reply_only_the_refused_call_is_held_back_and_answered(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    fresh = ("lookup", {"q": "fresh"})
    api = ScriptedOpenAI(script(SAME, SAME, SAME, [SAME, fresh], OTHER, "done"))
    final = agent(LoopGuardLogger(breaker, on_trip="steer"), sync_client(api), loopguard_bodies)
    assert final == "done"
    assert loopguard_bodies.runs == [SAME, SAME, SAME, fresh, OTHER]  # the admitted sibling ran, the refused did not
    answers = tool_messages(api.requests[4])
    assert answers["call_4_0"].startswith(REFUSED) and answers["call_4_1"] == "nothing new"
    (assistant,) = [m for m in api.requests[4]["messages"] if "call_4_1" in str(m.get("tool_calls"))]
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_4_0", "call_4_1"]


def test_a_streamed_reply_is_not_steered_its_refusal_is_raised(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    from .test_logger import sync_loop

    guard = LoopGuardLogger(breaker, on_trip="steer")
    with assert_tripped(reason="loop", max_body_runs=3, bodies=loopguard_bodies):
        sync_loop(guard, sync_client(ScriptedOpenAI(runaway())), loopguard_bodies, stream=True)


def test_on_trip_is_checked() -> None:
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        LoopGuardLogger(Breaker(), on_trip="end")
