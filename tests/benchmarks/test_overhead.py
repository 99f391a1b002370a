"""The overhead benchmark's bookkeeping (never a timed assertion): goal rows say what was measured and
whether the target was met, unreachable servers are reported as pending with the reason, and the storage
variants leave nothing behind in the user's PostgreSQL or Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import overhead
from benchmarks._timing import Measured

REQUIRE = os.environ.get("LOOPGUARD_REQUIRE_SERVICES", "").strip() == "1"
POSTGRES_URL = os.environ.get("LOOPGUARD_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LOOPGUARD_REDIS_URL", "redis://127.0.0.1:6379/15")


def measured(**ns: float) -> dict[str, Measured]:
    return {key: Measured(key, key, value, value, value, 1) for key, value in ns.items()}


def by_name(goals: list[overhead.Goal], start: str) -> overhead.Goal:
    return next(g for g in goals if g.name.startswith(start))


def test_goal_rows_carry_the_measured_figure_and_whether_it_met_the_target() -> None:
    m = measured(
        bare=100, pybreaker=1_100, loopguard_memory=3_100, sqlite_raw=40_000, sqlite_record=100_000, sqlite_turn=200_000
    )
    goals, context = overhead._goals(m, ["PostgreSQL ledger pending: no server at x (refused)"])
    memory = by_name(goals, "in-memory")
    assert (memory.value, memory.status) == (3.0, "not met")  # (3100-100)/(1100-100) > 2.0
    sqlite = by_name(goals, "SQLite")
    assert (sqlite.value, sqlite.unit, sqlite.status) == (20.0, "%", "not met")  # raw/turn = 20% < 70%
    postgres = by_name(goals, "PostgreSQL")
    assert postgres.status == "pending"
    assert "no server at x" in postgres.note
    assert any("40.0%" in line for line in context)  # the append alone is reported beside the goal, not as it

    m.update(measured(sqlite_turn=56_000, loopguard_memory=1_900))
    goals, _ = overhead._goals(m, [])
    assert by_name(goals, "SQLite").status == "met"
    assert by_name(goals, "in-memory").status == "met"
    assert by_name(goals, "Redis").status == "pending"

    m.update(measured(redis_raw=100_000, redis_check=120_000, redis_turn=200_000, redis_turn_deferred=120_000))
    goals, context = overhead._goals(m, [])
    redis = [g for g in goals if g.name.startswith("Redis") and "single client" in g.name]
    assert [(g.value, g.status) for g in redis] == [(50.0, "not met"), (83.3, "met")]  # a guarded call, both ways
    assert any("83.3%" in line for line in context)  # before_tool alone is context


def test_an_unreachable_postgres_is_pending_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://postgres@127.0.0.1:1/test"
    monkeypatch.setattr(overhead, "POSTGRES_URL", url)
    res = overhead._Resources()
    try:
        variants, why = overhead._postgres_variants(res)
    finally:
        res.cleanup()
    assert variants == []
    assert why is not None
    assert why.startswith("PostgreSQL ledger pending: no server at " + url)


def _reachable(ping: Any, what: str) -> None:
    try:
        ping()
    except Exception as exc:
        message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
        if REQUIRE:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.mark.postgres
def test_postgres_variants_write_rows_and_drop_their_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    psycopg = pytest.importorskip("psycopg")
    _reachable(lambda: psycopg.connect(POSTGRES_URL, connect_timeout=2).close(), f"PostgreSQL at {POSTGRES_URL}")
    monkeypatch.setattr(overhead, "POSTGRES_URL", POSTGRES_URL)
    listing = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'lgbench_%'"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        before = {row[0] for row in admin.execute(listing)}
        res = overhead._Resources()
        try:
            variants, why = overhead._postgres_variants(res)
            assert why is None
            assert [v.key for v in variants] == ["pg_raw", "pg_record", "pg_turn", "pg_turn_deferred"]
            for variant in variants:
                op = variant.make()
                assert variant.make() is op  # one table per variant for the whole run
                for _ in range(3):
                    op()
            created = {row[0] for row in admin.execute(listing)} - before
            assert len(created) == 4
            for name in created:
                table = "ledger" if name.endswith("_raw") else "loopguard_ledger"
                row = admin.execute(f'SELECT count(*) FROM "{name}".{table}').fetchone()
                assert row is not None
                # defer_seconds: the three rows may still wait in the process, and are written all at once
                assert row[0] in ((0, 3) if name.endswith("_deferred") else (3,))
        finally:
            res.cleanup()
        assert {row[0] for row in admin.execute(listing)} - before == set()


@pytest.fixture
def bench_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The test Redis as the benchmark's, and a client of it: no benchmark key may be left behind."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    _reachable(client.ping, f"Redis at {REDIS_URL}")
    monkeypatch.setattr(overhead, "REDIS_URL", REDIS_URL)
    before = set(client.scan_iter(match="*lgbench-*", count=1000))
    yield client
    assert set(client.scan_iter(match="*lgbench-*", count=1000)) - before == set()
    client.close()


@pytest.mark.redis
def test_redis_variants_delete_every_key_they_made(bench_redis: Any) -> None:
    res = overhead._Resources()
    try:
        variants, why = overhead._redis_variants(res)
        assert why is None
        for variant in variants:
            op = variant.make()
            for _ in range(3):
                op()
        assert list(bench_redis.scan_iter(match="*lgbench-*", count=1000))  # they made keys (the fixture: and no more)
    finally:
        res.cleanup()


@pytest.mark.redis
def test_redis_server_cost_counts_what_the_server_runs_per_call_and_leaves_no_key(
    bench_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cost = overhead.redis_server_cost(ops=50)
    assert cost is not None
    assert 1.0 <= cost["raw"]["commands"] < 1.5  # the trivial script's one INCR (and whatever else ran then)
    # A guarded call runs more inside Redis than one INCR, and deferring its outcome never adds to that.
    assert cost["turn"]["commands"] > 1.0
    assert cost["turn_deferred"]["commands"] <= cost["turn"]["commands"]
    assert all(row["server_us"] > 0 for row in cost.values())
    line = overhead.redis_server_line(cost)
    assert f"running {cost['turn']['commands']} Redis commands" in line
    monkeypatch.setattr(overhead, "REDIS_URL", "redis://127.0.0.1:1/0")
    assert overhead.redis_server_cost(ops=5) is None  # no server: nothing to report, no error


def test_instruction_counts_give_the_goal_one_ratios_and_say_why_when_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = {
        "small": {"loopguard": 30_000, "loopguard_pure": 40_000, "agentguard": 10_000, "floor_py": 8_000},
        "medium": {"loopguard": 90_000, "loopguard_pure": 200_000, "agentguard": 100_000, "floor_py": 120_000},
    }
    line = overhead.instructions_line(counted)
    assert "small args: loopguard 30,000, loopguard pure Python 40,000, agentguard47 10,000" in line
    assert "loopguard / agentguard47 3.00x; pure Python / pure-Python floor 5.00x" in line
    assert "loopguard / agentguard47 0.90x; pure Python / pure-Python floor 1.67x" in line
    assert overhead.per_call_instructions(smoke=True) == {"pending": "skipped by --smoke"}
    monkeypatch.setattr(overhead._callgrind.shutil, "which", lambda name: None)
    pending = overhead.per_call_instructions()
    assert pending == {"pending": "valgrind is not installed (apt install valgrind)"}
    assert "pending (valgrind is not installed" in overhead.instructions_line(pending)


def test_a_failed_instruction_count_makes_the_counts_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(module: str, spec: str, what: str, timeout: float) -> int:
        if what == "floor_py/medium":
            raise RuntimeError("callgrind child floor_py/medium failed (1): boom")
        return 1_000 * overhead.INSTRUCTION_OPS[spec.split(",")[1]]

    monkeypatch.setattr(overhead._callgrind, "requests_library", lambda folder: folder / "lib.so")
    monkeypatch.setattr(overhead._callgrind, "count", fake)
    assert overhead.per_call_instructions() == {"pending": "callgrind child floor_py/medium failed (1): boom"}
    monkeypatch.setattr(overhead._callgrind, "count", lambda module, spec, what, timeout: 7 * int(spec.split(",")[2]))
    counted = overhead.per_call_instructions()
    assert counted["small"]["loopguard"] == counted["medium"]["floor_py"] == 7  # per op, not per child
    assert counted["small"]["loopguard_answers"] == 7 and "loopguard_answers" not in counted["medium"]
    assert "loopguard with a distinct answer per call 7" in overhead.instructions_line(counted)


def test_the_distinct_answer_contender_answers_every_call_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[object] = []
    monkeypatch.setattr(overhead.Breaker, "after_tool", lambda self, tool, args, **kw: answers.append(kw.get("result")))
    op = overhead._per_call("loopguard_answers", "small")()
    for _ in range(3):
        op()
    plain = overhead._per_call("loopguard", "small")()
    plain()
    assert answers == ["value of a", "value of b", "value of c", "ok"]
    from loopguard_core.detection import masked_digest

    assert len({masked_digest(answer) for answer in answers}) == 4  # different even with their digits masked


def test_the_redis_goal_has_rows_for_four_processes_pending_without_a_server() -> None:
    m = measured(bare=100, pybreaker=1_100, loopguard_memory=3_100)
    processes = {"default": {"raw": 40_000, "turn": 16_000}, "deferred": {"raw": 40_000, "turn": 33_000}}
    goals, _ = overhead._goals(m, ["Redis store pending: no Redis at x (refused)"], processes)
    name = "Redis: guarded call (before + after) vs raw EVALSHA (throughput, 4 processes, issue 14)"
    default, deferred = by_name(goals, f"{name}, default"), by_name(goals, f"{name}, defer_seconds")
    assert (default.value, default.status) == (40.0, "not met")
    assert (deferred.value, deferred.status) == (82.5, "met")
    assert default.note == "16,000 vs 40,000 ops/s, all processes together"
    goals, _ = overhead._goals(m, ["Redis store pending: no Redis at x (refused)"])
    assert by_name(goals, f"{name}, default").status == "pending"
    assert "no Redis at x" in by_name(goals, f"{name}, defer_seconds").note


@pytest.mark.redis
def test_redis_processes_measures_both_kinds_in_every_mode_and_leaves_no_key(
    bench_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = overhead.redis_processes(smoke=True)
    assert ops is not None
    assert set(ops) == {"default", "deferred"}
    assert all(set(row) == {"raw", "turn"} and min(row.values()) > 0 for row in ops.values())
    monkeypatch.setattr(overhead, "REDIS_URL", "redis://127.0.0.1:1/0")
    assert overhead.redis_processes(smoke=True) is None
