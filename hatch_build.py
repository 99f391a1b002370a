"""Builds the optional compiled parts into the wheel.

- ``loopguard_core/_speedups.c``, the call-signature encoder: built wherever a C compiler is found. Without one,
  or with ``LOOPGUARD_PURE_PYTHON=1`` set at build time, the wheel is pure Python and gives the same verdicts
  (``loopguard_core.signatures`` falls back to its own encoders).
- The hot path compiled by mypyc (the modules in ``loopguard_core._mypyc.COMPILED``), on request only:
  ``LOOPGUARD_COMPILE=1`` at build time. The build then needs mypy (this hook asks for it) and a C compiler, and
  fails rather than quietly shipping a pure wheel. Editable installs are never compiled: they run the source.

setuptools does the compiling: it knows each platform's compiler and flags.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_MODULE = "loopguard_core._speedups"
_SOURCE = "loopguard_core/_speedups.c"


_MYPY = "mypy>=2.4,<3"  # the releases the compiled build was verified with


def _compile_requested() -> bool:
    return os.environ.get("LOOPGUARD_COMPILE") == "1" and os.environ.get("LOOPGUARD_PURE_PYTHON") != "1"


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def dependencies(self) -> list[str]:
        return [_MYPY] if _compile_requested() else []

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("LOOPGUARD_PURE_PYTHON") == "1":
            return
        if _compile_requested():
            if version == "editable":
                print("loopguard: LOOPGUARD_COMPILE=1 ignored: an editable install runs the source", file=sys.stderr)
            else:
                self._compile_hot_path(build_data)
        root = Path(self.root)
        # An editable install imports from the source tree: the module is built in place there.
        out_dir = root if version == "editable" else Path(tempfile.mkdtemp(prefix="loopguard-speedups-"))
        if version != "editable":
            self._scratch = out_dir  # removed in finalize()
        try:
            built = _compile(root, out_dir)
        except Exception as exc:  # no compiler, no headers: the pure-Python path serves
            print(f"loopguard: compiled fast path not built ({exc}); the package is pure Python", file=sys.stderr)
            return
        if version != "editable":
            build_data["force_include"][str(built)] = built.relative_to(out_dir).as_posix()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _compile_hot_path(self, build_data: dict[str, Any]) -> None:
        out_dir = Path(tempfile.mkdtemp(prefix="loopguard-mypyc-"))
        self._mypyc_scratch = out_dir  # removed in finalize()
        try:
            built_modules = _mypycify(Path(self.root), out_dir)
        except BaseException:  # no fallback to a pure wheel: a compiled build was asked for
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        for built in built_modules:
            build_data["force_include"][str(built)] = built.relative_to(out_dir / "lib").as_posix()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        for scratch in (getattr(self, "_scratch", None), getattr(self, "_mypyc_scratch", None)):
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _load(root: Path, name: str) -> Any:
    """A module of loopguard_core loaded on its own (the package itself is not importable while it is built)."""
    spec = importlib.util.spec_from_file_location(f"_loopguard_build_{name}", root / "loopguard_core" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mypycify(root: Path, out_dir: Path) -> list[Path]:
    """Compiles ``loopguard_core._mypyc.COMPILED`` with mypyc into ``out_dir``: the modules, and the one runtime
    library they share (``loopguard_core__mypyc``, at the top of the wheel)."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    modules: tuple[str, ...] = _load(root, "_mypyc").COMPILED
    sources = [str(root / (name.replace(".", "/") + ".py")) for name in modules]
    options = [
        "--config-file",
        str(root / "pyproject.toml"),  # strict, as CI type-checks it
        "--python-version",
        f"{sys.version_info[0]}.{sys.version_info[1]}",  # mypyc compiles for the Python that builds
        "--ignore-missing-imports",  # the extras are not installed in the build environment,
        "--follow-imports=silent",  # so the modules that use them (not compiled) may not type-check here,
        "--no-warn-unused-ignores",  # and an ignore that one of them needs may look unused
        "--cache-dir",
        str(out_dir / "mypy_cache"),  # never a cache left in the checkout by another environment
    ]
    here = os.getcwd()
    os.chdir(root)  # mypy finds the package from its root
    try:
        extensions = mypycify(
            [*options, *sources], opt_level="3", group_name="loopguard_core", target_dir=str(out_dir / "c")
        )
        dist = Distribution(
            {
                "name": "loopguard-mypyc",
                "ext_modules": extensions,
                "script_args": ["build_ext", "--build-lib", str(out_dir / "lib"), "--build-temp", str(out_dir / "tmp")],
            }
        )
        dist.parse_command_line()
        dist.run_commands()
    finally:
        os.chdir(here)
    built = sorted(path for path in (out_dir / "lib").rglob("*") if path.suffix in (".so", ".pyd"))
    if len(built) != len(modules) + 1:
        raise RuntimeError(f"mypyc built {[p.name for p in built]}, expected {len(modules)} modules and their runtime")
    return built


def _source_digest(root: Path, source: bytes) -> str:
    digest: str = _load(root, "_speedups_source").source_digest(source)
    return digest


def _compile(root: Path, out_dir: Path) -> Path:
    from setuptools import Distribution, Extension

    digest = _source_digest(root, (root / _SOURCE).read_bytes())
    extension = Extension(_MODULE, [str(root / _SOURCE)], define_macros=[("LG_SOURCE_DIGEST", f'"{digest}"')])
    dist = Distribution(
        {
            "name": "loopguard-speedups",
            "ext_modules": [extension],
            "script_args": ["build_ext", "--build-lib", str(out_dir), "--build-temp", str(out_dir / "build")],
        }
    )
    dist.parse_command_line()
    dist.run_commands()
    built = out_dir / ("loopguard_core/_speedups" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    if not built.exists():
        raise FileNotFoundError(built)
    return built
