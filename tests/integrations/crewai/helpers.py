"""Test-only glue for the CrewAI tests: a counted tool and the smallest real crew.

The scripted model is the public ``loopguard_crewai.testing.ScriptedLLM``; ``BodyCounter`` and ``Recorder``
come from ``loopguard_core.testing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crewai.tools import BaseTool, tool

from loopguard_core.testing import BodyCounter
from loopguard_crewai.testing import ScriptedLLM

__all__ = ["counted_tool", "one_agent_crew"]


def counted_tool(
    counter: BodyCounter,
    name: str = "lookup",
    answer: Callable[[str], str] | None = None,
) -> BaseTool:
    """A CrewAI ``@tool`` whose body records each run; it answers ``answer(q)`` (default: a fixed text)."""

    def body(q: str) -> str:
        counter.hit(name, {"q": q})
        return answer(q) if answer is not None else f"no news about {q}"

    body.__name__ = name
    body.__doc__ = f"Look something up ({name})."
    return tool(name)(body)


def one_agent_crew(tools: list[Any], llm: ScriptedLLM, *, role: str = "researcher", **agent_kwargs: Any) -> Any:
    """A one-agent, one-task crew around ``llm`` (the smallest real CrewAI run)."""
    from crewai import Agent, Crew, Task

    agent = Agent(role=role, goal="answer the question", backstory="careful", llm=llm, tools=tools, **agent_kwargs)
    task = Task(description="Find what is known about the topic.", expected_output="a short answer", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False)
