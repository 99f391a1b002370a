"""Counting CPU instructions with valgrind's callgrind: a child process under callgrind marks the start and the end
of what it measures with two client requests; the count between them is exact and does not move with the other
processes of a shared machine, where wall times swing by more than the differences being measured.

The parent builds the client requests once (:func:`requests_library`) and runs each child with :func:`count`; the
child loads them with :func:`load` and calls ``lg_start()`` and ``lg_measured()`` around its work.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["count", "load", "requests_library"]

# Two client requests, compiled at run time against valgrind's own header (the valgrind package ships it): a dump
# writes every thread's counts so far and zeroes them all, so what the second dump holds is exactly what ran
# between the two, on every thread (CrewAI runs its hooks on its event bus's worker threads).
_CALLGRIND_C = """
#include <valgrind/callgrind.h>
void lg_start(void) { CALLGRIND_DUMP_STATS_AT("start"); }
void lg_measured(void) { CALLGRIND_DUMP_STATS_AT("measured"); }
"""


def requests_library(folder: Path) -> Path:
    """The client requests as a shared library in ``folder`` (gcc and valgrind's header, else RuntimeError)."""
    if shutil.which("valgrind") is None:
        raise RuntimeError("valgrind is not installed (apt install valgrind)")
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc) to build valgrind's client requests")
    source, library = folder / "lg_callgrind.c", folder / "lg_callgrind.so"
    source.write_text(_CALLGRIND_C, encoding="utf-8")
    built = subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], capture_output=True)
    if built.returncode != 0:
        raise RuntimeError(f"could not build valgrind's client requests: {built.stderr.decode()[-500:]}")
    return library


def load(library: str) -> ctypes.CDLL:
    """The client requests, in the child (``lg_start()``, ``lg_measured()``)."""
    return ctypes.CDLL(library)


def count(module: str, spec: str, what: str, timeout: float) -> int:
    """Instructions between the child's two requests: ``python -m module --instructions-child spec`` under
    callgrind, from the repository's root. ``what`` names the child in errors (RuntimeError)."""
    with tempfile.TemporaryDirectory(prefix="lg-callgrind-") as folder:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={folder}/callgrind.%p",
            sys.executable,
            "-m",
            module,
            "--instructions-child",
            spec,
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        root = Path(__file__).resolve().parent.parent
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"callgrind child {what} ran past {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"callgrind child {what} failed ({done.returncode}): {done.stderr[-2000:]}")
        for dump in Path(folder).glob("callgrind.*"):
            text = dump.read_text(encoding="utf-8", errors="replace")
            if "Client Request: measured" in text:
                summary = next(line for line in text.splitlines() if line.startswith("summary:"))
                return int(summary.split(":", 1)[1].split()[0])
    raise RuntimeError(f"callgrind child {what} wrote no 'measured' dump")
