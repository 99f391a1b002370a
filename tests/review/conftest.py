from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core.ledger import Ledger
from loopguard_core.spec import Spec, SpecStore

DONE = "Extract every page title from https://example.com into titles.csv, then stop."


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def session(db: Path) -> Callable[..., str]:
    """Write a spec and a run (model turns, tool calls, optionally a trip) into one ledger file."""

    def make(*, trip: bool = True, failed_tool: bool = False, session_id: str = "run-1", turns: int = 4) -> str:
        spec = Spec.create(
            what_it_does="Crawl example.com and extract the page titles.",
            what_it_does_not="It does not follow external links or submit forms.",
            done_looks_like=DONE,
            session_id=session_id,
        )
        SpecStore(db).save(spec)
        ledger = Ledger(db)
        for turn in range(1, turns + 1):
            ledger.record(
                session_id=session_id,
                origin="model",
                turn=turn,
                agent="crawler",
                input_text=f"prompt {turn}",
                input_tokens=400 + 50 * turn,
                output_tokens=60,
                cost_usd=0.002 * turn,
                duration_ms=120,
            )
            ledger.record(
                session_id=session_id,
                origin="tool",
                turn=turn,
                agent="crawler",
                tool="fetch",
                input_text=f"fetch {turn}",
                duration_ms=30,
                passed=not (failed_tool and turn == 2),
                breach_reason="HTTP 500" if failed_tool and turn == 2 else None,
            )
        if trip:
            ledger.record(
                session_id=session_id,
                origin="breaker",
                turn=turns + 1,
                agent="crawler",
                tool="fetch",
                passed=False,
                breach_reason="loop",
            )
        ledger.close()
        return session_id

    return make
