"""Side effects with the Anthropic tool runner: the tool bodies are the caller's, so a ``side_effect`` tool is made
idempotent by ``@side_effect`` under ``@beta_tool``; under ``guard()`` the repeat is still checked by the breaker
and answered with the recorded outcome."""

from __future__ import annotations

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

from anthropic import beta_tool

from loopguard_anthropic import guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker
from loopguard_core.idempotency import side_effect
from loopguard_core.testing import BodyCounter

EMAIL = ("send_email", {"to": "ana@example.com"})


def test_tool_runner_asked_twice_runs_the_body_once() -> None:
    counter, breaker = BodyCounter(), Breaker()

    @beta_tool
    @side_effect("memory://", breaker=breaker, name="send_email")
    def send_email(to: str) -> str:
        """Send an email."""
        counter.hit("send_email")
        return f"email #{counter.count('send_email')} sent to {to}"

    api = ScriptedAPI([EMAIL, EMAIL, "done"])
    client = guard(api.client(), breaker)
    with breaker.run("ticket-1"):
        runner = client.beta.messages.tool_runner(
            model="claude-sonnet-4-6", max_tokens=128, messages=[{"role": "user", "content": "x"}], tools=[send_email]
        )
        runner.until_done()
    assert counter.count("send_email") == 1
    results = [str(body["messages"]) for body in api.bodies[1:]]
    assert all("email #1 sent to ana@example.com" in text for text in results)
    assert breaker.usage("ticket-1").tool_calls == 2
