from __future__ import annotations

import builtins
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from loopguard_core.tutorial import QUESTIONS, SpecResult, SpecWriter


def scripted(answers: Iterable[str]) -> Callable[[str], str]:
    it = iter(answers)
    return lambda prompt: next(it)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "spec.db")


def test_schema_matches_the_tutorial(db_path: str) -> None:
    SpecWriter(db_path=db_path)
    with sqlite3.connect(db_path) as conn:
        cols = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(spec)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(spec)")}
    assert cols == {
        "id": "INTEGER",
        "session_id": "TEXT",
        "what_it_does": "TEXT",
        "what_it_does_not": "TEXT",
        "done_looks_like": "TEXT",
        "created_at": "TEXT",
    }
    assert "idx_spec_session" in indexes


def test_init_is_idempotent(db_path: str) -> None:
    SpecWriter(db_path=db_path)
    SpecWriter(db_path=db_path)


def test_questions_are_the_tutorials_three() -> None:
    assert QUESTIONS == (
        ("what_it_does", "What does this do?"),
        ("what_it_does_not", "What does this NOT do?"),
        ("done_looks_like", "What does done look like in one sentence?"),
    )


def test_run_returns_the_three_answers_with_a_uuid4_session(db_path: str) -> None:
    sw = SpecWriter(db_path, scripted(["crawl one URL", "no JS rendering", "report printed"]), lambda _: None)
    result = sw.run()
    assert (result.what_it_does, result.what_it_does_not, result.done_looks_like) == (
        "crawl one URL",
        "no JS rendering",
        "report printed",
    )
    assert uuid.UUID(result.session_id).version == 4


def test_each_prompt_is_the_question_plus_a_space(db_path: str) -> None:
    prompts: list[str] = []
    answers = iter(["a", "b", "c"])

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    SpecWriter(db_path, ask, lambda _: None).run()
    assert prompts == [f"{question} " for _, question in QUESTIONS]


def test_answers_are_stripped(db_path: str) -> None:
    result = SpecWriter(db_path, scripted(["  a  ", "\tb\n", "c "]), lambda _: None).run()
    assert (result.what_it_does, result.what_it_does_not, result.done_looks_like) == ("a", "b", "c")


def test_two_runs_have_distinct_sessions(db_path: str) -> None:
    sw = SpecWriter(db_path, scripted("abcdef"), lambda _: None)
    assert sw.run().session_id != sw.run().session_id


def test_run_stores_the_row(db_path: str) -> None:
    result = SpecWriter(db_path, scripted(["does X", "not Y", "Z works"]), lambda _: None).run()
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT session_id, what_it_does, what_it_does_not, done_looks_like, created_at FROM spec"
        ).fetchone()
    assert row[:4] == (result.session_id, "does X", "not Y", "Z works")
    assert row[4].endswith("+00:00")


def test_blank_answer_is_asked_again_with_the_missing_answer_message(db_path: str) -> None:
    said: list[str] = []
    result = SpecWriter(db_path, scripted(["", "real what", "real not", "real done"]), said.append).run()
    assert result.what_it_does == "real what"
    assert said == [
        "[missing answer for: What does this do?] spec cannot proceed until all three questions are answered."
    ]


def test_whitespace_only_answers_are_blank(db_path: str) -> None:
    said: list[str] = []
    result = SpecWriter(db_path, scripted(["   ", "\t\n", "w", "n", "d"]), said.append).run()
    assert result.what_it_does == "w"
    assert sum("missing answer" in m for m in said) == 2


def test_none_from_input_fn_counts_as_blank(db_path: str) -> None:
    answers = iter([None, "w", "n", "d"])
    said: list[str] = []
    result = SpecWriter(db_path, lambda _: next(answers), said.append).run()
    assert result.what_it_does == "w"
    assert len(said) == 1


def test_each_question_blocks_independently(db_path: str) -> None:
    said: list[str] = []
    SpecWriter(db_path, scripted(["q1", "", "q2", "", "q3"]), said.append).run()
    assert len(said) == 2
    assert "NOT do" in said[0]
    assert "done look like" in said[1]


def test_load_round_trips_across_instances(db_path: str) -> None:
    written = SpecWriter(db_path, scripted(["x", "y", "z"]), lambda _: None).run()
    assert SpecWriter(db_path=db_path).load(written.session_id) == written


def test_load_returns_the_latest_row_of_a_session(db_path: str) -> None:
    SpecWriter(db_path=db_path)
    with sqlite3.connect(db_path) as conn:
        for what in ("old", "new"):
            conn.execute(
                "INSERT INTO spec (session_id, what_it_does, what_it_does_not, done_looks_like, created_at) "
                "VALUES ('s', ?, 'n', 'd', 't')",
                (what,),
            )
    loaded = SpecWriter(db_path=db_path).load("s")
    assert loaded is not None
    assert loaded.what_it_does == "new"


def test_load_unknown_session_is_none(db_path: str) -> None:
    assert SpecWriter(db_path=db_path).load("nonexistent") is None


def test_spec_result_is_frozen() -> None:
    r = SpecResult(what_it_does="a", what_it_does_not="b", done_looks_like="c", session_id="sid")
    with pytest.raises(AttributeError):
        r.what_it_does = "mutated"  # type: ignore[misc]


def test_defaults_are_spec_db_input_and_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sw = SpecWriter()
    assert sw.db_path == "spec.db"
    assert (tmp_path / "spec.db").exists()
    assert sw.input_fn is builtins.input
    assert sw.output_fn is builtins.print


def test_memory_database_can_be_opened() -> None:
    # The tutorial's own default-callables test builds a writer on ":memory:".
    assert SpecWriter(db_path=":memory:").db_path == ":memory:"
