"""End to end: what the framework adapters add to a real agent loop, per run and per turn.

``python -m benchmarks.end_to_end [--smoke] [--only NAME,...] [--json PATH]``.

Five runtimes, each driven by a scripted model (no network) that proposes ``CALLS`` = 50 distinct tool calls,
one per turn, then answers (51 model turns):

- LangChain ``create_agent`` with ``LoopGuardMiddleware``;
- a LangGraph ``StateGraph`` (model node, tools node) with ``guard_node`` in front of ``guarded_tool_node``;
- a Pydantic AI ``Agent`` with ``LoopGuardCapability``;
- a CrewAI crew of one agent inside ``guard_crew``;
- an Anthropic client (the real SDK over an HTTP mock transport) guarded by ``loopguard_anthropic.guard`` in a
  ``messages.create`` loop.

Each is run three ways: **unguarded**; with a **pass-through** that installs the same hooks in the same places
and does nothing in them (the framework's own cost of having hooks at all); and **guarded** by ``Breaker()``.
Rounds run the three in a fresh random order (fixed seed); the figures are the median wall time of a whole run,
and the goal's figure is the median over the rounds of each round's guarded / pass-through (paired: the two ran
back to back). The goal is guarded / pass-through <= 1.02 for every runtime.

**Per turn**: one run of ``LONG_CALLS`` = 500 distinct calls (501 turns) per runtime, guarded and pass-through,
with every hook function timed by itself in CPU time of its thread (``time.thread_time_ns``: the other processes
of a shared machine do not count; the time spent inside the framework's handler that a ``wrap`` hook calls is
excluded; the hooks nested in it are timed on their own), with the garbage collector paused during the run (a
collection is set off by whichever allocation comes next and costs more as the framework's state grows: it would
be charged to the hook it happens to land in). A turn is everything between two model calls:
the after-model hooks of one call, the tool hooks of the call it proposed, and the before-model hooks of the next.
The goal: the guarded hooks' cost per turn is flat from turn 1 to turn 500 (turn 500 <= 1.2 x turn 1), i.e. no hook
does work proportional to the history. "Turn n" is the median over the ten turns from n (turns 491-500 for turn
500) and over the repeated runs.

**Instructions**: the whole-run pair once more, counted in CPU instructions by valgrind's callgrind instead of
timed: a child process under callgrind builds the runtime, runs it once to warm up, puts every object then alive
out of the garbage collector's reach (``gc.freeze``: a full collection over the framework's own heap would land in
one variant's runs or the other's by chance), then runs it ``INSTRUCTION_RUNS`` times between two callgrind client
requests (every thread's instructions in between, worker threads included); each variant's count is the mean of
``INSTRUCTION_CHILDREN`` such children. A count of instructions does not move
with the other processes of a shared machine (two counts of one variant differ by about 0.2 %: run ids are random),
so it tells a 2 % difference apart where wall times, which swing by more than that between two runs here, cannot.
It does not see cache misses or branch mispredictions, which wall time does. A third variant, ``"adapter"``, is the
guarded run with a breaker whose checks and reports do nothing: what it adds over the pass-through is the adapter's
own work (reading the framework's objects, scoping the run, its bookkeeping), the rest of what the guard adds is the
breaker's (the report's split table). Pending without valgrind and gcc
(``apt install valgrind gcc``); skipped by ``--smoke`` (each child takes one to three minutes).

The fake model costs nothing, so these are the worst case: with a real model each turn takes 10^5-10^6 times longer
and the guard's share vanishes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import inspect
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _callgrind

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

__all__ = ["main", "render", "render_markdown", "run"]

CALLS = 50
LONG_CALLS = 500
VARIANTS = ("unguarded", "passthrough", "guarded")
RATIO_GOAL = 1.02
FLAT_GOAL = 1.2
MARKS = (1, 100, 500)
INSTRUCTION_RUNS = 2
# Children per variant, their counts averaged: two counts of one variant differ by about 0.2 % (run ids are
# random), a tenth of the guard's own share; each child's ratio is kept in the JSON as well.
INSTRUCTION_CHILDREN = 2
# CrewAI's own counts vary by 1.5-2.5 % between children (its event bus and worker threads), more than the goal's
# margin: its row is the mean of more children, so that one unlucky child cannot flip it.
MORE_CHILDREN = {"crewai": 4}


# -- timing the hooks themselves ------------------------------------------------------------------------------
class HookClock:
    """Per-turn time spent inside hook functions, each timed by itself (handlers they call excluded).

    ``now`` is the clock read at each hook's edges: CPU time of the thread by default, or a count of function calls
    (``CallCounter.now``) for the deterministic work measure."""

    def __init__(self, now: Callable[[], int] = time.thread_time_ns) -> None:
        self.now = now
        self.turn = 0
        self.spent: list[int] = [0]
        self.calls: list[int] = [0]

    def tick(self) -> None:
        """A model call starts: what follows belongs to the next turn."""
        self.turn += 1
        self.spent.append(0)
        self.calls.append(0)

    def _add(self, ns: int) -> None:
        self.spent[self.turn] += ns

    def timed(self, fn: Callable[..., Any], *, handler: int | str | None = None) -> Callable[..., Any]:
        """``fn`` timed; ``handler`` names the argument (position or keyword) the framework's continuation
        arrives in, whose time is not the hook's."""
        clock = self
        now = self.now  # CPU time of this thread (not the other processes of a shared machine), or a call count

        def split(args: tuple[Any, ...], kwargs: dict[str, Any], mark: list[int]) -> tuple[Any, Any]:
            if handler is None:
                return args, kwargs

            def pause() -> None:
                clock._add(now() - mark[0])

            def resume() -> None:
                mark[0] = now()

            def paused(inner: Callable[..., Any]) -> Callable[..., Any]:
                def call(*a: Any, **k: Any) -> Any:
                    pause()
                    try:
                        out = inner(*a, **k)
                    except BaseException:
                        resume()
                        raise
                    if inspect.isawaitable(out):

                        async def finish() -> Any:
                            try:
                                return await out
                            finally:
                                resume()

                        return finish()
                    resume()
                    return out

                return call

            if isinstance(handler, int):
                if len(args) > handler:
                    args = (*args[:handler], paused(args[handler]), *args[handler + 1 :])
            elif handler in kwargs:
                kwargs = {**kwargs, handler: paused(kwargs[handler])}
            return args, kwargs

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def atimed(*args: Any, **kwargs: Any) -> Any:
                mark = [now()]
                args, kwargs = split(args, kwargs, mark)
                clock.calls[clock.turn] += 1
                try:
                    return await fn(*args, **kwargs)
                finally:
                    clock._add(now() - mark[0])

            return atimed

        @functools.wraps(fn)
        def stimed(*args: Any, **kwargs: Any) -> Any:
            mark = [now()]
            args, kwargs = split(args, kwargs, mark)
            clock.calls[clock.turn] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                clock._add(now() - mark[0])

        return stimed


