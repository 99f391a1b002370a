"""The run's recent window: one compact, digest-only record per finished tool call.

A :class:`Step` holds no raw argument or result: the call and its outcome are digests, free-text requests
are keyed 32-bit word hashes. Stores keep the last ``LoopDetection.window`` steps of a run and hand them to
the detectors with each admission; the Redis store keeps them packed (:func:`pack_step`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, overload

__all__ = [
    "EMPTY",
    "FAILED",
    "NOOP",
    "POLL",
    "SIMILAR",
    "STALE",
    "WAITING",
    "Call",
    "MalformedWindow",
    "PackedWindow",
    "Step",
    "pack_step",
    "unpack_step",
    "without_siblings",
]

#: the call failed (an exception, or a result that reports a failure)
FAILED = 1
#: the call does nothing and learns nothing (``echo``, a comment, a ``think`` tool)
NOOP = 2
#: the same call as the one before, and its outcome told nothing that call's earlier outcomes (or its own
#: arguments) had not: a REPL re-printing earlier output, a file growing by the same block again
STALE = 4
#: the answer says the work is still under way ("running", "pending"): poll patience applies
WAITING = 8
#: an empty answer ([] / {} / "" / "null")
EMPTY = 16
#: the tool reports a status (a poll): poll patience applies
POLL = 32
#: the same tool as the call before, asked the same natural-language question in other words, and the
#: same informative answer (see detection.Paraphrase); the step then carries its word hashes
SIMILAR = 64


class Step(NamedTuple):
    """One finished tool call, as loop detection sees it."""

    #: the call's number in the run (1 for the run's first tool call): how messages point at it
    seq: int
    tool: str
    #: digest of the tool and its canonical arguments (``call_signature``, 32 hex digits)
    action: str
    #: digest of the outcome with volatile values masked (``masked_digest``, 16 hex digits)
    outcome: str
    flags: int = 0
    #: digest of the request with its paging parameter masked (32 hex digits, "" when it has none)
    shape: str = ""
    #: keyed hashes of the content words of a free-text request (identifiers have the low bit set); kept
    #: only for SIMILAR steps, the only ones a later call is compared with
    words: frozenset[int] = frozenset()


class Call(NamedTuple):
    """The call being checked, before it runs."""

    seq: int
    tool: str
    action: str
    shape: str = ""
    words: frozenset[int] = frozenset()
    #: the tool reports a status: poll patience
    poll: bool = False
    #: identical calls admitted but not reported yet (a burst of parallel copies)
    inflight: int = 0
    #: computes ``words`` on demand (word hashes cost time; a detector asks only when a chain has begun)
    prose: Callable[[], frozenset[int]] | None = None

    def question(self) -> frozenset[int]:
        """The word hashes of this call's natural-language request (empty when it has none)."""
        if self.words or self.prose is None:
            return self.words
        return self.prose()


_HEAD = struct.Struct(">IB16s8s16sHH")
_NO_SHAPE = b"\x00" * 16
_NO_WORDS: frozenset[int] = frozenset()
# A Step without NamedTuple.__new__'s Python frame (a window is unpacked on the hot path of the Redis store).
_new_step: Callable[[type[Step], tuple[Any, ...]], Step] = tuple.__new__


def pack_step(step: Step) -> bytes:
    """A few dozen bytes per step (for stores that keep bytes)."""
    tool = step.tool.encode("utf-8", "surrogatepass")[:65_535]
    shape = bytes.fromhex(step.shape) if step.shape else _NO_SHAPE
    words = sorted(step.words)[:4_096]
    head = _HEAD.pack(
        step.seq & 0xFFFFFFFF,
        step.flags & 0xFF,
        bytes.fromhex(step.action),
        bytes.fromhex(step.outcome),
        shape,
        len(tool),
        len(words),
    )
    return head + tool + struct.pack(f">{len(words)}I", *words)


def unpack_step(data: bytes, start: int = 0) -> Step:
    """The step packed at ``start`` in ``data``."""
    seq, flags, action, outcome, shape, n_tool, n_words = _HEAD.unpack_from(data, start)
    at = start + _HEAD.size
    tool = data[at : at + n_tool].decode("utf-8", "surrogatepass")
    at += n_tool
    words = frozenset(struct.unpack_from(f">{n_words}I", data, at)) if n_words else _NO_WORDS
    shape_hex = "" if shape == _NO_SHAPE else shape.hex()
    return _new_step(Step, (seq, tool, action.hex(), outcome.hex(), flags, shape_hex, words))


_COUNTS = struct.Struct(">HH")  # a packed step's tool length and word count, at the end of its head
_COUNTS_AT = _HEAD.size - _COUNTS.size


class MalformedWindow(ValueError):
    """Packed steps that do not add up: a corrupted or foreign value where a window should be."""


