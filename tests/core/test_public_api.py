"""The public surface is explicit and importable; the core needs no third-party package."""

from __future__ import annotations

import subprocess
import sys

import loopguard_core


def test_all_is_explicit_sorted_and_complete() -> None:
    public = {name for name in dir(loopguard_core) if not name.startswith("_") and name != "annotations"}
    modules = {name for name in public if type(getattr(loopguard_core, name)).__name__ == "module"}
    assert set(loopguard_core.__all__) == public - modules
    assert list(loopguard_core.__all__) == sorted(loopguard_core.__all__, key=lambda n: (not n.isupper(), n))
    for name in loopguard_core.__all__:
        assert getattr(loopguard_core, name) is not None


def test_contract_names_exist() -> None:
    from loopguard_core import Breaker, BreakerState, LoopGuardTripped

    assert issubclass(LoopGuardTripped, RuntimeError)
    assert {s.name for s in BreakerState} == {"CLOSED", "OPEN", "HALF_OPEN"}
    for method in ("before_tool", "after_tool", "before_model", "after_model", "state"):
        assert hasattr(Breaker, method)


def test_core_imports_no_third_party_package() -> None:
    code = (
        "import sys, loopguard_core, loopguard_core.spec, loopguard_core.testing;"
        "third = [m for m in ('pydantic','langchain','redis','psycopg','cryptography','genai_prices','click',"
        "'rich','crewai','anthropic') if m in sys.modules];"
        "print(','.join(third))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_comes_from_metadata() -> None:
    assert isinstance(loopguard_core.__version__, str)