class CallCounter:
    """Counts every function call, Python and C (``sys.setprofile`` in every thread), while active.

    Read at a hook's edges through ``HookClock(now=counter.now)``, it gives the work each hook does per turn as a
    number that no other process, cache or heap state can move: work that grows with the history (a loop over the
    messages, a copy, a re-read) grows it; a constant per-turn count means none."""

    def __init__(self) -> None:
        self.count = 0

    def now(self) -> int:
        return self.count

    def _event(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.count += 1

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        threading.setprofile(self._event)
        sys.setprofile(self._event)
        try:
            yield
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]


@contextlib.contextmanager
def _patched(cls: type, clock: HookClock | None, hooks: dict[str, int | str | None]) -> Iterator[None]:
    """While building a guard, make ``cls``'s hook methods timed (what the guard binds at construction)."""
    if clock is None:
        yield
        return
    saved = {name: cls.__dict__[name] for name in hooks}
    try:
        for name, handler in hooks.items():
            setattr(cls, name, clock.timed(saved[name], handler=handler))
        yield
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


GUARDED = ("guarded", "adapter")  # "adapter": the guarded hooks with the breaker's checks turned off


def _breaker(variant: str = "guarded") -> Any:
    """``Breaker()``; for the ``"adapter"`` variant one whose checks and reports do nothing, so that a run counts
    only what the adapter itself does around them (reading the framework's objects, run scoping, bookkeeping)."""
    from loopguard_core import Breaker

    if variant != "adapter":
        return Breaker()

    def quiet(*args: Any, **kwargs: Any) -> None:
        return None

    async def aquiet(*args: Any, **kwargs: Any) -> None:
        return None

    checks = ("before_tool", "after_tool", "before_model", "after_model", "model_failed")
    methods = {**dict.fromkeys(checks, quiet), **dict.fromkeys(["a" + name for name in checks], aquiet)}
    return type("ChecksOff", (Breaker,), methods)()


