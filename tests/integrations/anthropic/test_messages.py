"""guard(client, breaker) driven through the real Anthropic client (messages.create / stream) over a scripted API."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

import anthropic

from loopguard_anthropic import guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker, BreakerState, LoopGuardTripped, StoreError
from loopguard_core.testing import BodyCounter
from loopguard_pytest import assert_not_tripped, assert_tripped

MODEL = "claude-sonnet-4-6"

SAME = ("lookup", {"q": "same"})
STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def run_tool(name: str, args: dict[str, Any], counter: BodyCounter) -> str:
    counter.hit(name, args)
    return f"nothing new about {args.get('q', '')}"


def agent_loop(client: Any, counter: BodyCounter, *, turns: int = 10, tool=run_tool, **create: Any) -> Any:
    """The loop every Anthropic SDK tutorial writes: call, run the tool_use blocks, send tool_result back."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "find it"}]
    for _ in range(turns):
        message = client.messages.create(model=MODEL, max_tokens=256, messages=messages, **create)
        messages.append({"role": "assistant", "content": [block.model_dump() for block in message.content]})
        results = [
            {"type": "tool_result", "tool_use_id": block.id, "content": tool(block.name, block.input, counter)}
            for block in message.content
            if block.type == "tool_use"
        ]
        if not results:
            return message
        messages.append({"role": "user", "content": results})
    return None


async def async_agent_loop(client: Any, counter: BodyCounter, *, stream: bool = False) -> Any:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "find it"}]
    for _ in range(10):
        if stream:
            async with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as events:
                message = await events.get_final_message()
        else:
            message = await client.messages.create(model=MODEL, max_tokens=256, messages=messages)
        messages.append({"role": "assistant", "content": [block.model_dump() for block in message.content]})
        results = [
            {"type": "tool_result", "tool_use_id": block.id, "content": run_tool(block.name, block.input, counter)}
            for block in message.content
            if block.type == "tool_use"
        ]
        if not results:
            return message
        messages.append({"role": "user", "content": results})
    return None


def test_runaway_refused_before_the_fourth_tool_use_reaches_the_caller_sync(
    breaker: Breaker, loopguard_bodies: BodyCounter
) -> None:
    api = ScriptedAPI(loop=SAME)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        agent_loop(guard(api.client(), breaker, agent="solo"), loopguard_bodies)

    assert caught.trip.agent == "solo"
    assert loopguard_bodies.count() == 3
    assert api.calls == 4  # the fourth reply arrived, but its tool_use never reached the caller's loop
    assert breaker.usage().tokens == 4 * 120  # ...and its usage was recorded before the refusal
    assert breaker.state is BreakerState.OPEN


async def test_runaway_refused_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await async_agent_loop(guard(ScriptedAPI(loop=SAME).async_client(), breaker), loopguard_bodies)

    assert loopguard_bodies.count() == 3


def stream_loop(client: Any, counter: BodyCounter) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "find it"}]
    for _ in range(10):
        with client.messages.stream(model=MODEL, max_tokens=256, messages=messages) as events:
            message = events.get_final_message()
        messages.append({"role": "assistant", "content": [b.model_dump() for b in message.content]})
        results = [
            {"type": "tool_result", "tool_use_id": b.id, "content": run_tool(b.name, b.input, counter)}
            for b in message.content
            if b.type == "tool_use"
        ]
        messages.append({"role": "user", "content": results})


