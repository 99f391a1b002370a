from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.tutorial import (
    AttestationResult,
    DiffResult,
    Ledger,
    LedgerRow,
    ReviewFrame,
    ReviewSurface,
    SessionNotFoundError,
    SpecResult,
    SpecWriter,
    frame_hash,
)

Paths = tuple[str, str]


def scripted(answers: Iterable[str]) -> Callable[[str], str]:
    it = iter(answers)
    return lambda prompt: next(it)


@pytest.fixture
def db_paths(tmp_path: Path) -> Paths:
    return str(tmp_path / "spec.db"), str(tmp_path / "ledger.db")


def make_spec(spec_db: str, answers: Sequence[str] = ("does X", "not Y", "Z looks like done")) -> SpecResult:
    return SpecWriter(db_path=spec_db, input_fn=scripted(answers), output_fn=lambda _: None).run()


def populate(ledger_db: str, session_id: str, rows: Sequence[dict[str, Any]]) -> None:
    led = Ledger(db_path=ledger_db)
    for r in rows:
        led.write(
            session_id=session_id,
            turn_count=r["turn"],
            state_origin=r["state"],
            input_str=r.get("input", "task"),
            token_delta=r["tokens"],
            execution_time_ms=r["ms"],
            pass_fail=r["pass"],
            breach_reason=r.get("breach"),
        )


def clean_run(db_paths: Paths) -> SpecResult:
    spec = make_spec(db_paths[0])
    populate(
        db_paths[1],
        spec.session_id,
        [
            {"turn": 1, "state": "llm", "tokens": 100, "ms": 50, "pass": True},
            {"turn": 2, "state": "llm", "tokens": 120, "ms": 60, "pass": True},
            {"turn": 3, "state": "llm", "tokens": 90, "ms": 45, "pass": True},
        ],
    )
    return spec


def breached_run(db_paths: Paths) -> SpecResult:
    spec = make_spec(db_paths[0])
    populate(
        db_paths[1],
        spec.session_id,
        [
            {"turn": 1, "state": "llm", "tokens": 200, "ms": 50, "pass": True},
            {"turn": 2, "state": "llm", "tokens": 220, "ms": 55, "pass": True},
            {"turn": 3, "state": "circuit_breaker", "tokens": 0, "ms": 0, "pass": False, "breach": "turn_ceiling"},
        ],
    )
    return spec