# -- LangChain create_agent ------------------------------------------------------------------------------------
def _lc_model(calls: int, clock: HookClock | None) -> tuple[Any, dict[str, int]]:
    """A chat model proposing ``calls`` distinct tool calls, one per turn, then answering; reset ``state["n"]``
    to 0 before each run."""
    from langchain_core.messages import AIMessage

    from ._frameworks import scripted_chat_model

    state = {"n": 0}

    def respond() -> Any:
        if clock is not None:
            clock.tick()
        done = state["n"]
        state["n"] = done + 1
        # Usage as every real provider's chat model reports it (the Anthropic runtime below answers the same).
        usage = {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        if done >= calls:
            return AIMessage(content="done", usage_metadata=usage)
        call = {"name": "lookup", "args": {"key": f"k{done}"}, "id": f"c{done}"}
        return AIMessage(content="", tool_calls=[call], usage_metadata=usage)

    return scripted_chat_model(respond), state


def _lc_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    return lookup


def _lc_passthrough() -> Any:
    """A middleware with the same hooks as LoopGuardMiddleware that does nothing: the framework's own cost."""
    from langchain.agents.middleware import AgentMiddleware

    class Passthrough(AgentMiddleware):  # type: ignore[type-arg]
        def before_agent(self, state: Any, runtime: Any) -> None:
            return None

        def after_agent(self, state: Any, runtime: Any) -> None:
            return None

        def wrap_tool_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

    return Passthrough()


_LC_HOOKS: dict[str, int | str | None] = {
    "before_agent": None,
    "after_agent": None,
    "wrap_model_call": 1,
    "wrap_tool_call": 1,
}


def _langchain(variant: str, calls: int, clock: HookClock | None) -> Callable[[], int]:
    from langchain.agents import create_agent

    middleware: list[Any] = []
    if variant == "passthrough":
        middleware = [_lc_passthrough()]
    elif variant in GUARDED:
        from loopguard_langchain import LoopGuardMiddleware

        middleware = [LoopGuardMiddleware(_breaker(variant))]
    if clock is not None:
        for m in middleware:
            for name, handler in _LC_HOOKS.items():
                setattr(m, name, clock.timed(getattr(m, name), handler=handler))
    model, state = _lc_model(calls, clock)
    agent = create_agent(model, tools=[_lc_tool()], middleware=middleware)
    config = {"recursion_limit": 10 * calls + 50}

    def once() -> int:
        state["n"] = 0
        out = agent.invoke({"messages": [{"role": "user", "content": "go"}]}, config)
        return sum(1 for m in out["messages"] if m.type == "tool")

    return once


# -- LangGraph StateGraph --------------------------------------------------------------------------------------
def _langgraph(variant: str, calls: int, clock: HookClock | None) -> Callable[[], int]:
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from langgraph.types import Command

    model, state = _lc_model(calls, clock)
    tool = _lc_tool()

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_edge("tools", "agent")
    if variant == "unguarded":
        builder.add_node("tools", ToolNode([tool]))
        builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        if variant == "passthrough":

            def route(state: MessagesState, config: Any) -> Command[Any]:
                return Command(goto="tools")

            def wrap(request: Any, handler: Any) -> Any:
                return handler(request)

            if clock is not None:
                route = clock.timed(route)
                wrap = clock.timed(wrap, handler=1)
            builder.add_node("guard", RunnableLambda(route, name="passthrough"), destinations=("tools", END))
            builder.add_node("tools", ToolNode([tool], wrap_tool_call=wrap))
        else:
            from loopguard_langgraph import guard_node, guarded_tool_node
            from loopguard_langgraph.tool_node import _Guard

            breaker = _breaker(variant)
            guard = guard_node(breaker)
            if clock is not None:  # the node's function, looked up on every call (a patched class method is not)
                guard.func = clock.timed(guard.func)
            builder.add_node("guard", guard, destinations=("tools", END))
            with _patched(_Guard, clock, {"wrap": 2}):
                builder.add_node("tools", guarded_tool_node([tool], breaker))
    graph = builder.compile()
    config = {"recursion_limit": 10 * calls + 50}

    def once() -> int:
        state["n"] = 0
        out = graph.invoke({"messages": [{"role": "user", "content": "go"}]}, config)
        return sum(1 for m in out["messages"] if m.type == "tool")

    return once


# -- Pydantic AI -----------------------------------------------------------------------------------------------
_PA_HOOKS: dict[str, int | str | None] = {
    "wrap_run": "handler",
    "prepare_tools": None,
    "wrap_model_request": "handler",
    "before_model_request": None,
    "after_model_request": None,
    "wrap_tool_execute": "handler",
    "before_tool_execute": None,
}


def _pa_passthrough() -> Any:
    from dataclasses import dataclass as _dataclass

    from pydantic_ai.capabilities import AbstractCapability, CapabilityOrdering
    from pydantic_ai.toolsets import WrapperToolset

    @_dataclass
    class Forward(WrapperToolset[Any]):
        async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

    @_dataclass
    class Passthrough(AbstractCapability[Any]):
        """The hooks LoopGuardCapability overrides, doing nothing."""

        def get_ordering(self) -> CapabilityOrdering:
            return CapabilityOrdering(position="outermost")

        async def wrap_run(self, ctx: Any, *, handler: Any) -> Any:
            return await handler()

        async def on_run_error(self, ctx: Any, *, error: BaseException) -> Any:
            raise error

        async def prepare_tools(self, ctx: Any, tool_defs: list[Any]) -> list[Any]:
            return tool_defs

        def get_wrapper_toolset(self, toolset: Any) -> Any:
            return Forward(toolset)

        async def wrap_model_request(self, ctx: Any, *, request_context: Any, handler: Any) -> Any:
            return await handler(request_context)

        async def before_model_request(self, ctx: Any, request_context: Any) -> Any:
            return request_context

        async def after_model_request(self, ctx: Any, *, request_context: Any, response: Any) -> Any:
            return response

        async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
            return await handler(args)

        async def before_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any) -> Any:
            return args

        async def handle_deferred_tool_calls(self, ctx: Any, *, requests: Any) -> Any:
            return None

    return Passthrough


def _timed_subclass(base: type, clock: HookClock, hooks: dict[str, int | str | None]) -> type:
    """``base`` with its hook methods timed (positions count ``self``)."""
    body = {}
    for name, handler in hooks.items():
        position = handler + 1 if isinstance(handler, int) else handler
        body[name] = clock.timed(getattr(base, name), handler=position)
    return type(f"Timed{base.__name__}", (base,), body)


def _pydantic_ai(variant: str, calls: int, clock: HookClock | None) -> Callable[[], int]:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.usage import UsageLimits

    state = {"n": 0, "ran": 0}

    def model(messages: Any, info: AgentInfo) -> ModelResponse:
        if clock is not None:
            clock.tick()
        done = state["n"]
        state["n"] = done + 1
        if done >= calls:
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart("lookup", {"key": f"k{done}"}, tool_call_id=f"c{done}")])

    def lookup(key: str) -> str:
        """Look a key up."""
        state["ran"] += 1
        return f"value of {key}"

    capabilities: list[Any] = []
    if variant == "passthrough":
        cls = _pa_passthrough()
        capabilities = [(cls if clock is None else _timed_subclass(cls, clock, _PA_HOOKS))()]
    elif variant in GUARDED:
        from loopguard_pydantic_ai import LoopGuardCapability

        cls = LoopGuardCapability if clock is None else _timed_subclass(LoopGuardCapability, clock, _PA_HOOKS)
        capabilities = [cls(_breaker(variant))]
    agent = Agent(FunctionModel(model), tools=[lookup], capabilities=capabilities)
    limits = UsageLimits(request_limit=None)

    def once() -> int:
        state["n"] = state["ran"] = 0
        agent.run_sync("go", usage_limits=limits)
        return state["ran"]

    return once


# -- CrewAI ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _crewai_passthrough(clock: HookClock | None) -> Iterator[None]:
    """The hooks guard_crew registers (scoped, around the kickoff), doing nothing."""
    from crewai.events.stream_context import add_stream_sink, reset_stream_sinks
    from crewai.hooks import InterceptionPoint
    from crewai.hooks.dispatch import get_scoped_hooks, register_scoped, scoped_hooks

    def before_tool(ctx: Any) -> None:
        return None

    def after_tool(ctx: Any) -> None:
        return None

    def before_llm(ctx: Any) -> None:
        return None

    def sink(source: Any, event: Any) -> None:
        return None

    if clock is not None:
        before_tool, after_tool, before_llm = clock.timed(before_tool), clock.timed(after_tool), clock.timed(before_llm)
        sink = clock.timed(sink)
    inherited = {point: get_scoped_hooks(point) for point in InterceptionPoint}
    with scoped_hooks({point: hooks for point, hooks in inherited.items() if hooks}):
        register_scoped(InterceptionPoint.PRE_TOOL_CALL, before_tool)
        register_scoped(InterceptionPoint.POST_TOOL_CALL, after_tool)
        register_scoped(InterceptionPoint.PRE_MODEL_CALL, before_llm)
        token = add_stream_sink(sink)
        try:
            yield
        finally:
            reset_stream_sinks(token)


