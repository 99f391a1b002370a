"""A scripted chat model for testing LangChain and LangGraph agents: no network, no API key.

``ScriptedChatModel`` is a real ``BaseChatModel``. Each call answers the next step of its script: a
``("tool", {args})`` pair is an ``AIMessage`` with one tool call, a list of pairs is parallel tool calls, a
``str`` is a final answer. ``loop=`` repeats one step after the script (a runaway agent) up to ``cap`` calls;
one call more raises :class:`~loopguard_core.testing.ScriptExhausted`, so an agent that was not stopped fails
the test instead of hanging it. Every answer carries ``usage_metadata`` (``input_tokens`` / ``output_tokens``),
``bind_tools`` returns the model itself, and ``invoke`` / ``ainvoke`` (and so ``create_agent``, LangGraph
graphs and the classic ``AgentExecutor``) all work. LangGraph users use the same model.

The test "my agent is stopped when it loops"::

    import pytest
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from loopguard_core import Breaker, LoopGuardTripped
    from loopguard_core.testing import BodyCounter
    from loopguard_langchain import LoopGuardMiddleware
    from loopguard_langchain.testing import ScriptedChatModel

    def test_my_agent_is_stopped_when_it_loops() -> None:
        counter = BodyCounter()

        @tool
        def search(q: str) -> str:
            '''Search the docs.'''
            counter.hit("search")
            return "nothing new"

        model = ScriptedChatModel(loop=("search", {"q": "refund policy"}))
        agent = create_agent(model, [search], middleware=[LoopGuardMiddleware(Breaker())])
        with pytest.raises(LoopGuardTripped) as trip:
            agent.invoke({"messages": [{"role": "user", "content": "refund?"}]})
        assert trip.value.reason == "loop"
        assert counter.count("search") == 3  # the fourth identical call never ran

``model.calls`` counts the calls the model really answered (a call refused pre-flight is not one) and
``model.seen`` keeps the messages each of them was sent.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

from loopguard_core.testing import ModelScript, ScriptExhausted, Step

__all__ = ["ScriptExhausted", "ScriptedChatModel", "Step"]

_ids = itertools.count(1)


class ScriptedChatModel(BaseChatModel):
    """A chat model that plays back a script of tool calls and final answers, with token usage.

    ``ScriptedChatModel([("search", {"q": "a"}), "found it"])`` or ``ScriptedChatModel(loop=("search", {...}))``.
    ``max_tokens`` is the model's own output cap (what a guard passes as ``max_output_tokens``). ``call_ids`` is how
    tool calls are named: ``"unique"`` (default, as OpenAI and Anthropic do), ``"per_answer"`` (``"<tool>:<n>"``
    counted from 0 in each answer, as Kimi K2/K3 servers do) or ``"constant"`` (one id for every call, as some
    llama.cpp builds do).
    """

    script: list[Any] = Field(default_factory=list)
    loop: Any = None
    cap: int = 30
    input_tokens: int = 100
    output_tokens: int = 20
    max_tokens: int | None = None
    model_name: str = "fake-scripted"
    call_ids: Literal["unique", "per_answer", "constant"] = "unique"

    _script: ModelScript = PrivateAttr()
    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _seen_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, script: Iterable[Step] = (), /, **data: Any) -> None:
        if "script" not in data:
            data["script"] = list(script)
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._script = ModelScript(
            self.script, loop=self.loop, cap=self.cap, owner=f"ScriptedChatModel {self.model_name!r}"
        )

    @property
    def calls(self) -> int:
        """How many times the model really answered (a call refused pre-flight does not count)."""
        return self._script.calls

    @property
    def seen(self) -> list[list[BaseMessage]]:
        """The messages each answered call was sent, in order (a copy)."""
        with self._seen_lock:
            return [list(messages) for messages in self._seen]

    @property
    def _llm_type(self) -> str:
        return "loopguard-scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        """The script decides which tools are called: binding tools changes nothing."""
        return self

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        turn = self._script.next_turn()
        with self._seen_lock:
            self._seen.append(list(messages))
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        if turn.text is not None:
            message = AIMessage(content=turn.text, usage_metadata=usage)
        else:
            calls = [
                {"name": name, "args": args, "id": self._call_id(name, n), "type": "tool_call"}
                for n, (name, args) in enumerate(turn.tool_calls)
            ]
            message = AIMessage(content="", tool_calls=calls, usage_metadata=usage)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": usage, "model_name": self.model_name},
        )

    def _call_id(self, name: str, n: int) -> str:
        if self.call_ids == "per_answer":
            return f"{name}:{n}"
        if self.call_ids == "constant":
            return "call_0"
        return f"call_{next(_ids)}"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._answer(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._answer(messages)
