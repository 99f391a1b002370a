"""Tool policies: declared once (by you or the framework), read by loop detection and the gates."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, ToolPolicy
from loopguard_core.testing import ScriptedCall, drive

LOOKUPS = [ScriptedCall("dns_lookup", {"name": "api.example.com"}, "93.184.216.34")] * 6


def test_names_suggest_what_nobody_declared() -> None:
    breaker = Breaker()
    assert breaker.tool_policy("job_status").poll is True
    assert breaker.tool_policy("scroll_down").paging is True
    assert breaker.tool_policy("think").noop is True
    assert breaker.tool_policy("get_invoice").read_only is True
    assert breaker.tool_policy("refund").needs_approval is False


def test_your_policy_feeds_loop_detection() -> None:
    assert drive(Breaker(), LOOKUPS).refused_at == 4
    patient = Breaker(tools={"dns_lookup": ToolPolicy(poll=True), "notes": {"readOnlyHint": True}})
    assert not drive(patient, LOOKUPS).tripped
    assert patient.tool_policy("notes").read_only is True


def test_framework_declarations_apply_and_yours_win_field_by_field() -> None:
    breaker = Breaker()
    breaker.declare_tool("dns_lookup", {"annotations": {"readOnlyHint": True}, "loopguard": {"poll": True}})
    assert breaker.tool_policy("dns_lookup").poll is True
    assert breaker.tool_policy("dns_lookup").read_only is True
    assert not drive(breaker, LOOKUPS).tripped

    mine = Breaker(tools={"dns_lookup": ToolPolicy(poll=False)})
    mine.declare_tool("dns_lookup", poll=True, read_only=True)
    assert mine.tool_policy("dns_lookup").poll is False  # yours
    assert mine.tool_policy("dns_lookup").read_only is True  # the framework's, where you said nothing
    assert drive(mine, LOOKUPS).refused_at == 4


def test_mcp_annotations_and_pydantic_ai_requires_approval_are_read() -> None:
    mcp = ToolPolicy.from_metadata({"annotations": {"destructiveHint": True, "idempotentHint": False}})
    assert (mcp.destructive, mcp.idempotent, mcp.read_only) == (True, False, None)
    assert mcp.needs_approval is False  # destructive alone is MCP's default for any write: not a gate
    assert ToolPolicy.from_metadata({"requires_approval": True}).needs_approval is True
    own = ToolPolicy.from_metadata({"loopguard": {"irreversible": True, "side_effect": True, "ttl_seconds": 60}})
    assert (own.irreversible, own.side_effect, own.ttl_seconds) == (True, True, 60)

    class Annotations:  # the MCP SDK's ToolAnnotations object
        readOnlyHint = True
        idempotentHint = True

    assert ToolPolicy.from_mcp(Annotations()).read_only is True
    assert ToolPolicy.from_metadata("not metadata") == ToolPolicy()


def test_describe_is_json_ready_and_names_callables() -> None:
    def show_recipient(args: object) -> str:
        return "to someone"

    described = ToolPolicy(irreversible=True, preview=show_recipient).describe()
    assert described == {"irreversible": True, "preview": show_recipient.__qualname__}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"poll": "yes"}, TypeError, "ToolPolicy.poll"),
        ({"preview": "to"}, TypeError, "ToolPolicy.preview"),
        ({"ttl_seconds": 0}, ValueError, "ttl_seconds"),
        ({"ttl_seconds": float("inf")}, ValueError, "ttl_seconds"),
        ({"ttl_seconds": True}, TypeError, "ttl_seconds"),
    ],
)
def test_bad_policies_say_what_to_fix(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ToolPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_declarations_say_what_to_fix() -> None:
    with pytest.raises(TypeError, match="tools"):
        Breaker(tools={"x": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="tools"):
        Breaker(tools=["x"])  # type: ignore[arg-type]
    breaker = Breaker()
    with pytest.raises(TypeError, match="declare_tool"):
        breaker.declare_tool("", poll=True)
    with pytest.raises(TypeError, match="ToolPolicy"):
        breaker.declare_tool("x", 3)  # type: ignore[arg-type]
