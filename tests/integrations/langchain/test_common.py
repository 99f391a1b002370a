"""The translations the LangChain adapters rely on: output caps, model names, usage, missing extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict

from loopguard_langchain._common import model_cap, model_facts, model_name, tool_outcome, usage_of
from loopguard_langchain.testing import ScriptedChatModel


def test_output_cap_comes_from_settings_then_bound_kwargs_then_the_model() -> None:
    plain = ScriptedChatModel()
    assert model_cap(plain) == 0
    assert model_cap(ScriptedChatModel(max_tokens=512)) == 512
    assert model_cap(plain.bind(max_tokens=256)) == 256
    assert model_cap(ScriptedChatModel(max_tokens=512), {"max_tokens": 64}) == 64
    assert model_name(plain.bind(stop=["x"])) == "fake-scripted"


class _PropertyModel:
    """Not a pydantic model: a name behind a property, a cap in an instance attribute."""

    def __init__(self) -> None:
        self.max_output_tokens = 99

    @property
    def model(self) -> str:
        return "from-a-property"


class _StopsAtTheAnswer:
    """Properties past the first answer raise: reading them would break the call (the lookup must stop)."""

    model_name = "first-name"
    max_tokens = 10

    @property
    def model(self) -> str:
        raise RuntimeError("read past the name")

    @property
    def max_output_tokens(self) -> int:
        raise RuntimeError("read past the cap")


class _ExtraModel(BaseModel):
    """A pydantic model that keeps unknown keys as extras: a name field set to None, the cap only as an extra."""

    model_config = ConfigDict(extra="allow")
    model_name: str | None = None
    model: str = "field-name"


class _InstanceAttributes:
    """Plain instance attributes only: read from the instance's dict in one pass."""

    def __init__(self) -> None:
        self.model_id, self.num_predict = "instance-name", 7


def test_model_facts_peels_the_bindings_once_with_the_same_answers() -> None:
    extra = ScriptedChatModel(max_tokens=512)
    cases = [
        (ScriptedChatModel(), None, ("fake-scripted", 0)),
        (ScriptedChatModel(max_tokens=512), None, ("fake-scripted", 512)),
        (ScriptedChatModel(max_tokens=512).bind(max_tokens=256, model="bound-name"), None, ("bound-name", 256)),
        (extra.bind(stop=["x"]).bind(max_tokens=0), {"max_completion_tokens": 64}, ("fake-scripted", 64)),
        (ScriptedChatModel(max_tokens=512), {"max_tokens": True}, ("fake-scripted", 512)),  # a bool is no cap
        (_PropertyModel(), None, ("from-a-property", 99)),
        (_StopsAtTheAnswer(), None, ("first-name", 10)),
        (object(), None, (None, 0)),
        (_ExtraModel(max_new_tokens=33, deployment_name="extra-name"), None, ("field-name", 33)),
        (_ExtraModel(model_name="named", max_tokens=0, max_output_tokens=5), None, ("named", 5)),
        (_InstanceAttributes(), None, ("instance-name", 7)),
        (ScriptedChatModel().bind(stop=["x"]), {"num_predict": 3}, ("fake-scripted", 3)),
    ]
    for model, settings, expected in cases:
        assert model_facts(model, settings) == expected
        assert (model_name(model), model_cap(model, settings)) == expected


def test_usage_and_tool_outcomes() -> None:
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert usage_of([AIMessage("a", usage_metadata=usage)]) == (7, 3)
    assert usage_of([AIMessage("a")]) is None
    assert tool_outcome(ToolMessage("ok", tool_call_id="1")) == ("ok", None)
    assert tool_outcome(ToolMessage("bad", tool_call_id="1", status="error")) == (None, "bad")
    command = Command(update={"messages": [ToolMessage("via command", tool_call_id="1")]})
    assert tool_outcome(command) == ("via command", None)


def test_importing_the_adapter_without_langchain_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['langchain'] = None\n"
        "from loopguard_core import MissingExtra\n"
        "try:\n    import loopguard_langchain\nexcept MissingExtra as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "loopguard-core[langchain]"' in out
