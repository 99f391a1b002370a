"""Loop detection: judging progress the way a reviewer reading the trace would.

A loop is the run doing the same thing again with nothing new coming back. Each finished tool call
becomes a digest-only :class:`Step` in the run's recent window; before every tool call the policy's
detectors look at that window and the :class:`Call` about to run. Each detector is one small rule with its
own thresholds and mode; :class:`LoopDetection` holds them in order::

    from loopguard_core import Breaker, LoopDetection, ToolPolicy
    from loopguard_core.detection import Cycle, Interleaved, Repeat

    Breaker(
        loop_detection=LoopDetection(
            detectors=[Repeat(per_tool={"run_tests": 5}), Cycle(max_period=6), Interleaved(mode="observe")],
        ),
        tools={"wait_for_deploy": ToolPolicy(poll=True)},
    )

A detector of your own is any object with ``name``, ``mode`` and ``check(window, call, limits)`` returning a
:class:`Finding` or ``None`` (see :class:`Detector`).
"""

from __future__ import annotations

from ._base import Detector, Finding, Thresholds, is_progress
from ._cycle import Cycle
from ._empty_pages import EmptyPages
from ._interleaved import Interleaved
from ._paraphrase import Paraphrase
from ._policy import DEFAULT_POLL_TOOLS, LoopDetection
from ._repeat import Repeat
from ._semantics import infer_policy, is_noop_command
from ._step import (
    EMPTY,
    FAILED,
    NOOP,
    POLL,
    SIMILAR,
    STALE,
    WAITING,
    Call,
    MalformedWindow,
    PackedWindow,
    Step,
    pack_step,
    unpack_step,
)
from ._text import looks_failed, mask_volatile, masked_digest, says_in_progress

__all__ = [
    "DEFAULT_POLL_TOOLS",
    "EMPTY",
    "FAILED",
    "NOOP",
    "POLL",
    "SIMILAR",
    "STALE",
    "WAITING",
    "Call",
    "Cycle",
    "Detector",
    "EmptyPages",
    "Finding",
    "Interleaved",
    "LoopDetection",
    "MalformedWindow",
    "PackedWindow",
    "Paraphrase",
    "Repeat",
    "Step",
    "Thresholds",
    "infer_policy",
    "is_noop_command",
    "is_progress",
    "looks_failed",
    "mask_volatile",
    "masked_digest",
    "pack_step",
    "says_in_progress",
    "unpack_step",
]
