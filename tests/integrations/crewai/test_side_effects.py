"""Side-effect tools in CrewAI: ``guarded_tool`` runs the body through ``Breaker.run_tool_body`` (at most once per
idempotency key, alone or inside ``guard_crew``); ``guard_crew`` alone warns that a hook cannot do that."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")

from crewai.tools import tool

from loopguard_core import Breaker, LoopGuardWarning, ToolPolicy
from loopguard_core.testing import BodyCounter
from loopguard_crewai import guard_crew, guarded_tool
from loopguard_crewai.testing import ScriptedLLM

from .helpers import one_agent_crew

EMAIL = ("send_email", {"to": "ana@example.com"})


def email_tool(counter: BodyCounter) -> Any:
    @tool("send_email")
    def send_email(to: str) -> str:
        """Send an email."""
        counter.hit("send_email")
        return f"email #{counter.count('send_email')} sent to {to}"

    return send_email


def side_effect_breaker() -> Breaker:
    return Breaker(tools={"send_email": ToolPolicy(side_effect=True)}, side_effects="memory://")


@pytest.mark.parametrize("inside_guard_crew", [False, True], ids=["alone", "guard_crew"])
def test_asked_twice_runs_once_and_the_model_reads_the_recorded_outcome(inside_guard_crew: bool) -> None:
    counter = BodyCounter()
    breaker = side_effect_breaker()
    llm = ScriptedLLM([EMAIL, EMAIL, "done"])
    crew = one_agent_crew([guarded_tool(breaker)(email_tool(counter))], llm)
    if inside_guard_crew:
        with guard_crew(breaker):
            crew.kickoff()
    else:
        with breaker.run():
            crew.kickoff()
    assert counter.count("send_email") == 1
    assert str(llm.seen[-1]).count("email #1 sent to ana@example.com") == 2  # both answers are the record


def test_guard_crew_warns_about_an_unwrapped_side_effect_tool() -> None:
    counter = BodyCounter()
    crew = one_agent_crew([email_tool(counter)], ScriptedLLM([EMAIL, "done"]))
    with warnings.catch_warnings(record=True) as caught, guard_crew(side_effect_breaker()):
        warnings.simplefilter("always")
        crew.kickoff()
    assert any(issubclass(w.category, LoopGuardWarning) and "guarded_tool" in str(w.message) for w in caught)
