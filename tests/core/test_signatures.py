"""Signatures and outcome digests: what counts as "the same call" and "the same answer"."""

from __future__ import annotations

import dataclasses

import pytest

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


# -- the fast paths write the generic encoder's very text ------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from loopguard_core import signatures as _sig  # noqa: E402

_CHUNKS = [*"abcXYZ 09!,:[]{}\"'-.étruefln\n", "  ", ",true]", ",1.0]", ":null}", "NaN", "ß", "İ", "\u00a0", "\t"]
_CHUNKS += ["\\", "\r\n", " \n", "\u2028", "\x0b", "\x08", '":', "\ud800"]
_TEXT = st.lists(st.sampled_from(_CHUNKS), max_size=8).map("".join)
_KEY = _TEXT | st.sampled_from(["1", "-2", "1x", "true", "null", "a b", "a!", "A", "name"]) | st.integers(-3, 3)
_SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
_SCALAR |= st.sampled_from([1.0, -0.0, 1e20, 1.5e17, 2.5, float("inf"), -float("inf")])
_SCALAR |= st.builds(lambda: 10**5000)  # past int-to-str conversion
_VALUE = st.recursive(
    _SCALAR, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner) | st.dictionaries(_KEY, inner, max_size=4)
)


@settings(max_examples=1500, suppress_health_check=list(HealthCheck), deadline=None)
@given(_VALUE)
def test_json_fast_path_and_walk_write_the_generic_encoders_text(value: object) -> None:
    generic = _sig._LooseEncoder(True).encode(value)
    assert canonical_text(value) == generic
    if type(value) in (dict, list, tuple):
        fast = _sig._json_text(value)
        assert fast is None or fast == generic
        try:
            assert _sig._plain(value, 0, [_sig._MAX_NODES]) == generic
        except _sig._NotPlain:
            pass


_LONG = st.builds(lambda: "ab" * 40_000)  # past _HASH_ABOVE: hashed, not written out
_STRICT_DICT = st.dictionaries(_TEXT | _LONG, _TEXT | _LONG | st.integers() | st.builds(lambda: 10**5000), max_size=4)


@settings(max_examples=500, suppress_health_check=list(HealthCheck), deadline=None)
@given(_STRICT_DICT | st.dictionaries(_KEY, _SCALAR, max_size=4))
def test_the_strict_fast_path_writes_the_generic_encoders_text(value: dict[object, object]) -> None:
    # Ledger rows, idempotency keys and approvals hash this text: the fast path must never change it.
    assert canonical_text(value, loose=False) == _sig._Encoder(False).encode(value)


_COMPILED_ONLY = pytest.mark.skipif(_sig._COMPILED is None, reason="the compiled fast path is not built here")


@_COMPILED_ONLY
@settings(max_examples=3000, suppress_health_check=list(HealthCheck), deadline=None)
@given(_VALUE)
def test_the_compiled_path_writes_the_generic_encoders_text_or_leaves_it_to_python(value: object) -> None:
    assert _sig._COMPILED is not None
    generic = _sig._LooseEncoder(True).encode(value)
    data = _sig._COMPILED(value)
    assert data is None or data.decode() == generic
    if type(value) in (dict, list, tuple):
        try:
            walked = _sig._plain(value, 0, [_sig._MAX_NODES])
        except _sig._NotPlain:
            walked = None
        if walked is not None:  # all the walk takes, but an int past the digit limit or a lone surrogate
            assert data is not None or "0x" in walked or "\ud800" in walked
    with_compiled = call_signature("Search", value)
    try:
        _sig.compiled_fast_path(False)
        assert call_signature("Search", value) == with_compiled
        assert canonical_text(value) == generic
    finally:
        _sig.compiled_fast_path(True)


@_COMPILED_ONLY
def test_the_compiled_path_takes_the_usual_arguments_and_keeps_the_limits() -> None:
    assert _sig._COMPILED is not None
    for args in (
        {"q": "some query 12"},
        {"path": "src/app.py", "limit": 5, "exact": True, "ratio": 0.5, "tags": ["A", None], "n": -(2**70)},
        {"Q": "  What  IS it? ", "q": "x", "é": "Ünïcode\ttext\n", "nested": {"b": [1.0, 1e300, 2.5]}},
        ["x" * 70_000, "Long  " * 1_000],
        {"A": 2, "a": 1, " a ": [0], "a\t": "x", "b": {"B ": 1, "b": 0}},  # keys that fold alike: ordered by value
    ):
        data = _sig._COMPILED(args)
        assert data is not None and data.decode() == _sig._LooseEncoder(True).encode(args)
        assert _sig._COMPILED(args, b"tool\x00") == b"tool\x00" + data
    for value in ({"s": {1, 2}}, {1: "a"}, [object()], _nested(40, 1), [1] * 25_000, {"a": "x\ud800"}):
        assert _sig._COMPILED(value) is None  # Python writes these
        assert canonical_text(value) == _sig._LooseEncoder(True).encode(value)
    with pytest.raises(TypeError, match="prefix"):
        _sig._COMPILED({}, "not bytes")


def test_a_compiled_module_built_from_other_source_is_not_used() -> None:
    import types

    assert not _sig._built_from_this_source(types.SimpleNamespace(source_digest="0" * 16))
    assert not _sig._built_from_this_source(types.SimpleNamespace())  # built before modules said what they are
    if _sig._COMPILED is not None:
        from loopguard_core import _speedups

        assert _sig._built_from_this_source(_speedups)


def test_the_compiled_path_can_be_switched_off_and_on() -> None:
    built = _sig._COMPILED is not None
    try:
        assert _sig.compiled_fast_path(False) is False
        off = call_signature("search", {"q": "Some  Query"})
        assert _sig.compiled_fast_path(True) is built
        assert call_signature("search", {"q": "some query"}) == off
    finally:
        _sig.compiled_fast_path(True)


def _nested(depth: int, leaf: object) -> object:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_fast_paths_respect_the_generic_limits_of_depth_size_and_cycles() -> None:
    cases: list[object] = [_nested(n, leaf) for n in range(28, 38) for leaf in (1, "x]", [1, [2]], 'q"[', 2.0)]
    cases += [[1] * 25_000, {str(i): i for i in range(30_000)}, {"a": "X  y" * 5_000}, {"a": ["x" * 70_000]}]
    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    cases.append(cyclic)
    for value in cases:
        assert canonical_text(value) == _sig._LooseEncoder(True).encode(value)


def test_the_common_arguments_take_the_json_fast_path() -> None:
    for args in ({"q": "some query 12"}, {"path": "src/app.py", "limit": 5, "exact": True, "ratio": 0.5}):
        assert _sig._json_text(args) is not None
    assert _sig._json_text({"q": "What  is\tit?"}) is None  # folding changes it: the walk writes it
    assert canonical_text({"q": "What  is\tit?"}) == canonical_text({"q": "what is it?"})
