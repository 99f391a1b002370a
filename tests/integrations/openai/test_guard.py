"""``guard(client, breaker)`` through the real ``openai`` client over a scripted transport (no network).

Each path runs the caller's own agent loop: call the model, run the tool calls it returns, send the results
back. The runaway asks for the same lookup every time; the breaker admits three and refuses the fourth before
the caller can run it, and the trip reaches the caller as ``LoopGuardTripped``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("openai", reason="needs the openai extra: pip install 'loopguard-core[openai]'")

import openai

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_openai import guard
from loopguard_openai._body import estimate_input_tokens
from loopguard_pytest import assert_not_tripped, assert_tripped

from .fakes import (
    BASE_URL,
    ScriptedOpenAI,
    async_client,
    http_client,
    legit,
    library_of,
    runaway,
    sdk_http,
    sync_client,
)

MODEL = "gpt-4o"
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA, "strict": True}}]
RESPONSES_TOOLS = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]


def lookup(counter: BodyCounter, args: dict[str, Any]) -> str:
    counter.hit("lookup", args)
    return "nothing new"


# -- chat completions: one turn per mode, returning the tool calls (id, name, arguments) --------------------
def chat_turn(client: Any, messages: list[Any], mode: str) -> list[tuple[str, str, str]]:
    if mode == "create":
        message = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=64)
        calls = message.choices[0].message.tool_calls or []
        return [(c.id, c.function.name, c.function.arguments) for c in calls]
    if mode == "stream=True":
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
        )
        found: dict[int, list[str]] = {}
        for chunk in stream:
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = found.setdefault(call.index, [call.id or "", call.function.name or "", ""])
                entry[2] += call.function.arguments or ""
        return [(a, b, c) for a, b, c in found.values()]
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    return [(c.id, c.function.name, c.function.arguments) for c in calls]


async def achat_turn(client: Any, messages: list[Any], mode: str) -> list[tuple[str, str, str]]:
    if mode == "create":
        message = await client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=64)
        calls = message.choices[0].message.tool_calls or []
        return [(c.id, c.function.name, c.function.arguments) for c in calls]
    if mode == "stream=True":
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, stream=True, stream_options={"include_usage": True}
        )
        found: dict[int, list[str]] = {}
        async for chunk in stream:
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                entry = found.setdefault(call.index, [call.id or "", call.function.name or "", ""])
                entry[2] += call.function.arguments or ""
        return [(a, b, c) for a, b, c in found.values()]
    async with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    return [(c.id, c.function.name, c.function.arguments) for c in calls]


def chat_loop(client: Any, mode: str, counter: BodyCounter, turns: int = 10) -> None:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(turns):
        calls = chat_turn(client, messages, mode)
        if not calls:
            return
        wire = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
        messages.append({"role": "assistant", "tool_calls": wire})
        for call_id, _name, arguments in calls:
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": lookup(counter, json.loads(arguments))}
            )


async def achat_loop(client: Any, mode: str, counter: BodyCounter, turns: int = 10) -> None:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(turns):
        calls = await achat_turn(client, messages, mode)
        if not calls:
            return
        wire = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
        messages.append({"role": "assistant", "tool_calls": wire})
        for call_id, _name, arguments in calls:
            messages.append(
                {"role": "tool", "tool_call_id": call_id, "content": lookup(counter, json.loads(arguments))}
            )


# -- responses ----------------------------------------------------------------------------------------------
def responses_turn(client: Any, items: list[Any], mode: str) -> list[Any]:
    if mode == "create":
        response = client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS, max_output_tokens=64)
    elif mode == "stream=True":
        response = None
        for event in client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS, stream=True):
            if event.type == "response.completed":
                response = event.response
    else:
        with client.responses.stream(model=MODEL, input=items, tools=RESPONSES_TOOLS) as stream:
            for _ in stream:
                pass
            response = stream.get_final_response()
    assert response is not None
    return [item for item in response.output if item.type == "function_call"]


async def aresponses_turn(client: Any, items: list[Any], mode: str) -> list[Any]:
    if mode == "create":
        response = await client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS, max_output_tokens=64)
    elif mode == "stream=True":
        response = None
        async for event in await client.responses.create(model=MODEL, input=items, tools=RESPONSES_TOOLS, stream=True):
            if event.type == "response.completed":
                response = event.response
    else:
        async with client.responses.stream(model=MODEL, input=items, tools=RESPONSES_TOOLS) as stream:
            async for _ in stream:
                pass
            response = await stream.get_final_response()
    assert response is not None
    return [item for item in response.output if item.type == "function_call"]


def responses_loop(client: Any, mode: str, counter: BodyCounter, turns: int = 10) -> None:
    items: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(turns):
        calls = responses_turn(client, items, mode)
        if not calls:
            return
        for call in calls:
            items.append(
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
            )
            result = lookup(counter, json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": result})


async def aresponses_loop(client: Any, mode: str, counter: BodyCounter, turns: int = 10) -> None:
    items: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(turns):
        calls = await aresponses_turn(client, items, mode)
        if not calls:
            return
        for call in calls:
            items.append(
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
            )
            result = lookup(counter, json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": result})


MODES = ["create", "stream=True", ".stream()"]
APIS = ["chat", "responses"]
LOOPS = {"chat": chat_loop, "responses": responses_loop}
ALOOPS = {"chat": achat_loop, "responses": aresponses_loop}
RUNAWAY_STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_sync_runaway_is_stopped_before_the_fourth_body(
    api: str, mode: str, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    scripted = ScriptedOpenAI(runaway())
    client = guard(sync_client(scripted), breaker, agent="researcher")
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        LOOPS[api](client, mode, loopguard_bodies)
    assert type(caught.trip) is LoopGuardTripped and caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3
    assert len(scripted.requests) == 4  # the fourth answer was received, its tool call never delivered


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
async def test_async_runaway_is_stopped_before_the_fourth_body(
    api: str, mode: str, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    client = guard(async_client(ScriptedOpenAI(runaway())), breaker, agent="researcher")
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        await ALOOPS[api](client, mode, loopguard_bodies)
    assert type(caught.trip) is LoopGuardTripped
    assert loopguard_bodies.count("lookup") == 3


@pytest.mark.loopguard(max_tokens=1_000)
@pytest.mark.parametrize("api", APIS)
def test_token_ceiling_refuses_the_request_before_it_is_sent(api: str, breaker: Breaker) -> None:
    scripted = ScriptedOpenAI(legit())
    client = guard(sync_client(scripted), breaker)
    with breaker.run(), assert_tripped(reason="token_ceiling"):
        if api == "chat":
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5_000)
        else:
            client.responses.create(model=MODEL, input="hi", max_output_tokens=5_000)
    assert scripted.requests == []  # nothing reached the transport


@pytest.mark.loopguard(max_tokens=1_000)
async def test_async_token_ceiling_counts_max_completion_tokens_and_sends_nothing(breaker: Breaker) -> None:
    scripted = ScriptedOpenAI(legit())
    client = guard(async_client(scripted, max_retries=5), breaker)
    with breaker.run(), assert_tripped(reason="token_ceiling"):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=2_000, stream=True
        )
    assert scripted.requests == []


@pytest.mark.loopguard(max_tokens=10)
def test_a_refusal_is_not_retried_nor_wrapped(breaker: Breaker) -> None:
    scripted = ScriptedOpenAI(legit())
    client = guard(sync_client(scripted, max_retries=5), breaker)
    with breaker.run(), assert_tripped(reason="token_ceiling") as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert not isinstance(caught.trip, openai.OpenAIError)
    assert scripted.requests == []


@pytest.mark.loopguard(max_tokens=100_000)
@pytest.mark.parametrize("mode", MODES)
def test_legit_run_completes_and_usage_is_recorded(mode: str, breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    client = guard(sync_client(ScriptedOpenAI(legit(2))), breaker)
    with breaker.run(), assert_not_tripped(breaker):
        chat_loop(client, mode, loopguard_bodies)
        usage = breaker.usage()
    assert loopguard_bodies.count("lookup") == 2
    assert usage.turns == 3
    if mode != ".stream()":  # the helper sends no stream_options: the output is estimated from the text
        assert usage.tokens == 3 * 120


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_request_body_is_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so no request is read for one."""
    breaker, counter = Breaker(**settings), BodyCounter()
    with breaker.run():
        chat_loop(guard(sync_client(ScriptedOpenAI(legit(2))), breaker), "create", counter)
    assert counter.count("lookup") == 2 and len(preflight_estimates) == 3
    assert all(n > 0 for n in preflight_estimates) if estimated else preflight_estimates == [0, 0, 0]
    assert breaker.usage().tokens == 3 * 120  # the usage the API reported, either way