def test_runaway_refused_on_messages_stream_sync(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        stream_loop(guard(ScriptedAPI(loop=SAME).client(), breaker), loopguard_bodies)

    assert type(caught.trip) is LoopGuardTripped  # not the SDK's APIConnectionError wrapping it (anthropic>=2.17)
    assert loopguard_bodies.count() == 3
    assert breaker.usage().tool_calls == 3


def test_stream_events_split_across_chunks_are_still_checked(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        stream_loop(guard(ScriptedAPI(loop=SAME, chunk_size=7).client(), breaker), loopguard_bodies)

    assert loopguard_bodies.count() == 3
    assert breaker.usage().tokens >= 3 * 120


async def test_runaway_refused_on_messages_stream_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        await async_agent_loop(guard(ScriptedAPI(loop=SAME).async_client(), breaker), loopguard_bodies, stream=True)

    assert type(caught.trip) is LoopGuardTripped
    assert loopguard_bodies.count() == 3


def raw_stream_loop(client: Any, completed: list[int]) -> None:
    """Iterate ``stream=True`` events by hand, noting each turn whose tool block was completed."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for turn in range(4):
        tool_id = None
        for event in client.messages.create(model=MODEL, max_tokens=256, messages=messages, stream=True):
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                tool_id = event.content_block.id
            if event.type == "content_block_stop":
                completed.append(turn)
        messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, **_call(SAME)}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "x"}]})


def test_raw_stream_true_never_delivers_the_refused_tool_use_block() -> None:
    api, breaker = ScriptedAPI([SAME, SAME, SAME, SAME]), Breaker()
    completed_tool_blocks: list[int] = []

    with pytest.raises(LoopGuardTripped) as info:
        raw_stream_loop(guard(api.client(), breaker), completed_tool_blocks)

    assert type(info.value) is LoopGuardTripped
    assert completed_tool_blocks == [0, 1, 2]  # the fourth block's content_block_stop was never handed over


async def test_raw_stream_true_never_delivers_the_refused_tool_use_block_async() -> None:
    api, breaker = ScriptedAPI([SAME, SAME, SAME, SAME]), Breaker()
    client = guard(api.async_client(), breaker)
    completed: list[int] = []
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]

    async def loop() -> None:
        for turn in range(4):
            tool_id = None
            async for event in await client.messages.create(
                model=MODEL, max_tokens=256, messages=messages, stream=True
            ):
                if event.type == "content_block_start" and event.content_block.type == "tool_use":
                    tool_id = event.content_block.id
                if event.type == "content_block_stop":
                    completed.append(turn)
            messages.append({"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, **_call(SAME)}]})
            result = {"type": "tool_result", "tool_use_id": tool_id, "content": "x"}
            messages.append({"role": "user", "content": [result]})

    with pytest.raises(LoopGuardTripped) as info:
        await loop()

    assert type(info.value) is LoopGuardTripped
    assert info.value.reason == "loop"
    assert completed == [0, 1, 2]


def test_raw_bytes_readers_get_the_trip_too() -> None:
    # with_streaming_response hands over the HTTP body itself: the refusal is raised while it is read.
    api, breaker = ScriptedAPI(loop=SAME, chunk_size=7), Breaker(max_tool_calls=1)
    client = guard(api.client(), breaker)
    lines: list[str] = []

    def read(turn: int) -> None:
        with client.messages.with_streaming_response.create(
            model=MODEL, max_tokens=256, messages=[{"role": "user", "content": f"go {turn}"}], stream=True
        ) as response:
            lines.extend(response.iter_lines())

    read(0)
    with pytest.raises(LoopGuardTripped) as info:
        read(1)

    assert type(info.value) is LoopGuardTripped
    assert info.value.reason == "tool_ceiling"
    assert sum('"content_block_stop"' in line for line in lines) == 1  # only the admitted call's block


def test_a_stream_dropped_mid_body_stays_the_sdks_error() -> None:
    # Only the guard's own exception is put back: a real failure to read the body is not a trip.
    api, breaker = ScriptedAPI([SAME], break_after=3), Breaker()
    client = guard(api.client(), breaker)

    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.ReadError)) as info,  # the SDK wraps it from 2.17
        client.messages.stream(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "go"}]) as events,
    ):
        events.get_final_message()

    assert not isinstance(info.value, LoopGuardTripped)
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_a_guard_error_mid_stream_reaches_the_caller_as_itself(use_async: bool) -> None:
    # Not only trips: any error of the check (here a shared store going away) is the guard's, not a lost connection.
    unreachable = StoreError("store unreachable")

    class Unreachable(Breaker):
        def before_tool(self, *args: Any, **kwargs: Any) -> Any:
            raise unreachable

        async def abefore_tool(self, *args: Any, **kwargs: Any) -> Any:
            raise unreachable

    api, breaker = ScriptedAPI([SAME]), Unreachable()
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "go"}]}

    async def read() -> None:
        if use_async:
            async with guard(api.async_client(), breaker).messages.stream(**request) as stream:
                await stream.get_final_message()
        else:
            with guard(api.client(), breaker).messages.stream(**request) as events:
                events.get_final_message()

    with pytest.raises(StoreError) as info:
        await read()

    assert info.value is unreachable


def _call(step: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"name": step[0], "input": step[1]}


def test_legitimate_varied_run_completes_and_is_counted(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    api = ScriptedAPI([("lookup", {"q": f"page {i}"}) for i in range(5)] + ["all pages read"])

    with assert_not_tripped(breaker):
        message = agent_loop(guard(api.client(), breaker), loopguard_bodies)

    assert message.content[0].text == "all pages read"
    assert loopguard_bodies.count() == 5
    usage = breaker.usage()
    assert (usage.state, usage.turns, usage.tool_calls, usage.tokens) == (BreakerState.CLOSED, 6, 5, 6 * 120)


def test_polling_with_changing_results_is_progress() -> None:
    api = ScriptedAPI([("status", {"job": "42"})] * 6 + ["finished"])
    breaker, counter = Breaker(), BodyCounter()
    progress = iter(["10%", "30%", "50%", "70%", "90%", "100%"])

    def poll(name: str, args: dict[str, Any], counter: BodyCounter) -> str:
        counter.hit(name, args)
        return next(progress)

    message = agent_loop(guard(api.client(), breaker), counter, tool=poll)

    assert message.content[0].text == "finished"
    assert counter.count() == 6


def failing_loop(client: Any, counter: BodyCounter) -> None:
    """Every tool call fails: the loop sends back is_error tool results."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for _ in range(10):
        block = client.messages.create(model=MODEL, max_tokens=256, messages=messages).content[0]
        counter.hit(block.name, block.input)
        failed = {"type": "tool_result", "tool_use_id": block.id, "content": "503", "is_error": True}
        messages.append({"role": "assistant", "content": [block.model_dump()]})
        messages.append({"role": "user", "content": [failed]})


def test_error_tool_results_count_as_failures() -> None:
    api = ScriptedAPI([("fetch", {"url": f"https://x/{i}"}) for i in range(10)])
    breaker, counter = Breaker(max_consecutive_failures=3), BodyCounter()

    with pytest.raises(LoopGuardTripped) as info:
        failing_loop(guard(api.client(), breaker), counter)

    assert info.value.reason == "failures"
    assert counter.count() == 3


def test_request_that_would_cross_the_token_ceiling_is_never_sent() -> None:
    api = ScriptedAPI([("lookup", {"q": f"page {i}"}) for i in range(20)])
    breaker, counter = Breaker(max_tokens=1_000), BodyCounter()

    with pytest.raises(LoopGuardTripped) as info:
        agent_loop(guard(api.client(), breaker), counter, turns=20)

    assert info.value.reason == "token_ceiling"
    spent = info.value.facts["spent"]
    assert spent == api.calls * 120
    assert api.http_attempts == api.calls  # the refused request never went out
    assert info.value.facts["observed"] > max(1_000, spent + 256)  # the projection includes the estimated input
    assert breaker.usage().tokens == spent


def test_huge_prompt_refused_before_any_http_attempt() -> None:
    api, breaker = ScriptedAPI(["ok"]), Breaker(max_tokens=2_000)
    client = guard(api.client(), breaker)

    with pytest.raises(LoopGuardTripped) as info:
        client.messages.create(
            model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "word " * 4_000}], system="Be brief."
        )

    assert info.value.reason == "token_ceiling"
    assert api.http_attempts == 0


