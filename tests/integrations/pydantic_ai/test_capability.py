"""LoopGuardCapability driven through the real Pydantic AI agent loop with a scripted FunctionModel."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent, ModelRetry

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_pydantic_ai import LoopGuardCapability
from loopguard_pydantic_ai.testing import ScriptedModel
from loopguard_pytest import assert_not_tripped, assert_tripped

SAME = ("lookup", {"q": "same"})
STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def make_agent(
    fake: ScriptedModel, counter: BodyCounter, *, name: str = "researcher", capabilities=(), **kwargs
) -> Agent:
    agent = Agent(fake, name=name, capabilities=list(capabilities), **kwargs)

    @agent.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return f"nothing new about {q.split('#')[0]}"

    return agent


def test_runaway_stopped_before_fourth_body_sync(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    fake = ScriptedModel(loop=SAME)
    agent = make_agent(fake, loopguard_bodies, capabilities=[LoopGuardCapability(breaker)])

    with assert_tripped(**STOPPED, bodies=loopguard_bodies) as caught:
        agent.run_sync("find it")

    assert caught.trip.agent == "researcher"
    assert loopguard_bodies.count("lookup") == 3  # the fourth identical call never ran
    assert fake.calls == 4
    assert breaker.state is BreakerState.OPEN


async def test_runaway_stopped_before_fourth_body_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = make_agent(ScriptedModel(loop=SAME), loopguard_bodies, capabilities=[LoopGuardCapability(breaker)])

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await agent.run("find it")

    assert loopguard_bodies.count("lookup") == 3


async def test_runaway_stopped_on_the_streaming_path(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = make_agent(ScriptedModel(loop=SAME), loopguard_bodies, capabilities=[LoopGuardCapability(breaker)])

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        async with agent.run_stream("find it") as result:
            await result.get_output()

    assert loopguard_bodies.count("lookup") == 3


def test_parallel_identical_calls_in_one_response_are_refused_bare() -> None:
    breaker, counter = Breaker(), BodyCounter()
    fake = ScriptedModel(loop=[SAME, SAME, SAME, SAME])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)])

    with pytest.raises(LoopGuardTripped) as info:  # the bare exception: no ExceptionGroup
        agent.run_sync("find it")

    assert type(info.value) is LoopGuardTripped
    assert info.value.reason == "loop"
    # The fourth call is refused; a sibling already admitted may or may not have run before the raise cancelled it
    # (none had on a loaded CI machine: the siblings are tasks, and the raise can come before any of them starts).
    assert counter.count("lookup") <= 3


def test_legitimate_varied_run_completes_untouched(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    fake = ScriptedModel([("lookup", {"q": f"page {i}"}) for i in range(1, 6)] + ["all five pages read"])
    agent = make_agent(fake, loopguard_bodies, capabilities=[LoopGuardCapability(breaker)])

    with assert_not_tripped(breaker):
        result = agent.run_sync("read the pages")

    assert result.output == "all five pages read"
    assert loopguard_bodies.count("lookup") == 5
    usage = breaker.usage()
    assert usage.state is BreakerState.CLOSED
    assert usage.tool_calls == 5
    assert usage.turns == 6  # one admitted model request per step
    assert usage.tokens == 6 * 120  # the provider-reported usage of every response


def test_polling_the_same_call_is_progress_while_the_result_changes() -> None:
    breaker, counter = Breaker(), BodyCounter()
    fake = ScriptedModel([("status", {"job": "42"})] * 5 + ["job finished"])
    agent = Agent(fake, name="poller", capabilities=[LoopGuardCapability(breaker)])
    progress = iter(["10%", "35%", "60%", "90%", "100%"])

    @agent.tool_plain
    def status(job: str) -> str:
        counter.hit("status", job)
        return next(progress)

    assert agent.run_sync("wait for job 42").output == "job finished"
    assert counter.count("status") == 5


def test_model_request_that_would_cross_the_token_ceiling_is_never_sent() -> None:
    # Each response reports 120 tokens; each request also reserves its own max_tokens=200 output cap.
    breaker, counter = Breaker(max_tokens=700), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": f"page {i}"}) for i in range(1, 20)])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)], model_settings={"max_tokens": 200})

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("read")

    assert info.value.reason == "token_ceiling"
    assert fake.calls == 4
    spent = info.value.facts["spent"]
    assert spent == 4 * 120
    # spent + the 200-token cap alone (680) fits under 700: the estimated input is what refuses it.
    assert spent + 200 <= 700 < info.value.facts["observed"]
    assert breaker.usage().tokens == 480  # nothing was spent on the refused request


def test_huge_prompt_is_refused_before_the_first_request() -> None:
    breaker, counter, fake = Breaker(max_tokens=1_000), BodyCounter(), ScriptedModel(["ok"])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)])

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("word " * 2_000)  # about 2,500 estimated input tokens

    assert info.value.reason == "token_ceiling"
    assert fake.calls == 0


def test_turn_ceiling_is_checked_pre_flight() -> None:
    breaker, counter = Breaker(max_turns=2), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": f"p{i}"}) for i in range(10)])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)])

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("read")

    assert info.value.reason == "turn_ceiling"
    assert fake.calls == 2
    assert counter.count("lookup") == 2


def test_failing_tool_is_reported_and_the_failure_streak_trips() -> None:
    # The tool asks the model to retry (ModelRetry) each time: loopguard counts each as a failure.
    breaker, counter = Breaker(max_consecutive_failures=3), BodyCounter()
    fake = ScriptedModel([("flaky", {"n": i}) for i in range(10)])
    agent = Agent(fake, name="worker", capabilities=[LoopGuardCapability(breaker)])

    @agent.tool_plain(retries=20)
    def flaky(n: int) -> str:
        counter.hit("flaky", n)
        raise ModelRetry(f"backend down for {n}")

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("go")

    assert info.value.reason == "failures"
    assert counter.count("flaky") == 3


def test_tool_exception_is_reported_and_reaches_the_caller_unchanged() -> None:
    breaker, fake = Breaker(), ScriptedModel([("explode", {})])
    agent = Agent(fake, name="worker", capabilities=[LoopGuardCapability(breaker)])

    class Boom(Exception):
        pass

    @agent.tool_plain
    def explode() -> str:
        raise Boom("kaput")

    with pytest.raises(Boom):
        agent.run_sync("go")
    assert breaker.usage().tool_calls == 1


def test_each_agent_run_gets_a_fresh_breaker_run() -> None:
    # The same agent (capability attached once) run twice: counts never leak from one run into the next.
    breaker, counter = Breaker(), BodyCounter()
    fake = ScriptedModel([SAME, SAME, "first done", SAME, SAME, "second done"])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)])

    assert agent.run_sync("one").output == "first done"
    assert agent.run_sync("two").output == "second done"
    assert counter.count("lookup") == 4
    assert breaker.usage().tool_calls == 2  # the latest run's counters


def test_capability_rejects_a_non_breaker() -> None:
    with pytest.raises(TypeError, match=r"needs a loopguard_core\.Breaker"):
        LoopGuardCapability("not a breaker")  # type: ignore[arg-type]


def test_usd_ceiling_refuses_the_request_that_would_cross_it() -> None:
    breaker, counter = Breaker(max_cost_usd=0.01), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": f"page {i}"}) for i in range(40)], model_name="claude-sonnet-4-6")
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)], model_settings={"max_tokens": 256})

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("read")

    assert info.value.reason == "cost_ceiling"
    assert 0 < breaker.usage().cost_usd <= 0.01
    assert fake.calls < 40


async def test_runaway_stopped_when_driving_the_run_node_by_node() -> None:
    breaker, counter, fake = Breaker(), BodyCounter(), ScriptedModel(loop=SAME)
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)])

    async def drive() -> None:
        async with agent.iter("find it") as run:
            async for _node in run:
                pass

    with pytest.raises(LoopGuardTripped) as info:
        await drive()

    assert info.value.reason == "loop"
    assert counter.count("lookup") == 3


@pytest.mark.parametrize("use_async", [False, True], ids=["run_sync", "run"])
def test_failed_model_requests_release_their_reservation_and_the_error_reaches_the_caller(use_async: bool) -> None:
    import asyncio

    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def overloaded(messages: list[object], info: AgentInfo) -> object:
        raise ConnectionError("529 overloaded")

    breaker = Breaker(max_tokens=600, isolate_runs=False)  # one budget across the retries
    agent = Agent(FunctionModel(overloaded), capabilities=[LoopGuardCapability(breaker)])

    def call() -> object:
        settings = {"max_tokens": 400}
        if use_async:
            return asyncio.run(agent.run("hi", model_settings=settings))  # type: ignore[arg-type]
        return agent.run_sync("hi", model_settings=settings)  # type: ignore[arg-type]

    for _ in range(4):  # without the release, the second request would be refused (2 x 400 > 600)
        with pytest.raises(ConnectionError):
            call()
    assert breaker.usage().tokens == 0


def test_tool_schemas_are_read_once_per_run_not_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pydantic AI builds fresh ToolDefinitions for every request around the same schema objects: each schema is
    turned into text once, and the estimate is the one a from-scratch count gives every turn (under a token
    ceiling: without a ceiling or budget nothing is estimated)."""
    from loopguard_pydantic_ai import _messages

    schemas_read: list[object] = []
    real_text = _messages._text

    def counting_text(value: object) -> str:
        if isinstance(value, dict) and "properties" in value:
            schemas_read.append(value)
        return real_text(value)

    monkeypatch.setattr(_messages, "_text", counting_text)
    estimates: list[tuple[int, int]] = []
    real_estimate = _messages.estimate_request_tokens

    def both(ctx, history=None, tools=None):  # type: ignore[no-untyped-def]
        incremental = real_estimate(ctx, history, tools)
        estimates.append((incremental, real_estimate(ctx)))
        return incremental

    import loopguard_pydantic_ai._capability as capability

    monkeypatch.setattr(capability, "estimate_request_tokens", both)
    counter = BodyCounter()
    fake = ScriptedModel(script=[[("lookup", {"q": f"topic {n}"})] for n in range(6)] + ["done"])
    agent = make_agent(fake, counter, capabilities=[LoopGuardCapability(Breaker(max_tokens=10**9))])
    assert agent.run_sync("find it").output == "done"
    assert len(estimates) == 7 and all(inc == fresh for inc, fresh in estimates)
    incremental_reads = len(schemas_read) - 7  # the from-scratch count reads the schema on each of the 7 turns
    assert incremental_reads == 1


@pytest.mark.parametrize(("settings", "estimated"), [({}, False), ({"max_tokens": 10**9}, True)])
def test_the_request_is_estimated_only_under_a_ceiling(
    preflight_estimates: list[int], settings: dict, estimated: bool
) -> None:
    """Without a token or USD ceiling (or a budget) nothing reads the estimate, so no history is read for one."""
    sent = preflight_estimates
    breaker, counter = Breaker(**settings), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": f"page {i}"}) for i in range(1, 4)] + ["done"])
    assert make_agent(fake, counter, capabilities=[LoopGuardCapability(breaker)]).run_sync("go").output == "done"
    assert len(sent) == 4
    assert all(n > 0 for n in sent) if estimated else sent == [0, 0, 0, 0]
    assert breaker.usage().tokens == 4 * 120  # the provider-reported usage, either way