_CREW_HOOKS = ("_before_tool_call", "_after_tool_call", "_before_llm_call", "_on_event")


def _crewai(variant: str, calls: int, clock: HookClock | None) -> Callable[[], int]:
    from crewai import Agent, Crew, Task
    from crewai.tools import tool

    from loopguard_crewai.testing import ScriptedLLM

    ran = [0]

    @tool("lookup")
    def lookup(key: str) -> str:
        """Look a key up."""
        ran[0] += 1
        return f"value of {key}"

    class TickingLLM(ScriptedLLM):
        def call(self, *args: Any, **kwargs: Any) -> Any:
            if clock is not None:
                clock.tick()
            return super().call(*args, **kwargs)

    def once() -> int:
        ran[0] = 0
        llm = TickingLLM([("lookup", {"key": f"k{i}"}) for i in range(calls)] + ["done"], cap=calls + 5)
        agent = Agent(
            role="researcher", goal="look keys up", backstory="careful", llm=llm, tools=[lookup], max_iter=calls + 10
        )
        crew = Crew(agents=[agent], tasks=[Task(description="look up", expected_output="values", agent=agent)])
        if variant == "unguarded":
            block: Any = contextlib.nullcontext()
        elif variant == "passthrough":
            block = _crewai_passthrough(clock)
        else:
            from loopguard_crewai import guard_crew

            block = guard_crew(_breaker(variant))
            if clock is not None:
                for name in _CREW_HOOKS:
                    setattr(block, name, clock.timed(getattr(block, name)))
        with block:
            crew.kickoff()
        return ran[0]

    return once


# -- Anthropic client ------------------------------------------------------------------------------------------
def _anthropic(variant: str, calls: int, clock: HookClock | None) -> Callable[[], int]:
    import anthropic
    import httpx2

    state = {"n": 0, "run": 0}

    def answer(request: Any) -> Any:
        if clock is not None:
            clock.tick()
        done, run = state["n"], state["run"]
        state["n"] = done + 1
        if done >= calls:
            content: list[dict[str, Any]] = [{"type": "text", "text": "done"}]
            stop = "end_turn"
        else:  # ids unique across runs, as the API's are (a reused id would be a retry of the same call)
            use = {"type": "tool_use", "id": f"toolu_{run}_{done}", "name": "lookup", "input": {"key": f"k{done}"}}
            content = [use]
            stop = "tool_use"
        message = {
            "id": f"msg_{run}_{done}",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20},
        }
        return httpx2.Response(200, json=message)

    client: Any = anthropic.Anthropic(
        api_key="benchmark",
        base_url="http://scripted.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        max_retries=0,
    )
    if variant == "passthrough":

        class Passthrough(anthropic.Middleware):
            def handle(self, request: Any, call_next: Any) -> Any:
                return call_next(request)

        middleware = Passthrough()
        if clock is not None:
            middleware.handle = clock.timed(middleware.handle, handler=1)  # type: ignore[method-assign]
        client = client.copy(middleware=[middleware])
    breaker = None
    if variant in GUARDED:
        from loopguard_anthropic import LoopGuardMiddleware, guard

        breaker = _breaker(variant)
        with _patched(LoopGuardMiddleware, clock, {"handle": 2}):
            client = guard(client, breaker)
    tools = [
        {
            "name": "lookup",
            "description": "Look a key up.",
            "input_schema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
        }
    ]

    def once() -> int:
        state["n"], state["run"] = 0, state["run"] + 1
        # Each conversation is its own breaker run (``with breaker.run():``, as the docs show for the client).
        with breaker.run() if breaker is not None else contextlib.nullcontext():
            return conversation()

    def conversation() -> int:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
        ran = 0
        while True:
            reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=512, messages=messages, tools=tools)
            messages.append({"role": "assistant", "content": reply.content})
            uses = [block for block in reply.content if block.type == "tool_use"]
            if not uses:
                return ran
            results = []
            for use in uses:
                ran += 1
                results.append(
                    {"type": "tool_result", "tool_use_id": use.id, "content": f"value of {use.input['key']}"}
                )
            messages.append({"role": "user", "content": results})

    return once


# -- the runtimes ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    key: str
    label: str
    build: Callable[[str, int, HookClock | None], Callable[[], int]]
    needs: str  # the module whose absence makes it pending


RUNTIMES = (
    Runtime("langchain", "LangChain create_agent + LoopGuardMiddleware", _langchain, "langchain"),
    Runtime("langgraph", "LangGraph StateGraph + guard_node + guarded_tool_node", _langgraph, "langgraph"),
    Runtime("pydantic_ai", "Pydantic AI Agent + LoopGuardCapability", _pydantic_ai, "pydantic_ai"),
    Runtime("crewai", "CrewAI crew + guard_crew", _crewai, "crewai"),
    Runtime("anthropic", "Anthropic client + guard(client, breaker)", _anthropic, "anthropic"),
)


def _timed_run(once: Callable[[], int], calls: int, *, collect: bool = True) -> float:
    gc.collect()
    if not collect:
        gc.disable()
    try:
        start = time.perf_counter()
        ran = once()
        seconds = time.perf_counter() - start
    finally:
        gc.enable()
    if ran != calls:
        raise RuntimeError(f"expected {calls} tool calls, the run made {ran}")
    return seconds


