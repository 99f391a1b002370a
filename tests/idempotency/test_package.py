"""The package's public surface is explicit, and the core imports no third-party package for it."""

from __future__ import annotations

import subprocess
import sys

import loopguard_core.idempotency as idempotency


def test_all_is_explicit_sorted_and_complete() -> None:
    public = {name for name in dir(idempotency) if not name.startswith("_") and name != "annotations"}
    modules = {name for name in public if type(getattr(idempotency, name)).__name__ == "module"}
    assert set(idempotency.__all__) == public - modules
    assert list(idempotency.__all__) == sorted(idempotency.__all__, key=lambda n: (not n.isupper(), n))


def test_importing_it_pulls_in_no_third_party_package() -> None:
    code = (
        "import sys, loopguard_core.idempotency;"
        "print([m for m in ('redis', 'psycopg', 'pydantic') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
