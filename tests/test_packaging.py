"""The wheel a user installs holds every package, the Lua scripts and py.typed (not only the source tree), and the
compiled fast path where a C compiler is found (else it is pure Python)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _wheel(out: Path, **env: str) -> Path:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    if build.returncode != 0 and "No matching distribution" in build.stderr:
        pytest.skip("the build backend (hatchling, setuptools) cannot be fetched on this machine")
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("loopguard_core-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_ships_packages_lua_scripts_and_type_marker(tmp_path: Path) -> None:
    scratch = set(Path(tempfile.gettempdir()).glob("loopguard-speedups-*"))
    wheel = _wheel(tmp_path)
    assert set(Path(tempfile.gettempdir()).glob("loopguard-speedups-*")) <= scratch  # the build's scratch is gone
    names = set(zipfile.ZipFile(wheel).namelist())
    compiled = [n for n in names if n.startswith("loopguard_core/_speedups") and n.endswith((".so", ".pyd"))]
    if shutil.which("cc") or shutil.which("gcc") or os.environ.get("CI"):
        assert len(compiled) == 1, names  # the compiled fast path, in a wheel tagged for this platform
        assert not wheel.name.endswith("-py3-none-any.whl")
    assert "loopguard_core/_speedups.pyi" in names
    for package in (
        "loopguard_core",
        "loopguard_langchain",
        "loopguard_langgraph",
        "loopguard_crewai",
        "loopguard_pydantic_ai",
        "loopguard_anthropic",
        "loopguard_openai",
        "loopguard_openai_agents",
        "loopguard_litellm",
        "loopguard_pytest",
    ):
        assert f"{package}/__init__.py" in names
    assert "loopguard_core/py.typed" in names
    for name in ("templates/base.html", "templates/_macros.html", "static/live.js", "static/dashboard.css"):
        assert f"loopguard_core/dashboard/{name}" in names
    for script in ("_common", "admit_tool", "record_tool", "admit_model", "record_model", "reset", "snapshot"):
        assert f"loopguard_core/stores/lua/{script}.lua" in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


@pytest.mark.slow
def test_a_pure_python_wheel_is_built_on_request_and_works(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "wheel", LOOPGUARD_PURE_PYTHON="1")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.endswith((".so", ".pyd"))]
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    probe = (
        "from loopguard_core import signatures as s;"
        "assert not s.compiled_fast_path();"
        "print(s.call_signature('Search', {'q': ' Some  Query '}))"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LOOPGUARD_PURE_PYTHON")}
    pure = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {probe}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert pure.returncode == 0, pure.stderr
    from loopguard_core.signatures import call_signature

    assert pure.stdout.strip() == call_signature("search", {"q": "some query"})  # the same signature either way
