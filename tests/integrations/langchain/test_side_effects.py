"""Side-effect tools under ``LoopGuardMiddleware``: the body runs at most once per idempotency key, and every
repeat the model asks for is answered with the recorded outcome (real ``create_agent``, scripted model)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool

from loopguard_core import Breaker, ToolPolicy
from loopguard_core.testing import BodyCounter
from loopguard_langchain import LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

from .helpers import user

EMAIL = ("send_email", {"to": "ana@example.com", "body": "your refund is on its way"})


def email_tool(counter: BodyCounter) -> Any:
    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        counter.hit("send_email", {"to": to})
        return f"sent #{counter.count('send_email')} to {to}"

    return send_email


def tool_answers(messages: list[Any]) -> list[str]:
    return [str(m.content) for m in messages if getattr(m, "type", "") == "tool"]


def test_asked_twice_runs_once_and_the_model_gets_the_recorded_outcome_both_times(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(
        tools={"send_email": ToolPolicy(side_effect=True)}, side_effects=f"sqlite:///{tmp_path / 'fx.db'}"
    )
    model = ScriptedChatModel([EMAIL, EMAIL, "done"])
    agent = create_agent(model, [email_tool(counter)], middleware=[LoopGuardMiddleware(breaker)])
    result = agent.invoke(user())
    assert counter.count("send_email") == 1
    assert tool_answers(result["messages"]) == ["sent #1 to ana@example.com"] * 2
    assert breaker.usage().tool_calls == 2  # both calls were still checked and counted by the breaker


def test_declared_in_tool_metadata_and_parallel_repeats(tmp_path: Path) -> None:
    counter = BodyCounter()
    send_email = email_tool(counter)
    send_email.metadata = {"loopguard": {"side_effect": True}}
    model = ScriptedChatModel([[EMAIL, EMAIL], "done"])  # the same call twice in one turn
    agent = create_agent(model, [send_email], middleware=[LoopGuardMiddleware(Breaker(side_effects="memory://"))])
    result = agent.invoke(user())
    assert counter.count("send_email") == 1
    assert tool_answers(result["messages"]) == ["sent #1 to ana@example.com"] * 2


def test_async_agent_runs_a_side_effect_once(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(tools={"send_email": ToolPolicy(side_effect=True)}, side_effects="memory://")
    agent = create_agent(
        ScriptedChatModel([EMAIL, EMAIL, "done"]), [email_tool(counter)], middleware=[LoopGuardMiddleware(breaker)]
    )
    result = asyncio.run(agent.ainvoke(user()))
    assert counter.count("send_email") == 1
    assert tool_answers(result["messages"]) == ["sent #1 to ana@example.com"] * 2


def test_a_new_run_is_a_new_request(tmp_path: Path) -> None:
    counter = BodyCounter()
    breaker = Breaker(tools={"send_email": ToolPolicy(side_effect=True)}, side_effects="memory://")
    for _ in range(2):
        agent = create_agent(
            ScriptedChatModel([EMAIL, "done"]), [email_tool(counter)], middleware=[LoopGuardMiddleware(breaker)]
        )
        agent.invoke(user())
    assert counter.count("send_email") == 2


def test_tools_without_side_effect_run_every_time() -> None:
    counter = BodyCounter()
    agent = create_agent(
        ScriptedChatModel([EMAIL, EMAIL, "done"]), [email_tool(counter)], middleware=[LoopGuardMiddleware(Breaker())]
    )
    result = agent.invoke(user())
    assert counter.count("send_email") == 2
    assert tool_answers(result["messages"]) == ["sent #1 to ana@example.com", "sent #2 to ana@example.com"]
