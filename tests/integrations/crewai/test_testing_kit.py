"""loopguard_crewai.testing.ScriptedLLM: the documented test, and what the adapter tests do not cover."""

from __future__ import annotations

import pytest

pytest.importorskip("crewai", reason="needs the crewai extra: pip install 'loopguard-core[crewai]'")


import loopguard_crewai.testing
from loopguard_core.testing import BodyCounter, ScriptExhausted
from loopguard_crewai.testing import ScriptedLLM

from ..doc_examples import docstring_example, markdown_example, run_example
from .helpers import counted_tool, one_agent_crew


def test_the_documented_example_runs_and_the_docs_show_it_verbatim() -> None:
    example = docstring_example(loopguard_crewai.testing)
    assert markdown_example("crewai.md") == example.replace("'''", '"""')
    assert run_example(example) == ["test_my_crew_is_stopped_when_it_loops"]


@pytest.mark.parametrize("native", [True, False], ids=["native-tool-calls", "react-text"])
def test_a_scripted_run_reaches_its_final_answer_with_token_usage(native: bool) -> None:
    counter = BodyCounter()
    llm = ScriptedLLM([("lookup", {"q": "a"}), "Final Answer: it is a"], native=native, prompt_tokens=30)

    result = one_agent_crew([counted_tool(counter)], llm).kickoff()

    assert str(result) == "it is a"
    assert counter.runs == [("lookup", {"q": "a"})]
    assert llm.calls == 2
    assert llm.get_token_usage_summary().total_tokens == 2 * (30 + 20)


def test_raw_answers_for_both_paths() -> None:
    native = ScriptedLLM([[("a", {"n": 1}), ("b", {})], "done"])
    calls = native.call("go")
    assert [c["function"]["name"] for c in calls] == ["a", "b"]
    assert calls[0]["function"]["arguments"] == '{"n": 1}'
    assert native.call("go") == "done"

    react = ScriptedLLM([("a", {"n": 1}), "done"], native=False)
    assert react.call("go").endswith('Action: a\nAction Input: {"n": 1}')
    assert react.call("go").endswith("Final Answer: done")
    assert not react.supports_function_calling()


def test_an_unguarded_runaway_ends_in_script_exhausted_naming_the_model() -> None:
    counter = BodyCounter()
    llm = ScriptedLLM(loop=("lookup", {"q": "same"}), cap=4)

    with pytest.raises(ScriptExhausted, match=r"ScriptedLLM 'fake-scripted' has no answer for model call 5"):
        one_agent_crew([counted_tool(counter)], llm, max_retry_limit=0).kickoff()
    assert llm.calls == 4


def test_react_text_cannot_carry_parallel_calls() -> None:
    with pytest.raises(ValueError, match="one tool call per answer"):
        ScriptedLLM([[("a", {}), ("b", {})]], native=False)
