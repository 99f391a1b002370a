"""Side-effect tools under ``LoopGuardCapability``: the body runs at most once per idempotency key and the model
gets the recorded outcome for every repeat (real agent loop, scripted model)."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent
from pydantic_ai.messages import ToolReturnPart

from loopguard_core import Breaker, ToolPolicy
from loopguard_core.testing import BodyCounter
from loopguard_pydantic_ai import LoopGuardCapability
from loopguard_pydantic_ai.testing import ScriptedModel

EMAIL = ("send_email", {"to": "ana@example.com"})


def returns(result: object) -> list[object]:
    messages = result.all_messages()  # type: ignore[attr-defined]
    return [p.content for m in messages for p in getattr(m, "parts", ()) if isinstance(p, ToolReturnPart)]


def agent_for(counter: BodyCounter, breaker: Breaker, script: list[object], **tool: object) -> Agent[None, str]:
    agent: Agent[None, str] = Agent(ScriptedModel(script), capabilities=[LoopGuardCapability(breaker)])

    @agent.tool_plain(**tool)  # type: ignore[call-overload]
    def send_email(to: str) -> str:
        counter.hit("send_email")
        return f"email #{counter.count('send_email')} sent to {to}"

    return agent


def test_asked_twice_runs_once_and_both_answers_are_the_recorded_outcome() -> None:
    counter = BodyCounter()
    breaker = Breaker(tools={"send_email": ToolPolicy(side_effect=True)}, side_effects="memory://")
    result = agent_for(counter, breaker, [EMAIL, EMAIL, "done"]).run_sync("email ana")
    assert result.output == "done" and counter.count("send_email") == 1
    assert returns(result) == ["email #1 sent to ana@example.com"] * 2
    assert breaker.usage().tool_calls == 2


def test_declared_in_tool_metadata_with_parallel_repeats() -> None:
    counter = BodyCounter()
    agent = agent_for(
        counter,
        Breaker(side_effects="memory://"),
        [[EMAIL, EMAIL], "done"],
        metadata={"loopguard": {"side_effect": True}},
    )
    result = agent.run_sync("email ana")
    assert counter.count("send_email") == 1
    assert returns(result) == ["email #1 sent to ana@example.com"] * 2


def test_other_tools_run_every_time() -> None:
    counter = BodyCounter()
    result = agent_for(counter, Breaker(), [EMAIL, EMAIL, "done"]).run_sync("email ana")
    assert counter.count("send_email") == 2
    assert returns(result) == ["email #1 sent to ana@example.com", "email #2 sent to ana@example.com"]
