"""No raw input at rest, in any store or ledger: after a run whose arguments, results and errors carry secret
words (loops, reworded questions, paging, failures, observe mode), not one of those words is in the bytes
of any store: Redis keys, fields, values and members (standalone, Valkey, every node of a cluster), the SQLite
ledger's files (database, WAL, shared memory), the PostgreSQL ledger's tables, or the memory store's state.
With a ``digest_key``, Redis holds no digest either that a reader could recompute from a guessed argument.
"""

from __future__ import annotations

import json
import random
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.ledger import Ledger
from loopguard_core.limits import LoopDetection
from loopguard_core.signatures import call_signature, outcome_digest
from loopguard_core.stores import MemoryStore

from .._build import declared_fields
from ..stores.conftest import PATIENT, PrivateCluster, services_required

pytestmark = pytest.mark.reliability


def secret_words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(11)) for _ in range(n)]


def run_session(breaker: Breaker, w: list[str]) -> dict[str, list[str]]:
    """A run that exercises every memory a store keeps; returns the signatures and outcome digests it made."""
    made: dict[str, list[str]] = {"signatures": [], "outcomes": []}

    def call(tool: str, args: Any, result: Any = None, error: Any = None, call_id: str | None = None) -> None:
        made["signatures"].append(call_signature(tool, args))
        made["outcomes"].append(outcome_digest(result, error))
        try:
            breaker.before_tool(tool, args, agent="researcher", call_id=call_id)
        except LoopGuardTripped:
            return
        breaker.after_tool(tool, args, result=result, error=error, agent="researcher", call_id=call_id)

    for i in range(5):  # the same call, the same answer: a loop (its refusal's facts are stored)
        call("search", {"query": f"{w[0]} {w[1]}", "token": w[2]}, result=f"{w[3]} found nothing", call_id=f"s{i}")
    breaker.reset()
    questions = [  # the same question reworded: word hashes are kept
        f"what is the {w[4]} of {w[5]} in {w[6]}",
        f"tell me {w[5]} {w[4]} for {w[6]} please",
        f"the {w[6]} {w[4]} of the {w[5]} is what",
        f"{w[4]} {w[5]} {w[6]} what is it",
        f"which {w[4]} does {w[5]} have in {w[6]}",
    ]
    for q in questions:
        call("ask", {"question": q}, result=f"no idea about {w[7]}")
    breaker.reset()
    for page in range(6):  # paging into empty pages
        call("fetch", {"url": f"https://example.invalid/{w[8]}", "page": page}, result=[])
    breaker.reset()
    for i in range(6):  # the same error again and again: a failure streak
        call("deploy", {"key": w[9]}, error=RuntimeError(f"{w[10]} rejected {i}"), call_id=f"d{i}")
    breaker.reset()
    call("search", {"query": w[11]}, call_id="in-flight-1")  # admitted, never reported: a call in flight
    breaker.before_tool("lookup", {"id": w[12]}, call_id="in-flight-2")
    for i in range(3):
        try:
            breaker.before_model(max_output_tokens=10, call_id=f"m{i}")
            breaker.after_model(input_tokens=5, output_tokens=5, call_id=f"m{i}")
        except LoopGuardTripped:
            pass
    return made


def redis_bytes(clients: list[Any], scope: str) -> bytes:
    """Every key of ``scope`` with its fields, values and members, on every given node, as bytes."""
    from loopguard_core.stores.redis import key_pattern

    out: list[bytes] = []
    for client in clients:
        for key in client.scan_iter(match=key_pattern(scope), count=1000):
            out.append(key)
            kind = client.type(key)
            if kind == b"hash":
                for field, value in client.hgetall(key).items():
                    out += [field, value]
            elif kind == b"list":
                out += client.lrange(key, 0, -1)
            elif kind == b"zset":
                out += client.zrange(key, 0, -1)
            elif kind == b"set":
                out += sorted(client.smembers(key))
            else:
                out.append(client.dump(key) or b"")
    return b"\n".join(out)


def object_bytes(obj: Any, depth: int = 0, seen: set[int] | None = None) -> bytes:
    """Everything reachable from ``obj`` (attributes, items), rendered: what the memory store holds."""
    seen = set() if seen is None else seen
    if depth > 12 or id(obj) in seen:
        return b""
    seen.add(id(obj))
    if isinstance(obj, (str, int, float, bool, type(None))):
        return repr(obj).encode("utf-8", "surrogatepass")
    if isinstance(obj, bytes):
        return obj
    parts: list[Any] = []
    if isinstance(obj, dict):
        parts = [x for kv in obj.items() for x in kv]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        parts = list(obj)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__slots__") or type(obj).__module__.startswith("loopguard_core"):
        names = list(getattr(obj, "__dict__", {})) + list(getattr(obj, "__slots__", ()))
        if type(obj).__module__.startswith("loopguard_core"):  # compiled by mypyc: attributes are descriptors
            names += declared_fields(type(obj))
        parts = [getattr(obj, name, None) for name in names]
    return b"|".join(object_bytes(p, depth + 1, seen) for p in parts)


