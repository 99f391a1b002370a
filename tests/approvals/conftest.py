"""Approval queues under test: in memory, a SQLite file, and PostgreSQL (skipped, or failed in CI, when absent)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.approvals import ApprovalQueue, MemoryApprovals, PostgresApprovals, SQLiteApprovals
from tests.ledger.conftest import postgres_server, with_schema  # noqa: F401  (a fixture, re-used)


class WallClock:
    """The queue's wall clock, moved by hand (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def pg_queue_url(postgres_server: str) -> Iterator[str]:  # noqa: F811
    import psycopg

    schema = f"lg_appr_{uuid.uuid4().hex[:12]}"
    yield with_schema(postgres_server, schema)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path, wall: WallClock
) -> Iterator[Callable[[], ApprovalQueue]]:
    made: list[Any] = []

    def make() -> ApprovalQueue:
        queue: ApprovalQueue
        if request.param == "memory":
            queue = made[0] if made else MemoryApprovals(wall_clock=wall)
        elif request.param == "sqlite":
            queue = SQLiteApprovals(tmp_path / "approvals.db", wall_clock=wall)
        else:
            queue = PostgresApprovals(request.getfixturevalue("pg_queue_url"), wall_clock=wall)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()
