"""Stall detection that trusts artifacts, not the agent's report of its own progress.

A :class:`Progress` rule takes a probe: a callable returning a digest of what the run is supposed to change
(files in a directory, rows in a table, a job's output). Before each model turn the breaker asks the probe; when
the digest has not changed for ``max_stall_turns`` turns or ``max_stall_seconds`` seconds, the next call is
refused with ``reason="stall"`` (rule ``no_progress``). What the agent says ("making progress!", a status line)
never counts: only the probe's answer does.

::

    from loopguard_core import Breaker
    from loopguard_core.progress import Progress, files_digest

    Breaker(progress=Progress(files_digest("out/"), max_stall_turns=8, max_stall_seconds=600))
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._bounds import MAX_COUNT

__all__ = ["Progress", "StallFinding", "files_digest"]

logger = logging.getLogger("loopguard")

Probe = Callable[[], Hashable]
_MAX_RUNS = 4_096


@dataclass(frozen=True)
class StallFinding:
    """No advancement: for how many turns and seconds, against which limit."""

    turns: int
    seconds: float
    limit: str


@dataclass
class _Seen:
    digest: Hashable
    since: float  # when the digest last changed
    turns: int = 0  # model turns since then


@dataclass(frozen=True)
class Progress:
    """Refuses the run's next call when ``probe()`` has returned the same digest for ``max_stall_turns`` model
    turns or ``max_stall_seconds`` seconds (either, both, at least one). ``probe_every_seconds`` bounds how often
    the probe runs between model turns (before tool calls); a probe that raises counts as "no change" and is
    logged, never as progress."""

    probe: Probe
    max_stall_turns: int | None = None
    max_stall_seconds: float | None = None
    probe_every_seconds: float = 1.0
    _runs: OrderedDict[Hashable, _Seen] = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _probed: dict[Hashable, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.probe):
            raise TypeError(f"Progress.probe must be a callable returning a digest, got {self.probe!r}")
        turns, seconds = self.max_stall_turns, self.max_stall_seconds
        if turns is None and seconds is None:
            raise ValueError("Progress needs max_stall_turns, max_stall_seconds or both")
        if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int) or not 0 < turns <= MAX_COUNT):
            raise ValueError(f"Progress.max_stall_turns must be a positive int, got {turns!r}")
        for name in ("max_stall_seconds", "probe_every_seconds"):
            value = getattr(self, name)
            if value is None and name == "max_stall_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Progress.{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0 or (name == "max_stall_seconds" and value == 0):
                raise ValueError(f"Progress.{name} must be a finite number of seconds > 0, got {value!r}")

    def check(self, run: Hashable, now: float, *, model_turn: bool) -> StallFinding | None:
        """Looks at the artifacts (before every model turn; before a tool call at most every
        ``probe_every_seconds``) and says whether the run has stalled. Not thread-safe per run by design of
        the probe (it runs outside the lock); the bookkeeping is."""
        with self._lock:
            seen = self._runs.get(run)
            if seen is not None and not model_turn:
                last = self._probed.get(run, seen.since)
                if now - last < self.probe_every_seconds and self._judge(seen, now) is None:
                    return None  # looked a moment ago and all was well: spare the probe
        digest = self._look()
        with self._lock:
            self._probed[run] = now
            seen = self._runs.get(run)
            if seen is None or (digest is not _FAILED and digest != seen.digest):
                self._runs[run] = _Seen(digest, now)
                self._runs.move_to_end(run)
                while len(self._runs) > _MAX_RUNS:
                    gone, _ = self._runs.popitem(last=False)
                    self._probed.pop(gone, None)
                return None
            if model_turn:
                seen.turns += 1
            return self._judge(seen, now)

    def forget(self, run: Hashable) -> None:
        with self._lock:
            self._runs.pop(run, None)
            self._probed.pop(run, None)

    @property
    def probe_name(self) -> str:
        """The probe's name, for messages."""
        return getattr(self.probe, "__qualname__", None) or type(self.probe).__qualname__

    def _look(self) -> Any:
        try:
            return self.probe()
        except Exception:
            logger.exception("loopguard progress probe %r failed; counted as no change", self.probe)
            return _FAILED

    def _judge(self, seen: _Seen, now: float) -> StallFinding | None:
        turns, seconds = seen.turns, now - seen.since
        if self.max_stall_turns is not None and turns >= self.max_stall_turns:
            return StallFinding(turns, seconds, f"max_stall_turns={self.max_stall_turns}")
        if self.max_stall_seconds is not None and seconds >= self.max_stall_seconds:
            return StallFinding(turns, seconds, f"max_stall_seconds={self.max_stall_seconds:g}")
        return None


_FAILED = object()


def files_digest(root: str | os.PathLike[str], *, pattern: str = "**/*") -> Probe:
    """A probe over files under ``root``: names, sizes and modification times (not contents: cheap on big
    trees). Any file created, removed or rewritten is progress."""
    base = Path(root)

    def probe() -> str:
        h = hashlib.blake2b(digest_size=16)
        if base.exists():
            for path in sorted(base.glob(pattern)):
                try:
                    st = path.stat()
                except OSError:
                    continue
                if path.is_file():
                    h.update(f"{path.relative_to(base)}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    probe.__qualname__ = f"files_digest({str(base)!r})"
    return probe
