"""The store contract on every store, what each keeps at rest (digests and the outcome, never the arguments),
and the errors a user sees when a store cannot be used."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from loopguard_core.errors import StoreError
from loopguard_core.idempotency import (
    MemorySideEffects,
    PostgresSideEffects,
    RedisSideEffects,
    SideEffects,
    SideEffectStore,
    SQLiteSideEffects,
    args_digest,
    idempotency_key,
    side_effect_store,
)

from .conftest import Backend, WallClock, delete_namespace, redis_namespace

KEY = idempotency_key("run-1", "send_refund", {"order_id": "order-42"})
DIGEST = args_digest({"order_id": "order-42"})
HOUR = 3600.0


def test_every_store_meets_the_protocol(backend: Backend, wall: WallClock) -> None:
    store = backend.open(clock=wall)
    assert isinstance(store, SideEffectStore)
    mine, other = "token-a", "token-b"
    state, record = store.claim(KEY, DIGEST, mine, lease_seconds=30, ttl_seconds=HOUR)
    assert state == "claimed" and record is not None and record.token == mine
    assert record.created_at == wall() and record.lease_expires_at == wall() + 30
    assert record.expires_at == wall() + HOUR
    # A resent claim (the answer to the first was lost) is still ours; a rival sees it in flight.
    assert store.claim(KEY, DIGEST, mine, lease_seconds=30, ttl_seconds=HOUR).state == "claimed"
    assert store.claim(KEY, DIGEST, other, lease_seconds=30, ttl_seconds=HOUR).state == "in_flight"
    # Only the owner completes or releases it.
    assert not store.complete(KEY, other, b"vnope", ttl_seconds=HOUR)
    assert not store.release(KEY, other)
    wall.advance(5)
    assert store.complete(KEY, mine, b'v{"refund":"re_1"}', ttl_seconds=HOUR)
    done = store.get(KEY)
    assert done is not None and done.state == "completed" and done.outcome == b'v{"refund":"re_1"}'
    assert done.expires_at == wall() + HOUR and done.args_digest == DIGEST
    assert store.complete(KEY, mine, b'v{"refund":"re_1"}', ttl_seconds=HOUR)  # a resent complete is harmless
    state, record = store.claim(KEY, DIGEST, other, lease_seconds=30, ttl_seconds=HOUR)
    assert state == "completed" and record is not None and record.outcome == b'v{"refund":"re_1"}'
    assert not store.release(KEY, mine)  # a token releases only its claim in flight, never an outcome
    assert store.release(KEY)  # without a token: whatever is there (the manual resolution)
    assert store.get(KEY) is None and not store.release(KEY)
    # In flight past its lease: unknown; taken over only when asked to, and only with the same arguments.
    store.claim(KEY, DIGEST, mine, lease_seconds=30, ttl_seconds=HOUR)
    wall.advance(31)
    assert store.claim(KEY, DIGEST, other, lease_seconds=30, ttl_seconds=HOUR).state == "unknown"
    assert store.claim(KEY, "f" * 32, other, lease_seconds=30, ttl_seconds=HOUR, take_over=True).state == "unknown"
    state, record = store.claim(KEY, DIGEST, other, lease_seconds=30, ttl_seconds=HOUR, take_over=True)
    assert state == "claimed" and record is not None and record.token == other
    assert not store.complete(KEY, mine, b"vlate", ttl_seconds=HOUR)  # the old owner lost it
    # Expired: gone, and claimable again.
    wall.advance(HOUR + 1)
    assert store.get(KEY) is None
    assert store.claim(KEY, DIGEST, mine, lease_seconds=30, ttl_seconds=HOUR).state == "claimed"


def test_stores_check_their_inputs(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(ValueError, match="key"):
        store.claim("refund order 42", DIGEST, "t", lease_seconds=1, ttl_seconds=1)  # raw text is never a key
    with pytest.raises(TypeError, match="key"):
        store.get(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease_seconds"):
        store.claim(KEY, DIGEST, "t", lease_seconds=0, ttl_seconds=1)
    with pytest.raises(ValueError, match="ttl_seconds"):
        store.claim(KEY, DIGEST, "t", lease_seconds=1, ttl_seconds=-5)
    with pytest.raises(TypeError, match="ttl_seconds"):
        store.claim(KEY, DIGEST, "t", lease_seconds=1, ttl_seconds="1 day")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token"):
        store.claim(KEY, DIGEST, "", lease_seconds=1, ttl_seconds=1)
    with pytest.raises(TypeError, match="outcome"):
        store.complete(KEY, "t", "text", ttl_seconds=1)  # type: ignore[arg-type]


MARKER = "CUSTOMER-4111-1111-SECRET"


def test_no_raw_argument_text_is_stored_at_rest(durable: Backend) -> None:
    """Arguments (card numbers, emails, prompts) never reach the store: only their digest. The outcome is stored."""
    effects = SideEffects(durable.open())
    args = {"card": MARKER, "note": MARKER.lower(), "nested": [{"memo": MARKER}]}
    effects.run("charge", args, lambda: {"status": "ok"}, run_id=f"run-{MARKER}")
    keyed = SideEffects(durable.open(), key=lambda a: f"user-key-{MARKER}")
    keyed.run("charge", args, lambda: {"status": "ok"})
    effects.run("charge", {"card": "other"}, lambda: {"status": "OUTCOME-IS-STORED"}, run_id="r")
    if hasattr(durable.opened[0], "close"):
        for store in durable.opened:
            store.close()  # type: ignore[attr-defined]  # flush SQLite's WAL into the file
    raw = durable.raw()
    assert b"OUTCOME-IS-STORED" in raw  # the view does see what is stored
    for needle in (MARKER, MARKER.lower()):
        assert needle.encode() not in raw
        assert needle.encode("utf-16-le") not in raw


def test_redis_records_carry_their_own_expiry(redis_url: str) -> None:
    import redis

    namespace = redis_namespace()
    store = RedisSideEffects(redis_url, namespace=namespace)
    client = redis.Redis.from_url(redis_url)
    try:
        store.claim(KEY, DIGEST, "t", lease_seconds=30, ttl_seconds=HOUR)
        assert HOUR * 1000 - 5_000 < client.pttl(f"{namespace}:se:{KEY}") <= HOUR * 1000 + 1_000
        store.complete(KEY, "t", b"v1", ttl_seconds=60)
        assert 55_000 < client.pttl(f"{namespace}:se:{KEY}") <= 61_000  # ttl counts from completion
    finally:
        client.close()
        store.close()
        delete_namespace(redis_url, namespace)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def test_unreachable_redis_is_a_store_error_that_says_what_to_fix_and_the_body_does_not_run() -> None:
    pytest.importorskip("redis", reason="needs the redis extra")
    port = _closed_port()
    effects = SideEffects(f"redis://127.0.0.1:{port}/0")
    runs = []
    with pytest.raises(StoreError) as caught:
        effects.run("send_refund", {"order_id": "o"}, lambda: runs.append(1), run_id="r")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "could not be reached" in message and "Redis is running" in message
    assert runs == []


def test_a_redis_password_never_appears_in_messages() -> None:
    pytest.importorskip("redis", reason="needs the redis extra")
    port = _closed_port()
    store = RedisSideEffects(f"redis://user:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        store.get(KEY)
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(store)


def test_unreachable_postgres_is_a_store_error_that_says_what_to_fix() -> None:
    pytest.importorskip("psycopg", reason="needs the postgres extra")
    port = _closed_port()
    with pytest.raises(StoreError) as caught:
        PostgresSideEffects(f"postgresql://postgres:hunter2@127.0.0.1:{port}/test", connect_timeout=2)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "PostgreSQL is running" in message and "hunter2" not in message


def test_postgres_table_and_schema_come_from_the_url(postgres_server: str) -> None:
    import psycopg

    schema, table = f"lg_se_{uuid.uuid4().hex[:10]}", "my_effects"
    sep = "&" if "?" in postgres_server else "?"
    store = side_effect_store(f"{postgres_server}{sep}schema={schema}&table={table}")
    try:
        assert isinstance(store, PostgresSideEffects)
        store.claim(KEY, DIGEST, "t", lease_seconds=1, ttl_seconds=1)
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone() == (1,)
    finally:
        store.close()  # type: ignore[attr-defined]
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with pytest.raises(ValueError, match="table"):
        PostgresSideEffects(postgres_server, table="effects; DROP TABLE x")


def test_a_sqlite_file_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        SQLiteSideEffects(tmp_path / "no-such-folder" / "effects.db")
    message = str(caught.value)
    assert "no-such-folder" in message and "does not exist: create it" in message


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes and users")
def test_a_read_only_sqlite_path_is_a_clear_error() -> None:
    from .conftest import as_another_user

    folder = Path(tempfile.mkdtemp(prefix="lg-se-read-only-"))  # under /tmp: reachable by another user
    try:
        SQLiteSideEffects(folder / "effects.db").close()
        (folder / "effects.db").chmod(0o444)
        folder.chmod(0o555)

        def open_it() -> str:
            SQLiteSideEffects(folder / "effects.db")
            return "opened"

        outcome = as_another_user(open_it)
        assert isinstance(outcome, tuple), outcome
        kind, message = outcome
        assert kind == "StoreError"
        assert "effects.db" in message and "write access" in message
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_store_urls_choose_the_store(tmp_path: Path) -> None:
    assert isinstance(side_effect_store("memory://"), MemorySideEffects)
    sqlite = side_effect_store(f"sqlite:///{tmp_path}/effects.db")
    assert isinstance(sqlite, SQLiteSideEffects) and sqlite.path == f"{tmp_path}/effects.db"
    with pytest.raises(ValueError, match=r"sqlite:///effects\.db"):
        side_effect_store("effects.db")
    with pytest.raises(ValueError, match="unknown side-effect store URL"):
        side_effect_store("mongodb://x")
    with pytest.raises(TypeError):
        side_effect_store(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MemorySideEffects"):
        SQLiteSideEffects(":memory:")


def test_the_store_extras_are_imported_only_when_used() -> None:
    import subprocess

    code = (
        "import sys, loopguard_core.idempotency as i; i.SideEffects(); i.side_effect_store('memory://');"
        "print([m for m in ('redis', 'psycopg') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopguard_core.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtra, match=r"loopguard-core\[redis\]"):
        RedisSideEffects("redis://127.0.0.1:6379/0")
    with pytest.raises(MissingExtra, match=r"loopguard-core\[postgres\]"):
        PostgresSideEffects("postgresql://postgres@127.0.0.1/test")