def _quartiles(data: Sequence[float]) -> list[float]:
    return statistics.quantiles(data, n=4)[::2] if len(data) > 1 else list(data)


def _whole_runs(runtime: Runtime, calls: int, rounds: int, rng: random.Random) -> dict[str, Any]:
    ones = {variant: runtime.build(variant, calls, None) for variant in VARIANTS}
    for variant in VARIANTS:
        _timed_run(ones[variant], calls)  # warm up
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        order = list(VARIANTS)
        rng.shuffle(order)
        for variant in order:
            samples[variant].append(_timed_run(ones[variant], calls))
    med = {v: statistics.median(samples[v]) for v in VARIANTS}
    return {
        "calls": calls,
        "rounds": rounds,
        "median_seconds": med,
        "p25_p75": {v: _quartiles(samples[v]) for v in VARIANTS},
        "ratio": round(med["guarded"] / med["unguarded"], 3),
        "ratio_vs_passthrough": round(med["guarded"] / med["passthrough"], 3),
        # Each round's guarded run over the same round's pass-through run (the two ran back to back, so a slow
        # spell of the machine weighs on both), then the median of those: what the goal row reports.
        "paired_ratio": round(
            statistics.median(g / p for g, p in zip(samples["guarded"], samples["passthrough"], strict=True)), 3
        ),
    }


def _at(per_run: list[list[int]], turn: int, last: int) -> float:
    """Median µs over the ten turns from ``turn`` (the last ten for the last turn) across the runs."""
    first = min(turn, max(1, last - 9))
    values = [run[t] / 1000 for run in per_run for t in range(first, min(first + 10, last + 1))]
    return round(statistics.median(values), 1)


def _per_turn(runtime: Runtime, calls: int, repeats: int, rng: random.Random) -> dict[str, Any]:
    spent: dict[str, list[list[int]]] = {"passthrough": [], "guarded": []}
    hooks_per_turn: dict[str, float] = {}
    runs_seconds: dict[str, list[float]] = {"passthrough": [], "guarded": []}
    for _ in range(repeats):
        order = list(spent)
        rng.shuffle(order)
        for variant in order:
            clock = HookClock()
            once = runtime.build(variant, calls, clock)
            runs_seconds[variant].append(_timed_run(once, calls, collect=False))
            # turn t = between model call t and model call t+1; the last model call (the answer) closes the run
            spent[variant].append(clock.spent[: calls + 1])
            hooks_per_turn[variant] = statistics.median(clock.calls[1 : calls + 1])
    marks = [m for m in MARKS if m <= calls]
    if marks[-1] != calls:
        marks.append(calls)
    table = {variant: {str(m): _at(runs, m, calls) for m in marks} for variant, runs in spent.items()}
    # The same run once more per variant, its hooks measured in function calls instead of time.
    work: dict[str, dict[str, int]] = {}
    for variant in spent:
        counter = CallCounter()
        clock = HookClock(now=counter.now)
        once = runtime.build(variant, calls, clock)
        with counter.active():
            once()
        work[variant] = {str(m): _work_at(clock.spent, m, calls) for m in marks}
    work_first, work_last = work["guarded"][str(marks[0])], work["guarded"][str(marks[-1])]
    guarded = table["guarded"]
    first, last = guarded[str(marks[0])], guarded[str(marks[-1])]
    added = {str(m): round(table["guarded"][str(m)] - table["passthrough"][str(m)], 1) for m in marks}
    return {
        "calls": calls,
        "repeats": repeats,
        "marks": marks,
        "hook_us": table,
        "added_us": added,
        "hooks_per_turn": hooks_per_turn,
        "run_seconds": {v: statistics.median(s) for v, s in runs_seconds.items()},
        "flatness": round(last / first, 2) if first > 0 else None,
        "work_calls": work,
        "work_flatness": round(work_last / work_first, 2) if work_first > 0 else None,
    }


def _work_at(spent: list[int], turn: int, last: int) -> int:
    """Function calls inside the hooks, median over the ten turns from ``turn`` (one run: the count is exact)."""
    first = min(turn, max(1, last - 9))
    return int(statistics.median(spent[first : min(first + 10, last + 1)]))


# -- instructions (callgrind) ----------------------------------------------------------------------------------
def _drain(key: str) -> None:
    """Let worker threads finish what a run handed them before the counts are read: CrewAI's event handlers run on
    its event bus's threads (waited for by its own ``flush``); anything else gets a moment."""
    if key == "crewai":
        from crewai.events.event_bus import crewai_event_bus

        if not crewai_event_bus.flush(timeout=None):
            raise RuntimeError("CrewAI's event bus did not finish its handlers")
    time.sleep(0.5)


def _instructions_child(key: str, variant: str, runs: int, library: str) -> None:
    """Inside callgrind: build and warm up; then dump (zeroing every thread's counts), run, dump again."""
    requests = _callgrind.load(library)
    runtime = next(r for r in RUNTIMES if r.key == key)
    once = runtime.build(variant, CALLS, None)
    _timed_run(once, CALLS)
    # Everything alive now (the framework's modules and objects) out of the collector's reach: a full collection
    # over it costs tens of millions of instructions, lands in a run or not depending on a few allocations more
    # or less, and has nothing to do with the hooks. Collections of what the runs allocate still count.
    gc.collect()
    gc.freeze()
    _drain(key)
    requests.lg_start()
    ran = [once() for _ in range(runs)]
    _drain(key)
    requests.lg_measured()
    if ran != [CALLS] * runs:  # a run that ended early would count fewer instructions: never a figure
        raise RuntimeError(f"expected {CALLS} tool calls in each of {runs} runs, they made {ran}")


_CHILD_SECONDS = 1_800  # a child takes one to three minutes; past half an hour it is stuck