@pytest.mark.parametrize("mode", ["create", "stream=True"])
def test_a_reply_without_usage_still_counts_the_estimated_input_without_a_ceiling(mode: str) -> None:
    """A server that reports no usage: each request's input is estimated when the reply ends (the pre-flight
    skipped it without a ceiling), the same count as under a ceiling, where the pre-flight estimated it."""
    counted, inputs = [], []
    for breaker in (Breaker(), Breaker(max_tokens=10**9)):
        api = ScriptedOpenAI(legit(2), usage=False)
        with breaker.run():
            chat_loop(guard(sync_client(api), breaker), mode, BodyCounter())
        counted.append(breaker.usage().tokens)
        inputs.append(sum(estimate_input_tokens("chat", body) for body in api.requests))
    assert inputs[0] == inputs[1] > 0
    assert counted[0] == counted[1] > inputs[0]  # each request's estimated input, and the output on top


def test_the_original_client_stays_unguarded_and_guarding_twice_is_a_no_op(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    original = sync_client(ScriptedOpenAI(runaway()))
    guarded = guard(original, breaker)
    assert guard(guarded, breaker) is guarded
    with breaker.run(), assert_not_tripped(breaker):
        chat_loop(original, "create", loopguard_bodies, turns=5)
    assert loopguard_bodies.count("lookup") == 5


def test_azure_client_is_guarded(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    azure = openai.AzureOpenAI(
        api_key="scripted",
        api_version="2024-10-21",
        azure_endpoint="http://scripted.invalid",
        http_client=http_client(ScriptedOpenAI(runaway())),
    )
    client = guard(azure, breaker, agent="azure-agent")
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies):
        chat_loop(client, "create", loopguard_bodies)
    assert loopguard_bodies.count("lookup") == 3


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
async def test_a_client_on_either_http_library_is_guarded(
    library: str, breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    """openai 2.x takes an httpx2 client as well as its own httpx, and 3.x an httpx one as well as httpx2: the
    guard wraps whichever the client was built on."""
    http = pytest.importorskip(library)
    scripted = ScriptedOpenAI(runaway())
    sync = openai.OpenAI(
        api_key="k", base_url=BASE_URL, http_client=http.Client(transport=http.MockTransport(scripted))
    )
    transport = http.MockTransport(scripted)
    aio = openai.AsyncOpenAI(api_key="k", base_url=BASE_URL, http_client=http.AsyncClient(transport=transport))
    guarded, aguarded = guard(sync, breaker), guard(aio, breaker)
    assert library_of(guarded._client) is library_of(aguarded._client) is http
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies):
        chat_loop(guarded, "create", loopguard_bodies)
    async_bodies = BodyCounter()
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=async_bodies):
        await aresponses_loop(aguarded, "stream=True", async_bodies)
    assert loopguard_bodies.count("lookup") == async_bodies.count("lookup") == 3


