"""Watch a streamed Messages response as the caller reads it: check each ``tool_use`` block the moment it
is complete and record the usage at the final message, before the bytes that complete them are handed on.

Checking at ``content_block_stop`` (not only at ``message_stop``) matters for the beta tool runner's
``run_tools_eagerly=True``, which runs a tool as soon as the stream has moved past its block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._body import ToolUse

__all__ = ["StreamWatch", "Usage"]

_CHARS_PER_TOKEN = 4


class Usage(NamedTuple):  # (not a frozen dataclass: one is built on every turn, see _body.ToolUse)
    """A response's usage: tokens by kind, and the model that answered."""

    input_tokens: int
    cache_creation: int
    cache_read: int
    output_tokens: int
    model: str | None


@dataclass
class _Block:
    id: str
    name: str
    input: Any
    json_text: str = ""


@dataclass
class StreamWatch:
    """Parses server-sent events from decoded response bytes; ``feed`` returns what became decidable."""

    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    usage_done: bool = False
    _buffer: bytes = b""
    _blocks: dict[int, _Block] = field(default_factory=dict)
    _output_chars: int = 0

    def feed(self, chunk: bytes) -> list[ToolUse | Usage]:
        self._buffer += chunk
        text = self._buffer.replace(b"\r\n", b"\n")
        steps: list[ToolUse | Usage] = []
        while b"\n\n" in text:
            raw, text = text.split(b"\n\n", 1)
            steps.extend(self._event(raw))
        self._buffer = text
        return steps

    def finish(self) -> list[ToolUse | Usage]:
        """At the end of the stream: the usage, if no ``message_stop`` delivered it."""
        steps: list[ToolUse | Usage] = []
        if self._buffer.strip():
            steps.extend(self._event(self._buffer.replace(b"\r\n", b"\n")))
            self._buffer = b""
        if not self.usage_done and (self.usage or self.model is not None):
            steps.append(self.take_usage())
        return steps

    def take_usage(self) -> Usage:
        """The usage so far (output estimated from the text seen if no count arrived yet); marks it recorded."""
        self.usage_done = True

        def count(key: str) -> int:
            value = self.usage.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

        output = count("output_tokens") or -(-self._output_chars // _CHARS_PER_TOKEN)
        return Usage(
            count("input_tokens"),
            count("cache_creation_input_tokens"),
            count("cache_read_input_tokens"),
            output,
            self.model,
        )

    def _event(self, raw: bytes) -> list[ToolUse | Usage]:
        data_lines = []
        for line in raw.decode("utf-8", "replace").split("\n"):
            if line.startswith("data:"):
                data_lines.append(line[5:].lstrip(" "))
        if not data_lines:
            return []
        try:
            data = json.loads("\n".join(data_lines))
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        return self._handle(data)

    def _handle(self, data: dict[str, Any]) -> list[ToolUse | Usage]:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            self.usage.update(message.get("usage") or {})
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = int(data.get("index", -1))
                self._blocks[index] = _Block(str(block.get("id", "")), str(block.get("name", "")), block.get("input"))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            open_block = self._blocks.get(int(data.get("index", -1)))
            if delta.get("type") == "input_json_delta" and open_block is not None:
                open_block.json_text += str(delta.get("partial_json", ""))
            for key in ("text", "thinking", "partial_json"):
                value = delta.get(key)
                if isinstance(value, str):
                    self._output_chars += len(value)
        elif kind == "content_block_stop":
            done = self._blocks.pop(int(data.get("index", -1)), None)
            if done is not None:
                return [ToolUse(done.id, done.name, _input(done))]
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop" and not self.usage_done:
            return [self.take_usage()]
        return []


def _input(block: _Block) -> Any:
    if block.json_text.strip():
        try:
            return json.loads(block.json_text)
        except ValueError:
            return block.json_text
    return block.input if block.input is not None else {}
