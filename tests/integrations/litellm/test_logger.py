"""The LiteLLM adapter through the real ``litellm.completion`` / ``acompletion`` (openai provider, with the
real ``openai`` client over a scripted transport: no network)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price map in tests
pytest.importorskip("litellm", reason="needs the litellm extra: pip install 'loopguard-core[litellm]'")

import litellm

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_litellm import LoopGuardLogger
from loopguard_pytest import assert_not_tripped, assert_tripped

from ..openai.fakes import ScriptedOpenAI, async_client, legit, runaway, sync_client

MODEL = "openai/gpt-4o"


def run_tools(response_calls: list[tuple[str, str, str]], messages: list[Any], counter: BodyCounter) -> None:
    wire = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in response_calls]
    messages.append({"role": "assistant", "tool_calls": wire})
    for call_id, name, arguments in response_calls:
        counter.hit(name, json.loads(arguments))
        messages.append({"role": "tool", "tool_call_id": call_id, "content": "nothing new"})


def calls_of(response: Any) -> list[tuple[str, str, str]]:
    calls = response.choices[0].message.tool_calls or []
    return [(c.id, c.function.name, c.function.arguments) for c in calls]


def stream_calls(chunks: list[Any]) -> list[tuple[str, str, str]]:
    found: dict[int, list[str]] = {}
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = found.setdefault(call.index, ["", "", ""])
            entry[0] = call.id or entry[0]
            entry[1] = call.function.name or entry[1]
            entry[2] += call.function.arguments or ""
    return [(a, b, c) for a, b, c in found.values()]


def sync_loop(logger: LoopGuardLogger, client: Any, counter: BodyCounter, *, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(10):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": list(messages), "client": client, "max_tokens": 64}
        if stream:
            chunks = list(logger.completion(stream=True, stream_options={"include_usage": True}, **kwargs))
            calls = stream_calls(chunks)
        else:
            calls = calls_of(logger.completion(**kwargs))
        if not calls:
            return
        run_tools(calls, messages, counter)


async def async_loop(logger: LoopGuardLogger, client: Any, counter: BodyCounter, *, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "find it"}]
    for _ in range(10):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": list(messages), "client": client, "max_tokens": 64}
        if stream:
            response = await logger.acompletion(stream=True, stream_options={"include_usage": True}, **kwargs)
            calls = stream_calls([chunk async for chunk in response])
        else:
            calls = calls_of(await logger.acompletion(**kwargs))
        if not calls:
            return
        run_tools(calls, messages, counter)


RUNAWAY_STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_sync_runaway_trips_at_the_caller(stream: bool, breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    logger = LoopGuardLogger(breaker, agent="researcher")
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        sync_loop(logger, sync_client(ScriptedOpenAI(runaway())), loopguard_bodies, stream=stream)
    assert type(caught.trip) is LoopGuardTripped and caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3


@pytest.mark.parametrize("stream", [False, True], ids=["acompletion", "stream"])
async def test_async_runaway_trips_at_the_caller(stream: bool, breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    logger = LoopGuardLogger(breaker, agent="researcher")
    with breaker.run(), assert_tripped(**RUNAWAY_STOPPED, bodies=loopguard_bodies) as caught:
        await async_loop(logger, async_client(ScriptedOpenAI(runaway())), loopguard_bodies, stream=stream)
    assert type(caught.trip) is LoopGuardTripped
    assert loopguard_bodies.count("lookup") == 3


@pytest.mark.loopguard(max_tokens=1_000)
def test_token_ceiling_refuses_before_anything_is_sent(breaker: Breaker) -> None:
    api = ScriptedOpenAI(legit())
    with breaker.run(), assert_tripped(reason="token_ceiling"):
        LoopGuardLogger(breaker).completion(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], client=sync_client(api), max_tokens=5_000
        )
    assert api.requests == []


@pytest.mark.loopguard(max_tokens=100_000)
def test_legit_run_completes_and_counts_usage(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with breaker.run(), assert_not_tripped(breaker):
        sync_loop(LoopGuardLogger(breaker), sync_client(ScriptedOpenAI(legit(2))), loopguard_bodies, stream=False)
        usage = breaker.usage()
    assert loopguard_bodies.count("lookup") == 2
    assert (usage.turns, usage.tokens) == (3, 3 * 120)


def test_a_callback_cannot_refuse_in_the_sdk_which_is_why_completion_exists() -> None:
    """What LiteLLM does with a callback that raises before the call: logs it and sends the request anyway."""
    api = ScriptedOpenAI(legit())

    class Refusing(litellm.integrations.custom_logger.CustomLogger):  # type: ignore[misc,name-defined]
        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            raise LoopGuardTripped("token_ceiling")

    previous = litellm.callbacks
    litellm.callbacks = [Refusing()]
    try:
        litellm.completion(model=MODEL, messages=[{"role": "user", "content": "hi"}], client=sync_client(api))
    finally:
        litellm.callbacks = previous
    assert len(api.requests) == 1  # swallowed: the request went out


async def test_proxy_pre_call_hook_refuses_and_post_call_hook_checks_tool_calls() -> None:
    breaker = Breaker(max_tokens=1_000)
    logger = LoopGuardLogger(breaker)
    with breaker.run():
        data = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5_000}
        with pytest.raises(LoopGuardTripped) as caught:
            await logger.async_pre_call_hook(None, None, data, "completion")
        assert caught.value.reason == "token_ceiling"

    breaker = Breaker()
    logger = LoopGuardLogger(breaker)
    api = ScriptedOpenAI(runaway())
    turns: list[int] = []

    async def proxy_turns() -> None:
        for n in range(1, 6):
            turns.append(n)
            data = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
            await logger.async_pre_call_hook(None, None, data, "completion")
            await logger.async_post_call_success_hook(data, None, api._chat(n, "lookup", {"q": "same"}, None))

    with breaker.run(), pytest.raises(LoopGuardTripped) as caught:
        await proxy_turns()
    assert (caught.value.reason, turns[-1]) == ("loop", 4)


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_request_is_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so no request is read for one."""
    breaker = Breaker(**settings)
    with breaker.run():
        sync_loop(LoopGuardLogger(breaker), sync_client(ScriptedOpenAI(legit(2))), BodyCounter(), stream=False)
    assert len(preflight_estimates) == 3
    assert all(n > 0 for n in preflight_estimates) if estimated else preflight_estimates == [0, 0, 0]
    assert breaker.usage().tokens == 3 * 120  # the usage the provider reported, either way