def test_load_builds_the_five_element_frame(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    frame = ReviewSurface(*db_paths).load(spec.session_id)
    assert isinstance(frame, ReviewFrame)
    assert frame.session_id == spec.session_id
    assert frame.original_promise == spec
    assert frame.acceptance_criteria == spec.done_looks_like
    assert frame.diff == DiffResult(
        first_input=hashlib.sha256(b"task").hexdigest(),
        final_output="llm",
        turns_completed=3,
        total_tokens=310,
        breached=False,
    )
    assert isinstance(frame.evidence, tuple)
    assert [r.turn_count for r in frame.evidence] == [1, 2, 3]
    assert frame.unresolved_assumptions == ()
    assert frame.created_at.endswith("+00:00")


def test_diff_first_input_is_the_first_rows_hash_and_final_output_the_last_llm_origin(db_paths: Paths) -> None:
    spec = make_spec(db_paths[0])
    populate(
        db_paths[1],
        spec.session_id,
        [
            {"turn": 1, "state": "planner", "tokens": 1, "ms": 1, "pass": True, "input": "first"},
            {"turn": 2, "state": "llm", "tokens": 2, "ms": 1, "pass": True, "input": "second"},
            {"turn": 3, "state": "tool", "tokens": 3, "ms": 1, "pass": True, "input": "third"},
        ],
    )
    diff = ReviewSurface(*db_paths).load(spec.session_id).diff
    assert diff.first_input == hashlib.sha256(b"first").hexdigest()
    assert diff.final_output == "llm"
    assert (diff.turns_completed, diff.total_tokens, diff.breached) == (1, 6, False)


def test_session_with_only_breach_rows(db_paths: Paths) -> None:
    spec = make_spec(db_paths[0])
    populate(
        db_paths[1],
        spec.session_id,
        [{"turn": 1, "state": "circuit_breaker", "tokens": 0, "ms": 0, "pass": False, "breach": "token_ceiling"}],
    )
    frame = ReviewSurface(*db_paths).load(spec.session_id)
    assert (frame.diff.turns_completed, frame.diff.final_output, frame.diff.breached) == (
        0,
        "circuit_breaker",
        True,
    )
    assert frame.unresolved_assumptions == ("turn 1: circuit_breaker fired (token_ceiling)",)


def test_render_headings_and_spacing(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    output = ReviewSurface(*db_paths).render(spec.session_id)
    for heading in (
        "REVIEW SURFACE",
        "[1] ORIGINAL PROMISE",
        "[2] ACCEPTANCE CRITERIA",
        "[3] DIFF",
        "[4] EVIDENCE",
        "[5] UNRESOLVED ASSUMPTIONS",
    ):
        assert heading in output
    assert "Turns completed:     3" in output
    assert "Total tokens:        310" in output
    assert "No unresolved assumptions detected." in output
    lines = output.splitlines()
    assert lines[0] == lines[4] == lines[-1] == "=" * 64
    assert lines[2] == f"session_id: {spec.session_id}"
    assert lines[3].startswith("loaded_at:  ")
    assert lines[6:13] == [
        "[1] ORIGINAL PROMISE",
        "    What this does:      does X",
        "    What this does NOT:  not Y",
        "    Done looks like:     Z looks like done",
        "",
        "[2] ACCEPTANCE CRITERIA",
        "    Z looks like done",
    ]
    assert f"    First input hash:    {hashlib.sha256(b'task').hexdigest()}" in lines
    assert "    Final state origin:  llm" in lines
    assert "    Breached:            False" in lines
    assert "    turn=1   state=llm              tokens=100    ms=50     PASS" in lines


def test_render_of_a_breached_run_lists_the_breach(db_paths: Paths) -> None:
    spec = breached_run(db_paths)
    output = ReviewSurface(*db_paths).render(spec.session_id)
    assert "No unresolved assumptions detected." not in output
    lines = output.splitlines()
    assert "    turn=3   state=circuit_breaker  tokens=0      ms=0      FAIL breach=turn_ceiling" in lines
    assert "    - turn 3: circuit_breaker fired (turn_ceiling)" in lines
    assert "    Breached:            True" in lines


def test_unresolved_assumption_for_a_failed_row_without_breach(db_paths: Paths) -> None:
    spec = make_spec(db_paths[0])
    populate(
        db_paths[1],
        spec.session_id,
        [
            {"turn": 1, "state": "llm", "tokens": 100, "ms": 50, "pass": True},
            {"turn": 2, "state": "llm", "tokens": 90, "ms": 40, "pass": False},
        ],
    )
    frame = ReviewSurface(*db_paths).load(spec.session_id)
    assert frame.unresolved_assumptions == ("turn 2: pass_fail=False",)
    assert frame.diff.breached is True


@pytest.mark.parametrize("have", ["neither", "spec only", "rows only"])
def test_session_not_found_cases(db_paths: Paths, have: str) -> None:
    session_id = "orphan"
    if have == "spec only":
        session_id = make_spec(db_paths[0]).session_id
    elif have == "rows only":
        populate(db_paths[1], session_id, [{"turn": 1, "state": "llm", "tokens": 10, "ms": 5, "pass": True}])
    surface = ReviewSurface(*db_paths)
    with pytest.raises(SessionNotFoundError) as exc:
        surface.load(session_id)
    assert isinstance(exc.value, KeyError)
    assert repr(session_id) in str(exc.value)
    with pytest.raises(SessionNotFoundError):
        surface.attest(session_id, reviewer="alice")
    with pytest.raises(SessionNotFoundError):
        surface.render(session_id)


def test_attest_stores_a_row_with_the_frame_hash(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    surface = ReviewSurface(*db_paths)
    att = surface.attest(spec.session_id, reviewer="alice", notes="LGTM")
    assert isinstance(att, AttestationResult)
    assert (att.id, att.session_id, att.reviewer, att.notes) == (1, spec.session_id, "alice", "LGTM")
    assert att.frame_hash == frame_hash(surface.load(spec.session_id))
    assert att.attested_at.endswith("+00:00")
    with sqlite3.connect(db_paths[1]) as conn:
        row = conn.execute(
            "SELECT session_id, reviewer, notes, frame_hash FROM attestations WHERE id = ?", (att.id,)
        ).fetchone()
    assert row == (spec.session_id, "alice", "LGTM", att.frame_hash)


def test_frame_hash_follows_the_tutorial_recipe(db_paths: Paths) -> None:
    spec = breached_run(db_paths)
    att = ReviewSurface(*db_paths).attest(spec.session_id, reviewer="r")
    h = hashlib.sha256(b"task").hexdigest()
    canonical = "\n".join(
        [
            f"session_id:{spec.session_id}",
            "what_it_does:does X",
            "what_it_does_not:not Y",
            "done_looks_like:Z looks like done",
            "acceptance_criteria:Z looks like done",
            f"diff.first_input:{h}",
            "diff.final_output:llm",
            "diff.turns_completed:2",
            "diff.total_tokens:420",
            "diff.breached:True",
            f"row:1|llm|{h}|200|1|",
            f"row:2|llm|{h}|220|1|",
            f"row:3|circuit_breaker|{h}|0|0|turn_ceiling",
            "assumption:turn 3: circuit_breaker fired (turn_ceiling)",
        ]
    )
    assert att.frame_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_frame_hash_ignores_load_time_ids_timestamps_latency_reviewer_and_notes() -> None:
    spec = SpecResult("a", "b", "c", "sid")
    row = LedgerRow(1, "sid", 1, "llm", "h", 10, 5, True, None, "2026-01-01T00:00:00+00:00")
    frame = ReviewFrame("sid", spec, "c", DiffResult("h", "llm", 1, 10, False), (row,), (), "t0")
    moved = replace(
        frame,
        created_at="t1",
        evidence=(replace(row, id=99, created_at="2030-01-01T00:00:00+00:00", execution_time_ms=9999),),
    )
    assert frame_hash(frame) == frame_hash(moved) == ReviewSurface._frame_hash(frame)
    assert frame_hash(frame) != frame_hash(replace(frame, evidence=(replace(row, token_delta=11),)))


def test_same_session_same_hash_for_every_reviewer(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    surface = ReviewSurface(*db_paths)
    a1 = surface.attest(spec.session_id, reviewer="alice")
    a2 = ReviewSurface(*db_paths).attest(spec.session_id, reviewer="bob", notes="different note")
    assert a1.frame_hash == a2.frame_hash
    assert a2.id == 2


def test_hash_changes_when_the_session_grows(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    surface = ReviewSurface(*db_paths)
    before = surface.attest(spec.session_id, reviewer="r").frame_hash
    populate(db_paths[1], spec.session_id, [{"turn": 4, "state": "llm", "tokens": 1, "ms": 1, "pass": True}])
    assert surface.attest(spec.session_id, reviewer="r").frame_hash != before


def test_hash_differs_across_sessions(db_paths: Paths) -> None:
    spec_a = clean_run(db_paths)
    spec_b = make_spec(db_paths[0], answers=("alt does", "alt not", "alt done"))
    populate(db_paths[1], spec_b.session_id, [{"turn": 1, "state": "llm", "tokens": 50, "ms": 10, "pass": True}])
    surface = ReviewSurface(*db_paths)
    assert surface.attest(spec_a.session_id, "r").frame_hash != surface.attest(spec_b.session_id, "r").frame_hash


def test_get_attestations_is_the_history_in_order(db_paths: Paths) -> None:
    spec = clean_run(db_paths)
    surface = ReviewSurface(*db_paths)
    assert surface.get_attestations(spec.session_id) == []
    first = surface.attest(spec.session_id, reviewer="alice", notes="first review")
    second = surface.attest(spec.session_id, reviewer="bob")
    assert surface.get_attestations(spec.session_id) == [first, second]
    assert surface.get_attestations(spec.session_id)[1].notes == ""


def test_null_notes_read_back_as_empty_string(db_paths: Paths) -> None:
    surface = ReviewSurface(*db_paths)
    with sqlite3.connect(db_paths[1]) as conn:
        conn.execute(
            "INSERT INTO attestations (session_id, reviewer, attested_at, notes, frame_hash) "
            "VALUES ('s', 'r', 't', NULL, 'h')"
        )
    assert surface.get_attestations("s")[0].notes == ""


def test_attestations_table_schema_and_idempotent_init(db_paths: Paths) -> None:
    ReviewSurface(*db_paths)
    ReviewSurface(*db_paths)
    with sqlite3.connect(db_paths[1]) as conn:
        cols = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(attestations)")}
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(attestations)")]
    assert cols == {
        "id": "INTEGER",
        "session_id": "TEXT",
        "reviewer": "TEXT",
        "attested_at": "TEXT",
        "notes": "TEXT",
        "frame_hash": "TEXT",
    }
    assert indexes == ["idx_attestation_session"]


def test_defaults_are_spec_db_and_ledger_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    surface = ReviewSurface()
    assert (surface.spec_db_path, surface.ledger_db_path) == ("spec.db", "ledger.db")
    assert (tmp_path / "spec.db").exists()
    assert (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize("statement", ["UPDATE attestations SET frame_hash = 'forged'", "DELETE FROM attestations"])
def test_attestations_refuse_update_and_delete(db_paths: Paths, statement: str) -> None:
    spec = clean_run(db_paths)
    surface = ReviewSurface(*db_paths)
    att = surface.attest(spec.session_id, reviewer="alice")
    conn = sqlite3.connect(db_paths[1])
    try:
        with pytest.raises(sqlite3.IntegrityError, match="attestations is append-only"):
            conn.execute(statement)
    finally:
        conn.close()
    assert surface.get_attestations(spec.session_id) == [att]