def _count_instructions(key: str, variant: str, runs: int, library: Path) -> int:
    spec = f"{key},{variant},{runs},{library}"
    return _callgrind.count("benchmarks.end_to_end", spec, f"{key}/{variant}", _CHILD_SECONDS)


def _instructions(
    keys: Sequence[str], runs: int, children: int = INSTRUCTION_CHILDREN, *, split: bool = False
) -> dict[str, Any]:
    """Instructions per whole run, pass-through and guarded, for each runtime: the mean of ``children`` child
    processes per variant (``MORE_CHILDREN`` for the noisier runtimes; two children at a time). ``split``: the
    ``"adapter"`` variant too (the guarded run with the breaker's checks off), so that what the guard adds per turn
    is told apart into the adapter's own work and the breaker's."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="lg-requests-") as folder:
        try:
            library = _callgrind.requests_library(Path(folder))
        except RuntimeError as exc:
            return {"pending": str(exc)}
        # Child n of each variant side by side, so that a pair meets the same moment of the machine.
        each = {key: MORE_CHILDREN.get(key, children) for key in keys}
        variants = ("passthrough", "guarded", "adapter") if split else ("passthrough", "guarded")
        jobs = [(key, variant) for key in keys for _ in range(each[key]) for variant in variants]

        def count(job: tuple[str, str]) -> int | str:
            try:
                return _count_instructions(job[0], job[1], runs, library)
            except RuntimeError as exc:  # this runtime's row says why; the others are still measured
                return str(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
            counted = list(pool.map(count, jobs))
    out: dict[str, Any] = {"runs": runs, "children": children}
    for key in keys:
        mine = [(v, c) for (k, v), c in zip(jobs, counted, strict=True) if k == key]
        failed = [c for _, c in mine if isinstance(c, str)]
        if failed:
            out[key] = {"pending": failed[0]}
            continue
        p = [c for v, c in mine if v == "passthrough" and isinstance(c, int)]
        g = [c for v, c in mine if v == "guarded" and isinstance(c, int)]
        pt, gt = sum(p) / each[key], sum(g) / each[key]
        out[key] = {
            "children": each[key],
            "passthrough": round(pt / runs),
            "guarded": round(gt / runs),
            "ratio": round(gt / pt, 4),
            "child_ratios": [round(gi / pi, 4) for gi, pi in zip(g, p, strict=True)],
            "added_per_turn": round((gt - pt) / runs / (CALLS + 1)),
        }
        a = [c for v, c in mine if v == "adapter" and isinstance(c, int)]
        if a:
            out[key]["adapter_per_turn"] = round((sum(a) / each[key] - pt) / runs / (CALLS + 1))
    return out


def _available(runtime: Runtime) -> str | None:
    try:
        __import__(runtime.needs)
        __import__("loopguard_" + runtime.key)
    except ImportError as exc:
        return f"{runtime.label}: not importable ({exc})"
    return None


def run(*, smoke: bool = False, seed: int = 6, only: Sequence[str] | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    calls = 20 if smoke else CALLS
    rounds = 3 if smoke else 15
    long_calls = 60 if smoke else LONG_CALLS
    repeats = 1 if smoke else 2
    frameworks: dict[str, Any] = {}
    per_turn: dict[str, Any] = {}
    for runtime in RUNTIMES:
        if only and runtime.key not in only:
            continue
        why = _available(runtime)
        if why is not None:
            frameworks[runtime.key] = {"label": runtime.label, "pending": why}
            continue
        print(f"  {runtime.key}: whole runs ...", flush=True)
        frameworks[runtime.key] = {"label": runtime.label, **_whole_runs(runtime, calls, rounds, rng)}
        print(f"  {runtime.key}: per turn ...", flush=True)
        per_turn[runtime.key] = {"label": runtime.label, **_per_turn(runtime, long_calls, repeats, rng)}
    measured = [key for key, f in frameworks.items() if "pending" not in f]
    if smoke:
        instructions: dict[str, Any] = {"pending": "skipped by --smoke"}
    else:
        print("  instructions (callgrind) ...", flush=True)
        try:
            instructions = _instructions(measured, INSTRUCTION_RUNS, split=True)
        except (RuntimeError, OSError) as exc:
            instructions = {"pending": str(exc)}
    result: dict[str, Any] = {
        "calls": calls,
        "rounds": rounds,
        "long_calls": long_calls,
        "frameworks": frameworks,
        "per_turn": per_turn,
        "instructions": instructions,
        "goals": _goals(frameworks, per_turn, instructions),
    }
    # The LangChain pair at the top level, as reported before (docs/benchmarks.md section 4).
    lc = frameworks.get("langchain")
    if lc is not None and "pending" not in lc:
        result.update({k: lc[k] for k in ("median_seconds", "p25_p75", "ratio", "ratio_vs_passthrough")})
    elif lc is not None:
        result["pending"] = lc["pending"]
    return result


def _ratio_goal(name: str, value: float | None, note: str) -> dict[str, Any]:
    """A guarded / pass-through goal row; ``value`` None is pending, ``note`` then says why."""
    status = "pending" if value is None else "met" if value <= RATIO_GOAL else "not met"
    return {"name": name, "target": f"<= {RATIO_GOAL}x", "value": value, "unit": "x", "status": status, "note": note}


def _goals(
    frameworks: dict[str, Any], per_turn: dict[str, Any], instructions: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    goals = []
    for key, f in frameworks.items():
        counted = (instructions or {}).get(key)
        if counted is not None:
            goals.append(
                _ratio_goal(
                    f"{f['label']}: guarded / pass-through hooks, whole run, in CPU instructions",
                    counted.get("ratio"),
                    counted.get("pending")
                    or f"callgrind; the guard adds {counted['added_per_turn']:,} instructions per model turn",
                )
            )
        name = f"{f['label']}: guarded / pass-through hooks, whole run, wall time"
        if "pending" in f:
            goals.append(_ratio_goal(name, None, f["pending"]))
            continue
        goals.append(
            _ratio_goal(
                name,
                f.get("paired_ratio", f["ratio_vs_passthrough"]),
                f"{f['calls']} calls, {f['rounds']} rounds: median of the rounds' paired ratios"
                f" (ratio of the medians: {f['ratio_vs_passthrough']}x)",
            )
        )
    for p in per_turn.values():
        marks = p["marks"]
        g, w = p["hook_us"]["guarded"], p["work_calls"]["guarded"]
        goals.append(
            _flat_goal(
                f"{p['label']}: guarded hook cost per turn, turn {marks[-1]} / turn {marks[0]}",
                p["flatness"],
                ", ".join(f"turn {m}: {g[str(m)]} µs" for m in marks)
                + f"; pass-through drifts {_drift(p)}x over the same turns",
            )
        )
        goals.append(
            _flat_goal(
                f"{p['label']}: guarded hook work per turn (function calls), turn {marks[-1]} / {marks[0]}",
                p["work_flatness"],
                ", ".join(f"turn {m}: {w[str(m)]} calls" for m in marks),
            )
        )
    return goals


def _flat_goal(name: str, value: float | None, note: str) -> dict[str, Any]:
    ok = value is not None and value <= FLAT_GOAL
    return {
        "name": name,
        "target": f"<= {FLAT_GOAL}x",
        "value": value,
        "unit": "x",
        "status": "met" if ok else "not met",
        "note": note,
    }


def _drift(p: dict[str, Any]) -> float | None:
    """How much the pass-through hooks' time per turn grows over the run: what the machine, not the guard, adds."""
    pt, marks = p["hook_us"]["passthrough"], p["marks"]
    first = pt[str(marks[0])]
    return round(pt[str(marks[-1])] / first, 2) if first > 0 else None


