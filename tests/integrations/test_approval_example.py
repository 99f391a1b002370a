"""``examples/approval_from_cli.py`` runs with no API key: suspended, approved from another process, resumed, and
the refund runs once (exit status 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "approval_from_cli.py"


def test_the_example_suspends_is_approved_from_the_cli_and_refunds_once() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "suspended on the checkpointer: 'refund 30 EUR on A-17'" in out
    assert "refunds so far: 0" in out
    assert "$ loopguard approvals approve" in out and "as alice" in out
    assert "the refund ran 1 time(s)" in out
