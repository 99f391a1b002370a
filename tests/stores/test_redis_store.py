"""What the Redis store adds to the contract: keys, expiry, Redis TIME, script reloads, reservations,
bounded memory, the URL form, and the async twins."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.errors import MissingExtra
from loopguard_core.limits import Limits, LoopDetection
from loopguard_core.state import BreakerState
from loopguard_core.stores import store_from_url
from loopguard_core.stores.base import ModelRequest, ModelUsage, RunKey, ToolOutcome, ToolRequest

redis = pytest.importorskip("redis", reason="needs the redis extra: pip install 'loopguard-core[redis]'")

from loopguard_core.stores.redis import RedisStore, redact_url  # noqa: E402

from .conftest import PATIENT  # noqa: E402

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    made = RedisStore(redis_url, **PATIENT)
    yield made
    made.close()


def tool(name: str = "search", sig: str = "s", now: float = 0.0, call_id: str | None = None) -> ToolRequest:
    return ToolRequest(name, sig, now, call_id, None)


def test_a_runs_keys_share_one_hash_tag_and_slot(store: RedisStore, scope: str, redis_client: Any) -> None:
    from redis.crc import key_slot

    run = RunKey(scope, "run-1")
    limits = Limits(max_tokens=1_000)
    store.admit_tool(run, tool(call_id="c1"), limits)
    store.record_tool(run, ToolOutcome("search", "s", "out", True, 0.0, "c1"), limits)
    store.admit_tool(run, tool(call_id="c2"), limits)  # still in flight
    store.admit_model(run, ModelRequest(10, 0, 0.0, "m1"), limits)
    written = sorted(k.decode() for k in redis_client.keys(f"{{lg:{scope}:run-1}}*"))
    assert written == sorted(store.keys(run))  # every key of the run, and nothing else
    assert len({key_slot(k.encode()) for k in store.keys(run)}) == 1


def test_scope_and_run_names_cannot_collide(store: RedisStore, scope: str) -> None:
    one, two = RunKey(f"{scope}:a", "b"), RunKey(scope, "a:b")
    assert set(store.keys(one)).isdisjoint(store.keys(two))
    odd = RunKey(scope + "{x}", "}{")
    assert len({k.split("}")[0] for k in store.keys(odd)}) == 1


def test_every_key_expires_and_a_live_run_keeps_refreshing(redis_url: str, scope: str, redis_client: Any) -> None:
    # TTL 64 s: keys get it when created, and all of them again once 1 s (ttl/64) has passed.
    store = RedisStore(redis_url, ttl_seconds=64, clock="request", **PATIENT)
    run = RunKey(scope, "r")
    limits = Limits(max_tokens=1_000)
    store.admit_tool(run, tool(call_id="c1"), limits)
    store.record_tool(run, ToolOutcome("search", "s", "out", True, 0.0, "c1"), limits)
    store.admit_model(run, ModelRequest(10, 0, 0.0), limits)
    keys = [k for k in store.keys(run) if redis_client.exists(k)]
    assert len(keys) == 6  # the calls-in-flight hash too: it stays when its last call reports
    assert all(0 < redis_client.pttl(k) <= 64_000 for k in keys)  # nothing lives forever
    for k in keys:
        redis_client.pexpire(k, 5_000)
    store.record_model(run, ModelUsage(5, 0, 0.5), limits)
    assert all(redis_client.pttl(k) <= 5_000 for k in keys)  # not every write pays for a refresh
    store.record_model(run, ModelUsage(5, 0, 1.5), limits)  # (this released the last reservation)
    alive = [k for k in keys if redis_client.exists(k)]
    assert store.keys(run)[0] in alive
    assert all(redis_client.pttl(k) > 60_000 for k in alive)  # a live run never expires
    store.drop(run)
    assert not any(redis_client.exists(k) for k in store.keys(run))
    store.close()


def test_redis_time_is_the_clock_and_the_request_clock_is_ignored(
    store: RedisStore, scope: str, redis_client: Any
) -> None:
    run = RunKey(scope, "r")
    limits = Limits(max_consecutive_failures=1, recovery_seconds=0.3)
    seconds, micros = redis_client.time()
    store.admit_tool(run, tool("db", "q", now=5.0), limits)
    started = store.snapshot(run).started_at
    assert started is not None
    assert abs(started - (seconds + micros / 1e6)) < 5
    store.record_tool(run, ToolOutcome("db", "q", "err", True, 9.0), limits)
    assert store.admit_tool(run, tool("db", "q1", now=1.0), limits).reason == "failures"
    # A caller whose clock says an hour has passed is still refused: only Redis TIME counts.
    early = store.admit_tool(run, tool("db", "q2", now=3_600.0), limits)
    assert early.reason == "open"
    assert 0 < early.facts["retry_in_seconds"] <= 0.3
    time.sleep(0.35)  # the server's clock has to move: that is what this test is about
    probe = store.admit_tool(run, tool("db", "q3", now=0.0), limits)
    assert (probe.admitted, probe.probe) == (True, True)


def test_scripts_reload_after_script_flush_and_counts_continue(
    store: RedisStore, scope: str, redis_client: Any
) -> None:
    run = RunKey(scope, "r")
    limits = Limits(max_turns=5)
    for _ in range(3):
        assert store.admit_model(run, ModelRequest(0, 0, 0.0), limits).admitted
    redis_client.script_flush()
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), limits).turn == 4
    assert store.snapshot(run).turns == 4
    redis_client.script_flush()
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), limits).admitted
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), limits).reason == "turn_ceiling"


def test_in_flight_model_calls_reserve_their_projection(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, clock="request", reservation_seconds=30, **PATIENT)
    run = RunKey(scope, "r")
    limits = Limits(max_tokens=100, max_cost_usd=1.0)
    assert store.admit_model(run, ModelRequest(60, 1_000, 0.0, "a"), limits).admitted
    refused = store.admit_model(run, ModelRequest(60, 1_000, 0.0, "b"), limits)
    assert refused.reason == "token_ceiling"
    assert refused.facts == {"observed": 120, "limit": 100, "spent": 0, "in_flight": 60}
    store.reset(run)
    store.record_model(run, ModelUsage(50, 900, 1.0, "a"), limits)  # releases a's reservation
    assert store.admit_model(run, ModelRequest(50, 1_000, 1.0, "c"), limits).admitted  # 50 + 50 = 100
    # c never reports back: its reservation expires after 30 s.
    assert store.admit_model(run, ModelRequest(10, 0, 2.0, "d"), limits).reason == "token_ceiling"
    store.reset(run)
    assert store.admit_model(run, ModelRequest(10, 0, 40.0, "e"), limits).admitted
    store.close()


def test_loop_memory_and_call_id_memory_are_bounded(store: RedisStore, scope: str, redis_client: Any) -> None:
    run = RunKey(scope, "r")
    limits = Limits(loop=LoopDetection(memory=50, window=20))
    for i in range(4_200):  # never reported: in flight forever
        assert store.admit_tool(run, tool("search", f"q{i % 200}", call_id=f"c{i}"), limits).admitted
    for i in range(100):
        store.record_tool(run, ToolOutcome("search", f"r{i}", f"answer {i}", False, 0.0), limits)
    run_hash, seen_order, _, _, window, flight = store.keys(run)
    fields = [f.decode() for f in redis_client.hkeys(run_hash)]
    assert sum(1 for field in redis_client.hkeys(flight) if field) <= 50  # ('' only keeps the hash alive)
    assert redis_client.llen(window) == 20
    assert sum(f.startswith("i:") for f in fields) == 4_096
    assert redis_client.llen(seen_order) == 4_096
    # The oldest call ids were forgotten, the newest are still recognised.
    assert store.admit_tool(run, tool("search", "q199", call_id="c4199"), limits).duplicate
    assert not store.admit_tool(run, tool("search", "q0", call_id="c0"), limits).duplicate


def test_from_url_reads_store_options_and_hides_the_password(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://:s3cret@", 1) if "@" not in redis_url else redis_url
    store = store_from_url(url + "?failure_policy=open&ttl_seconds=60&socket_timeout=0.5")
    assert isinstance(store, RedisStore)
    assert store.failure_policy == "open"
    assert "s3cret" not in store.url
    assert "s3cret" not in repr(store)
    store.close()
    assert redact_url("redis://user:pw@h:1/0?password=x") == "redis://user:***@h:1/0?password=***"
    with pytest.raises(ValueError, match="ttl_seconds"):
        RedisStore.from_url("redis://127.0.0.1:6379/0?ttl_seconds=soon")
    with pytest.raises(ValueError, match="failure_policy must be 'closed' or 'open'"):
        RedisStore("redis://127.0.0.1:6379/0", failure_policy="maybe")
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisStore("redis://127.0.0.1:6379/0", socket_timeout=0)


def test_a_client_that_decodes_replies_to_str_is_refused_with_what_to_do(redis_url: str, scope: str) -> None:
    # The replies hold binary digests: a decoding client would fail on the first loop-checked call instead.
    import redis
    import redis.asyncio

    def with_query(query: str) -> str:
        return redis_url + ("&" if "?" in redis_url else "?") + query

    sync_client = redis.Redis.from_url(redis_url, decode_responses=True)
    async_client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    for client in (sync_client, async_client):
        with pytest.raises(ValueError, match="decode_responses=True"):
            RedisStore(redis_url, client=client)
    sync_client.close()
    asyncio.run(async_client.aclose())
    with pytest.raises(ValueError, match="decode_responses=True"):
        RedisStore(redis_url, decode_responses=True)
    for query in ("decode_responses=true", "decode_responses=1&decode_responses=false"):  # redis-py reads the first
        with pytest.raises(ValueError, match="decode_responses=True"):
            RedisStore.from_url(with_query(query))
    RedisStore.from_url(with_query("decode_responses=false")).close()
    plain_client = redis.Redis.from_url(redis_url)
    plain = RedisStore(redis_url, client=plain_client)
    assert plain.admit_tool(RunKey(scope, "r"), tool("search", "q"), Limits()).admitted
    plain.close()
    plain_client.close()


# An unsound answer is decided by failure_policy: refused when closed, admitted (and reported) when open.
POLICIES = pytest.mark.parametrize(("policy", "admitted"), [("closed", False), ("open", True)])


@POLICIES
def test_a_window_that_does_not_unpack_is_a_store_failure_not_a_verdict(
    redis_url: str, scope: str, redis_client: Any, policy: str, admitted: bool
) -> None:
    # Something other than admit_tool wrote the run's window (or Redis answered garbage): the detectors never see
    # it; failure_policy decides, as for any other unsound answer.
    run, limits = RunKey(scope, policy), Limits()
    store = RedisStore(redis_url, failure_policy=policy, **PATIENT)
    assert store.admit_tool(run, tool("search", "q"), limits).admitted
    store.record_tool(run, ToolOutcome("search", "q", "answer", False, 0.0), limits)
    redis_client.rpush(store.keys(run)[4], b"not a packed step")  # the run's window
    verdict = store.admit_tool(run, tool("search", "q2"), limits)
    assert (verdict.admitted, verdict.facts["error"][:37]) == (admitted, "admit_tool answered with a packed win")
    store.drop(run)
    store.close()


def _answering(run: Any, reply: bytes, step: str, *rest: Any) -> Any:
    return reply if step == "admit_tool" else run(step, *rest)


@POLICIES
@pytest.mark.parametrize("reply", [b"garbage", b"1 2 3:", b"1 2 3 4 5 6", b"1 2 x 4 5 6:"])
def test_an_admission_reply_that_does_not_parse_is_a_store_failure_not_a_verdict(
    redis_url: str, scope: str, reply: bytes, policy: str, admitted: bool
) -> None:
    # The usual admission comes back as one string (six numbers, ':', the window): a string that is not one, from a
    # proxy or a broken server, is decided by failure_policy like any other unsound answer, never read as a verdict.
    store = RedisStore(redis_url, failure_policy=policy, **PATIENT)
    run = RunKey(scope, policy)
    assert store.admit_tool(run, tool("search", "q"), Limits()).admitted  # the real reply parses
    store._run = functools.partial(_answering, store._run, reply)  # type: ignore[method-assign]
    refused = store.admit_tool(run, tool("search", "q2"), Limits())
    assert refused.admitted is admitted
    assert refused.facts["error"] == f"admit_tool answered with {reply!r}, not an admission"
    store.close()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtra, match=r"loopguard-core\[redis\]"):
        RedisStore("redis://127.0.0.1:6379/0")


async def test_async_twins_share_state_with_the_sync_path(store: RedisStore, scope: str) -> None:
    run = RunKey(scope, "r")
    limits = Limits(max_turns=3)
    assert store.admit_model(run, ModelRequest(0, 0, 0.0), limits).admitted
    assert (await store.aadmit_model(run, ModelRequest(0, 0, 0.0), limits)).turn == 2
    await store.arecord_model(run, ModelUsage(7, 3, 0.0), limits)
    assert (await store.aadmit_tool(run, tool(), limits)).admitted
    await store.arecord_tool(run, ToolOutcome("search", "s", "o", False, 0.0), limits)
    verdicts = await asyncio.gather(*(store.aadmit_model(run, ModelRequest(0, 0, 0.0), limits) for _ in range(5)))
    assert sum(v.admitted for v in verdicts) == 1
    snap = await store.asnapshot(run)
    assert (snap.turns, snap.tokens, snap.cost_micros, snap.tool_calls, snap.state) == (
        3,
        7,
        3,
        1,
        BreakerState.OPEN,
    )
    await store.aclose()


async def test_async_scripts_reload_after_script_flush(store: RedisStore, scope: str, redis_client: Any) -> None:
    run = RunKey(scope, "r")
    assert (await store.aadmit_model(run, ModelRequest(0, 0, 0.0), Limits())).turn == 1
    redis_client.script_flush()
    assert (await store.aadmit_model(run, ModelRequest(0, 0, 0.0), Limits())).turn == 2
    await store.aclose()


def test_a_report_without_call_id_releases_the_smallest_reservation(redis_url: str, scope: str) -> None:
    store = RedisStore(redis_url, clock="request", **PATIENT)
    run = RunKey(scope, "r")
    limits = Limits(max_tokens=100)
    assert store.admit_model(run, ModelRequest(50, 0, 0.0), limits).admitted
    assert store.admit_model(run, ModelRequest(10, 0, 0.0), limits).admitted
    store.record_model(run, ModelUsage(10, 0, 0.0), limits)  # which call was it? assume the small one
    # Spent 10, still reserved 50 for the call that may yet use 50: 10 + 50 + 45 would exceed 100.
    refused = store.admit_model(run, ModelRequest(45, 0, 0.0), limits)
    assert refused.facts == {"observed": 105, "limit": 100, "spent": 10, "in_flight": 50}
    store.close()


def test_a_state_written_by_a_release_that_counts_neither_window_nor_flight_is_read_from_redis(
    store: RedisStore, scope: str, redis_client: Any
) -> None:
    # The run's state counts the window's steps and the calls in flight (sparing LLEN and HLEN). A release that
    # does not keep those counts writes fewer values; the next step must then ask Redis, not trust a missing count.
    run = RunKey(scope, "r")
    limits = Limits(loop=LoopDetection(memory=3))
    older = (  # the state's first 22 values only, as such a release packs it
        "local t = {cmsgpack.unpack(redis.call('HGET', KEYS[1], 'S'))} "
        "redis.call('HSET', KEYS[1], 'S', cmsgpack.pack(unpack(t, 1, 22)))"
    )

    def as_older_release() -> None:
        redis_client.eval(older, 1, store.keys(run)[0])

    for _ in range(3):
        assert store.admit_tool(run, tool("search", "same"), limits).admitted
        store.record_tool(run, ToolOutcome("search", "same", "same answer", False, 0.0), limits)
    as_older_release()
    assert store.admit_tool(run, tool("search", "same"), limits).reason == "loop"  # the 3 steps were read
    store.reset(run)
    for sig in ("a", "b", "c"):  # never reported: in flight
        assert store.admit_tool(run, tool("search", sig), limits).admitted
    as_older_release()
    assert store.admit_tool(run, tool("search", "d"), limits).admitted  # 3 already: the memory starts over
    flight = store.keys(run)[5]
    assert sorted(field for field in redis_client.hkeys(flight) if field) == [store._signature("d").encode()]


@pytest.mark.parametrize(
    "value",
    [
        "0123456789abcdef0123456789abcdef",  # the breaker's own digest: passes through
        "0123456789ABCDEF0123456789ABCDEF",  # hex in capitals: lowered
        "01 23 45 67 89 ab cd ef 01 23 45",  # hex with spaces (bytes.fromhex takes them): as _hex has it
        "0123456789abcdef0123456789abcdeg",  # not hex: hashed
        "0123456789abcdef",  # another length: hashed
        "search q=x",  # a readable signature (a store driven directly): hashed
        "",
    ],
)
def test_a_digest_without_a_key_is_what_hex_makes_of_it(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from loopguard_core.stores.redis import _hex

    monkeypatch.delenv("LOOPGUARD_DIGEST_KEY", raising=False)
    store = RedisStore("redis://127.0.0.1:1/0")  # never connects: digests are computed here
    assert store._mac_key is None
    assert store._digest(value, 16) == _hex(value, 16)
    assert len(store._digest(value, 16)) == 32


def test_the_deployment_guide_names_every_command_the_scripts_call() -> None:
    # An ACL user is granted what docs/deployment.md lists: a command a script calls and the list lacks fails there.
    root = Path(__file__).resolve().parents[2]
    lua = "".join(path.read_text(encoding="utf-8") for path in (root / "loopguard_core/stores/lua").glob("*.lua"))
    called = set(re.findall(r"redis\.call\('([A-Z]+)'", lua))
    guide = (root / "docs/deployment.md").read_text(encoding="utf-8")
    listed = guide.split("and the commands the scripts call:", 1)[1].split("(`tests/", 1)[0]
    assert called == set(re.findall(r"`([A-Z]+)`", listed))