def render(result: dict[str, Any]) -> str:
    lines = []
    for key, f in result["frameworks"].items():
        if "pending" in f:
            lines.append(f"{key}: pending: {f['pending']}")
            continue
        m = f["median_seconds"]
        lines.append(
            f"{f['label']}: {f['calls']} calls, {f['rounds']} rounds: unguarded {m['unguarded'] * 1000:.1f} ms,"
            f" pass-through {m['passthrough'] * 1000:.1f} ms, guarded {m['guarded'] * 1000:.1f} ms;"
            f" guarded / pass-through {f['ratio_vs_passthrough']}x (paired rounds: {f.get('paired_ratio')}x),"
            f" guarded / unguarded {f['ratio']}x"
        )
    counted = result.get("instructions") or {}
    if "pending" in counted:
        lines.append(f"instructions (callgrind): pending: {counted['pending']}")
    for key, c in counted.items():
        if isinstance(c, dict) and "pending" in c:
            lines.append(f"{key} instructions: pending: {c['pending']}")
        elif isinstance(c, dict):
            lines.append(
                f"{key} instructions per whole run: pass-through {c['passthrough']:,}, guarded {c['guarded']:,};"
                f" guarded / pass-through {c['ratio']}x ({c['added_per_turn']:,} added per model turn"
                f"{_split_note(c)})"
            )
    for key, p in result["per_turn"].items():
        cells = ", ".join(
            f"turn {m}: {p['hook_us']['guarded'][str(m)]} µs (pass-through {p['hook_us']['passthrough'][str(m)]})"
            for m in p["marks"]
        )
        lines.append(f"{key} hooks per turn, guarded: {cells}; turn {p['marks'][-1]} / turn 1 = {p['flatness']}x")
        work = ", ".join(
            f"turn {m}: {p['work_calls']['guarded'][str(m)]} (pass-through {p['work_calls']['passthrough'][str(m)]})"
            for m in p["marks"]
        )
        lines.append(f"{key} function calls inside the hooks per turn, guarded: {work}; {p['work_flatness']}x")
    lines.append("")
    for g in result["goals"]:
        value = "-" if g["value"] is None else f"{g['value']}{g['unit']}"
        lines.append(f"goal {g['name']}: {value} (target {g['target']}): {g['status']}  {g['note']}")
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    """Section 4 of docs/benchmarks.md."""
    rows = []
    for f in result["frameworks"].values():
        if "pending" in f:
            rows.append([f["label"], "-", "-", "-", "-", "-", "-", f"pending: {f['pending']}"])
            continue
        m = f["median_seconds"]
        paired = f.get("paired_ratio", f["ratio_vs_passthrough"])
        rows.append(
            [
                f["label"],
                f"{m['unguarded'] * 1000:.1f}",
                f"{m['passthrough'] * 1000:.1f}",
                f"{m['guarded'] * 1000:.1f}",
                f"{f['ratio_vs_passthrough']}x",
                f"**{paired}x**",
                f"{f['ratio']}x",
                "met" if paired <= RATIO_GOAL else "**not met**",
            ]
        )
    head = (
        f"| runtime, {result['calls']} distinct tool calls ({result['calls'] + 1} model turns) | unguarded ms |"
        " pass-through ms | guarded ms | guarded / pass-through (medians) | guarded / pass-through (paired rounds) |"
        f" guarded / unguarded | goal ≤ {RATIO_GOAL}x |\n|---|---|---|---|---|---|---|---|\n"
    )
    out = head + "\n".join("| " + " | ".join(r) + " |" for r in rows)
    out += _instruction_table(result)
    out += _split_table(result)
    if result["per_turn"]:
        marks = next(iter(result["per_turn"].values()))["marks"]
        out += (
            f"\n\nHook time per turn over a run of {result['long_calls']} distinct calls (each hook function timed by"
            " itself, the framework's handler excluded; median of ten turns, two runs), guarded (pass-through):\n\n"
        )
        out += _turn_table(result["per_turn"], marks, "hook_us", "flatness", " µs")
        out += (
            "\nThe time of the pass-through hooks, which do nothing, grows over the same turns: the framework's state"
            " grows (500 turns of messages; the collector paused), and every hook runs on colder caches and a bigger"
            " heap. So the same run is measured once more in **work**: every function call, Python or C, made inside"
            " the hooks per turn (`sys.setprofile` in every thread, the framework's handler excluded; one run each:"
            " a count, not a timing, so exact while the hook is the only thread at work, as in these runs). Work"
            " that grows with the history (a loop over the messages, a copy, a re-read) grows this count;"
            " a C call's own cost is counted once whatever its argument's size, which is why the code reads only the"
            " messages added since the last turn (`loopguard_core.tokens.History`). Guarded (pass-through):\n\n"
        )
        out += _turn_table(result["per_turn"], marks, "work_calls", "work_flatness", "")
    return out


