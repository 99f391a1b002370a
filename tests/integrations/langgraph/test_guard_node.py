"""guard_node (raise / end / interrupt) between the model node and the tools node of real graphs."""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command

from loopguard_core import Breaker, BreakerState
from loopguard_core.testing import BodyCounter
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_langgraph import guard_node, guarded_tool_node
from loopguard_pytest import assert_not_tripped, assert_tripped

from ..langchain.helpers import answered_every_tool_call, counted_tools, user
from .graphs import agent_graph

RUNAWAY = ("lookup", {"q": "same"})


def guarded_graph(breaker: Breaker, counter: BodyCounter, on_trip: str = "raise", *, checkpointer=None, **model_kw):
    model = ScriptedChatModel(**({"loop": RUNAWAY} | model_kw))
    graph = agent_graph(
        model, ToolNode(counted_tools(counter)), guard=guard_node(breaker, on_trip), checkpointer=checkpointer
    )
    return graph, model


STOPPED = {"reason": "loop", "tool": "lookup", "max_body_runs": 3}  # the fourth identical body never runs


def test_raise_mode_sync(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    graph, model = guarded_graph(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        graph.invoke(user())
    assert loopguard_bodies.count("lookup") == 3  # results reported by the guard itself: a plain ToolNode is enough
    assert model.calls == 4


async def test_raise_mode_async(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    graph, _ = guarded_graph(breaker, loopguard_bodies)
    with assert_tripped(**STOPPED, bodies=loopguard_bodies):
        await graph.ainvoke(user())
    assert loopguard_bodies.count("lookup") == 3


def test_end_mode_answers_every_pending_call_and_ends() -> None:
    breaker, counter = Breaker(), BodyCounter()
    batch = [RUNAWAY, ("fetch_page", {"page": 1})]
    graph, model = guarded_graph(breaker, counter, "end", loop=None, script=[batch, batch, batch, batch, "done"])
    result = graph.invoke(user())
    last = result["messages"][-1]
    # the fourth batch is refused: its fetch_page repeats calls #2, #4, #6 with only repeats in between
    assert last.type == "ai" and "[loopguard] run stopped" in last.content and "[loop/interleaved]" in last.content
    assert answered_every_tool_call(result["messages"])  # both calls of the refused batch were answered
    assert counter.count("lookup") == 3 and counter.count("fetch_page") == 3  # the refused batch did not run at all
    assert model.calls == 4


async def test_end_mode_async() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph, _ = guarded_graph(breaker, counter, "end")
    result = await graph.ainvoke(user())
    assert "[loopguard] run stopped" in result["messages"][-1].content
    assert answered_every_tool_call(result["messages"])
    assert counter.count("lookup") == 3


def test_a_varied_run_passes_through_the_guard(breaker: Breaker, loopguard_bodies: BodyCounter) -> None:
    script = [[("fetch_page", {"page": n})] for n in range(1, 6)] + ["done"]
    graph, _ = guarded_graph(breaker, loopguard_bodies, "end", loop=None, script=script)
    with assert_not_tripped(breaker):
        assert graph.invoke(user())["messages"][-1].content == "done"
    assert loopguard_bodies.count("fetch_page") == 5 == breaker.usage().tool_calls
    assert breaker.state is BreakerState.CLOSED


def test_guard_node_and_guarded_tool_node_on_one_breaker_count_each_call_once() -> None:
    breaker, counter = Breaker(max_tool_calls=4), BodyCounter()
    script = [[("fetch_page", {"page": n})] for n in range(1, 5)] + ["done"]
    node = guarded_tool_node(counted_tools(counter), breaker)
    graph = agent_graph(ScriptedChatModel(script=script), node, guard=guard_node(breaker))
    assert graph.invoke(user())["messages"][-1].content == "done"  # 4 calls under max_tool_calls=4
    assert breaker.usage().tool_calls == 4


@pytest.mark.parametrize("use_async", [False, True])
async def test_with_guarded_tool_node_each_call_is_checked_and_reported_once(use_async: bool) -> None:
    """guard_node admits each call; guarded_tool_node then runs it without asking again, and reports its outcome as the
    body returns; guard_node, which reports the outcomes of the calls it admitted when their ToolMessages arrive, must
    not report them a second time. Either repeat would be a duplicate the store absorbs, at the cost of a whole
    pre-flight. In front of a plain ToolNode guard_node still reports them (all but the last, whose ToolMessage it
    would read on a next visit that a finished run never makes)."""
    from loopguard_core import MemoryStore

    class CountingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.reports = self.admissions = 0

        def admit_tool(self, run, request, limits):  # type: ignore[no-untyped-def]
            self.admissions += 1
            return super().admit_tool(run, request, limits)

        def record_tool(self, run, outcome, limits):  # type: ignore[no-untyped-def]
            self.reports += 1
            return super().record_tool(run, outcome, limits)

    for make_node, reports in ((guarded_tool_node, 4), (lambda tools, _: ToolNode(tools), 3)):
        store, counter = CountingStore(), BodyCounter()
        breaker = Breaker(store=store)
        script = [[("fetch_page", {"page": n})] for n in range(1, 5)] + ["done"]
        graph = agent_graph(
            ScriptedChatModel(script=script), make_node(counted_tools(counter), breaker), guard=guard_node(breaker)
        )
        result = await graph.ainvoke(user()) if use_async else graph.invoke(user())
        assert result["messages"][-1].content == "done"
        assert store.reports == reports
        assert store.admissions == 4 == counter.count("fetch_page") == breaker.usage().tool_calls


def test_interrupt_without_a_checkpointer_is_refused_clearly() -> None:
    graph, _ = guarded_graph(Breaker(), BodyCounter(), "interrupt")
    with pytest.raises(ValueError, match=r"needs a checkpointer and a thread: compile the graph with"):
        graph.invoke(user())


def test_interrupt_pauses_for_a_person_and_deny_ends_the_run() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph, model = guarded_graph(breaker, counter, "interrupt", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-deny"}}
    paused = graph.invoke(user(), config)
    (pending,) = paused["__interrupt__"]
    assert pending.value["loopguard"]["reason"] == "loop"
    assert pending.value["loopguard"]["resume_with"] == ["approve", "deny"]
    assert graph.get_state(config).next == ("guard",)
    assert counter.count("lookup") == 3

    result = graph.invoke(Command(resume="deny"), config)
    assert "[loopguard] run stopped" in result["messages"][-1].content
    assert answered_every_tool_call(result["messages"])
    assert counter.count("lookup") == 3  # denied: the refused call never ran
    assert model.calls == 4
    assert graph.get_state(config).next == ()


def test_interrupt_approve_resets_the_breaker_and_runs_the_calls() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph, _ = guarded_graph(breaker, counter, "interrupt", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-approve"}}
    graph.invoke(user(), config)
    assert counter.count("lookup") == 3
    again = graph.invoke(Command(resume="approve"), config)
    # the approved call ran and its result is the first one in the reset loop memory; two more identical
    # results pass (three in all, the default), then the fourth identical call pauses again
    assert counter.count("lookup") == 3 + 1 + 2
    assert again["__interrupt__"][0].value["loopguard"]["reason"] == "loop"
    with pytest.raises(ValueError, match="resume a loopguard interrupt with"):
        graph.invoke(Command(resume="maybe"), config)


async def test_interrupt_async_deny() -> None:
    breaker, counter = Breaker(), BodyCounter()
    graph, _ = guarded_graph(breaker, counter, "interrupt", checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-async"}}
    paused = await graph.ainvoke(user(), config)
    assert paused["__interrupt__"]
    result = await graph.ainvoke(Command(resume="deny"), config)
    assert answered_every_tool_call(result["messages"])
    assert counter.count("lookup") == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="on_trip must be 'raise', 'end', 'interrupt' or 'steer'"):
        guard_node(Breaker(), "pause")
    with pytest.raises(TypeError, match=r"needs a loopguard_core\.Breaker"):
        guard_node(None)  # type: ignore[arg-type]


def test_call_ids_a_model_repeats_in_a_later_run_are_checked_and_reported_there(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What guard_node and guarded_tool_node hand each other is per breaker run: a model that repeats call ids (a
    scripted model, a replay) in the next run on the same breaker gets every call checked and reported there."""
    import itertools

    import loopguard_langchain.testing as scripted

    breaker = Breaker(max_tool_calls=2)
    pages = [[("fetch_page", {"page": n})] for n in (1, 2, 3)]
    monkeypatch.setattr(scripted, "_ids", itertools.count())
    first = agent_graph(
        ScriptedChatModel(script=[*pages[:2], "done"]),
        ToolNode(counted_tools(BodyCounter())),
        guard=guard_node(breaker),
    )
    assert first.invoke(user())["messages"][-1].content == "done"
    monkeypatch.setattr(scripted, "_ids", itertools.count())  # the next run's calls get the same ids and args
    counter = BodyCounter()
    second = agent_graph(ScriptedChatModel(script=[*pages, "done"]), guarded_tool_node(counted_tools(counter), breaker))
    with assert_tripped(reason="tool_ceiling"):
        second.invoke(user())
    assert counter.count("fetch_page") == 2  # the third call was checked (and refused), not waved through


def test_an_answer_to_a_reused_id_already_in_the_history_is_not_taken_for_the_new_calls() -> None:
    """Servers that number calls per answer (Kimi's "lookup:0") reuse ids: the history the graph starts with may hold
    an answer to the id the model uses next. The guard reads only what arrived since its last visit, so each call's
    own answer is what it reports."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    reported: list[tuple[str | None, object]] = []

    class Spy(Breaker):  # (a subclass: the compiled build's Breaker has read-only methods)
        def after_tool(self, tool: str, args: object = None, **kw: object) -> None:  # type: ignore[override]
            reported.append((kw.get("call_id"), kw.get("result")))  # type: ignore[arg-type]
            super().after_tool(tool, args, **kw)  # type: ignore[arg-type]

    breaker, counter = Spy(), BodyCounter()
    history = [
        HumanMessage("earlier"),
        AIMessage("", tool_calls=[{"name": "fetch_page", "args": {"page": 9}, "id": "fetch_page:0"}]),
        ToolMessage("a stale page from the earlier conversation", tool_call_id="fetch_page:0"),
        AIMessage("ok"),
        HumanMessage("now"),
    ]
    model = ScriptedChatModel([("fetch_page", {"page": 1}), ("fetch_page", {"page": 2}), "done"], call_ids="per_answer")
    graph = agent_graph(model, ToolNode(counted_tools(counter)), guard=guard_node(breaker))
    out = graph.invoke({"messages": history})
    fresh = [m.content for m in out["messages"][len(history) :] if m.type == "tool"]
    # (the last answer arrives after the guard's last visit: a plain ToolNode reports nothing itself)
    assert len(fresh) == 2 and [result for _, result in reported] == fresh[:1]


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_call_whose_tool_interrupts_is_reported_once_the_resumed_graph_answers_it(use_async: bool) -> None:
    """A tool body that calls ``interrupt()`` behind a plain ToolNode: the resumed graph runs as a new invocation (a
    new breaker run), and guard_node still reports the call it admitted before, once, when its answer arrives."""
    from langchain_core.tools import tool
    from langgraph.types import interrupt

    @tool
    def ask(q: str) -> str:
        """Ask a person."""
        return f"{q}: {interrupt('sure?')}"

    events: list[object] = []
    breaker = Breaker(on_event=events.append)
    counter = BodyCounter()
    model = ScriptedChatModel(script=[[("ask", {"q": "deploy"})], [("fetch_page", {"page": 1})], "done"])
    graph = agent_graph(
        model, ToolNode([ask, *counted_tools(counter)]), guard=guard_node(breaker), checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": f"ask-{use_async}"}}
    if use_async:
        await graph.ainvoke(user(), config)
        result = await graph.ainvoke(Command(resume="yes"), config)
    else:
        graph.invoke(user(), config)
        result = graph.invoke(Command(resume="yes"), config)
    assert result["messages"][-1].content == "done"
    recorded = [e.name for e in events if getattr(e, "phase", None) == "recorded"]  # type: ignore[attr-defined]
    assert recorded.count("ask") == 1  # reported by the guard in the resumed run, once


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_call_whose_tool_interrupts_behind_guarded_tool_node_is_reported_once(use_async: bool) -> None:
    """The same behind guarded_tool_node, which ran the call the guard admitted without a check of its own: when the
    body pauses the graph the admission goes back, and the resumed graph's tool node checks, runs and reports the
    call in its own run, once; the guard does not report it again."""
    from langchain_core.tools import tool
    from langgraph.types import interrupt

    bodies: list[str] = []

    @tool
    def ask(q: str) -> str:
        """Ask a person."""
        answer = interrupt("sure?")
        bodies.append(str(answer))
        return f"{q}: {answer}"

    events: list[object] = []
    breaker = Breaker(on_event=events.append)
    counter = BodyCounter()
    model = ScriptedChatModel(script=[[("ask", {"q": "deploy"})], [("fetch_page", {"page": 1})], "done"])
    graph = agent_graph(
        model,
        guarded_tool_node([ask, *counted_tools(counter)], breaker),
        guard=guard_node(breaker),
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"ask-both-{use_async}"}}
    if use_async:
        paused = await graph.ainvoke(user(), config)
        result = await graph.ainvoke(Command(resume="yes"), config)
    else:
        paused = graph.invoke(user(), config)
        result = graph.invoke(Command(resume="yes"), config)
    assert paused["__interrupt__"][0].value == "sure?"
    assert result["messages"][-1].content == "done" and bodies == ["yes"] and counter.count("fetch_page") == 1
    recorded = [e.name for e in events if getattr(e, "phase", None) == "recorded"]  # type: ignore[attr-defined]
    assert recorded.count("ask") == 1 and recorded.count("fetch_page") == 1


@pytest.mark.parametrize("use_async", [False, True])
async def test_in_interrupt_mode_a_guarded_tool_node_checks_and_reports_each_call_once_in_the_threads_run(
    use_async: bool,
) -> None:
    """guard_node(on_trip="interrupt") counts in the thread's run: guarded_tool_node runs the calls the guard admitted
    there in that run too, so each call is checked once and its outcome reported once, in one run (the thread's, so
    that its loop detection reads results), not again in the invocation's."""
    events: list[object] = []
    breaker = Breaker(on_event=events.append)
    pages = [[("fetch_page", {"page": n})] for n in (1, 2, 3)]
    counter = BodyCounter()
    graph = agent_graph(
        ScriptedChatModel(script=[*pages, "done"]),
        guarded_tool_node(counted_tools(counter), breaker),
        guard=guard_node(breaker, "interrupt"),
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"t-int-{use_async}"}}
    result = await graph.ainvoke(user(), config) if use_async else graph.invoke(user(), config)
    assert result["messages"][-1].content == "done"
    assert counter.count("fetch_page") == 3
    seen = [
        (e.phase, e.session_id)  # type: ignore[attr-defined]
        for e in events
        if getattr(e, "phase", None) in ("admitted", "recorded") and getattr(e, "name", None) == "fetch_page"
    ]
    thread_run = f"langgraph-thread-t-int-{use_async}"
    assert seen.count(("admitted", thread_run)) == 3 and seen.count(("recorded", thread_run)) == 3
    assert len(seen) == 6  # nothing in the invocation's run


@pytest.mark.parametrize("use_async", [False, True])
async def test_in_interrupt_mode_a_call_whose_tool_pauses_for_a_person_is_reported_in_the_threads_run(
    use_async: bool,
) -> None:
    """A tool body that calls ``interrupt()`` behind guarded_tool_node, the guard in "interrupt" mode: the call the
    tool node claimed goes back to the registry when its body pauses, and the resumed graph reports it in the
    thread's run. The same question answered differently each time is not a loop (no admission left in flight)."""
    from langchain_core.tools import tool
    from langgraph.types import interrupt

    @tool
    def ask_human(question: str) -> str:
        """Ask a person."""
        return str(interrupt(question))

    events: list[object] = []
    breaker = Breaker(on_event=events.append)
    graph = agent_graph(
        ScriptedChatModel(loop=("ask_human", {"question": "which region?"}), cap=20),
        guarded_tool_node([ask_human], breaker),
        guard=guard_node(breaker, "interrupt"),
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"ask-{use_async}"}}
    out = await graph.ainvoke(user(), config) if use_async else graph.invoke(user(), config)
    for answer in ("eu west", "us east", "asia south", "brazil", "canada"):
        resume = Command(resume=answer)
        out = await graph.ainvoke(resume, config) if use_async else graph.invoke(resume, config)
        assert out["__interrupt__"][0].value == "which region?"  # the tool asks again: no loopguard trip
    seen = [
        e.phase  # type: ignore[attr-defined]
        for e in events
        if getattr(e, "session_id", None) == f"langgraph-thread-ask-{use_async}"
        and getattr(e, "phase", None) in ("admitted", "recorded")
    ]
    assert seen == ["admitted", "recorded"] * 5 + ["admitted"]  # the sixth waits for its answer
