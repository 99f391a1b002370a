"""Parallel tool calls of one model answer, through the real create_agent runtime: the verdict on the 4th identical
call does not depend on which sibling finishes first.

The model answers ``[lookup(same), fetch_page(1)]`` after three identical lookups. Each test forces one order of
the two parallel siblings (no sleeps: the order is made with events, and each wait must be released): the fresh
page runs and reports *before* the 4th lookup is checked, or only *after* it. The model saw neither result when
it asked, so both orders must give the same verdict: the lookup is refused (a repeat with nothing new in
between), the page runs. Without the batch (the AIMessage's id, passed by the adapters) the first order admitted
the lookup: a page reported in between counted as progress, and under CPU load the steer tests flaked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.callbacks import BaseCallbackHandler

from loopguard_core import Breaker
from loopguard_core.testing import BodyCounter
from loopguard_langchain import LoopGuardCallbackHandler, LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

from .helpers import answered_every_tool_call, counted_tools, user

SAME = ("lookup", {"q": "same"})
PAGE = ("fetch_page", {"page": 1})
SCRIPT = [SAME, SAME, SAME, [SAME, PAGE], "done"]
REFUSED = "loopguard refused this call and it did not run"
WAIT = 10.0  # seconds; a wait that runs out fails the test (the order was not the one asked for)

pytestmark = pytest.mark.filterwarnings("ignore:LoopGuardMiddleware is not first")  # the gate runs outside the guard


class OrderedBreaker(Breaker):
    """A breaker that can hold the fresh page's report until the 4th lookup was checked (``page_last``) and that
    tells when the page has reported (``page_recorded``, for a gate outside the guard)."""

    def __init__(self, *, page_last: bool) -> None:
        super().__init__()
        self.page_last = page_last
        self.page_recorded = threading.Event()
        self.fourth_checked = threading.Event()
        self.waits: list[bool] = []
        self._lookups = 0
        self._count = threading.Lock()

    def before_tool(self, tool: str, args: Any = None, **kwargs: Any) -> Any:
        fourth = False
        if tool == "lookup":
            with self._count:
                self._lookups += 1
                fourth = self._lookups == 4
        try:
            return super().before_tool(tool, args, **kwargs)
        finally:
            if fourth:
                self.fourth_checked.set()

    def after_tool(self, tool: str, args: Any = None, **kwargs: Any) -> None:
        if tool == "fetch_page" and self.page_last:
            self.waits.append(self.fourth_checked.wait(WAIT))  # the lookup is checked before the page reports
        super().after_tool(tool, args, **kwargs)
        if tool == "fetch_page":
            self.page_recorded.set()


class ThirdLookupFirst(OrderedBreaker):
    """For an answer with two identical lookups: the gate holds the 4th until the 3rd (its sibling) reported."""

    def __init__(self) -> None:
        super().__init__(page_last=False)
        self._reported = 0

    def after_tool(self, tool: str, args: Any = None, **kwargs: Any) -> None:
        super().after_tool(tool, args, **kwargs)
        if tool == "lookup":
            with self._count:
                self._reported += 1
                if self._reported == 3:
                    self.page_recorded.set()  # what the gate waits for


class _FourthLookup:
    """Counts the lookups a gate sees: the 4th is held until the breaker's ``page_recorded`` is set."""

    def __init__(self, breaker: OrderedBreaker) -> None:
        self.breaker = breaker
        self.seen = 0
        self.lock = threading.Lock()

    def hold_if_fourth(self, name: str) -> None:
        if name != "lookup" or self.breaker.page_last:
            return
        with self.lock:
            self.seen += 1
            fourth = self.seen == 4
        if fourth:  # its sibling runs and reports before this lookup reaches the guard
            self.breaker.waits.append(self.breaker.page_recorded.wait(WAIT))


class GateMiddleware(AgentMiddleware):
    """Outside the guard (listed before it): holds the 4th lookup until the page has reported."""

    def __init__(self, breaker: OrderedBreaker) -> None:
        super().__init__()
        self.gate = _FourthLookup(breaker)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        self.gate.hold_if_fourth(request.tool_call["name"])
        return handler(request)


class GateCallback(BaseCallbackHandler):
    """Listed before the guard's handler, so its on_tool_start runs first: holds the 4th lookup the same way."""

    raise_error = True

    def __init__(self, breaker: OrderedBreaker) -> None:
        self.gate = _FourthLookup(breaker)

    def on_tool_start(self, serialized: Any, input_str: str, **kwargs: Any) -> None:
        self.gate.hold_if_fourth((serialized or {}).get("name") or kwargs.get("name") or "")


