"""What a tool's name (and, for a shell, its command) says about it, when nobody declared it.

Declarations (:class:`loopguard_core.tools.ToolPolicy`, from you or from the framework's MCP annotations and
tool metadata) always win over this inference, field by field.

Loop detection uses three of these facts: a **poll** may see the same answer many times while it waits, a
**no-op** (``echo``, a comment, a ``think`` tool) never counts as progress between two repeats, and
**paging** calls (``scroll_down``) are meant to show something new each time, so only an identical answer
makes them repeats.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from ..tools import ToolPolicy

__all__ = ["command_of", "infer_policy", "is_noop_command"]


# -- inference from the name ----------------------------------------------------------------------------
_POLL = re.compile(r"status|poll|progress|wait|health|heartbeat|is_?done|is_?ready|check_?job")
_NOOP = re.compile(r"^(think|thought|reflect|reflection|note|notes|scratchpad|plan|comment|log_thought)$")
_PAGING = re.compile(r"scroll|page_?(down|up)|next_?page|prev(ious)?_?page|load_?more|show_?more")
_READ = re.compile(r"^(get|read|list|search|find|fetch|lookup|query|show|view|open|describe|count|cat|grep)")
_SHELL = re.compile(r"bash|shell|terminal|command|cmd|exec|execute|run_?(?:shell|command)|sh$|powershell")


@functools.lru_cache(maxsize=4096)
def infer_policy(tool: str, poll_pattern: str = _POLL.pattern) -> ToolPolicy:
    """What a tool's name says about it (case folded). ``poll_pattern`` matches status-poll names."""
    name = tool.casefold()
    poll = poll_pattern != "" and re.search(poll_pattern, name) is not None
    return ToolPolicy(
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
