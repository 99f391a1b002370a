"""Helpers shared by the ledger and review commands: consoles, errors, exit codes."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "console", "fail"]

#: Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command worked and found something wrong (verify problems, attestation missing)
EXIT_USAGE = 2  # bad arguments, missing file, unreadable database


def console(*, stderr: bool = False) -> Any:
    """A rich console; wide when not a terminal so piped tables are not truncated."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 200, stderr=stderr)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``loopguard: message`` to stderr and exit with ``code``."""
    click.echo(f"loopguard: {message}", err=True)
    raise SystemExit(code)
