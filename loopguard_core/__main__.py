"""``python -m loopguard_core`` runs the CLI."""

from __future__ import annotations

from .cli import main

main()
