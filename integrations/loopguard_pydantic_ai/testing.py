"""A scripted model for testing Pydantic AI agents: no network, no API key.

``ScriptedModel`` is a Pydantic AI ``FunctionModel`` (hand it to ``Agent`` like any model). Each request answers
the next step of its script: a ``("tool", {args})`` pair is a tool call, a list of pairs is parallel tool calls,
a ``str`` is the final answer. ``loop=`` repeats one step after the script (a runaway agent) up to ``cap``
requests; one request more raises :class:`~loopguard_core.testing.ScriptExhausted`, so an agent that was not
stopped fails the test instead of hanging it. Every response carries ``RequestUsage`` like a real provider's.
Both paths work: ``run`` / ``run_sync`` get whole responses, ``run_stream`` (and ``event_stream_handler``) get
the same answers streamed.

The test "my agent is stopped when it loops"::

    import pytest
    from pydantic_ai import Agent
    from loopguard_core import Breaker, LoopGuardTripped
    from loopguard_core.testing import BodyCounter
    from loopguard_pydantic_ai import LoopGuardCapability
    from loopguard_pydantic_ai.testing import ScriptedModel

    def test_my_agent_is_stopped_when_it_loops() -> None:
        counter = BodyCounter()
        model = ScriptedModel(loop=("search", {"q": "refund policy"}))
        agent = Agent(model, capabilities=[LoopGuardCapability(Breaker())])

        @agent.tool_plain
        def search(q: str) -> str:
            counter.hit("search")
            return "nothing new"

        with pytest.raises(LoopGuardTripped) as trip:
            agent.run_sync("refund?")
        assert trip.value.reason == "loop"
        assert counter.count("search") == 3  # the fourth identical call never ran

``model.calls`` counts the requests the model really answered (a request refused pre-flight is not one);
``model.seen`` keeps the messages each of them was sent, and ``model.seen_settings`` the model settings each
carried (``max_tokens`` among them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.profiles import ModelProfileSpec
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from loopguard_core.testing import ModelScript, ScriptedTurn, ScriptExhausted, Step

__all__ = ["ScriptExhausted", "ScriptedModel", "Step"]


class ScriptedModel(FunctionModel):
    """A ``FunctionModel`` that plays back a script of tool calls and final answers, with usage.

    ``ScriptedModel([("search", {"q": "a"}), "found it"])`` or ``ScriptedModel(loop=("search", {...}))``.
    ``usage`` is the ``(input_tokens, output_tokens)`` every whole response reports; ``model_name`` is what the
    model calls itself (name a real model, e.g. ``"claude-sonnet-4-6"``, to have a USD ceiling price it).
    """

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        loop: Step | None = None,
        cap: int = 30,
        usage: tuple[int, int] = (100, 20),
        model_name: str = "scripted",
        profile: ModelProfileSpec | None = None,
        settings: ModelSettings | None = None,
    ) -> None:
        self._script = ModelScript(script, loop=loop, cap=cap, owner=f"ScriptedModel {model_name!r}")
        self._usage_per_response = usage
        self._seen_lock = threading.Lock()
        self.seen: list[list[ModelMessage]] = []
        self.seen_settings: list[dict[str, Any] | None] = []
        super().__init__(
            self._answer, stream_function=self._stream, model_name=model_name, profile=profile, settings=settings
        )

    @property
    def calls(self) -> int:
        """How many requests the model really answered (a request refused pre-flight does not count)."""
        return self._script.calls

    def _next(self, messages: list[ModelMessage], info: AgentInfo) -> ScriptedTurn:
        turn = self._script.next_turn()
        with self._seen_lock:
            self.seen.append(list(messages))
            self.seen_settings.append(dict(info.model_settings) if info.model_settings else None)
        return turn

    async def _answer(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = self._next(messages, info)
        usage = RequestUsage(input_tokens=self._usage_per_response[0], output_tokens=self._usage_per_response[1])
        if turn.text is not None:
            return ModelResponse(parts=[TextPart(turn.text)], usage=usage)
        return ModelResponse(parts=[ToolCallPart(tool, args) for tool, args in turn.tool_calls], usage=usage)

    async def _stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        turn = self._next(messages, info)
        if turn.text is not None:
            yield turn.text
            return
        yield {
            n: DeltaToolCall(name=tool, json_args=json.dumps(args)) for n, (tool, args) in enumerate(turn.tool_calls)
        }
