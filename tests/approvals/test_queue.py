"""The approval queue's rules, the same on every backend: one open request per call, one decision, used once."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core import ApprovalError, StoreError
from loopguard_core.approvals import ApprovalQueue, ApprovalRequest, SQLiteApprovals, approval_queue

from .conftest import WallClock


def request(id: str = "r1", digest: str = "d1", **changes: object) -> ApprovalRequest:
    fields: dict[str, object] = {
        "id": id,
        "scope": "s",
        "session_id": "run-1",
        "tool": "refund",
        "args_digest": digest,
        "agent": "support",
        "preview": "refund 20 EUR",
        "spend": {"cost_usd": 0.12, "turns": 3},
        "turn": 3,
        "created_at": 1_700_000_000.0,
    }
    fields.update(changes)
    return ApprovalRequest(**fields)  # type: ignore[arg-type]


def test_asking_twice_for_the_same_call_queues_one_request(make_queue: Callable[[], ApprovalQueue]) -> None:
    queue = make_queue()
    first = queue.submit(request("r1"))
    again = queue.submit(request("r2"))  # same scope, run, tool, digest: the open request answers
    assert again.id == first.id == "r1"
    other = queue.submit(request("r3", digest="d2"))
    assert other.id == "r3"
    assert [r.id for r in queue.list("pending")] == ["r1", "r3"] or {r.id for r in queue.list("pending")} == {
        "r1",
        "r3",
    }
    stored = queue.get("r1")
    assert stored is not None and stored.spend == {"cost_usd": 0.12, "turns": 3} and stored.preview == "refund 20 EUR"


def test_a_request_is_decided_once_and_used_once(make_queue: Callable[[], ApprovalQueue]) -> None:
    queue = make_queue()
    queue.submit(request())
    approved = queue.decide("r1", approve=True, by="alice", args={"amount": 10})
    assert (approved.status, approved.decided_by, approved.args()) == ("approved", "alice", {"amount": 10})
    with pytest.raises(ApprovalError, match=r"approved .*by alice"):
        queue.decide("r1", approve=False, by="bob", reason="too late")
    queue.mark_used("r1")
    used = queue.get("r1")
    assert used is not None and used.status == "used" and used.edited_args is None  # edits erased once used
    with pytest.raises(ApprovalError, match="only a decided request"):
        queue.mark_used("r1")
    # the call asked again after its approval was used: a new request for a person
    assert queue.find_open("s", "run-1", "refund", "d1") is None
    assert queue.submit(request("r9")).id == "r9"


def test_rejections_keep_their_reason(make_queue: Callable[[], ApprovalQueue]) -> None:
    queue = make_queue()
    queue.submit(request())
    rejected = queue.decide("r1", approve=False, by="bob", reason="customer already refunded")
    assert (rejected.status, rejected.reason) == ("rejected", "customer already refunded")
    assert queue.list("rejected")[0].id == "r1"


def test_pending_requests_expire(make_queue: Callable[[], ApprovalQueue], wall: WallClock) -> None:
    queue = make_queue()
    queue.submit(request(expires_at=wall.now + 60))
    wall.now += 61
    assert [r.id for r in queue.list("expired")] == ["r1"]
    assert queue.list("pending") == []
    with pytest.raises(ApprovalError, match="expired"):
        queue.decide("r1", approve=True, by="alice")
    assert queue.mark_used("r1").status == "expired"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"approve": True, "by": ""}, "who made it"),
        ({"approve": True, "by": "alice", "args": {"when": object()}}, "JSON"),
        ({"approve": False, "by": "alice", "args": {"amount": 1}}, "not a rejection"),
        ({"approve": False, "by": "alice", "reason": 3}, "reason must be text"),
    ],
)
def test_bad_decisions_say_what_to_fix(
    make_queue: Callable[[], ApprovalQueue], kwargs: dict[str, object], match: str
) -> None:
    queue = make_queue()
    queue.submit(request())
    with pytest.raises(ApprovalError, match=match):
        queue.decide("r1", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ApprovalError, match="no approval request"):
        queue.decide("nope", approve=True, by="alice")
    with pytest.raises(ApprovalError, match="status must be one of"):
        queue.list("waiting")


def test_two_people_deciding_at_once_one_wins(make_queue: Callable[[], ApprovalQueue]) -> None:
    queue = make_queue()
    queue.submit(request())
    results: list[str] = []

    def decide(who: str) -> None:
        mine = make_queue()  # each person from their own connection
        try:
            mine.decide("r1", approve=who == "alice", by=who, reason=None if who == "alice" else "no")
            results.append(who)
        except ApprovalError:
            results.append("lost")

    threads = [threading.Thread(target=decide, args=(who,)) for who in ("alice", "bob", "carol", "dave")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("lost") == 3
    decided = queue.get("r1")
    assert decided is not None and decided.decided_by in results


def test_the_sqlite_queue_holds_no_arguments(tmp_path: Path) -> None:
    queue = SQLiteApprovals(tmp_path / "q.db")
    queue.submit(request(preview=None))
    queue.decide("r1", approve=True, by="alice", args={"iban": "SECRET-IBAN-123"})
    files = [tmp_path / "q.db", tmp_path / "q.db-wal"]
    assert b"SECRET-IBAN-123" in b"".join(f.read_bytes() for f in files if f.exists())  # until the run uses it
    queue.mark_used("r1")
    assert b"SECRET-IBAN-123" not in b"".join(f.read_bytes() for f in files if f.exists())
    queue.close()


def test_urls_choose_the_queue(tmp_path: Path) -> None:
    assert approval_queue("memory://").url == "memory://"
    assert isinstance(approval_queue(f"sqlite:///{tmp_path}/a.db"), SQLiteApprovals)
    assert isinstance(approval_queue(str(tmp_path / "b.db")), SQLiteApprovals)
    with pytest.raises(ValueError, match="unknown approval queue URL"):
        approval_queue("ftp://x")
    with pytest.raises(TypeError, match="approvals must be"):
        approval_queue(3)  # type: ignore[arg-type]


def test_an_unusable_file_gives_a_store_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="approval queue"):
        SQLiteApprovals(tmp_path / "missing-dir" / "q.db")
    locked = tmp_path / "locked.db"
    queue = SQLiteApprovals(locked, timeout=0.1)
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            queue.submit(request())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert queue.submit(request()).id == "r1"  # nothing lost: it works once the lock is gone


def test_a_request_is_found_by_the_frameworks_call_id(make_queue: Callable[[], ApprovalQueue]) -> None:
    queue = make_queue()
    queue.submit(request("r1", call_id="toolu_1"))
    queue.submit(request("r2", digest="d2", call_id="toolu_2"))
    found = queue.find_by_call("s", "refund", "toolu_2")
    assert found is not None and found.id == "r2"
    assert queue.find_by_call("s", "refund", "toolu_9") is None
    assert queue.find_by_call("other-scope", "refund", "toolu_1") is None
