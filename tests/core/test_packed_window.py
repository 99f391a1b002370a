"""PackedWindow: packed steps laid end to end, newest first (the Redis store's reply), read as the window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopguard_core.detection import SIMILAR, LoopDetection, MalformedWindow, PackedWindow, Step, pack_step
from loopguard_core.detection._step import newest_step

HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
ACTIONS = st.sampled_from(["a" * 32, "b" * 32, "c" * 32])  # few: a call's own action is often in the window
STEPS = st.builds(
    Step,
    seq=st.integers(0, 2**32 - 1),
    tool=st.one_of(st.sampled_from(["search", "read"]), st.text(min_size=1, max_size=40)),
    action=st.one_of(ACTIONS, HEX32),
    outcome=st.text("0123456789abcdef", min_size=16, max_size=16),
    flags=st.one_of(st.just(SIMILAR), st.integers(0, 127)),
    shape=st.one_of(st.just(""), HEX32.filter(lambda h: h != "0" * 32)),
    words=st.frozensets(st.integers(0, 2**32 - 1), max_size=6),
)


def packed(steps: list[Step]) -> PackedWindow:
    return PackedWindow(b"".join(pack_step(step) for step in reversed(steps)), len(steps))


@given(st.lists(STEPS, max_size=12))
def test_it_reads_as_the_list_of_steps_oldest_first(steps: list[Step]) -> None:
    window = packed(steps)
    assert len(window) == len(steps)
    assert list(window) == steps
    assert window[-3:] == steps[-3:] and window[1:4] == steps[1:4] and window[::-2] == steps[::-2]
    for i in range(-len(steps), len(steps)):
        assert window[i] == steps[i]


@given(st.lists(STEPS, max_size=12), st.sampled_from(["search", "read"]), ACTIONS)
def test_may_fire_answers_the_same_on_the_packed_window(steps: list[Step], tool: str, action: str) -> None:
    loop = LoopDetection()
    assert loop.may_fire(packed(steps), tool, action) == loop.may_fire(steps, tool, action)


def test_out_of_range_and_malformed_data_are_errors_not_wrong_steps() -> None:
    steps = [Step(i, "toolname", f"{i:032x}", f"{i:016x}") for i in range(3)]
    window = packed(steps)
    with pytest.raises(IndexError):
        window[3]
    with pytest.raises(IndexError):
        window[-4]
    short = PackedWindow(pack_step(steps[0]), 2)  # says two steps, holds one
    assert short[-1] == steps[0]
    for _ in range(2):  # and says so every time it is read
        with pytest.raises(MalformedWindow, match="fewer than 2 steps"):
            short[0]
    cut = PackedWindow(pack_step(steps[0])[:-3], 1)  # ends inside its tool name
    for _ in range(2):
        with pytest.raises(MalformedWindow, match="ends inside a step"):
            cut[0]
    not_utf8 = pack_step(steps[0])[:-8] + b"\xff" * 8
    with pytest.raises(MalformedWindow, match="does not unpack"):
        PackedWindow(not_utf8, 1)[0]
    assert issubclass(MalformedWindow, ValueError)


def test_a_new_call_is_told_apart_from_the_packed_bytes_alone() -> None:
    steps = [Step(i, "search", f"{i:032x}", f"{i:016x}") for i in range(5)]
    window = packed(steps)
    assert window.lacks("f" * 32)  # in no step, and the newest is not SIMILAR
    assert not window.lacks(f"{3:032x}")  # a step holds it: the detectors look closer
    assert window._starts == [0]  # neither answer unpacked or even located a step
    similar = packed([*steps, Step(5, "search", "e" * 32, "0" * 16, SIMILAR)])
    assert not similar.lacks("f" * 32)  # a reworded question right before: the detectors look closer
    assert not window.lacks("not hex")  # not a packed step's digest: the steps are read instead
    assert not PackedWindow(b"\x00\x01", 1).lacks("f" * 32)  # too short to hold a step: read, and found malformed
    with pytest.raises(MalformedWindow):
        LoopDetection().may_fire(PackedWindow(b"\x00\x01", 1), "search", "f" * 32)


@given(st.lists(STEPS, min_size=1, max_size=6))
def test_newest_step_is_read_off_the_head_alone(steps: list[Step]) -> None:
    data = b"".join(pack_step(step) for step in reversed(steps))
    assert newest_step(data) == PackedWindow(data, 1).newest(1) == pack_step(steps[-1])
    with pytest.raises(MalformedWindow, match="fewer than 1 steps"):
        newest_step(pack_step(steps[-1])[:20])
    with pytest.raises(MalformedWindow, match="ends inside a step"):
        newest_step(pack_step(steps[-1])[:-1])
