"""examples/openai_agent.py runs with no API key and reports the trip."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip("openai", reason="needs the framework's extra (pip install 'loopguard-core[all]')")
# The example builds its scripted API on httpx, which openai 3.x no longer installs (its client is on httpx2).
pytest.importorskip("httpx", reason="examples/openai_agent.py needs httpx (openai 3.x installs httpx2 instead)")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_example_reports_the_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = importlib.util.spec_from_file_location("example_openai_agent", EXAMPLES / "openai_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    report = module.main()

    assert (report["stopped"], report["reason"], report["searches"]) == (True, "loop", 3)
