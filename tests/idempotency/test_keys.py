"""Idempotency keys: stable across processes and time, different for different runs, tools and arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopguard_core.idempotency import args_digest, idempotency_key, user_key

REPO = Path(__file__).resolve().parents[2]
ARGS = {"order_id": "order-42", "amount_cents": 1500}


def test_the_key_is_the_same_in_another_process_and_later() -> None:
    here = idempotency_key("run-1", "send_refund", ARGS)
    time.sleep(0.01)
    code = (
        "from loopguard_core.idempotency import idempotency_key;"
        "print(idempotency_key('run-1', 'send_refund', {'amount_cents': 1500, 'order_id': 'order-42'}))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "7"},
    ).stdout.strip()
    assert here == there == idempotency_key("run-1", "send_refund", ARGS)
    assert len(here) == 32 and int(here, 16) >= 0


@pytest.mark.parametrize(
    ("run_id", "tool", "args"),
    [
        ("run-2", "send_refund", ARGS),
        ("run-1", "send_email", ARGS),
        ("run-1", "send_refund", {**ARGS, "amount_cents": 1501}),
        ("run-1", "send_refund", {**ARGS, "order_id": "ORDER-42"}),  # case is meaning for a request
        ("run-1", "send_refund", {**ARGS, "amount_cents": 1500.0}),  # so is 1500 vs 1500.0
        ("run-1", "send_refund", {**ARGS, "order_id": "order-42 "}),
        ("run-1", "send_refund", {**ARGS, "extra": None}),
    ],
)
def test_anything_that_makes_another_request_makes_another_key(run_id: str, tool: str, args: object) -> None:
    assert idempotency_key(run_id, tool, args) != idempotency_key("run-1", "send_refund", ARGS)


def test_user_keys_are_digests_scoped_by_tool() -> None:
    key = user_key("send_refund", "refund:order-42")
    assert "order-42" not in key and len(key) == 32
    assert key == user_key("send_refund", "refund:order-42") != user_key("send_email", "refund:order-42")


def test_bad_key_parts_are_refused() -> None:
    with pytest.raises(TypeError, match="run_id"):
        idempotency_key("", "tool", {})
    with pytest.raises(TypeError, match="tool"):
        idempotency_key("run", None, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        user_key("tool", 42)  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_key_order_never_changes_the_digest(args: dict[str, object]) -> None:
    reordered = dict(reversed(list(args.items())))
    assert args_digest(args) == args_digest(reordered)
    assert idempotency_key("r", "t", args) == idempotency_key("r", "t", reordered)
