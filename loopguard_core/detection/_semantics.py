"""What kind of tool a call goes to: read-only, mutating, destructive, idempotent, a status poll, a no-op.

Frameworks often say so already (MCP tool annotations ``readOnlyHint`` / ``destructiveHint`` /
``idempotentHint``, tool metadata); otherwise loopguard infers it from the tool's name and, for a shell
tool, from the command. A declaration always wins over inference, field by field.

Loop detection uses three of these facts: a **poll** may see the same answer many times while it waits, a
**no-op** (``echo``, a comment, a ``think`` tool) never counts as progress between two repeats, and
**paging** calls (``scroll_down``) are meant to show something new each time, so only an identical answer
makes them repeats. The other facts are carried for the tool policies built on them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["ToolSemantics", "command_of", "infer_semantics", "is_noop_command"]


@dataclass(frozen=True)
class ToolSemantics:
    """Facts about a tool; ``None`` means "not declared" (inference or the default decides)."""

    #: only reads (MCP ``readOnlyHint``)
    read_only: bool | None = None
    #: may destroy or overwrite something (MCP ``destructiveHint``)
    destructive: bool | None = None
    #: calling it again with the same arguments has no further effect (MCP ``idempotentHint``)
    idempotent: bool | None = None
    #: reports the status of something that changes on its own (a job, a deploy): patience while waiting
    poll: bool | None = None
    #: does nothing and learns nothing (``echo``, a comment, a ``think`` tool): never progress
    noop: bool | None = None
    #: each call is meant to show the next part of something (``scroll_down``, ``next_page``)
    paging: bool | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"ToolSemantics.{f.name} must be True, False or None, got {value!r}")

    def over(self, base: ToolSemantics) -> ToolSemantics:
        """These declarations, with ``base`` filling in what they leave undeclared."""
        changes = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(base, **changes) if changes else base

    @classmethod
    def from_mcp(cls, annotations: Any) -> ToolSemantics:
        """From MCP tool annotations (a mapping or an object with ``readOnlyHint`` ... attributes)."""
        return cls(
            read_only=_hint(annotations, "readOnlyHint", "read_only_hint"),
            destructive=_hint(annotations, "destructiveHint", "destructive_hint"),
            idempotent=_hint(annotations, "idempotentHint", "idempotent_hint"),
        )

    @classmethod
    def from_metadata(cls, metadata: Any) -> ToolSemantics:
        """From a framework's tool metadata: MCP annotation keys, an ``annotations`` entry holding them,
        and loopguard's own keys (``{"loopguard": {"poll": True}}`` or top-level ``poll`` / ``noop`` ...)."""
        if not isinstance(metadata, Mapping):
            return cls()
        declared = cls.from_mcp(metadata)
        nested = metadata.get("annotations")
        if nested is not None:
            declared = declared.over(cls.from_mcp(nested))
        own = metadata.get("loopguard")
        source = own if isinstance(own, Mapping) else metadata
        values = {f.name: source.get(f.name) for f in fields(cls) if isinstance(source.get(f.name), bool)}
        return cls(**values).over(declared) if values else declared


def _hint(annotations: Any, *names: str) -> bool | None:
    for name in names:
        value = annotations.get(name) if isinstance(annotations, Mapping) else getattr(annotations, name, None)
        if isinstance(value, bool):
            return value
    return None


# -- inference from the name ----------------------------------------------------------------------------
_POLL = re.compile(r"status|poll|progress|wait|health|heartbeat|is_?done|is_?ready|check_?job")
_NOOP = re.compile(r"^(think|thought|reflect|reflection|note|notes|scratchpad|plan|comment|log_thought)$")
_PAGING = re.compile(r"scroll|page_?(down|up)|next_?page|prev(ious)?_?page|load_?more|show_?more")
_READ = re.compile(r"^(get|read|list|search|find|fetch|lookup|query|show|view|open|describe|count|cat|grep)")
_SHELL = re.compile(r"bash|shell|terminal|command|cmd|exec|execute|run_?(?:shell|command)|sh$|powershell")


@functools.lru_cache(maxsize=4096)
def infer_semantics(tool: str, poll_pattern: str = _POLL.pattern) -> ToolSemantics:
    """What a tool's name says about it (case folded). ``poll_pattern`` matches status-poll names."""
    name = tool.casefold()
    poll = poll_pattern != "" and re.search(poll_pattern, name) is not None
    return ToolSemantics(
        read_only=True if _READ.search(name) else None,
        poll=True if poll else None,
        noop=True if _NOOP.match(name) else None,
        paging=True if _PAGING.search(name) else None,
    )


@functools.lru_cache(maxsize=4096)
def is_shell_tool(tool: str) -> bool:
    return _SHELL.search(tool.casefold()) is not None


def command_of(tool: str, args: Any) -> str | None:
    """The shell command a call runs, when the tool is a shell (``{"command": "..."}`` and the like)."""
    if isinstance(args, str):
        return args if is_shell_tool(tool) else None
    if not isinstance(args, Mapping) or len(args) > 4:
        return None
    for key in ("command", "cmd", "script", "input", "args"):
        value = args.get(key)
        if isinstance(value, str):
            return value if (key in ("command", "cmd") or is_shell_tool(tool)) else None
    return None


# A command that only prints a literal or is a comment: it changes nothing and learns nothing.
_PRINT_ONLY = re.compile(r"^\s*(?:echo|printf|true|:)(?:\s|$)")
_SHELL_EFFECT = re.compile(r"[<>|;&`]|\$\(")


def is_noop_command(command: str) -> bool:
    """``echo "done"``, ``printf ...``, ``true``, ``: ...`` or only comments (no redirection, pipe,
    substitution or second command)."""
    lines = [line for line in command.strip().splitlines() if line.strip()]
    if not lines:
        return True
    if all(line.lstrip().startswith("#") for line in lines):
        return True
    return len(lines) == 1 and _PRINT_ONLY.match(lines[0]) is not None and not _SHELL_EFFECT.search(lines[0])