def run(path: str, breaker: OrderedBreaker, model: ScriptedChatModel, counter: BodyCounter) -> dict[str, Any]:
    tools = counted_tools(counter)
    if path == "middleware":
        guard = LoopGuardMiddleware(breaker, on_trip="steer")
        agent = create_agent(model, tools, middleware=[GateMiddleware(breaker), guard], name="r")
        return agent.invoke(user())
    agent = create_agent(model, tools, name="r")
    handlers = [GateCallback(breaker), LoopGuardCallbackHandler(breaker, on_trip="steer")]
    return agent.invoke(user(), config={"callbacks": handlers})


@pytest.mark.parametrize("page_first", [True, False], ids=["page-reports-first", "page-reports-last"])
@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_the_verdict_on_a_parallel_sibling_does_not_depend_on_which_finishes_first(path: str, page_first: bool) -> None:
    for _ in range(3):
        breaker, counter = OrderedBreaker(page_last=not page_first), BodyCounter()
        model = ScriptedChatModel(SCRIPT)

        result = run(path, breaker, model, counter)

        assert breaker.waits == [True]  # the order asked for really happened
        assert result["messages"][-1].content == "done"
        assert counter.runs == [SAME, SAME, SAME, PAGE]  # the 4th identical lookup never ran
        answers = {m.name: m.content for m in model.seen[4] if m.type == "tool"}
        assert answers["lookup"].startswith(REFUSED)
        assert answers["fetch_page"].startswith("page 1")
        assert answered_every_tool_call(result["messages"])
        usage = breaker.usage()
        assert (usage.refusals, usage.tool_calls) == (1, 4)  # the refused call is not counted


@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_the_next_answer_sees_the_whole_batch(path: str) -> None:
    # The page of the parallel answer is progress for the model's next answer: a 4th lookup asked after it runs.
    breaker, counter = OrderedBreaker(page_last=False), BodyCounter()
    model = ScriptedChatModel([SAME, SAME, [SAME, PAGE], SAME, "done"])

    result = run(path, breaker, model, counter)

    assert result["messages"][-1].content == "done"
    assert counter.count("lookup") == 4 and counter.count("fetch_page") == 1
    assert breaker.usage().refusals == 0


@pytest.mark.parametrize("path", ["middleware", "callback"])
def test_a_call_repeated_within_its_answer_still_counts_when_its_twin_finished_first(path: str) -> None:
    # [lookup(same), lookup(same)] after two identical lookups: the twin that runs reports before the other is
    # checked. The repeat is caught either way: a twin that already reported counts as a call still in flight.
    for _ in range(3):
        breaker, counter = ThirdLookupFirst(), BodyCounter()
        model = ScriptedChatModel([SAME, SAME, [SAME, SAME], "done"])

        result = run(path, breaker, model, counter)

        assert breaker.waits == [True]
        assert result["messages"][-1].content == "done"
        assert counter.runs == [SAME, SAME, SAME]
        answers = [m.content for m in model.seen[3] if m.type == "tool"][-2:]
        assert sum(a.startswith(REFUSED) for a in answers) == 1
        assert breaker.usage().refusals == 1


def test_the_batch_is_the_answer_that_carried_the_call() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from loopguard_langchain._batch import batch_of, batch_of_state

    def calls(*ids: str, args: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [{"name": "lookup", "args": args or {"q": i}, "id": i, "type": "tool_call"} for i in ids]

    older = AIMessage(content="", tool_calls=calls("a1", "a2"), id="m1")
    answer = AIMessage(content="", tool_calls=calls("b1", "b2"), id="m2")
    answered = [ToolMessage("r", tool_call_id="a1"), ToolMessage("r", tool_call_id="a2")]
    history = [HumanMessage("go"), older, *answered, answer]
    assert batch_of(history, "b2") == "m2"
    assert batch_of(history, "a1") == "m1"  # searched from the end
    assert batch_of(history, "zz") is None and batch_of(history, None) is None and batch_of([], "b1") is None
    assert batch_of_state({"messages": history}, "b1") == "m2" and batch_of_state(history, "b1") == "m2"
    assert batch_of_state(None, "b1") is None and batch_of_state(object(), "b1") is None
    unnamed = AIMessage(content="", tool_calls=calls("c1", "c2"))
    assert batch_of([unnamed], "c1") == "calls:c1|c2"  # no id: named by its tool call ids
    twins = AIMessage(content="", tool_calls=calls("d1", "d2", args={"q": "same"}), id="m3")
    assert batch_of([twins], "d1") == "m3"  # a repeat within the answer too: a twin that reported still counts
    alone = AIMessage(content="", tool_calls=calls("e1"), id="m4")
    assert batch_of([*history, alone], "e1") is None  # the only call of its answer: no sibling, judged on its own
