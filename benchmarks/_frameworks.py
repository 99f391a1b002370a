"""Drive one agent's scripted tool-call trace through a real framework runtime with a scripted model.

Each driver builds the framework's own agent loop (LangChain ``create_agent``, classic ``AgentExecutor``,
Pydantic AI ``Agent``), with a fake model that proposes the trace's calls one per turn and tools that
answer with the trace's results, and returns what happened to every call (see :class:`Step`). Nothing
here reimplements a framework limit: the limits under test are the frameworks' own code.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from typing import Any

from loopguard_core.testing import ScriptedCall

__all__ = ["Step", "run_agent_executor", "run_create_agent", "run_pydantic_ai", "scripted_chat_model"]

os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")


class Step(enum.Enum):
    """The fate of one scripted call."""

    RAN = "ran"  # the model proposed it and the tool body ran
    BLOCKED = "blocked"  # proposed (a model turn was spent), refused, and the run went on
    HALT_TOOL = "halt_tool"  # proposed, refused, and the run ended there
    HALT_MODEL = "halt_model"  # the model call that would propose it was refused; the run ended
    UNREACHED = "unreached"  # after the run ended


def _args(call: ScriptedCall) -> dict[str, Any]:
    return call.args if isinstance(call.args, dict) else {"input": call.args}


def _answer(call: ScriptedCall, failure: type[Exception]) -> str:
    if call.error not in (False, None, ""):
        raise failure(call.error if isinstance(call.error, str) else str(call.result))
    return str(call.result)


class _Tracker:
    """Which scripted call the model is on, and which tool bodies ran."""

    def __init__(self, calls: Sequence[ScriptedCall], failure: type[Exception] = RuntimeError) -> None:
        self.calls = list(calls)
        self.failure = failure
        self.proposed = 0  # model turns that proposed a call
        self.ran: set[int] = set()

    def body(self, name: str) -> Callable[..., str]:
        def tool_body(**_: Any) -> str:
            index = self.proposed - 1
            self.ran.add(index)
            return _answer(self.calls[index], self.failure)

        tool_body.__name__ = name
        return tool_body

    def steps(self, *, halted: bool, halted_by_model: bool) -> list[Step]:
        steps = []
        for index in range(len(self.calls)):
            if index in self.ran:
                steps.append(Step.RAN)
            elif index < self.proposed:
                steps.append(Step.BLOCKED)
            else:
                steps.append(Step.UNREACHED)
        if halted:
            last = self.proposed - 1
            if halted_by_model and self.proposed < len(self.calls):
                steps[self.proposed] = Step.HALT_MODEL
            elif 0 <= last < len(steps) and steps[last] is Step.BLOCKED:
                steps[last] = Step.HALT_TOOL
        return steps


def _schema(calls: Sequence[ScriptedCall], tool: str) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for call in calls:
        if call.tool == tool:
            for key in _args(call):
                keys[key] = {}
    return {"type": "object", "properties": keys, "additionalProperties": True}


# -- LangChain v1 create_agent -------------------------------------------------------------------
def scripted_chat_model(respond: Callable[[], Any]) -> Any:
    """A LangChain chat model whose every answer is ``respond()`` (an ``AIMessage``); tools bind to it unchanged."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult

    class ScriptedModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=respond())])

    return ScriptedModel()


def run_create_agent(calls: Sequence[ScriptedCall], middleware: Sequence[Any]) -> list[Step]:
    """A ``create_agent`` graph with ``middleware``; the model proposes one scripted call per turn."""
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langchain_core.tools import StructuredTool, ToolException

    tracker = _Tracker(calls, ToolException)

    def respond() -> Any:
        if tracker.proposed >= len(tracker.calls):
            return AIMessage(content="done")
        call = tracker.calls[tracker.proposed]
        tracker.proposed += 1
        return AIMessage(
            content="", tool_calls=[{"name": call.tool, "args": _args(call), "id": f"call-{tracker.proposed}"}]
        )

    names = sorted({c.tool for c in calls})
    tools = [
        StructuredTool.from_function(
            func=tracker.body(name),
            name=name,
            description=f"scripted {name}",
            args_schema=_schema(calls, name),
            handle_tool_error=True,  # a failing tool answers the model with its error, as usual
        )
        for name in names
    ]
    agent = create_agent(scripted_chat_model(respond), tools=tools, middleware=list(middleware))
    halted = False
    try:
        agent.invoke({"messages": [{"role": "user", "content": "go"}]}, {"recursion_limit": 10 * len(calls) + 50})
    except Exception as exc:  # a limit with exit_behavior="error" raises; that ends the run
        if "LimitExceeded" not in type(exc).__name__:
            raise
        halted = True
    # The run ended early if the model was not asked for every call plus the final answer.
    if tracker.proposed < len(calls):
        halted = True
        return tracker.steps(halted=True, halted_by_model=True)
    return tracker.steps(halted=halted, halted_by_model=False)


