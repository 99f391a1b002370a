"""The beta tool runner (which turns tool-function exceptions into is_error results) under guard()."""

from __future__ import annotations

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

from anthropic import beta_async_tool, beta_tool

from loopguard_anthropic import guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_pytest import assert_tripped

MODEL = "claude-sonnet-4-6"
STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs

SAME = ("lookup", {"q": "same"})
PROMPT = [{"role": "user", "content": "find it"}]


def lookup_tool(counter: BodyCounter):  # type: ignore[no-untyped-def]
    @beta_tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", q)
        return "nothing new"

    return lookup


def test_tool_runner_until_done_is_stopped_before_the_fourth_tool_runs(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    api = ScriptedAPI(loop=SAME)
    client = guard(api.client(), breaker)
    runner = client.beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup_tool(loopguard_bodies)]
    )

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        runner.until_done()

    assert (loopguard_bodies.count(), api.calls) == (3, 4)


def test_tool_runner_iteration_is_stopped_too(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    client = guard(ScriptedAPI(loop=SAME).client(), breaker)
    runner = client.beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup_tool(loopguard_bodies)]
    )
    seen = []

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        for message in runner:  # the caller's loop sees each message before the runner runs its tools
            seen.append(message.id)

    assert len(seen) == 3
    assert loopguard_bodies.count() == 3


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "after-message"])
def test_streaming_tool_runner_never_runs_the_refused_call(eager: bool) -> None:
    # run_tools_eagerly runs each tool as soon as the stream moves past its block: the check is per block.
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    client = guard(api.client(), breaker)
    runner = client.beta.messages.tool_runner(
        model=MODEL,
        max_tokens=256,
        messages=PROMPT,
        tools=[lookup_tool(counter)],
        stream=True,
        run_tools_eagerly=eager,
    )

    def read_every_event() -> None:
        for stream in runner:
            for _event in stream:
                pass

    with pytest.raises(LoopGuardTripped) as info:
        read_every_event()

    assert type(info.value) is LoopGuardTripped  # not the SDK's APIConnectionError wrapping it (anthropic>=2.17)
    assert info.value.reason == "loop"
    assert counter.count() == 3


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "after-message"])
async def test_async_streaming_tool_runner_never_runs_the_refused_call(eager: bool) -> None:
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    client = guard(api.async_client(), breaker)

    @beta_async_tool
    async def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", q)
        return "nothing new"

    runner = client.beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup], stream=True, run_tools_eagerly=eager
    )

    async def read_every_event() -> None:
        async for stream in runner:
            async for _event in stream:
                pass

    with pytest.raises(LoopGuardTripped) as info:
        await read_every_event()

    assert type(info.value) is LoopGuardTripped
    assert info.value.reason == "loop"
    assert counter.count() == 3


async def test_async_tool_runner_is_stopped(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    client = guard(ScriptedAPI(loop=SAME).async_client(), breaker)

    @beta_async_tool
    async def lookup(q: str) -> str:
        """Look something up."""
        loopguard_bodies.hit("lookup", q)
        return "nothing new"

    runner = client.beta.messages.tool_runner(model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup])

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await runner.until_done()

    assert loopguard_bodies.count() == 3


def test_tool_results_from_the_runner_are_reported() -> None:
    # Same call, changing results: progress, not a loop. Proves the runner's tool_result blocks reach after_tool.
    # The answers differ in words: answers that differ only in numbers ("page 1", "page 2") compare as the same
    # answer, since volatile numbers are masked.
    api = ScriptedAPI([SAME] * 5 + ["found it"])
    breaker, counter = Breaker(), BodyCounter()
    answers = iter(["page one", "page two", "page three", "page four", "page five"])

    @beta_tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup", q)
        return next(answers)

    final = (
        guard(api.client(), breaker)
        .beta.messages.tool_runner(model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup])
        .until_done()
    )

    assert final.content[0].text == "found it"
    assert counter.count() == 5


def in_tool_guard(breaker: Breaker, counter: BodyCounter):  # type: ignore[no-untyped-def]
    @beta_tool
    def lookup(q: str) -> str:
        """Look something up."""
        breaker.before_tool("lookup", {"q": q})  # the wrong place: inside the tool function
        counter.hit("lookup", q)
        breaker.after_tool("lookup", {"q": q}, result="nothing new")
        return "nothing new"

    return lookup


def test_trap_a_guard_inside_a_tool_function_is_swallowed_by_the_runner() -> None:
    # Control: without guard(), the runner turns the in-tool trip into an is_error result and keeps paying
    # for model calls until the script ends with its final answer.
    api, breaker, counter = ScriptedAPI([SAME] * 8 + ["done"]), Breaker(), BodyCounter()
    runner = api.client().beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[in_tool_guard(breaker, counter)]
    )

    final = runner.until_done()  # returns normally: nothing reached the caller

    assert final.content[0].text == "done"
    assert api.calls == 9
    assert any(
        block.get("is_error") and "LoopGuardTripped" in str(block.get("content"))
        for body in api.bodies
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for block in message["content"]
    )


def test_guard_stops_the_runner_even_when_a_tool_function_trip_was_swallowed() -> None:
    # With guard() on the same breaker, the swallowed trip left the breaker open: the next request is refused.
    api, breaker, counter = ScriptedAPI([SAME] * 8 + ["done"]), Breaker(), BodyCounter()
    runner = guard(api.client(), breaker).beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[in_tool_guard(breaker, counter)]
    )

    with pytest.raises(LoopGuardTripped) as info:
        runner.until_done()

    # Either the adapter refuses the fourth copy itself (loop: the in-body check left a copy in flight) or
    # the swallowed in-body trip left the breaker open: in both cases the runner stops.
    assert info.value.reason in ("loop", "open")
    assert api.calls <= 3
    assert counter.count() <= 2


def test_max_iterations_would_stop_silently_but_the_guard_raises_first() -> None:
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    client = guard(api.client(), breaker)
    runner = client.beta.messages.tool_runner(
        model=MODEL, max_tokens=256, messages=PROMPT, tools=[lookup_tool(counter)], max_iterations=10
    )

    with pytest.raises(LoopGuardTripped):
        runner.until_done()
    assert counter.count() == 3
