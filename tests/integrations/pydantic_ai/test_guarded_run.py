"""guarded_run / guarded_run_sync and agent delegation sharing one breaker, through the real agent loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent, RunContext

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter, Recorder
from loopguard_pydantic_ai import LoopGuardCapability, guarded_run, guarded_run_sync
from loopguard_pydantic_ai.testing import ScriptedModel
from loopguard_pytest import assert_tripped

SAME = ("lookup", {"q": "same"})
STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def looping_agent(fake: ScriptedModel, counter: BodyCounter, name: str = "researcher") -> Agent:
    agent = Agent(fake, name=name)  # no guard of its own: guarded_run adds it for the run

    @agent.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return "nothing new"

    return agent


def test_guarded_run_sync_stops_the_runaway(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = looping_agent(ScriptedModel(loop=SAME), loopguard_bodies)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        guarded_run_sync(agent, "find it", breaker)

    assert loopguard_bodies.count("lookup") == 3
    assert breaker.usage().tool_calls == 3  # the run's counters stay readable after it ended


async def test_guarded_run_async_stops_the_runaway(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    agent = looping_agent(ScriptedModel(loop=SAME), loopguard_bodies)

    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await guarded_run(agent, "find it", breaker)

    assert loopguard_bodies.count("lookup") == 3


async def test_guarded_run_guards_only_that_run() -> None:
    breaker, counter, fake = Breaker(), BodyCounter(), ScriptedModel([SAME] * 8 + ["done"])
    agent = looping_agent(fake, counter)
    with pytest.raises(LoopGuardTripped):
        await guarded_run(agent, "guarded", breaker)
    counter.reset()

    result = await agent.run("unguarded")  # the same agent without guarded_run is not guarded
    assert result.output == "done"
    # the rest of the scripted loop ran, more identical lookups than a guard allows: nothing guarded this run
    assert counter.count("lookup") == 4


def test_guarded_run_passes_run_kwargs_and_keeps_the_users_capabilities() -> None:
    from pydantic_ai.capabilities import Hooks

    seen: list[str] = []
    hooks = Hooks()

    @hooks.on.before_tool_execute
    def note(ctx, *, call, tool_def, args):  # type: ignore[no-untyped-def]
        seen.append(call.tool_name)
        return args

    breaker, counter = Breaker(), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": "a"}), "answer"])
    agent = looping_agent(fake, counter)

    result = guarded_run_sync(agent, "go", breaker, capabilities=[hooks], model_settings={"max_tokens": 64})

    assert result.output == "answer"
    assert seen == ["lookup"]
    assert fake.seen_settings[0] == {"max_tokens": 64}
    assert breaker.usage().turns == 2


def test_agent_level_and_run_level_guard_do_not_count_twice() -> None:
    breaker, counter = Breaker(), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": "a"}), ("lookup", {"q": "b"}), "answer"])
    agent = Agent(fake, name="researcher", capabilities=[LoopGuardCapability(breaker)])

    @agent.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return q

    guarded_run_sync(agent, "go", breaker)

    usage = breaker.usage()
    assert (usage.turns, usage.tool_calls, usage.tokens) == (3, 2, 3 * 120)


# -- delegation: a parent agent's tool runs a delegate agent with usage=ctx.usage ----------------------------


def delegation(breaker: Breaker, parent_script, child_script, counter: BodyCounter) -> Agent:
    child_fake = ScriptedModel(child_script)
    child = Agent(child_fake, name="child")

    @child.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return "the same facts"

    parent_fake = ScriptedModel(parent_script)
    parent = Agent(parent_fake, name="parent")

    @parent.tool
    async def delegate(ctx: RunContext[None], task: str) -> str:
        counter.hit("delegate", task)
        result = await guarded_run(child, task, breaker, usage=ctx.usage)
        return str(result.output)

    return parent


async def test_delegation_shares_one_breaker_and_trips_in_the_parent() -> None:
    breaker, counter = Breaker(), BodyCounter()
    # Child: look something up, answer; repeated for each delegation.
    child_script = [("lookup", {"q": "same"}), "child answer"] * 5
    parent = delegation(breaker, [("delegate", {"task": "research x"})] * 10, child_script, counter)

    with pytest.raises(LoopGuardTripped) as info:
        await guarded_run(parent, "write the report", breaker)

    assert info.value.reason == "loop"
    assert info.value.agent == "parent"
    assert info.value.tool == "delegate"
    assert counter.count("delegate") == 3
    assert counter.count("lookup") == 3
    usage = breaker.usage()
    # One run for parent and child: 4 parent requests + 3 x 2 child requests, all counted together.
    assert usage.turns == 4 + 6
    assert usage.calls_per_tool == {"delegate": 3, "lookup": 3}


async def test_delegate_loop_trips_inside_the_child_and_reaches_the_parents_caller() -> None:
    breaker, counter = Breaker(), BodyCounter()
    parent = delegation(breaker, [("delegate", {"task": "dig"})], [("lookup", {"q": "same"})] * 10, counter)

    with pytest.raises(LoopGuardTripped) as info:
        await guarded_run(parent, "go", breaker)

    assert info.value.agent == "child"
    assert info.value.tool == "lookup"
    assert counter.count("lookup") == 3


def test_delegation_token_ceiling_spans_both_agents_sync() -> None:
    # 3 parent + 2 child responses of 120 tokens; the budget is one for the whole delegation. The scripted
    # models set no output cap: reserve nothing, so the ceiling counts what each response really spent.
    breaker, counter = Breaker(max_tokens=800, output_reserve_tokens=0), BodyCounter()
    parent = delegation(
        breaker,
        [("delegate", {"task": "a"}), ("delegate", {"task": "b"}), ("delegate", {"task": "c"}), "report"],
        ["answer a", "answer b", "answer c"],
        counter,
    )

    with pytest.raises(LoopGuardTripped) as info:
        guarded_run_sync(parent, "go", breaker)

    assert info.value.reason == "token_ceiling"
    assert breaker.usage().tokens <= 800
    assert breaker.usage().tokens > 4 * 120  # parent and child spending were added together


def ledger_rows(ledger) -> list[dict]:  # type: ignore[no-untyped-def]
    if isinstance(ledger, Recorder):
        return ledger.rows
    return [dataclasses.asdict(row) for row in ledger.rows()]


def test_delegation_writes_every_call_to_the_ledger_under_its_agent(tmp_path: Path) -> None:
    try:
        from loopguard_core.ledger import Ledger
    except ImportError:  # pragma: no cover - the ledger ships with the core
        ledger = Recorder()
    else:
        ledger = Ledger(tmp_path / "ledger.db")
    breaker, counter = Breaker(ledger=ledger), BodyCounter()
    child_script = [("lookup", {"q": "same"}), "child answer"] * 5
    parent = delegation(breaker, [("delegate", {"task": "research x"})] * 10, child_script, counter)

    with pytest.raises(LoopGuardTripped):
        guarded_run_sync(parent, "write the report", breaker)

    rows = ledger_rows(ledger)
    seen = {(r["origin"], r["agent"], r.get("tool")) for r in rows}
    assert {
        ("tool", "parent", "delegate"),
        ("tool", "child", "lookup"),
        ("model", "parent", None),
        ("model", "child", None),
    } <= seen
    trips = [r for r in rows if r["origin"] == "breaker"]
    assert [(t["agent"], t.get("tool"), t["breach_reason"]) for t in trips] == [("parent", "delegate", "loop")]
    assert len({r["session_id"] for r in rows}) == 1  # one run for the whole delegation
    if not isinstance(ledger, Recorder):
        assert ledger.verify().ok


def test_separate_agents_share_a_breaker_on_purpose_with_a_scope() -> None:
    # Two independent agents (not delegation) share loop memory because the breaker names a scope.
    breaker, counter = Breaker(scope="team-7"), BodyCounter()
    first = looping_agent(ScriptedModel([SAME, SAME, SAME, "first done"]), counter, name="alpha")
    second = looping_agent(ScriptedModel(loop=SAME), counter, name="beta")

    assert guarded_run_sync(first, "go", breaker).output == "first done"
    with pytest.raises(LoopGuardTripped) as info:
        guarded_run_sync(second, "go", breaker)

    assert info.value.agent == "beta"
    assert counter.count("lookup") == 3  # beta's first identical call was already the fourth
    assert breaker.state is BreakerState.OPEN
