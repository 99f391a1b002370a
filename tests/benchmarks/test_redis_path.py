"""The Redis hot-path benchmark's settings: ``LOOPGUARD_BENCH_DEFER`` set but empty means off, as unset does, and a
value that is not a number of seconds says so instead of ending in a traceback."""

from __future__ import annotations

import pytest

from benchmarks import redis_path


@pytest.mark.parametrize(("text", "seconds"), [(None, None), ("", None), (" ", None), ("0", None), ("0.1", 0.1)])
def test_defer_seconds_off_or_a_number(
    monkeypatch: pytest.MonkeyPatch, text: str | None, seconds: float | None
) -> None:
    if text is None:
        monkeypatch.delenv("LOOPGUARD_BENCH_DEFER", raising=False)
    else:
        monkeypatch.setenv("LOOPGUARD_BENCH_DEFER", text)
    assert redis_path._defer_seconds() == seconds


@pytest.mark.parametrize("text", ["fast", "-1", "nan"])
def test_a_bad_defer_says_what_to_set(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("LOOPGUARD_BENCH_DEFER", text)
    with pytest.raises(SystemExit, match="LOOPGUARD_BENCH_DEFER must be"):
        redis_path._defer_seconds()
