"""Spec: three questions, injectable I/O, frozen result with a session id, SQLite storage, validation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loopguard_core.errors import SpecError
from loopguard_core.spec import QUESTIONS, Spec, SpecStore, SpecWriter, validate_spec

VAGUE = "the agent audits the site"
CONCRETE = "crawl the URL, extract every title and meta description, flag missing or over-length ones, and stop"


def test_vague_done_is_rejected_with_reasons() -> None:
    check = validate_spec("Audit example.com for SEO problems", "does not edit the site", VAGUE)
    assert not check.ok
    text = " ".join(check.problems)
    assert "audits" in text  # names the vague verb
    assert "stop condition" in text
    assert "scope" in text


def test_concrete_done_is_accepted() -> None:
    check = validate_spec("Audit example.com for SEO problems", "does not edit the site", CONCRETE)
    assert check.ok, check.problems


@pytest.mark.parametrize(
    "done",
    [
        "improve the documentation",
        "help the user with their research",
        "analyze the data and stop",
        "write things",
    ],
)
def test_other_vague_answers_are_rejected(done: str) -> None:
    assert not validate_spec("Summarise the Q3 sales data", "does not email anyone", done).ok


@pytest.mark.parametrize(
    "done",
    [
        "write report.csv with one row per invoice over 30 days late, then stop",
        "return a list of all 12 failing tests with their error line and stop",
        "fetch https://example.com/pricing, extract every plan name and price into plans.json, and exit",
    ],
)
def test_other_concrete_answers_are_accepted(done: str) -> None:
    check = validate_spec("Summarise the Q3 sales data", "does not email anyone", done)
    assert check.ok, check.problems


def test_empty_answers_are_named() -> None:
    check = validate_spec("", "x y", CONCRETE)
    assert not check.ok and "what_it_does is empty" in check.problems[0]
    with pytest.raises(TypeError, match="done_looks_like"):
        validate_spec("a b c", "a b", None)  # type: ignore[arg-type]


def test_spec_create_is_strict_by_default_and_frozen() -> None:
    with pytest.raises(SpecError, match="not checkable"):
        Spec.create(what_it_does="Audit the site for SEO", what_it_does_not="no edits", done_looks_like=VAGUE)
    spec = Spec.create(what_it_does="Audit the site for SEO", what_it_does_not="no edits", done_looks_like=CONCRETE)
    with pytest.raises(AttributeError):
        spec.done_looks_like = "x"  # type: ignore[misc]
    assert len(spec.session_id) == 36
    assert "Done looks like: crawl the URL" in spec.system_prompt()


def test_writer_asks_the_three_questions_reasks_vague_done_and_stores(tmp_path: Path) -> None:
    answers = iter(["Audit example.com for SEO", "", "does not edit the site", VAGUE, CONCRETE])
    prompts: list[str] = []
    shown: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    writer = SpecWriter(tmp_path / "run.db", input_fn=fake_input, output_fn=shown.append)
    spec = writer.run()
    assert prompts[0] == QUESTIONS[0] + " "
    assert prompts.count(QUESTIONS[2] + " ") == 2  # asked again after the vague answer
    assert any("missing answer" in line for line in shown)
    assert any("stop condition" in line for line in shown)
    assert spec.done_looks_like == CONCRETE
    assert SpecStore(tmp_path / "run.db").load(spec.session_id) == spec


def test_writer_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    writer = SpecWriter(tmp_path / "s.db", input_fn=lambda p: "", output_fn=lambda s: None, max_attempts=2)
    with pytest.raises(SpecError, match="no answer"):
        writer.run()


def test_stored_specs_are_append_only(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "s.db")
    spec = store.save(Spec("do a thing well", "no other thing", CONCRETE))
    conn = sqlite3.connect(tmp_path / "s.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE specs SET done_looks_like = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM specs")
    assert store.load(spec.session_id) == spec
    assert store.load("nope") is None
