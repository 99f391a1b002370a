"""The LangGraph "Testing your agent" example (docs/frameworks/langgraph.md) runs as documented.

LangGraph graphs use ``loopguard_langchain.testing.ScriptedChatModel``; its own tests are in
``tests/integrations/langchain/test_testing_kit.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langgraph.prebuilt", reason="needs the langgraph extra: pip install 'loopguard-core[langgraph]'")

from ..doc_examples import markdown_example, run_example


def test_the_documented_example_runs() -> None:
    assert run_example(markdown_example("langgraph.md")) == ["test_my_graph_is_stopped_when_it_loops"]
