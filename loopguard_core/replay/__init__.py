"""Replay recorded tool-call traces through a breaker configuration, to judge it on your own traffic
before trusting it (``loopguard replay TRACES``)."""

from __future__ import annotations

from ._formats import FORMATS, Trace, TraceCall, TraceFormatError, load_traces
from ._run import Refusal, ReplayResult, ReplaySummary, replay, replay_all, summarize

__all__ = [
    "FORMATS",
    "Refusal",
    "ReplayResult",
    "ReplaySummary",
    "Trace",
    "TraceCall",
    "TraceFormatError",
    "load_traces",
    "replay",
    "replay_all",
    "summarize",
]