@pytest.mark.loopguard(max_tokens=100_000)
def test_an_upstream_error_is_retried_by_the_sdk_and_counted_as_one_model_call(breaker: Breaker) -> None:
    scripted = ScriptedOpenAI(legit(0))
    retry_counts: list[str | None] = []

    def flaky(request: Any) -> Any:
        retry_counts.append(request.headers.get("x-stainless-retry-count"))
        if len(retry_counts) == 1:  # the first attempt fails; the SDK retries after retry-after-ms
            return library_of(request).Response(
                500, json={"error": {"message": "boom"}}, headers={"retry-after-ms": "1"}
            )
        return scripted(request)

    http = sdk_http()
    client = openai.OpenAI(
        api_key="k", base_url=BASE_URL, http_client=http.Client(transport=http.MockTransport(flaky)), max_retries=2
    )
    with breaker.run():
        reply = guard(client, breaker).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        usage = breaker.usage()
    assert reply.choices[0].message.content == "the answer"
    assert retry_counts == ["0", "1"]
    assert (usage.turns, usage.tokens) == (1, 120)  # the failed attempt released its reservation


def test_guard_rejects_what_it_cannot_guard() -> None:
    with pytest.raises(TypeError, match="Breaker"):
        guard(sync_client(ScriptedOpenAI(legit())), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OpenAI"):
        guard(object(), Breaker())
