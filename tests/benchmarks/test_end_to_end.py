"""The end-to-end benchmark's bookkeeping (never a timed assertion): each runtime's whole-run pair is a goal row
by wall time and, where valgrind counted them, by CPU instructions; a missing valgrind is reported as pending."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from benchmarks import _callgrind, end_to_end


def frameworks() -> dict[str, Any]:
    seconds = {"unguarded": 0.09, "passthrough": 0.10, "guarded": 0.11}
    return {
        "langchain": {
            "label": "LangChain",
            "calls": 50,
            "rounds": 15,
            "median_seconds": seconds,
            "ratio": 1.222,
            "ratio_vs_passthrough": 1.1,
            "paired_ratio": 1.09,
        },
        "crewai": {"label": "CrewAI", "pending": "CrewAI: not importable (no module)"},
    }


def test_instruction_counts_are_a_goal_row_of_their_own_with_the_measured_ratio() -> None:
    counted = {
        "runs": 2,
        "langchain": {"passthrough": 1_000_000, "guarded": 1_015_000, "ratio": 1.015, "added_per_turn": 294},
    }
    goals = end_to_end._goals(frameworks(), {}, counted)
    rows = {g["name"]: g for g in goals}
    by_count = rows["LangChain: guarded / pass-through hooks, whole run, in CPU instructions"]
    assert (by_count["value"], by_count["status"]) == (1.015, "met")
    by_time = rows["LangChain: guarded / pass-through hooks, whole run, wall time"]
    assert (by_time["value"], by_time["status"]) == (1.09, "not met")  # the paired rounds' median
    assert "ratio of the medians: 1.1x" in by_time["note"]
    assert rows["CrewAI: guarded / pass-through hooks, whole run, wall time"]["status"] == "pending"
    result = {"calls": 50, "frameworks": frameworks(), "per_turn": {}, "instructions": counted, "goals": goals}
    table = end_to_end.render_markdown(result)
    assert "| LangChain | 1,000,000 | 1,015,000 | 294 | **1.015x** | met |" in table
    assert "langchain instructions per whole run: pass-through 1,000,000, guarded 1,015,000" in end_to_end.render(
        result
    )


def test_without_valgrind_the_instruction_table_says_why(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_callgrind.shutil, "which", lambda name: None)
    counted = end_to_end._instructions(["langchain"], 2)
    assert counted == {"pending": "valgrind is not installed (apt install valgrind)"}
    monkeypatch.setattr(_callgrind.shutil, "which", lambda name: None if name in ("gcc", "cc") else "/usr/bin/" + name)
    assert end_to_end._instructions(["langchain"], 2) == {
        "pending": "no C compiler (gcc) to build valgrind's client requests"
    }
    goals = end_to_end._goals(frameworks(), {}, counted)
    assert not [g for g in goals if "instructions" in g["name"]]
    result = {"calls": 50, "frameworks": frameworks(), "per_turn": {}, "instructions": counted, "goals": goals}
    assert "pending: valgrind is not installed" in end_to_end.render_markdown(result)


def test_a_runtime_whose_count_failed_is_pending_on_its_own_row(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def fake(key: str, variant: str, runs: int, library: object) -> int:
        if key == "crewai":
            raise RuntimeError("callgrind child crewai/guarded ran past 1800 s")
        return 1_000_000 if variant == "passthrough" else 1_030_000

    monkeypatch.setattr(_callgrind, "requests_library", lambda folder: folder / "lib.so")
    monkeypatch.setattr(end_to_end, "_count_instructions", fake)
    counted = end_to_end._instructions(["langchain", "crewai"], 2)
    assert counted["langchain"]["ratio"] == 1.03
    assert counted["crewai"] == {"pending": "callgrind child crewai/guarded ran past 1800 s"}
    frames = frameworks()
    frames["crewai"] = {**frames["langchain"], "label": "CrewAI"}
    goals = {g["name"]: g for g in end_to_end._goals(frames, {}, counted)}
    assert goals["LangChain: guarded / pass-through hooks, whole run, in CPU instructions"]["status"] == "not met"
    crew = goals["CrewAI: guarded / pass-through hooks, whole run, in CPU instructions"]
    assert (crew["status"], crew["value"]) == ("pending", None)
    result = {"calls": 50, "frameworks": frames, "per_turn": {}, "instructions": counted, "goals": list(goals.values())}
    assert "| CrewAI | - | - | - | - | pending: callgrind child crewai/guarded ran past 1800 s |" in (
        end_to_end.render_markdown(result)
    )


def test_the_noisier_runtimes_are_counted_by_more_children(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ran: dict[tuple[str, str], int] = {}
    lock = threading.Lock()

    def fake(key: str, variant: str, runs: int, library: object) -> int:
        with lock:
            ran[key, variant] = ran.get((key, variant), 0) + 1
            return 1_000_000 if variant == "passthrough" else 1_010_000 + 2_000 * ran[key, variant]

    monkeypatch.setattr(_callgrind, "requests_library", lambda folder: folder / "lib.so")
    monkeypatch.setattr(end_to_end, "_count_instructions", fake)
    counted = end_to_end._instructions(["langchain", "crewai"], 2, children=2)
    assert end_to_end.MORE_CHILDREN["crewai"] == 4
    assert ran == {
        ("langchain", "passthrough"): 2,
        ("langchain", "guarded"): 2,
        ("crewai", "passthrough"): 4,
        ("crewai", "guarded"): 4,
    }
    assert (counted["langchain"]["children"], counted["crewai"]["children"]) == (2, 4)
    assert len(counted["crewai"]["child_ratios"]) == 4
    assert counted["crewai"]["guarded"] == round((1_012_000 + 1_014_000 + 1_016_000 + 1_018_000) / 4 / 2)  # the mean
    shown = frameworks()
    shown["crewai"] = {**shown["langchain"], "label": "CrewAI crew + guard_crew"}
    result = {"calls": 50, "frameworks": shown, "per_turn": {}, "instructions": counted, "goals": []}
    assert "the mean of 2 child processes per variant (4 for CrewAI, whose counts vary more" in (
        end_to_end.render_markdown(result)
    )


def test_each_variant_is_counted_by_several_children_and_their_mean_is_the_figure(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counts = {"passthrough": [1_000_000, 1_002_000], "guarded": [1_020_000, 1_018_000]}
    lock = threading.Lock()

    def fake(key: str, variant: str, runs: int, library: object) -> int:
        with lock:  # children run two at a time
            return counts[variant].pop(0)

    monkeypatch.setattr(_callgrind, "requests_library", lambda folder: folder / "lib.so")
    monkeypatch.setattr(end_to_end, "_count_instructions", fake)
    counted = end_to_end._instructions(["langchain"], 2, children=2)
    row = counted["langchain"]
    assert (row["passthrough"], row["guarded"]) == (500_500, 509_500)  # per run: the mean over 2 children, 2 runs
    assert row["ratio"] == round(2_038_000 / 2_002_000, 4)
    possible = {round(g / p, 4) for g in (1_020_000, 1_018_000) for p in (1_000_000, 1_002_000)}
    assert len(row["child_ratios"]) == 2 and set(row["child_ratios"]) <= possible  # each child pair's own ratio
    assert counts == {"passthrough": [], "guarded": []}  # two children of each variant ran
    result = {"calls": 50, "frameworks": frameworks(), "per_turn": {}, "instructions": counted, "goals": []}
    assert f"**{row['ratio']}x** ({row['child_ratios'][0]}, {row['child_ratios'][1]}) |" in end_to_end.render_markdown(
        result
    )


def test_the_split_tells_the_adapters_own_work_from_the_breakers(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    per_run = {"passthrough": 1_000_000, "guarded": 1_030_600, "adapter": 1_010_200}
    ran: list[str] = []
    lock = threading.Lock()

    def fake(key: str, variant: str, runs: int, library: object) -> int:
        with lock:
            ran.append(variant)
        return per_run[variant] * runs

    monkeypatch.setattr(_callgrind, "requests_library", lambda folder: folder / "lib.so")
    monkeypatch.setattr(end_to_end, "_count_instructions", fake)
    assert "adapter_per_turn" not in end_to_end._instructions(["langchain"], 2, children=1)["langchain"]
    assert "adapter" not in ran  # only asked for: the compiled build's rows do without it
    counted = end_to_end._instructions(["langchain"], 2, children=1, split=True)
    row = counted["langchain"]
    turns = end_to_end.CALLS + 1
    assert (row["added_per_turn"], row["adapter_per_turn"]) == (round(30_600 / turns), round(10_200 / turns))
    result = {"calls": 50, "frameworks": frameworks(), "per_turn": {}, "instructions": counted, "goals": []}
    own, added = row["adapter_per_turn"], row["added_per_turn"]
    assert f"| LangChain | {added:,} | {own:,} (33 %) | {added - own:,} |" in end_to_end.render_markdown(result)
    assert f"of them {own:,} the adapter's own and {added - own:,} the breaker's checks" in end_to_end.render(result)


def test_the_adapter_variant_runs_the_guarded_hooks_with_a_breaker_that_checks_nothing() -> None:
    from loopguard_core import Breaker

    quiet = end_to_end._breaker("adapter")
    assert isinstance(quiet, Breaker) and type(quiet) is not Breaker  # every adapter accepts it
    for _ in range(10):  # the same call ten times: a real breaker would refuse it
        assert quiet.before_tool("lookup", {"key": "k"}) is None
        quiet.after_tool("lookup", {"key": "k"}, result="same")
    assert type(end_to_end._breaker("guarded")) is Breaker


class _Tally(end_to_end.HookClock):
    """A hook clock that also counts how often each hook it times is called."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, int] = {}

    def timed(self, fn: Any, *, handler: int | str | None = None) -> Any:
        import functools
        import inspect

        name = getattr(fn, "__qualname__", repr(fn))
        self.made.setdefault(name, 0)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def acounted(*args: Any, **kwargs: Any) -> Any:
                self.made[name] += 1
                return await fn(*args, **kwargs)

            return super().timed(acounted, handler=handler)

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.made[name] += 1
            return fn(*args, **kwargs)

        return super().timed(counted, handler=handler)


def test_every_hook_the_turn_tables_time_is_the_one_the_framework_calls() -> None:
    # A hook patched on its class only while the guard is built is timed only if the framework bound it then: the
    # LangGraph guard node's method is looked up on each call, so its time was once missing from the tables.
    measured = 0
    for runtime in end_to_end.RUNTIMES:
        if end_to_end._available(runtime) is not None:
            continue
        for variant in ("passthrough", "guarded"):
            clock = _Tally()
            assert runtime.build(variant, 3, clock)() == 3
            assert clock.made, f"{runtime.key}/{variant}: no hook is timed"
            missed = [name for name, calls in clock.made.items() if calls == 0]
            assert not missed, f"{runtime.key}/{variant}: timed but never called: {missed}"
            measured += 1
    if not measured:
        pytest.skip("no framework of the benchmark is installed")
