"""guard(client, breaker, on_trip="steer") through the real openai client: the caller's own Chat Completions and
Responses loops over a scripted API (no network).

Each path proves: the refused tool call never reached the caller's loop (its body never ran), the model's next
request carried the refusal (a ``role: "tool"`` message or a ``function_call_output`` item, in the bodies the
scripted API received), the run went on to a normal end once the model changed course, and a model that keeps
repeating is stopped for good (reason "refusals") at the caller; a budget ceiling still stops.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("openai", reason="needs the openai extra: pip install 'loopguard-core[openai]'")

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_openai import guard
from loopguard_pytest import assert_tripped

from .fakes import ScriptedOpenAI, async_client, runaway, script, sync_client
from .test_guard import MODEL, RESPONSES_TOOLS, TOOLS, chat_loop

SAME = ("lookup", {"q": "same"})
OTHER = ("lookup", {"q": "other"})
CHANGES_COURSE = script(SAME, SAME, SAME, SAME, OTHER, "done")
REFUSED = "loopguard refused this call and it did not run"
PROMPT = "find it"
APIS = ["chat", "responses"]


def refusals_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The refusals a request carried: tool messages (chat) or function_call_output items (Responses)."""
    if "messages" in body:
        return [m for m in body["messages"] if m.get("role") == "tool" and m["content"].startswith(REFUSED)]
    items = body["input"] if isinstance(body["input"], list) else []
    return [i for i in items if i.get("type") == "function_call_output" and i["output"].startswith(REFUSED)]


