"""loopguard_anthropic.testing.ScriptedAPI: the documented test, and what the adapter tests do not cover."""

from __future__ import annotations

import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

import anthropic
from anthropic import beta_tool

import loopguard_anthropic.testing
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core.testing import BodyCounter, ScriptExhausted
from tests.integrations.doc_examples import docstring_example, markdown_example, run_example

PROMPT = [{"role": "user", "content": "go"}]


def test_the_documented_example_runs_and_the_docs_show_it_verbatim() -> None:
    example = docstring_example(loopguard_anthropic.testing)
    assert markdown_example("anthropic.md") == example.replace("'''", '"""')
    assert run_example(example) == ["test_my_agent_is_stopped_when_it_loops"]


def test_replies_echo_the_model_carry_parallel_tool_uses_text_and_usage() -> None:
    api = ScriptedAPI([[("a", {"n": 1}), ("b", {})], "done"], usage=(11, 4))
    client = api.client()

    both = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=PROMPT)
    final = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=PROMPT)

    assert both.stop_reason == "tool_use" and both.model == "claude-haiku-4-5"
    assert [(block.name, block.input) for block in both.content] == [("a", {"n": 1}), ("b", {})]  # type: ignore[union-attr]
    assert len({block.id for block in both.content}) == 2  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.content[0].text == "done"  # type: ignore[union-attr]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 4)
    assert api.calls == api.http_attempts == len(api.bodies) == 2
    assert api.bodies[0]["max_tokens"] == 64


async def test_async_streams_deliver_the_same_script() -> None:
    api = ScriptedAPI([("a", {"n": 1}), "done"])
    client = api.async_client()

    async with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT) as stream:
        tool_use = await stream.get_final_message()
    async with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT) as stream:
        text = await stream.get_final_text()

    assert [(block.name, block.input) for block in tool_use.content] == [("a", {"n": 1})]  # type: ignore[union-attr]
    assert text == "done"
    assert api.calls == 2


def test_a_used_up_script_answers_400_with_a_clear_message_and_is_not_retried() -> None:
    api = ScriptedAPI(["only answer"])
    client = api.client()
    client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT)

    with pytest.raises(anthropic.BadRequestError, match=r"ScriptedAPI has no answer for model call 2"):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT)

    assert isinstance(api.exhausted, ScriptExhausted) and api.exhausted.call == 2
    assert api.http_attempts == 2  # a 400 is final: the SDK did not retry it
    assert api.calls == 1


def test_an_unguarded_runaway_tool_runner_ends_on_the_exhausted_script() -> None:
    counter = BodyCounter()

    @beta_tool
    def lookup(q: str) -> str:
        """Look something up."""
        counter.hit("lookup")
        return "nothing new"

    api = ScriptedAPI(loop=("lookup", {"q": "same"}), cap=5)
    runner = api.client().beta.messages.tool_runner(
        model="claude-sonnet-4-6", max_tokens=64, messages=PROMPT, tools=[lookup]
    )

    with pytest.raises(anthropic.BadRequestError, match="script is used up"):
        runner.until_done()
    assert counter.count("lookup") == 5
