"""loopguard_pydantic_ai.testing.ScriptedModel: the documented test, and what the adapter tests do not cover."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic_ai", reason="needs the pydantic-ai extra: pip install 'loopguard-core[pydantic-ai]'")

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.function import FunctionModel

import loopguard_pydantic_ai.testing
from loopguard_core.testing import BodyCounter, ScriptExhausted
from loopguard_pydantic_ai.testing import ScriptedModel
from tests.integrations.doc_examples import docstring_example, markdown_example, run_example


def test_the_documented_example_runs_and_the_docs_show_it_verbatim() -> None:
    example = docstring_example(loopguard_pydantic_ai.testing)
    assert markdown_example("pydantic-ai.md") == example.replace("'''", '"""')
    assert run_example(example) == ["test_my_agent_is_stopped_when_it_loops"]


def counted_agent(model: ScriptedModel, counter: BodyCounter) -> Agent:
    agent = Agent(model)

    @agent.tool_plain
    def lookup(q: str) -> str:
        counter.hit("lookup", {"q": q})
        return f"about {q}"

    return agent


def test_a_scripted_model_is_a_function_model_with_usage_and_parallel_calls() -> None:
    counter = BodyCounter()
    model = ScriptedModel([[("lookup", {"q": "a"}), ("lookup", {"q": "b"})], "both read"], usage=(7, 3))
    assert isinstance(model, FunctionModel)

    result = counted_agent(model, counter).run_sync("go", model_settings={"max_tokens": 64})

    assert result.output == "both read"
    assert sorted(args["q"] for _, args in counter.runs) == ["a", "b"]
    first = next(m for m in result.all_messages() if isinstance(m, ModelResponse))
    assert [p.tool_name for p in first.parts if isinstance(p, ToolCallPart)] == ["lookup", "lookup"]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (14, 6)
    assert model.calls == 2
    assert model.seen_settings == [{"max_tokens": 64}, {"max_tokens": 64}]
    assert model.model_name == "scripted"


async def test_the_same_model_answers_both_whole_and_streamed_runs() -> None:
    counter = BodyCounter()
    model = ScriptedModel([("lookup", {"q": "a"}), "whole", ("lookup", {"q": "b"}), "streamed"])
    agent = counted_agent(model, counter)

    assert (await agent.run("first")).output == "whole"
    async with agent.run_stream("second") as streamed:
        assert await streamed.get_output() == "streamed"

    assert [args["q"] for _, args in counter.runs] == ["a", "b"]
    assert model.calls == 4


def test_an_unguarded_runaway_ends_in_script_exhausted_naming_the_model() -> None:
    counter = BodyCounter()
    model = ScriptedModel(loop=("lookup", {"q": "same"}), cap=5, model_name="claude-sonnet-4-6")

    with pytest.raises(ScriptExhausted, match=r"ScriptedModel 'claude-sonnet-4-6' has no answer for model call 6"):
        counted_agent(model, counter).run_sync("go")
    assert counter.count("lookup") == 5


def test_a_malformed_script_fails_at_construction() -> None:
    with pytest.raises(TypeError, match=r"loop"):
        ScriptedModel(loop=("lookup",))  # type: ignore[arg-type]
