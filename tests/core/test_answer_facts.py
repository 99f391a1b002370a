"""``answer_facts`` reads a text answer once for its digest and its flags: the same verdicts as reading it with each
public function on its own (``masked_digest``, ``looks_failed``, ``is_empty_result``, ``says_in_progress``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopguard_core.detection import EMPTY, FAILED, WAITING, looks_failed, masked_digest, says_in_progress
from loopguard_core.detection._observe import answer_facts
from loopguard_core.signatures import is_empty_result


def _each_on_its_own(text: str) -> tuple[str, int]:
    flags = FAILED if looks_failed(text) else 0
    if is_empty_result(text):
        flags |= EMPTY
    elif says_in_progress(text):
        flags |= WAITING
    return masked_digest(text), flags


ANSWERS = [
    "",
    " ",
    "ok",
    "OK",
    "[]",
    " { } ",
    "null",
    "NULL\n",
    "running",
    "Build 18: IN  PROGRESS (step 3/7)",  # a status with a doubled space: matched on its own text
    "not  ready",
    "still\tqueued",
    "account 42: balance 0, last refund pending",
    "Error: file not found",
    "Observation: Traceback (most recent call last):\n  File x",
    "<returncode>1</returncode>\nfoo",
    "<returncode>0</returncode>\nall good",
    "exit code: 0",
    "exited with code 2",
    "value of k17",
    "commit 3f2a9c1d8e done",
    "object at 0x7f3a2b1c",
    "123e4567-e89b-12d3-a456-426614174000",
    "93.184.216.34",
    "Straße ß STRASSE",
    "word " * 60,  # longer than the cached answers
    "line 11301: cd: x: No such file or directory\n" * 20,
    "\ud800 lone surrogate",
]


@pytest.mark.parametrize("text", ANSWERS)
def test_an_answer_reads_as_it_reads_with_each_function_on_its_own(text: str) -> None:
    assert answer_facts(text) == _each_on_its_own(text)


# Whole words (failure and status words among them), ids, numbers, and every kind of separator.
_PIECES = st.sampled_from(
    [
        "error",
        "Error:",
        "failed",
        "not found",
        "Traceback (most recent call last)",
        "exit code",
        "<returncode>",
        "1",
        "0",
        "running",
        "in progress",
        "IN  PROGRESS",
        "pending",
        "queued",
        "not yet ready",
        "still",
        "ok",
        "done",
        "[]",
        "{}",
        "null",
        "Observation:",
        "<output>",
        "0x7f3a",
        "3f2a9c1d8e",
        "123e4567-e89b-12d3-a456-426614174000",
        "42",
        "line",
        "Straße",
        "İ",
        "ﬁ",
        "\ud800",
        "value",
        "of",
        "k17",
        "deadbeef",
        "Ω",
    ]
)
_SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", ""])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_PIECES, _SEPARATORS), max_size=40), _SEPARATORS)
def test_any_text_reads_the_same_either_way(pieces: list[tuple[str, str]], lead: str) -> None:
    text = lead + "".join(piece + separator for piece, separator in pieces)
    assert answer_facts(text) == _each_on_its_own(text)


# Digests and flags as the release before answer_facts computed them (each function on its own): what a run
# already recorded in a store must still match what the same answer gives now.
RECORDED = [
    ("ok", "9f80829636cedf82", 0),
    (" [ ] ", "f8a04415137d4f84", 0),
    ("Build 18: IN  PROGRESS (step 3/7)", "e631bfa58d9b179e", 0),
    ("still\tqueued", "50feb978c4901abb", WAITING),
    ("Error: file not found", "8b1658f096c2d3ac", FAILED),
    ("<returncode>1</returncode>\nfoo", "d164d1c560746959", FAILED),
    ("exit code: 0", "909def15c768ec4a", 0),
    ("value of k17", "ec47d75e4e0a8203", 0),
    ("commit 3f2a9c1d8e done", "93925594b4861d58", 0),
    ("object at 0x7f3a2b1c", "281c2daf88812ac9", 0),
    ("123e4567-e89b-12d3-a456-426614174000", "498b304c94c6d6ab", 0),
    ("93.184.216.34", "259c1e1e6a822b41", 0),
    ("Straße İstanbul ﬁle", "e21fe2c344fd1c14", 0),
    ("\u2028running\u3000", "b399ee849fd912bf", WAITING),
    ("\ud800 lone surrogate", "a96214f5976451a2", 0),
    ("line 11301: cd: x: No such file or directory\n" * 20, "6462647895a9d3f0", FAILED),
]


@pytest.mark.parametrize(("text", "digest", "flags"), RECORDED)
def test_an_answer_reads_as_the_release_before_read_it(text: str, digest: str, flags: int) -> None:
    assert answer_facts(text) == (digest, flags)


def test_texts_at_the_cached_and_the_mebibyte_lengths_read_the_same_either_way() -> None:
    for size in (255, 256, 257, (1 << 20) - 1, 1 << 20, (1 << 20) + 1):
        for text in ("a" * size, "Error: " + "x" * (size - 7), " " * size, "running " + "7" * (size - 8)):
            assert len(text) == size
            assert answer_facts(text) == _each_on_its_own(text)