def test_http_retries_are_one_model_call() -> None:
    # Two 529s then a reply: three HTTP attempts, one logical request, one turn.
    api, breaker = ScriptedAPI(["ok"], errors=[529, 529]), Breaker(max_turns=1)
    client = guard(api.client(max_retries=2), breaker)

    message = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])

    assert message.content[0].text == "ok"
    assert api.http_attempts == 3
    assert breaker.usage().turns == 1
    assert breaker.usage().tokens == 120


async def test_http_retries_are_one_model_call_async() -> None:
    api, breaker = ScriptedAPI(["ok"], errors=[529]), Breaker(max_turns=1)
    client = guard(api.async_client(max_retries=2), breaker)

    message = await client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])

    assert message.content[0].text == "ok"
    assert (api.http_attempts, breaker.usage().turns) == (2, 1)


def beta_loop(client: Any, counter: BodyCounter) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for _ in range(5):
        block = client.beta.messages.create(model=MODEL, max_tokens=64, messages=messages).content[0]
        result = run_tool(block.name, block.input, counter)
        messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True)]})
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": result}]}
        )


def test_beta_messages_are_guarded_too() -> None:
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()

    with pytest.raises(LoopGuardTripped):
        beta_loop(guard(api.client(), breaker), counter)

    assert counter.count() == 3


def test_usd_ceiling_refuses_the_request_that_would_cross_it() -> None:
    # claude-sonnet-4-6 at genai-prices rates; each request also reserves its own max_tokens=256 of output.
    api = ScriptedAPI([("lookup", {"q": f"page {i}"}) for i in range(30)])
    breaker, counter = Breaker(max_cost_usd=0.01), BodyCounter()

    with pytest.raises(LoopGuardTripped) as info:
        agent_loop(guard(api.client(), breaker), counter, turns=30)

    assert info.value.reason == "cost_ceiling"
    assert api.http_attempts == api.calls  # the refused request was never sent
    assert 0 < breaker.usage().cost_usd <= 0.01


def test_failed_requests_release_their_reservation_and_the_error_reaches_the_caller() -> None:
    import anthropic

    # Every request fails (529, no retries left): without the release, 2 x 400 reserved tokens > 600.
    api, breaker = ScriptedAPI(["ok"], errors=[529] * 4), Breaker(max_tokens=600, isolate_runs=False)
    client = guard(api.client(max_retries=0), breaker)
    for _ in range(4):
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model=MODEL, max_tokens=400, messages=[{"role": "user", "content": "hi"}])
    message = client.messages.create(model=MODEL, max_tokens=400, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "ok"
    assert breaker.usage().turns == 5


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_request_body_is_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict[str, Any], estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so no request is read for one."""
    sent = preflight_estimates
    api = ScriptedAPI([*[("lookup", {"q": f"page {i}"}) for i in range(3)], "done"])
    breaker, counter = Breaker(**settings), BodyCounter()
    agent_loop(guard(api.client(), breaker), counter)
    assert counter.count("lookup") == 3 and len(sent) == 4
    assert all(n > 0 for n in sent) if estimated else sent == [0, 0, 0, 0]
    assert breaker.usage().tokens == 4 * 120  # the usage the API reported, either way
