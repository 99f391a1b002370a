"""Side-effect tools in a plain LangGraph graph (``guarded_tool_node``): at most once per idempotency key, and the
model gets the recorded outcome for every repeat."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool

from loopguard_core import Breaker, ToolPolicy
from loopguard_core.testing import BodyCounter
from loopguard_langchain.testing import ScriptedChatModel
from loopguard_langgraph import guarded_tool_node

from .graphs import agent_graph

DEPLOY = ("deploy", {"service": "billing", "version": "1.4.2"})


def deploy_tool(counter: BodyCounter) -> Any:
    @tool
    def deploy(service: str, version: str) -> str:
        """Deploy a service."""
        counter.hit("deploy", {"service": service})
        return f"deployment #{counter.count('deploy')} of {service} {version} started"

    return deploy


def answers(result: dict[str, Any]) -> list[str]:
    return [str(m.content) for m in result["messages"] if getattr(m, "type", "") == "tool"]


def test_asked_twice_in_one_run_runs_once() -> None:
    counter = BodyCounter()
    breaker = Breaker(tools={"deploy": ToolPolicy(side_effect=True)}, side_effects="memory://")
    graph = agent_graph(ScriptedChatModel([DEPLOY, DEPLOY, "done"]), guarded_tool_node([deploy_tool(counter)], breaker))
    result = graph.invoke({"messages": [{"role": "user", "content": "ship it"}]})
    assert counter.count("deploy") == 1
    assert answers(result) == ["deployment #1 of billing 1.4.2 started"] * 2


def test_declared_in_tool_metadata_with_parallel_repeats() -> None:
    counter = BodyCounter()
    deploy = deploy_tool(counter)
    deploy.metadata = {"loopguard": {"side_effect": True}}
    graph = agent_graph(
        ScriptedChatModel([[DEPLOY, DEPLOY], "done"]), guarded_tool_node([deploy], Breaker(side_effects="memory://"))
    )
    result = graph.invoke({"messages": [{"role": "user", "content": "ship it"}]})
    assert counter.count("deploy") == 1
    assert answers(result) == ["deployment #1 of billing 1.4.2 started"] * 2