def newest_step(data: bytes) -> bytes:
    """The first packed step of ``data`` (a window newest first): ``PackedWindow(data, 1).newest(1)``, read off its
    head alone."""
    if len(data) < _HEAD.size:
        raise MalformedWindow(f"a packed window of {len(data)} bytes holds fewer than 1 steps")
    n_tool, n_words = _COUNTS.unpack_from(data, _COUNTS_AT)
    end = _HEAD.size + n_tool + 4 * n_words
    if end > len(data):
        raise MalformedWindow(f"a packed window of {len(data)} bytes ends inside a step")
    return data[:end]


class PackedWindow(Sequence[Step]):
    """``size`` packed steps laid end to end **newest first** (what the Redis store hands back), read as the
    window, oldest first, of :class:`Step`.

    Steps are found and unpacked only as far back as they are read: the test of whether any detector can fire
    (``LoopDetection.may_fire``) reads the last few, and most calls go no further."""

    __slots__ = ("_data", "_size", "_starts")

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = data, size
        self._starts: list[int] = [0]  # where the newest, second newest, ... steps start, as far as scanned

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Step: ...
    @overload
    def __getitem__(self, index: slice) -> list[Step]: ...
    def __getitem__(self, index: int | slice) -> Step | list[Step]:
        size = self._size
        if isinstance(index, slice):
            backs = [size - 1 - i for i in range(*index.indices(size))]
            if not backs:
                return []
            starts, data = self._through(max(backs)), self._data
            return [_unpacked(data[starts[b] : starts[b + 1]]) for b in backs]
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("window index out of range")
        return self._step(index)

    def __iter__(self) -> Iterator[Step]:
        return map(self._step, range(self._size))

    def _step(self, index: int) -> Step:
        back = self._size - 1 - index  # 0: the newest
        starts = self._through(back)
        return _unpacked(self._data[starts[back] : starts[back + 1]])

    def lacks(self, action: str) -> bool:
        """True when no step holds ``action`` and the newest is not SIMILAR: what most new calls find, read off the
        packed bytes without unpacking a step. False says only "look closer" (the bytes may sit elsewhere)."""
        data = self._data
        if len(data) < _HEAD.size or data[4] & SIMILAR:  # (byte 4: the newest step's flags)
            return False
        try:
            return data.find(bytes.fromhex(action)) < 0
        except ValueError:  # an action that is not a packed step's digest: the steps are read
            return False

    def newest(self, count: int) -> bytes:
        """The packed bytes of the newest ``count`` steps (fewer when the window holds fewer)."""
        count = min(count, self._size)
        return self._data[: self._through(count - 1)[count]] if count > 0 else b""

    def _through(self, back: int) -> list[int]:
        """The starts of the steps, newest first, found at least one step further back than ``back``: step ``b``
        is ``data[starts[b] : starts[b + 1]]``."""
        starts = self._starts
        if len(starts) > back + 1:
            return starts
        data, head, counts = self._data, _HEAD.size, _COUNTS.unpack_from
        at, end = starts[-1], len(self._data)
        while len(starts) <= back + 1:
            if at + head > end:
                raise MalformedWindow(f"a packed window of {end} bytes holds fewer than {self._size} steps")
            n_tool, n_words = counts(data, at + _COUNTS_AT)
            at += head + n_tool + 4 * n_words
            if at > end:  # checked before it is kept: a second read must fail the same way
                raise MalformedWindow(f"a packed window of {end} bytes ends inside a step")
            starts.append(at)
        return starts


def _unpacked(packed: bytes) -> Step:
    """``unpack_step(packed)``, once per process for each packed step: consecutive windows of a run share all
    but their newest step."""
    step = _UNPACKED.get(packed)
    if step is None:
        try:
            step = unpack_step(packed)
        except (ValueError, struct.error) as exc:  # a tool name that is not UTF-8, a short step
            raise MalformedWindow(f"a packed step does not unpack: {exc}") from None
        if len(packed) <= _UNPACKED_BYTES:  # the usual step; a long tool name or many words is not kept
            if len(_UNPACKED) >= _UNPACKED_MAX:
                _UNPACKED.clear()
            _UNPACKED[packed] = step
    return step


_UNPACKED: dict[bytes, Step] = {}  # packed step -> Step (digests only: nothing raw is held)
_UNPACKED_MAX = 4_096
_UNPACKED_BYTES = 160  # a step with a tool name of up to ~110 bytes and no words: about 3 MB at most


def without_siblings(window: Sequence[Step], siblings_done: int, action: str) -> tuple[Sequence[Step], int]:
    """The window as the model saw it when it asked for a call of a batch (parallel calls of one answer), and how
    many of the left-out sibling steps are this very call: the model asked for those at the same time, so they
    count as identical calls still in flight, whichever finished first (an answer that repeats a call twice must
    not slip past the repeat rule because one twin reported before the other was checked)."""
    if not siblings_done:
        return window, 0
    done = window[-siblings_done:]
    return window[:-siblings_done], sum(1 for step in done if step.action == action)
