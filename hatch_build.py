"""Builds the optional compiled fast path (``loopguard_core/_speedups.c``) into the wheel.

The extension is optional: without a C compiler, or with ``LOOPGUARD_PURE_PYTHON=1`` set at build time, the wheel
is pure Python and gives the same verdicts (``loopguard_core.signatures`` falls back to its own encoders).
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


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("LOOPGUARD_PURE_PYTHON") == "1":
            return
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

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _source_digest(root: Path, source: bytes) -> str:
    # loopguard_core/_speedups_source.py, loaded on its own (the package itself is not importable here)
    spec = importlib.util.spec_from_file_location("_speedups_source", root / "loopguard_core" / "_speedups_source.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    digest: str = module.source_digest(source)
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