def assert_absent(haystack: bytes, words: list[str], where: str) -> None:
    lowered = haystack.lower()
    found = [w for w in words if w.encode() in lowered]
    assert not found, f"{where} holds raw input: {found}"


@pytest.fixture(params=["memory", "redis", "valkey", "cluster"])
def store_and_dump(request: pytest.FixtureRequest, scope: str) -> Iterator[tuple[Any, Any]]:
    """A store, and a function that returns every byte it holds for ``scope``."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, lambda: object_bytes(store._runs)
        return
    if not services_required():
        pytest.importorskip("redis", reason="needs the redis extra")
    from loopguard_core.stores.redis import RedisStore

    if request.param == "cluster":
        cluster: PrivateCluster = request.getfixturevalue("redis_cluster")
        store = RedisStore(cluster.url, **PATIENT)
        clients = []
        for node in cluster.live():  # masters and replicas
            client = node.client(single_connection_client=True)
            client.execute_command("READONLY")  # a replica answers reads instead of redirecting them
            clients.append(client)
    else:
        server = request.getfixturevalue("valkey").url if request.param == "valkey" else None
        url = server or request.getfixturevalue("redis_url")
        store = RedisStore(url, **PATIENT)
        import redis

        clients = [redis.Redis.from_url(url)]
    yield store, lambda: redis_bytes(clients, scope)
    store.close()
    for client in clients:
        client.close()


@pytest.mark.parametrize("mode", ["enforce", "observe"])
def test_no_raw_input_in_any_store_or_the_sqlite_ledger(
    store_and_dump: tuple[Any, Any], scope: str, tmp_path: Path, mode: str, request: pytest.FixtureRequest
) -> None:
    store, dump = store_and_dump
    words = secret_words(13, seed=len(request.node.name))
    ledger = Ledger(tmp_path / "ledger.db")
    loop = LoopDetection(similarity=0.5, max_empty_results=3)
    breaker = Breaker(store=store, scope=scope, ledger=ledger, session_id=scope, loop_detection=loop, mode=mode)
    run_session(breaker, words)
    if "cluster" in request.node.name:
        cluster = request.getfixturevalue("redis_cluster")
        for node in cluster.live():  # the replicas get everything the masters have
            client = node.client()
            if client.execute_command("ROLE")[0] == b"master":
                client.execute_command("WAIT", 1, 2000)
            client.close()
    held = dump()
    assert len(held) > 200  # the store does hold the run
    assert_absent(held, words, f"the {type(store).__name__}")
    ledger_bytes = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # ledger.db, -wal, -shm
    assert_absent(ledger_bytes, words, "the SQLite ledger's files (open)")
    assert len(list(ledger.rows())) > 20
    ledger.close()
    assert_absent(b"".join(p.read_bytes() for p in tmp_path.iterdir()), words, "the SQLite ledger's files")


@pytest.mark.redis
@pytest.mark.postgres
def test_no_raw_input_and_no_plain_digest_with_a_digest_key(
    redis_url: str, pg_url: str, pg_admin: Any, pg_schema: str, scope: str
) -> None:
    """Redis with a digest_key, and a PostgreSQL ledger with an hmac_key: only keyed digests at rest."""
    if not services_required():
        pytest.importorskip("redis", reason="needs the redis extra")
    import redis

    from loopguard_core.stores.redis import RedisStore

    words = secret_words(13, seed=7)
    store = RedisStore(redis_url, digest_key=b"a key shared by the scope's processes", **PATIENT)
    ledger = Ledger(pg_url, hmac_key=b"k" * 32)
    breaker = Breaker(store=store, scope=scope, ledger=ledger, session_id=scope)
    made = run_session(breaker, words)
    client = redis.Redis.from_url(redis_url)
    held = redis_bytes([client], scope)
    assert_absent(held, words, "Redis")
    plain = [d[:16] for d in made["signatures"] + made["outcomes"]]  # any 8 bytes of a plain digest
    assert not [d for d in plain if d.encode() in held], "Redis holds a digest anyone could recompute"
    rows = []
    for table in ("loopguard_meta", "loopguard_ledger", "loopguard_checkpoints"):
        rows += [r[0] for r in pg_admin.execute(f'SELECT row_to_json(t)::text FROM "{pg_schema}".{table} t')]
    assert len(rows) > 20
    assert_absent("\n".join(rows).encode(), words, "the PostgreSQL ledger")
    assert not [d for d in made["signatures"] if d in "\n".join(rows)]
    json.loads(rows[-1])  # real rows were read
    ledger.close()
    store.close()
    client.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_the_search_for_raw_input_finds_it_when_it_is_there(tmp_path: Path) -> None:
    """The check above is not blind: a word written as is into a SQLite file or an object is found."""
    words = secret_words(2, seed=1)
    (tmp_path / "plain.txt").write_text(f"prefix {words[0]} suffix")
    with pytest.raises(AssertionError, match=words[0]):
        assert_absent((tmp_path / "plain.txt").read_bytes(), words, "a file")
    with pytest.raises(AssertionError, match=words[1]):
        assert_absent(object_bytes({"a": [("x", {words[1].upper()})]}), words, "an object")
