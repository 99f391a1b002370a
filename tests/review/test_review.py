from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core.errors import LoopGuardError
from loopguard_core.ledger import Ledger
from loopguard_core.review import (
    AttestationRequired,
    ReviewSurface,
    SessionNotFound,
    attest,
    render_session,
    require_attestation,
)
from loopguard_core.spec import Spec, SpecStore

from .conftest import DONE


def test_frame_has_the_five_elements(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    frame = ReviewSurface(db).frame(sid)
    assert frame.original_promise.what_it_does.startswith("Crawl example.com")
    assert frame.acceptance_criteria == DONE
    d = frame.diff
    assert (d.rows, d.model_turns, d.tool_calls, d.tools) == (9, 4, 4, (("fetch", 4),))
    assert d.input_tokens == sum(400 + 50 * t for t in range(1, 5)) and d.output_tokens == 240
    assert d.cost_micros == 20000
    assert d.trips == ((9, 5, "loop"),)
    assert d.outcome == "stopped by loopguard at turn 5 (loop, ledger row 9)"
    assert [r.seq for r in frame.evidence] == list(range(1, 10))
    assert frame.ledger_ok and frame.ledger_problems == ()
    assert len(frame.assumptions) == 1
    assert "turn 5: loopguard stopped the run (loop, agent crawler)" in frame.assumptions[0]


def test_clean_run_has_no_unresolved_assumptions(db: Path, session: Callable[..., str]) -> None:
    sid = session(trip=False)
    frame = ReviewSurface(db).frame(sid)
    assert frame.assumptions == ()
    assert frame.diff.outcome == "ran to its end without a trip"
    assert "None found in the ledger." in ReviewSurface(db).render("run-1")


def test_failed_tool_and_vague_spec_become_assumptions(db: Path, session: Callable[..., str]) -> None:
    sid = session(trip=False, failed_tool=True)
    SpecStore(db).save(Spec("Audit the site.", "Nothing else.", "The site is audited.", sid))
    frame = ReviewSurface(db).frame(sid)
    assert any("not checkable" in a for a in frame.assumptions)
    assert any("turn 2: tool 'fetch' failed: HTTP 500" in a for a in frame.assumptions)


def test_frame_hash_is_deterministic_and_covers_what_is_shown(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    first = ReviewSurface(db).frame(sid)
    again = ReviewSurface(db).frame(sid)
    assert first.frame_hash == again.frame_hash and len(first.frame_hash) == 64
    assert ReviewSurface(db).render(sid, "html") == ReviewSurface(db).render(sid, "html")
    # Every renderer shows the hash the reviewer attests.
    for fmt in ("text", "md", "html"):
        assert first.frame_hash in ReviewSurface(db).render(sid, fmt)
    Ledger(db).record(session_id=sid, origin="model", turn=6)
    assert ReviewSurface(db).frame(sid).frame_hash != first.frame_hash


def test_render_text_shows_the_five_sections(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    text = render_session(db, sid, format="text")
    for heading in (
        "[1] ORIGINAL PROMISE",
        "[2] ACCEPTANCE CRITERIA",
        "[3] DIFF",
        "[4] EVIDENCE",
        "[5] UNRESOLVED ASSUMPTIONS",
    ):
        assert heading in text
    assert "Outcome:           stopped by loopguard at turn 5 (loop, ledger row 9)" in text
    assert "Tool calls:        4 (fetch x4)" in text
    assert "the ledger verifies" in text
    assert "prompt 1" not in text  # inputs are only hashes


def test_render_markdown(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    md = render_session(db, sid, format="md")
    assert md.startswith("# Review frame: session `run-1`")
    assert "## 5. Unresolved assumptions" in md and "| seq | turn | origin |" in md
    assert f"> {DONE}" in md


def test_render_html_is_self_contained_with_chart_and_trip(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    html = render_session(db, sid, format="html")
    assert html.startswith("<!DOCTYPE html>")
    assert '<svg id="lg-chart"' in html and html.count('class="bar"') == 9
    assert 'class="trip"' in html and "trip: loop" in html and 'class="cost"' in html
    for ref in ("http://", "https://", "<script", "<link", "src="):
        assert ref not in html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace("https://example.com", "")


def test_html_escapes_user_text(db: Path, session: Callable[..., str]) -> None:
    sid = session(session_id="<b>x</b>")
    SpecStore(db).save(Spec("Crawl <script>alert(1)</script> now", "No forms.", DONE, sid))
    html = ReviewSurface(db).render(sid, "html")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_unknown_format_is_refused(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    with pytest.raises(ValueError, match="format must be one of text, md, html"):
        ReviewSurface(db).render(sid, "pdf")


def test_missing_session_spec_or_rows_raise_session_not_found(db: Path, session: Callable[..., str]) -> None:
    session()
    surface = ReviewSurface(db)
    with pytest.raises(SessionNotFound, match="no spec and no ledger rows"):
        surface.frame("nope")
    Ledger(db).record(session_id="rows-only", origin="model", turn=1)
    with pytest.raises(SessionNotFound, match="has no spec in"):
        surface.frame("rows-only")
    SpecStore(db).save(Spec("a", "b", "c", "spec-only"))
    with pytest.raises(SessionNotFound, match="no ledger rows"):
        surface.frame("spec-only")
    assert issubclass(SessionNotFound, KeyError) and issubclass(SessionNotFound, LoopGuardError)


def test_attest_then_require_passes(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    surface = ReviewSurface(db)
    with pytest.raises(AttestationRequired, match="nobody has attested it"):
        surface.require_attestation(sid)
    a = surface.attest(sid, "ana", "titles checked against the site")
    assert (a.session_id, a.reviewer, a.notes) == (sid, "ana", "titles checked against the site")
    assert a.frame_hash == surface.frame(sid).frame_hash and a.attested_at.endswith("+00:00")
    assert surface.require_attestation(sid) == a
    assert require_attestation(sid, db=db) == a
    assert surface.attestations(sid) == [a]


def test_a_frame_that_changed_after_attestation_no_longer_matches(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    attest(sid, "ana", db=db)
    Ledger(db).record(session_id=sid, origin="model", turn=9)  # the run went on after review
    with pytest.raises(AttestationRequired, match="attestation\\(s\\) are for an earlier frame"):
        require_attestation(sid, db=db)


def test_tampering_with_the_ledger_invalidates_the_attestation(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    attest(sid, "ana", db=db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER loopguard_ledger_no_update")
    conn.execute("UPDATE loopguard_ledger SET cost_micros = 0 WHERE seq = 3")
    with pytest.raises(AttestationRequired):
        require_attestation(sid, db=db)
    frame = ReviewSurface(db).frame(sid)
    assert not frame.ledger_ok and "does not verify" in frame.assumptions[0]
    assert "THE LEDGER DOES NOT VERIFY" in ReviewSurface(db).render(sid)


def test_attest_with_a_stale_frame_hash_is_refused(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    seen = ReviewSurface(db).frame(sid).frame_hash
    Ledger(db).record(session_id=sid, origin="model", turn=9)
    with pytest.raises(AttestationRequired, match="changed after the frame you reviewed"):
        attest(sid, "ana", db=db, frame_hash=seen)
    assert ReviewSurface(db).attestations(sid) == []


def test_attestations_are_append_only(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    attest(sid, "ana", db=db)
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE attestations SET reviewer = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM attestations")


def test_reviewer_must_be_named(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    with pytest.raises(ValueError, match="reviewer must name"):
        attest(sid, "  ", db=db)


def test_review_needs_no_hmac_key(db: Path, session: Callable[..., str], tmp_path: Path) -> None:
    hdb = tmp_path / "hmac.db"
    SpecStore(hdb).save(
        Spec.create(
            what_it_does="Crawl example.com and extract titles.",
            what_it_does_not="No forms.",
            done_looks_like=DONE,
            session_id="h",
        )
    )
    Ledger(hdb, hmac_key=b"k" * 32).record(session_id="h", origin="model", turn=1, input_text="secret")
    assert "[4] EVIDENCE" in render_session(hdb, "h")


def test_observe_mode_rows_are_noted_as_would_have_refused_never_as_a_stop(db: Path) -> None:
    from loopguard_core import Breaker, Ledger

    SpecStore(db).save(
        Spec.create(
            what_it_does="Search the docs for the refund policy.",
            what_it_does_not="It does not change anything.",
            done_looks_like="Write every refund rule from https://docs.example.com/refunds into refunds.md, then stop.",
            session_id="observed",
        )
    )
    ledger = Ledger(db)
    breaker = Breaker(mode="observe", ledger=ledger, session_id="observed")
    for _ in range(5):
        breaker.before_tool("search", {"q": "refund policy"})
        breaker.after_tool("search", {"q": "refund policy"}, result="see section 4")
    ledger.close()
    rows = Ledger(db).rows("observed")
    observed = [r for r in rows if r.origin == "breaker"]
    assert [r.breach_reason for r in observed] == ["observed:loop", "observed:loop"]
    assert all(r.passed and not r.is_trip for r in observed)
    frame = ReviewSurface(db).frame("observed")
    assert frame.diff.trips == ()
    assert frame.diff.outcome == "ran to its end without a trip"
    assert any("would have refused a call (observed:loop" in a for a in frame.assumptions)


# -- attestation status on every rendering ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_renders_say_nobody_attested(db: Path, session: Callable[..., str], fmt: str) -> None:
    sid = session()
    page = ReviewSurface(db).render(sid, fmt)
    assert "NOT ATTESTED: nobody has attested this session" in page
    assert "None: nobody has attested this session." in page


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_renders_show_who_attested_when_and_which_frame(db: Path, session: Callable[..., str], fmt: str) -> None:
    sid = session()
    a = attest(sid, "ana@example.com", "titles checked", db=db)
    page = ReviewSurface(db).render(sid, fmt)
    assert f"ATTESTED by ana@example.com at {a.attested_at}; matches this frame" in page
    assert a.frame_hash in page and a.attested_at in page and "titles checked" in page
    assert "matches this frame" in page and "EARLIER FRAME" not in page


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_renders_flag_an_attestation_of_an_earlier_frame(db: Path, session: Callable[..., str], fmt: str) -> None:
    sid = session()
    old = attest(sid, "ana", db=db)
    Ledger(db).record(session_id=sid, origin="model", turn=9)  # the run went on after review
    surface = ReviewSurface(db)
    page = surface.render(sid, fmt)
    assert surface.frame(sid).frame_hash != old.frame_hash
    assert "NOT ATTESTED: its 1 attestation(s) are for an earlier frame" in page
    assert old.frame_hash in page and "EARLIER FRAME: does not match this frame" in page
    again = attest(sid, "bob", db=db)
    page = ReviewSurface(db).render(sid, fmt)
    assert f"ATTESTED by bob at {again.attested_at}; matches this frame" in page
    section = page[
        page.index({"text": "ATTESTATIONS (2)", "md": "## Attestations", "html": 'id="attestations"'}[fmt]) :
    ]
    assert old.frame_hash in section and again.frame_hash in section  # both are listed, oldest first
    assert section.index(old.frame_hash) < section.index(again.frame_hash)


def test_attestation_text_is_escaped(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    attest(sid, "<b>eve</b>", "a | b\nc <script>x</script>", db=db)
    html = ReviewSurface(db).render(sid, "html")
    assert "<b>eve</b>" not in html and "&lt;b&gt;eve&lt;/b&gt;" in html and "<script>x" not in html
    md = ReviewSurface(db).render(sid, "md")
    assert "a \\| b c" in md  # a table cell: no raw pipe or newline


def test_the_attest_command_on_a_render_runs_against_that_ledger(db: Path, session: Callable[..., str]) -> None:
    sid = session()
    frame = ReviewSurface(db).frame(sid)
    for fmt in ("text", "md", "html"):
        assert f"loopguard attest {sid} --db {db} --reviewer NAME --frame-hash {frame.frame_hash}" in (
            ReviewSurface(db).render(sid, fmt)
        )
    from loopguard_core.review import render

    assert "--db" not in render(frame, "text", db="ledger.db")  # the default ledger needs no --db
    assert "ATTEST" not in render(frame, "text")  # without attestations, the frame alone
