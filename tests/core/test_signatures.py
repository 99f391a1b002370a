"""Signatures and outcome digests: what counts as "the same call" and "the same answer"."""

from __future__ import annotations

import dataclasses

from loopguard_core.signatures import (
    call_signature,
    canonical_text,
    is_empty_result,
    outcome_digest,
    question_words,
    word_overlap,
)


def test_signature_ignores_key_order_case_whitespace_and_int_float() -> None:
    a = call_signature("Search", {"b": 1, "a": {"x": ["Open  Tickets"]}})
    b = call_signature(" search ", {"a": {"x": ["open tickets"]}, "b": 1.0})
    assert a == b
    assert call_signature("search", {"page": 1}) != call_signature("search", {"page": 2})
    assert call_signature("search", {"q": True}) != call_signature("search", {"q": 1})


def test_strict_mode_keeps_everything() -> None:
    assert call_signature("s", {"q": "A"}, loose=False) != call_signature("s", {"q": "a"}, loose=False)


def test_objects_use_their_fields_and_lose_memory_addresses() -> None:
    @dataclasses.dataclass
    class Query:
        q: str

    assert canonical_text(Query("x")) == canonical_text({"q": "x"})

    class Opaque:
        pass

    assert canonical_text(Opaque()) == canonical_text(Opaque())


def test_outcomes_fold_case_and_whitespace_but_keep_word_order_and_numbers() -> None:
    assert outcome_digest("5 failed") != outcome_digest("4 failed")
    assert outcome_digest("Done \t") == outcome_digest("done")
    assert outcome_digest(error="503") != outcome_digest("503")
    assert outcome_digest(error=TimeoutError("slow")) == outcome_digest(error="TimeoutError: slow")


def test_question_words_and_overlap() -> None:
    assert question_words({"q": "What are the best practices for X?"}) == "best practices x"
    assert question_words({"path": "src/app.py", "id": 7}) == ""
    assert word_overlap("best practices rate", "practices rate recommended") == 0.5
    assert word_overlap("report region 1", "report region 2") == 0.0  # different numbers, different things
    assert question_words({"q": "is region us-east-1 affected"}) == "affected region us-east-1"
    assert word_overlap("affected region us-east-1", "affected eu-west-1 region") == 0.0


def test_empty_results() -> None:
    for empty in ("", "  ", "[]", "{}", "null", [], {}, (), b""):
        assert is_empty_result(empty)
    for full in (None, "0 results", [0], {"a": 1}, 0, False):
        assert not is_empty_result(full)


def test_in_progress_means_a_status_answer_not_data_that_mentions_one() -> None:
    from loopguard_core.detection import says_in_progress

    for status in ("running", "In progress", "build-18: queued", "status: pending (step 3/7)"):
        assert says_in_progress(status)
    for data in ("account 42: balance 0, last refund pending", "done", "failed: quota exceeded", {"state": "x"}):
        assert not says_in_progress(data)