def answered(body: dict[str, Any]) -> dict[str, str]:
    """call id -> the answer a request carried for it."""
    if "messages" in body:
        return {m["tool_call_id"]: m["content"] for m in body["messages"] if m.get("role") == "tool"}
    return {i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"}


def run_tool(bodies: BodyCounter, name: str, arguments: str) -> str:
    bodies.hit(name, json.loads(arguments))
    return "nothing new"


# -- the caller's loops: run every tool call the model returns until it answers in text ----------------------------
def chat_agent(client: Any, bodies: BodyCounter) -> str:
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    for _ in range(12):
        message = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS).choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message)  # the SDK sends the reply back as it came (what most agent loops do)
        for call in message.tool_calls:
            content = run_tool(bodies, call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    raise AssertionError("the loop never ended")


async def achat_agent(client: Any, bodies: BodyCounter) -> str:
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    for _ in range(12):
        reply = await client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            return str(message.content)
        messages.append(message)
        for call in message.tool_calls:
            content = run_tool(bodies, call.function.name, call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    raise AssertionError("the loop never ended")


def responses_agent(client: Any, bodies: BodyCounter) -> str:
    items: list[Any] = [{"role": "user", "content": PROMPT}]
    for _ in range(12):
        response = client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return str(response.output_text)
        items += response.output
        for call in calls:
            output = run_tool(bodies, call.name, call.arguments)
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
    raise AssertionError("the loop never ended")


async def aresponses_agent(client: Any, bodies: BodyCounter) -> str:
    items: list[Any] = [{"role": "user", "content": PROMPT}]
    for _ in range(12):
        response = await client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS)
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return str(response.output_text)
        items += response.output
        for call in calls:
            output = run_tool(bodies, call.name, call.arguments)
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
    raise AssertionError("the loop never ended")


def run(api: str, scripted: ScriptedOpenAI, breaker: Breaker, bodies: BodyCounter) -> str:
    client = guard(sync_client(scripted), breaker, on_trip="steer")
    return (chat_agent if api == "chat" else responses_agent)(client, bodies)


async def arun(api: str, scripted: ScriptedOpenAI, breaker: Breaker, bodies: BodyCounter) -> str:
    client = guard(async_client(scripted), breaker, on_trip="steer")
    return await (achat_agent if api == "chat" else aresponses_agent)(client, bodies)


def assert_steered_then_done(final: str, scripted: ScriptedOpenAI, breaker: Breaker, bodies: BodyCounter) -> None:
    assert final == "done"
    assert bodies.runs == [SAME, SAME, SAME, OTHER]  # the 4th identical call never ran
    # The 5th request is loopguard asking again, the refused call answered with the refusal.
    (told,) = refusals_in(scripted.requests[4])
    assert told.get("tool_call_id", told.get("call_id")) == "call_4"
    # And the caller's next request still shows the model what happened: the history is put back.
    assert refusals_in(scripted.requests[5]) == [told]
    usage = breaker.usage()
    assert (usage.refusals, usage.turns, usage.tokens) == (1, 6, 6 * 120)  # the re-ask is a model call like any
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("api", APIS)
def test_steer_tells_the_model_why_and_the_run_goes_on(api: str, breaker: Breaker, loopguard_bodies: Any) -> None:
    scripted = ScriptedOpenAI(CHANGES_COURSE)
    final = run(api, scripted, breaker, loopguard_bodies)
    assert_steered_then_done(final, scripted, breaker, loopguard_bodies)


@pytest.mark.parametrize("api", APIS)
async def test_steer_async(api: str, breaker: Breaker, loopguard_bodies: Any) -> None:
    scripted = ScriptedOpenAI(CHANGES_COURSE)
    final = await arun(api, scripted, breaker, loopguard_bodies)
    assert_steered_then_done(final, scripted, breaker, loopguard_bodies)


@pytest.mark.loopguard(max_refusals=2)
@pytest.mark.parametrize("api", APIS)
def test_a_model_that_keeps_repeating_is_stopped_for_good(api: str, breaker: Breaker, loopguard_bodies: Any) -> None:
    scripted = ScriptedOpenAI(runaway())
    with assert_tripped(reason="refusals", max_body_runs=3, bodies=loopguard_bodies) as stop:
        run(api, scripted, breaker, loopguard_bodies)
    assert type(stop.trip) is LoopGuardTripped and stop.trip.terminal  # exactly what raise mode hands the caller
    assert loopguard_bodies.count() == 3
    assert len(scripted.requests) == 6  # replies 4 and 5 were refused and answered; the 6th refusal stopped the run
    assert len(refusals_in(scripted.requests[5])) == 2


@pytest.mark.loopguard(max_refusals=2)
@pytest.mark.parametrize("api", APIS)
async def test_a_model_that_keeps_repeating_is_stopped_for_good_async(
    api: str, breaker: Breaker, loopguard_bodies: Any
) -> None:
    scripted = ScriptedOpenAI(runaway())
    async with assert_tripped(reason="refusals", max_body_runs=3, bodies=loopguard_bodies):
        await arun(api, scripted, breaker, loopguard_bodies)
    assert len(scripted.requests) == 6


@pytest.mark.parametrize("api", APIS)
def test_in_a_parallel_reply_only_the_refused_call_is_held_back_and_answered(
    api: str, breaker: Breaker, loopguard_bodies: Any
) -> None:
    fresh = ("lookup", {"q": "fresh"})
    scripted = ScriptedOpenAI(script(SAME, SAME, SAME, [SAME, fresh], OTHER, "done"))

    final = run(api, scripted, breaker, loopguard_bodies)

    assert final == "done"
    assert loopguard_bodies.runs == [SAME, SAME, SAME, fresh, OTHER]  # the admitted sibling ran, the refused did not
    assert len(scripted.requests) == 6  # nothing asked again: the caller had a call to run
    # The caller answered only what it was handed; its next request carries both answers to that reply,
    answers = answered(scripted.requests[4])
    assert answers["call_4_0"].startswith(REFUSED) and answers["call_4_1"] == "nothing new"
    # and both calls of that reply.
    body = scripted.requests[4]
    if api == "chat":
        (assistant,) = [m for m in body["messages"] if m["role"] == "assistant" and "call_4_1" in str(m)]
        assert [c["id"] for c in assistant["tool_calls"]] == ["call_4_0", "call_4_1"]  # as the model sent them
    else:
        calls = [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]
        assert calls[-2:] == ["call_4_1", "call_4_0"]
    assert answered(scripted.requests[5])["call_4_0"].startswith(REFUSED)  # and every later one


def test_a_responses_thread_continued_by_id_gets_the_refusals_it_needs(breaker: Breaker, loopguard_bodies: Any) -> None:
    """With ``previous_response_id`` the server holds the reply, refused call included: its answer is added."""
    fresh = ("lookup", {"q": "fresh"})
    scripted = ScriptedOpenAI(script(SAME, SAME, SAME, [SAME, fresh], "done"))
    client = guard(sync_client(scripted), breaker, on_trip="steer")
    response = client.responses.create(model=MODEL, input=PROMPT, tools=RESPONSES_TOOLS)
    while calls := [item for item in response.output if item.type == "function_call"]:
        outputs = [
            {
                "type": "function_call_output",
                "call_id": c.call_id,
                "output": run_tool(loopguard_bodies, c.name, c.arguments),
            }
            for c in calls
        ]
        response = client.responses.create(
            model=MODEL, previous_response_id=response.id, input=outputs, tools=RESPONSES_TOOLS
        )
    assert response.output_text == "done"
    assert loopguard_bodies.runs == [SAME, SAME, SAME, fresh]
    last = scripted.requests[4]
    assert last["previous_response_id"] == "resp_4"
    answers = answered(last)
    assert answers.keys() == {"call_4_0", "call_4_1"}
    assert answers["call_4_0"].startswith(REFUSED) and answers["call_4_1"] == "nothing new"


@pytest.mark.loopguard(max_tool_calls=3)
@pytest.mark.parametrize("api", APIS)
def test_a_budget_ceiling_still_stops_in_steer_mode(api: str, breaker: Breaker, loopguard_bodies: Any) -> None:
    scripted = ScriptedOpenAI(script(*[("lookup", {"q": q}) for q in "abcd"], "done"))
    with assert_tripped(reason="tool_ceiling", max_body_runs=3, bodies=loopguard_bodies) as caught:
        run(api, scripted, breaker, loopguard_bodies)
    assert caught.trip.terminal
    assert len(scripted.requests) == 4  # no model call after the ceiling
    assert breaker.usage().refusals == 0


def test_a_streamed_reply_is_not_steered_its_refusal_is_raised(breaker: Breaker, loopguard_bodies: Any) -> None:
    client = guard(sync_client(ScriptedOpenAI(runaway())), breaker, on_trip="steer")
    with assert_tripped(reason="loop", max_body_runs=3, bodies=loopguard_bodies):
        chat_loop(client, "stream=True", loopguard_bodies)


def test_on_trip_is_checked_and_a_guarded_client_keeps_its_mode() -> None:
    breaker = Breaker()
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        guard(sync_client(ScriptedOpenAI(runaway())), breaker, on_trip="end")
    client = guard(sync_client(ScriptedOpenAI(runaway())), breaker, on_trip="steer")
    assert guard(client, breaker, on_trip="steer") is client
    with pytest.raises(ValueError, match="already guarded"):
        guard(client, breaker)
