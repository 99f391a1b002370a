"""Token estimates and history digests: the incremental ``History`` says exactly what a fresh count would."""

from __future__ import annotations

import collections
import copy
import json
import operator
import pickle
from typing import Any

import pytest

from loopguard_core import estimate_tokens
from loopguard_core.tokens import History, history_digest, message_chars


def _message(i: int, text: str = "") -> dict[str, Any]:
    return {"role": "user" if i % 2 else "assistant", "content": text or f"message number {i} " * (i % 7 + 1)}


def test_a_growing_history_is_estimated_as_a_fresh_count_would() -> None:
    history = History()
    messages: list[Any] = []
    for i in range(60):
        messages.append(_message(i))
        assert history.estimate(messages) == estimate_tokens(messages)
        extra = message_chars("x" * 32)
        assert history.estimate(messages, extra_chars=extra) == estimate_tokens([*messages, "x" * 32])


def test_only_the_new_messages_are_read_each_turn() -> None:
    read: list[int] = []

    def chars(message: Any) -> int:
        read.append(id(message))
        return len(str(message))

    history = History(chars)
    messages = [_message(i) for i in range(100)]
    history.estimate(messages)
    assert len(read) == 100
    read.clear()
    messages.append(_message(100))
    history.estimate(messages)
    assert len(read) == 1  # turn 101 reads one message, not 101


def test_a_trimmed_or_replaced_history_is_read_again() -> None:
    history = History()
    messages = [_message(i) for i in range(20)]
    history.estimate(messages)
    summarised = [_message(0, "summary of the run so far"), *messages[15:]]
    assert history.estimate(summarised) == estimate_tokens(summarised)
    shorter = messages[:5]
    assert history.estimate(shorter) == estimate_tokens(shorter)


def test_two_conversations_are_kept_apart() -> None:
    history = History()
    a = [_message(i, f"a{i}") for i in range(10)]
    b = [_message(i, f"conversation b, message {i}") for i in range(12)]
    for _ in range(3):
        a.append(_message(len(a), "more of a"))
        b.append(_message(len(b), "more of b, longer than a"))
        assert history.estimate(a) == estimate_tokens(a)
        assert history.estimate(b) == estimate_tokens(b)


def test_the_digest_commits_to_the_whole_history_and_matches_a_fresh_digest() -> None:
    history = History()
    messages: list[Any] = []
    digests = set()
    for i in range(30):
        messages.append(_message(i))
        got = history.digest(messages)
        assert got == history_digest(messages)
        assert got["messages"] == len(messages)
        digests.add(got["sha256"])
    assert len(digests) == 30


def test_a_message_replaced_in_place_anywhere_changes_the_digest() -> None:
    # LangGraph's add_messages replaces a message that reuses an earlier id at the same position: a digest must see
    # it even where the estimate's sample does not look.
    history = History(capacity=4)
    messages = [_message(i) for i in range(200)]
    history.digest(messages)
    edited = list(messages)
    edited[97] = _message(97, "a different message")
    assert history.digest(edited) == history_digest(edited) != history_digest(messages)


def test_fresh_copies_are_recognised_by_equality_and_edits_are_seen() -> None:
    # A JSON request body is decoded anew for every request: same messages, new objects.
    history = History(same=operator.eq)
    messages = [_message(i) for i in range(50)]
    history.digest(json.loads(json.dumps(messages)))
    again = json.loads(json.dumps([*messages, _message(50)]))
    assert history.digest(again) == history_digest(again)
    edited = json.loads(json.dumps(again))
    edited[23]["content"] = "edited in the middle"
    assert history.digest(edited) == history_digest(edited) != history_digest(again)


def test_an_estimate_only_history_reads_again_when_a_digest_is_first_asked() -> None:
    history = History()
    messages = [_message(i) for i in range(10)]
    history.estimate(messages)
    assert history.digest(messages) == history_digest(messages)


def test_the_digest_views_each_message_through_the_given_view() -> None:
    def view(message: Any) -> Any:
        return message["content"].upper()

    history = History(view=view)
    messages = [_message(i) for i in range(5)]
    assert history.digest(messages) == history_digest(messages, view)
    assert history_digest(messages, view) != history_digest(messages)


def test_messages_json_cannot_hold_are_digested_deterministically() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "Odd()"

    messages = [{"content": Odd()}, {"content": {1, 2}}]
    assert History().digest(messages) == history_digest(messages) == history_digest(list(messages))


def test_a_copy_starts_with_nothing_remembered() -> None:
    history = History(capacity=8)
    history.estimate([_message(i) for i in range(5)])
    for clone in (copy.copy(history), copy.deepcopy(history), pickle.loads(pickle.dumps(history))):
        assert isinstance(clone, History)
        assert clone._seen == []  # the totals are only a shortcut, never carried over
        assert clone.estimate([_message(1)]) == estimate_tokens([_message(1)])


def test_memory_is_bounded_by_capacity() -> None:
    history = History(capacity=3)
    for c in range(20):
        history.estimate([_message(i, f"conversation {c}") for i in range(4)])
    assert len(history._seen) == 3


def test_an_empty_history() -> None:
    history = History()
    assert history.estimate([]) == 0
    assert history.digest([]) == history_digest([])


class _Map(collections.UserDict):  # type: ignore[type-arg]
    """A Mapping that is not a dict: takes the general isinstance checks."""


class _Text(str):
    pass


class _Items(list):  # type: ignore[type-arg]
    pass


def _wrapped(value: Any) -> Any:
    """``value`` with every dict, str and list replaced by a subclass or another Mapping of the same content."""
    if type(value) is dict:
        return _Map({k: _wrapped(v) for k, v in value.items()})
    if type(value) is list:
        return _Items(_wrapped(v) for v in value)
    if type(value) is str:
        return _Text(value)
    return value


@pytest.mark.parametrize(
    "content",
    [
        "plain text",
        {"role": "user", "content": "hello there"},
        [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "input": {"a": 1}}]}],
        {"role": "assistant", "content": [{"type": "tool_result", "content": [{"type": "text", "text": "42"}]}]},
        {"args": {"x": [1, 2]}, "arguments": "{}", "system": "be brief"},
        [[[["deep"]]], ("a", "bc")],
        [None, 7, 2.5],
    ],
)
def test_the_built_in_types_fast_path_counts_what_the_general_checks_count(content: Any) -> None:
    assert estimate_tokens(content) == estimate_tokens(_wrapped(content))
