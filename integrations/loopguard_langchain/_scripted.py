"""A tiny scripted chat model for ``loopguard demo`` (no network): it asks for the same tool call forever."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["RunawayChatModel"]


class RunawayChatModel(BaseChatModel):
    """Requests ``tool(args)`` on every turn (up to ``cap`` turns, a bounded blast radius), with usage."""

    tool: str = "search_docs"
    args: dict[str, Any] = {"query": "refund policy"}  # noqa: RUF012 - pydantic copies field defaults
    cap: int = 25
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "loopguard-runaway"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RunawayChatModel:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        usage = {"input_tokens": 350, "output_tokens": 40, "total_tokens": 390}
        if self.calls > self.cap:
            message = AIMessage(content="giving up", usage_metadata=usage)
        else:
            call = {"name": self.tool, "args": dict(self.args), "id": f"call_{self.calls}", "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])
