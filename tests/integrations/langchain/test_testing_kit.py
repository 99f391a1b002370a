"""loopguard_langchain.testing.ScriptedChatModel: the documented test, and what the adapter tests do not cover."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage

import loopguard_langchain.testing
from loopguard_core import Breaker
from loopguard_core.testing import BodyCounter, ScriptExhausted
from loopguard_langchain import LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

from ..doc_examples import docstring_example, markdown_example, run_example
from .helpers import counted_tools, user


def test_the_documented_example_runs_and_the_docs_show_it_verbatim() -> None:
    example = docstring_example(loopguard_langchain.testing)
    assert markdown_example("langchain.md") == example.replace("'''", '"""')
    assert run_example(example) == ["test_my_agent_is_stopped_when_it_loops"]


def test_answers_carry_tool_calls_text_and_usage() -> None:
    model = ScriptedChatModel([("lookup", {"q": "a"}), [("lookup", {"q": "b"}), ("fetch_page", {"page": 2})], "done"])

    first = model.invoke([HumanMessage("go")])
    both = model.invoke("go on")
    final = model.invoke("and?")

    assert isinstance(first, AIMessage) and [c["name"] for c in first.tool_calls] == ["lookup"]
    assert first.tool_calls[0]["args"] == {"q": "a"}
    assert [(c["name"], c["args"]) for c in both.tool_calls] == [("lookup", {"q": "b"}), ("fetch_page", {"page": 2})]
    assert len({c["id"] for c in [*first.tool_calls, *both.tool_calls]}) == 3  # ids are unique
    assert final.content == "done" and not final.tool_calls
    assert final.usage_metadata == {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
    assert model.calls == 3
    assert [m[0].content for m in model.seen] == ["go", "go on", "and?"]


def test_bind_tools_returns_the_same_model_and_both_keyword_and_positional_scripts_work() -> None:
    model = ScriptedChatModel(script=["hi"], input_tokens=7, output_tokens=3, max_tokens=256)
    assert model.bind_tools(counted_tools(BodyCounter())) is model
    assert model.invoke("x").usage_metadata["total_tokens"] == 10
    assert ScriptedChatModel(["positional"]).invoke("x").content == "positional"


async def test_async_agent_on_the_scripted_model() -> None:
    counter = BodyCounter()
    model = ScriptedChatModel([("alookup", {"q": "a"}), "found it"])
    agent = create_agent(model, counted_tools(counter), middleware=[LoopGuardMiddleware(Breaker())])

    result = await agent.ainvoke(user())

    assert result["messages"][-1].content == "found it"
    assert counter.count("alookup") == 1
    assert model.calls == 2


def test_an_unguarded_runaway_ends_in_script_exhausted_naming_the_model() -> None:
    counter = BodyCounter()
    agent = create_agent(ScriptedChatModel(loop=("lookup", {"q": "same"}), cap=5), counted_tools(counter))

    with pytest.raises(ScriptExhausted, match=r"ScriptedChatModel 'fake-scripted' has no answer for model call 6"):
        agent.invoke(user())
    assert counter.count("lookup") == 5  # nothing stopped it: the cap bounded the blast radius


def test_a_malformed_script_fails_at_construction() -> None:
    with pytest.raises(TypeError, match=r"script\[1\]"):
        ScriptedChatModel([("lookup", {"q": "a"}), ("lookup", "a")])
