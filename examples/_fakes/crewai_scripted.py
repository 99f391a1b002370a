"""A scripted CrewAI LLM for the CrewAI examples: no network, no API key.

It answers each call from ``script`` (a ``(tool, args)`` pair is a native tool call, a ``str`` the final
answer) and then repeats ``loop`` (when set): a runaway agent. It reports token usage the way CrewAI's
own providers do, so ``llm.get_token_usage_summary()`` grows call by call.
"""

from __future__ import annotations

import json
from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import Field

from loopguard_core import estimate_tokens

__all__ = ["ScriptedLLM"]


class ScriptedLLM(BaseLLM):
    model: str = "scripted-runaway"
    script: list[Any] = Field(default_factory=list)
    loop: Any = None
    cap: int = 25  # a bounded blast radius if the guard ever failed
    calls: int = 0

    def __init__(self, **data: Any) -> None:
        data.setdefault("model", "scripted-runaway")
        super().__init__(**data)

    def supports_function_calling(self) -> bool:
        return True

    def get_input_tokens_count(self, messages: Any, *args: Any, **kwargs: Any) -> int:
        return estimate_tokens(messages)

    def call(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        index, self.calls = self.calls, self.calls + 1
        turn = self.script[index] if index < len(self.script) else self.loop
        if turn is None or index >= self.cap:
            turn = "I give up."
        self._track_token_usage_internal({"prompt_tokens": 420, "completion_tokens": 35, "total_tokens": 455})
        if isinstance(turn, str):
            return turn
        name, args = turn
        function = {"name": name, "arguments": json.dumps(args)}
        return [{"id": f"call_{self.calls}", "type": "function", "function": function}]
