"""on_trip="steer" through the real Pydantic AI agent loop: LoopGuardCapability and guarded_run(_sync).

Each path proves: the refused call's body never ran, the model's next request carried the refusal (a
ToolReturnPart in what the scripted model was sent), the run went on to a normal end once the model changed
course, and a model that keeps repeating is stopped for good (reason "refusals") at the caller; a budget ceiling
still stops.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent
from pydantic_ai.messages import ToolReturnPart

from loopguard_core import Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import BodyCounter
from loopguard_pydantic_ai import LoopGuardCapability, guarded_run, guarded_run_sync
from loopguard_pydantic_ai.testing import ScriptedModel

from ..ordering import SiblingOrder

SAME = ("lookup", {"q": "same"})
CHANGES_COURSE = [SAME, SAME, SAME, SAME, ("lookup", {"q": "other"}), "done"]
REFUSED = "loopguard refused this call and it did not run"


def make_agent(fake: ScriptedModel, counter: BodyCounter, capabilities: Any = ()) -> Agent:
    agent = Agent(fake, name="researcher", capabilities=list(capabilities))

    @agent.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return f"nothing new about {q}"

    return agent


def returns_sent(fake: ScriptedModel, call: int) -> list[ToolReturnPart]:
    """The tool returns in the model's ``call``-th request (1-based), oldest first."""
    return [part for message in fake.seen[call - 1] for part in message.parts if isinstance(part, ToolReturnPart)]


def run(path: str, fake: ScriptedModel, breaker: Breaker, counter: BodyCounter) -> Any:
    if path == "capability":
        return make_agent(fake, counter, [LoopGuardCapability(breaker, on_trip="steer")]).run_sync("find it")
    return guarded_run_sync(make_agent(fake, counter), "find it", breaker, on_trip="steer")


@pytest.mark.parametrize("path", ["capability", "run_wrapper"])
def test_steer_tells_the_model_why_and_the_run_goes_on_then_stops_for_good(path: str) -> None:
    breaker, counter, fake = Breaker(), BodyCounter(), ScriptedModel(CHANGES_COURSE)

    result = run(path, fake, breaker, counter)

    assert result.output == "done"
    assert counter.runs == [("lookup", "same")] * 3 + [("lookup", "other")]  # the 4th identical call never ran
    told = returns_sent(fake, 5)[-1]
    assert told.tool_name == "lookup"
    assert told.content.startswith(REFUSED)
    assert breaker.usage().refusals == 1
    assert breaker.state is BreakerState.CLOSED

    breaker, counter, fake = Breaker(max_refusals=2), BodyCounter(), ScriptedModel(loop=SAME)
    with pytest.raises(LoopGuardTripped) as stop:
        run(path, fake, breaker, counter)
    assert (stop.value.reason, stop.value.terminal) == ("refusals", True)
    assert counter.count() == 3
    assert fake.calls == 6
    assert returns_sent(fake, 6)[-1].content.startswith(REFUSED)


async def test_steer_async_run_wrapper() -> None:
    breaker, counter, fake = Breaker(), BodyCounter(), ScriptedModel(CHANGES_COURSE)
    result = await guarded_run(make_agent(fake, counter), "find it", breaker, on_trip="steer")
    assert result.output == "done"
    assert counter.count() == 4
    assert returns_sent(fake, 5)[-1].content.startswith(REFUSED)


@pytest.mark.parametrize("path", ["capability", "run_wrapper"])
def test_a_budget_ceiling_still_stops_in_steer_mode(path: str) -> None:
    breaker, counter = Breaker(max_tool_calls=3), BodyCounter()
    fake = ScriptedModel([("lookup", {"q": q}) for q in "abcd"] + ["done"])

    with pytest.raises(LoopGuardTripped) as caught:
        run(path, fake, breaker, counter)

    assert caught.value.reason == "tool_ceiling" and caught.value.terminal
    assert counter.count() == 3
    assert fake.calls == 4
    assert breaker.usage().refusals == 0


def test_on_trip_is_checked() -> None:
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        LoopGuardCapability(Breaker(), on_trip="end")
    with pytest.raises(ValueError, match="'raise' or 'steer'"):
        guarded_run_sync(make_agent(ScriptedModel(["done"]), BodyCounter()), "go", Breaker(), on_trip="retry")


def _ordered(*, page_first: bool) -> SiblingOrder:
    """The fresh page reports before the 4th lookup is checked, or after."""
    return SiblingOrder(
        sibling_first=page_first,
        is_repeat=lambda tool, args: tool == "lookup",
        is_sibling=lambda tool, args: tool == "fetch_page",
    )


def _fetch_page(counter: BodyCounter) -> Any:
    def fetch_page(page: int) -> str:
        """Fetch one page."""
        counter.hit("fetch_page", page)
        return f"page {page}: fresh text"

    return fetch_page


@pytest.mark.parametrize("page_first", [True, False], ids=["page-reports-first", "page-reports-last"])
def test_a_parallel_siblings_verdict_does_not_depend_on_which_finishes_first(page_first: bool) -> None:
    # Pydantic AI runs one response's calls in parallel; the capability names the batch (the run's step), so the
    # 4th identical lookup is refused whether the fresh page of the same response reported before it or after.
    page = ("fetch_page", {"page": 1})
    for _ in range(3):
        breaker, counter = _ordered(page_first=page_first), BodyCounter()
        fake = ScriptedModel([SAME, SAME, SAME, [SAME, page], "done"])
        agent = make_agent(fake, counter, [LoopGuardCapability(breaker, on_trip="steer")])

        agent.tool_plain(_fetch_page(counter))

        result = agent.run_sync("find it")

        assert breaker.waits == [True]  # the order asked for really happened
        assert result.output == "done"
        assert counter.count("lookup") == 3 and counter.count("fetch_page") == 1
        answers = {part.tool_name: str(part.content) for part in returns_sent(fake, 5)[-2:]}
        assert answers["lookup"].startswith(REFUSED) and answers["fetch_page"].startswith("page 1")
        assert breaker.usage().refusals == 1
