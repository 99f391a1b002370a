"""The Pydantic AI traps that could swallow or hide a trip, each driven through the real agent loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent, ModelRetry, UsageLimits
from pydantic_ai.capabilities import AbstractCapability

from loopguard_core import Breaker, LoopGuardTripped, LoopGuardWarning, MissingExtra
from loopguard_core.testing import BodyCounter
from loopguard_pydantic_ai import LoopGuardCapability, guarded_run_sync
from loopguard_pydantic_ai.testing import ScriptedModel

SAME = ("lookup", {"q": "same"})


@dataclass
class RecoverToolErrors(AbstractCapability[Any]):
    """A user capability that turns every tool-body error into a result."""

    recovered: int = 0

    async def on_tool_execute_error(self, ctx, *, call, tool_def, args, error):  # type: ignore[no-untyped-def]
        self.recovered += 1
        return f"recovered from {type(error).__name__}"


@dataclass
class SwallowInWrap(AbstractCapability[Any]):
    """A user capability whose wrap hook catches everything (and optionally asks the model to retry)."""

    as_model_retry: bool = False

    async def wrap_tool_execute(self, ctx, *, call, tool_def, args, handler):  # type: ignore[no-untyped-def]
        try:
            return await handler(args)
        except Exception as exc:
            if self.as_model_retry:
                raise ModelRetry(f"try again: {exc}") from exc
            return "recovered"


def agent_with(fake: ScriptedModel, counter: BodyCounter, *capabilities: AbstractCapability[Any]) -> Agent:
    agent = Agent(fake, name="researcher", capabilities=list(capabilities))

    @agent.tool_plain(retries=5)
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        return "nothing new"

    return agent


def test_another_capabilitys_on_tool_execute_error_cannot_recover_a_refusal() -> None:
    breaker, counter, recover = Breaker(), BodyCounter(), RecoverToolErrors()
    agent = agent_with(ScriptedModel(loop=SAME), counter, recover, LoopGuardCapability(breaker))

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("go")

    assert info.value.reason == "loop"  # refused pre-flight, not "open" on a later request
    assert counter.count("lookup") == 3
    assert recover.recovered == 0  # the refusal never went through the tool-error recovery


def test_guard_inside_a_tool_body_is_swallowed_by_recovery_but_the_next_request_is_refused() -> None:
    # The trap the capability exists for: a guard *inside* the body is recovered by on_tool_execute_error.
    breaker, counter, recover = Breaker(), BodyCounter(), RecoverToolErrors()
    fake = ScriptedModel(loop=SAME)
    agent = Agent(fake, name="researcher", capabilities=[recover])

    @agent.tool_plain
    def lookup(q: str) -> str:
        breaker.before_tool("lookup", {"q": q})  # the wrong place: inside the body
        counter.hit("lookup", q)
        breaker.after_tool("lookup", {"q": q}, result="nothing new")
        return "nothing new"

    with pytest.raises(LoopGuardTripped) as info:
        guarded_run_sync(agent, "go", breaker)  # the capability's model pre-flight still sees the OPEN breaker

    # Either the in-body trip was swallowed by recovery (and the breaker, left open, refused the next
    # request), or the capability refused the repeat pre-flight before the body's own check could trip.
    assert recover.recovered <= 1
    assert info.value.reason in ("open", "loop")
    assert counter.count("lookup") <= 2


@pytest.mark.parametrize("as_model_retry", [False, True], ids=["returns-a-value", "raises-ModelRetry"])
def test_a_wrap_hook_that_catches_the_trip_is_overridden_loudly(as_model_retry: bool) -> None:
    breaker, counter = Breaker(), BodyCounter()
    agent = agent_with(ScriptedModel(loop=SAME), counter, SwallowInWrap(as_model_retry), LoopGuardCapability(breaker))

    with pytest.warns(LoopGuardWarning, match="caught the LoopGuardTripped"), pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("go")

    # The original refusal, raised at once: not UnexpectedModelBehavior, not a later "open".
    assert info.value.reason == "loop"
    assert counter.count("lookup") == 3


def test_model_retry_tool_loop_still_stops_on_loopguard_not_unexpected_model_behavior() -> None:
    breaker, counter, fake = Breaker(), BodyCounter(), ScriptedModel(loop=SAME)
    agent = Agent(fake, name="researcher", capabilities=[LoopGuardCapability(breaker)])

    @agent.tool_plain(retries=50)
    def lookup(q: str) -> str:
        counter.hit("lookup", q)
        raise ModelRetry("no result, try again")

    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("go")

    assert info.value.reason == "loop"
    assert counter.count("lookup") == 3


def test_post_response_token_usage_limits_warn_without_a_breaker_token_ceiling() -> None:
    counter = BodyCounter()
    agent = agent_with(ScriptedModel(["fine"]), counter)

    with pytest.warns(LoopGuardWarning, match="only after each response"):
        guarded_run_sync(agent, "go", Breaker(), usage_limits=UsageLimits(total_tokens_limit=10_000))


def test_no_warning_when_the_breaker_has_its_own_token_ceiling() -> None:
    agent = agent_with(ScriptedModel(["fine"]), BodyCounter())
    result = guarded_run_sync(
        agent, "go", Breaker(max_tokens=50_000), usage_limits=UsageLimits(total_tokens_limit=10_000)
    )
    assert result.output == "fine"  # pytest turns any LoopGuardWarning into an error


def test_guarded_run_warns_when_it_replaces_an_agent_guard_on_another_breaker() -> None:
    agent = agent_with(ScriptedModel(["fine"]), BodyCounter(), LoopGuardCapability(Breaker()))

    with pytest.warns(LoopGuardWarning, match="different breaker"):
        guarded_run_sync(agent, "go", Breaker())


def test_two_guards_with_one_id_and_different_breakers_are_refused() -> None:
    with pytest.raises(ValueError, match="give each its own id"):
        agent_with(
            ScriptedModel(["fine"]), BodyCounter(), LoopGuardCapability(Breaker()), LoopGuardCapability(Breaker())
        )


def test_two_guards_with_their_own_ids_both_check() -> None:
    first, second = Breaker(), Breaker(max_turns=1)
    agent = agent_with(
        ScriptedModel([SAME, "fine"]),
        BodyCounter(),
        LoopGuardCapability(first, id="team"),
        LoopGuardCapability(second, id="me"),
    )
    with pytest.raises(LoopGuardTripped) as info:
        agent.run_sync("go")
    assert info.value.reason == "turn_ceiling"
    assert first.usage().turns == 2  # the first guard admitted the second request before the second refused


def test_import_without_pydantic_ai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "loopguard_pydantic_ai" or m.startswith("loopguard_pydantic_ai.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pydantic_ai", None)  # makes `import pydantic_ai` fail

    with pytest.raises(MissingExtra, match=r"loopguard-core\[pydantic-ai\]"):
        import loopguard_pydantic_ai  # noqa: F401
