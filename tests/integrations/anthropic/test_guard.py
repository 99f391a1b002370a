"""guard(): several agents on one breaker, ledger attribution, middleware order and misuse."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

import anthropic

from loopguard_anthropic import LoopGuardMiddleware, guard
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker, LoopGuardTripped, MissingExtra
from loopguard_core.testing import BodyCounter

MODEL = "claude-sonnet-4-6"

SAME = ("lookup", {"q": "same"})


def step(client: Any, messages: list[dict[str, Any]], counter: BodyCounter) -> None:
    """One agent turn: ask the model, run its tool call, append both to the conversation."""
    message = client.messages.create(model=MODEL, max_tokens=128, messages=messages)
    block = message.content[0]
    counter.hit(block.name, block.input)
    messages.append({"role": "assistant", "content": [block.model_dump()]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "same"}]})


def test_two_agents_on_one_breaker_share_loop_memory_and_budget() -> None:
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    researcher = guard(api.client(), breaker, agent="researcher")
    writer = guard(api.client(), breaker, agent="writer")
    research: list[dict[str, Any]] = [{"role": "user", "content": "research"}]
    writing: list[dict[str, Any]] = [{"role": "user", "content": "write"}]

    def team() -> None:
        step(researcher, research, counter)
        step(researcher, research, counter)
        step(researcher, research, counter)
        step(writer, writing, counter)  # the writer repeats the researcher's call: the fourth identical one

    with breaker.run(), pytest.raises(LoopGuardTripped) as info:
        team()

    assert info.value.agent == "writer"
    assert counter.count() == 3
    assert breaker.usage().turns == 4


def test_each_agents_calls_are_attributed_in_the_ledger(tmp_path: Path) -> None:
    from loopguard_core.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.db")
    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(ledger=ledger), BodyCounter()
    researcher = guard(api.client(), breaker, agent="researcher")
    writer = guard(api.client(), breaker, agent="writer")
    research: list[dict[str, Any]] = [{"role": "user", "content": "research"}]
    writing: list[dict[str, Any]] = [{"role": "user", "content": "write"}]

    def team() -> None:
        step(researcher, research, counter)
        step(writer, writing, counter)
        step(researcher, research, counter)
        step(writer, writing, counter)  # the researcher's second copy is still in flight: the fourth is refused

    with breaker.run(), pytest.raises(LoopGuardTripped):
        team()

    rows = [dataclasses.asdict(row) for row in ledger.rows()]
    seen = {(r["origin"], r["agent"], r["tool"]) for r in rows}
    assert {
        ("model", "researcher", None),
        ("model", "writer", None),
        ("tool", "researcher", "lookup"),
        ("tool", "writer", "lookup"),
    } <= seen
    trips = [(r["agent"], r["tool"], r["breach_reason"]) for r in rows if r["origin"] == "breaker"]
    assert trips == [("writer", "lookup", "loop")]
    assert counter.count() == 3
    assert len({r["session_id"] for r in rows}) == 1
    assert ledger.verify().ok


def test_guard_goes_first_so_other_middleware_cannot_swallow_the_trip() -> None:
    swallowed: list[str] = []

    def forgiving(request: Any, call_next: Any) -> Any:  # a user middleware that sees (and could hide) errors
        try:
            return call_next(request)
        except Exception as exc:
            swallowed.append(type(exc).__name__)
            raise

    api, breaker, counter = ScriptedAPI(loop=SAME), Breaker(), BodyCounter()
    client = guard(api.client(middleware=[forgiving]), breaker)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]

    assert isinstance(client._middleware[0], LoopGuardMiddleware)

    def loop() -> None:
        for _ in range(5):
            step(client, messages, counter)

    with pytest.raises(LoopGuardTripped):
        loop()
    assert swallowed == []  # the trip never passed through the user's middleware
    assert counter.count() == 3


def test_guard_returns_a_guarded_copy_and_leaves_the_original_alone() -> None:
    api, breaker = ScriptedAPI(["a", "b"]), Breaker(max_turns=1)
    original = api.client()
    guarded = guard(original, breaker)

    assert guarded is not original
    original.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert breaker.usage().turns == 0  # the original client is not guarded: use the returned one
    guarded.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert breaker.usage().turns == 1


def test_guarding_twice_with_the_same_breaker_does_not_count_twice() -> None:
    api, breaker = ScriptedAPI(["a"]), Breaker()
    client = guard(guard(api.client(), breaker), breaker)

    client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "x"}])

    assert sum(isinstance(m, LoopGuardMiddleware) for m in client._middleware) == 1
    assert breaker.usage().turns == 1


def test_async_client_gets_an_async_middleware() -> None:
    client = guard(ScriptedAPI().async_client(), Breaker())
    assert isinstance(client, anthropic.AsyncAnthropic)
    assert isinstance(client._middleware[0], LoopGuardMiddleware)


def test_guard_refuses_what_it_cannot_guard() -> None:
    with pytest.raises(TypeError, match="needs a loopguard_core"):
        guard(ScriptedAPI().client(), "breaker")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"anthropic>=2\.11"):
        guard(object(), Breaker())
    with pytest.raises(TypeError, match="non-empty str"):
        guard(ScriptedAPI().client(), Breaker(), agent="")


def test_non_messages_calls_pass_through_unchecked() -> None:
    api, breaker = ScriptedAPI(), Breaker(max_turns=1)
    client = guard(api.client(), breaker)

    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):  # the scripted API only knows the Messages endpoints
        client.models.list()

    assert counted.input_tokens == 42
    assert api.counted == 1
    assert breaker.usage().turns == 0


def test_import_without_anthropic_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "loopguard_anthropic" or m.startswith("loopguard_anthropic.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "anthropic", None)

    with pytest.raises(MissingExtra, match=r"loopguard-core\[anthropic\]"):
        import loopguard_anthropic  # noqa: F401
