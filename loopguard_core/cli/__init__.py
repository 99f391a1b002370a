"""The ``loopguard`` command line (extra ``cli``: click + rich)."""

from __future__ import annotations

import sys
from typing import Any

from .._extras import require
from ..errors import MissingExtra

__all__ = ["build", "main"]


def build() -> Any:
    """The click group with every command registered."""
    click = require("click", extra="cli", purpose="The loopguard command line")
    require("rich", extra="cli", purpose="The loopguard command line")

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="loopguard-core", prog_name="loopguard")
    def cli() -> None:
        """loopguard: stop runaway AI-agent loops before they spend money."""

    from . import _demo

    _demo.register(cli)
    from . import _approvals, _budgets, _ledger, _replay, _review, _serve

    _ledger.register(cli)
    _approvals.register(cli)
    _budgets.register(cli)
    _serve.register(cli)
    _review.register(cli)
    _replay.register(cli)
    # Command modules register themselves here (one line each).
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        group = build()
    except MissingExtra as exc:
        print(f"loopguard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    group.main(args=argv, prog_name="loopguard")