def _more_children(counted: dict[str, Any], frameworks: dict[str, Any]) -> str:
    """Which rows were counted by more children than the rest, and why (see ``MORE_CHILDREN``)."""
    usual = counted.get("children", 1)
    more = [
        f"{counted[key]['children']} for {frameworks[key]['label'].split(' ')[0]}"
        for key in frameworks
        if isinstance(counted.get(key), dict) and counted[key].get("children", usual) != usual
    ]
    return f" ({', '.join(more)}, whose counts vary more between children)" if more else ""


def _split_note(counted: dict[str, Any]) -> str:
    """``", of them N the adapter's own and M the breaker's"`` where the split was counted, else nothing."""
    own = counted.get("adapter_per_turn")
    if own is None:
        return ""
    return f", of them {own:,} the adapter's own and {counted['added_per_turn'] - own:,} the breaker's checks"


def _split_table(result: dict[str, Any]) -> str:
    """Where the instructions the guard adds per turn go: the adapter's own work, and the breaker's checks."""
    counted = result.get("instructions") or {}
    rows = []
    for key, f in result["frameworks"].items():
        c = counted.get(key)
        if not isinstance(c, dict) or c.get("adapter_per_turn") is None:
            continue
        added, own = c["added_per_turn"], c["adapter_per_turn"]
        share = f"{100 * own / added:.0f} %" if added > 0 else "-"
        rows.append(f"| {f['label']} | {added:,} | {own:,} ({share}) | {added - own:,} |")
    if not rows:
        return ""
    return (
        "\n\nWhere the instructions the guard adds per model turn go. The adapter's own work is the guarded run once "
        "more with a breaker whose checks and reports (`before_tool`, `after_tool`, `before_model`, `after_model`, "
        "`model_failed` and their async forms) do nothing: what is left over the pass-through is the adapter reading "
        "the framework's objects, scoping the run, and its bookkeeping; the rest is the breaker's. Same children as "
        "above, so the same noise (about 0.2 % of a run, some 15,000 instructions per turn):\n\n"
        "| runtime | added per model turn | the adapter's own | the breaker's checks |\n|---|---|---|---|\n"
        + "\n".join(rows)
    )


def _instruction_table(result: dict[str, Any]) -> str:
    counted = result.get("instructions") or {}
    intro = (
        "\n\nThe same pair counted in CPU instructions (valgrind's callgrind, counting only the measured runs:"
        " a count that the machine's other load does not move; it does not see cache misses, which wall time"
        f" does). Instructions per whole run, the mean of {counted.get('children', 1)} child processes per variant"
        f"{_more_children(counted, result['frameworks'])} (two counts of one variant differ by about 0.2 %: run ids"
        " are random); each pair's own ratio in brackets:\n\n"
    )
    if "pending" in counted:
        return intro + f"pending: {counted['pending']}\n"
    rows = []
    for key, f in result["frameworks"].items():
        c = counted.get(key)
        if c is None:
            continue
        if "pending" in c:
            rows.append(f"| {f['label']} | - | - | - | - | pending: {c['pending']} |")
            continue
        ok = "met" if c["ratio"] <= RATIO_GOAL else "**not met**"
        pairs = c.get("child_ratios")
        each = f" ({', '.join(str(r) for r in pairs)})" if pairs else ""
        rows.append(
            f"| {f['label']} | {c['passthrough']:,} | {c['guarded']:,} | {c['added_per_turn']:,} |"
            f" **{c['ratio']}x**{each} | {ok} |"
        )
    head = (
        "| runtime | pass-through | guarded | added per model turn | guarded / pass-through |"
        f" goal ≤ {RATIO_GOAL}x |\n|---|---|---|---|---|---|\n"
    )
    return intro + head + "\n".join(rows)


def _turn_table(per_turn: dict[str, Any], marks: list[int], figures: str, flatness: str, unit: str) -> str:
    """One per-turn table: guarded (pass-through) ``figures`` at each mark, and the guarded ``flatness``."""
    cols = " | ".join(f"turn {m}{unit}" for m in marks)
    out = (
        f"| runtime | {cols} | turn {marks[-1]} / turn {marks[0]} | goal ≤ {FLAT_GOAL}x |\n"
        f"|---|{'---|' * len(marks)}---|---|\n"
    )
    for p in per_turn.values():
        g, pt = p[figures]["guarded"], p[figures]["passthrough"]
        cells = " | ".join(f"{g[str(m)]} ({pt[str(m)]})" for m in marks)
        ok = p[flatness] is not None and p[flatness] <= FLAT_GOAL
        out += f"| {p['label']} | {cells} | {p[flatness]}x | {'met' if ok else '**not met**'} |\n"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", help="comma-separated runtimes: " + ",".join(r.key for r in RUNTIMES))
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--instructions-child", help=argparse.SUPPRESS)  # KEY,VARIANT,RUNS: run under callgrind
    args = parser.parse_args(argv)
    if args.instructions_child:
        key, variant, runs, library = args.instructions_child.split(",", 3)
        _instructions_child(key, variant, int(runs), library)
        return 0
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    result = run(smoke=args.smoke, only=only)
    print(render(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
