from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loopguard_core.alerts import Alert, Alerts, Retry

from .server import Receiver

#: back-off small enough for tests (the defaults ride out 15 minutes of downtime)
FAST = Retry(initial=0.02, maximum=0.1, jitter=0.2, max_seconds=30.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().up()
    yield server
    server.stop()


@pytest.fixture
def dead_path(tmp_path: Path) -> Path:
    return tmp_path / "dead.jsonl"


@pytest.fixture
def opened() -> Iterator[list[Alerts]]:
    """Alerts made by a test, closed at its end (so no worker outlives it)."""
    made: list[Alerts] = []
    yield made
    for alerts in made:
        alerts.close(timeout=0.5)


def alert(n: int, **fields: object) -> Alert:
    options: dict[str, object] = {
        "kind": "trip",
        "severity": "critical",
        "title": f"alert {n}",
        "text": f"the {n}th",
        "dedup_key": ("test", n),
    }
    options.update(fields)
    return Alert(**options)  # type: ignore[arg-type]