# -- classic AgentExecutor -----------------------------------------------------------------------
def run_agent_executor(calls: Sequence[ScriptedCall], **executor_kwargs: Any) -> list[Step]:
    """A classic ``AgentExecutor`` whose agent plans the scripted calls one per iteration."""
    from langchain_classic.agents import AgentExecutor, BaseSingleActionAgent
    from langchain_core.agents import AgentAction, AgentFinish
    from langchain_core.tools import StructuredTool, ToolException

    tracker = _Tracker(calls, ToolException)

    class ScriptedAgent(BaseSingleActionAgent):
        @property
        def input_keys(self) -> list[str]:
            return ["input"]

        def plan(self, intermediate_steps: Any, callbacks: Any = None, **kwargs: Any) -> Any:
            if tracker.proposed >= len(tracker.calls):
                return AgentFinish({"output": "done"}, "done")
            call = tracker.calls[tracker.proposed]
            tracker.proposed += 1
            return AgentAction(call.tool, _args(call), "")

        async def aplan(self, intermediate_steps: Any, callbacks: Any = None, **kwargs: Any) -> Any:
            return self.plan(intermediate_steps, callbacks, **kwargs)

    names = sorted({c.tool for c in calls})
    tools = [
        StructuredTool.from_function(
            func=tracker.body(name),
            name=name,
            description=f"scripted {name}",
            args_schema=_schema(calls, name),
            handle_tool_error=True,  # a failing tool answers the model with its error, as usual
        )
        for name in names
    ]
    executor = AgentExecutor(agent=ScriptedAgent(), tools=tools, handle_parsing_errors=False, **executor_kwargs)
    executor.invoke({"input": "go"})
    return tracker.steps(halted=tracker.proposed < len(calls), halted_by_model=True)


# -- Pydantic AI ---------------------------------------------------------------------------------
def run_pydantic_ai(calls: Sequence[ScriptedCall], usage_limits: Any) -> list[Step]:
    """A Pydantic AI ``Agent`` with a ``FunctionModel`` that proposes the scripted calls, under ``usage_limits``."""
    from pydantic_ai import Agent, Tool
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    tracker = _Tracker(calls)
    limit_hit: list[str] = []

    def model(messages: Any, info: AgentInfo) -> ModelResponse:
        if tracker.proposed >= len(tracker.calls):
            return ModelResponse(parts=[TextPart("done")])
        call = tracker.calls[tracker.proposed]
        tracker.proposed += 1
        return ModelResponse(parts=[ToolCallPart(call.tool, _args(call), tool_call_id=f"call-{tracker.proposed}")])

    def make(name: str) -> Tool[None]:
        body = tracker.body(name)

        def tool(**kwargs: Any) -> str:
            try:
                return body(**kwargs)
            except RuntimeError as exc:  # a failing tool: the model sees the error and goes on
                return f"error: {exc}"

        return Tool.from_schema(tool, name=name, description=f"scripted {name}", json_schema=_schema(calls, name))

    agent = Agent(FunctionModel(model), tools=[make(n) for n in sorted({c.tool for c in calls})])
    try:
        agent.run_sync("go", usage_limits=usage_limits)
    except UsageLimitExceeded as exc:
        limit_hit.append(str(exc))
    if not limit_hit:
        return tracker.steps(halted=False, halted_by_model=False)
    # request_limit refuses the model request; tool_calls_limit refuses a proposed call.
    by_model = "request_limit" in limit_hit[0]
    return tracker.steps(halted=True, halted_by_model=by_model)
