"""How an outcome becomes bytes at rest and comes back for a repeat."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

__all__ = ["JSONSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns an outcome into bytes and back. ``dumps`` raises (any exception) for a value it cannot store."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """The default: JSON (UTF-8). A repeat gets back what JSON gives back: tuples become lists, dict keys
    become strings. Anything else (a pydantic model, a dataclass, an SDK object) needs your own serializer."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))

    def __repr__(self) -> str:
        return "JSONSerializer()"
