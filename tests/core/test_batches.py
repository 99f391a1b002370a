"""Tool calls of one model answer run in parallel are judged on the run as the model saw it."""

from __future__ import annotations

import threading

import pytest

from loopguard_core import Breaker, LoopGuardTripped

SAME = ("lookup", {"q": "same"})


def finished(breaker: Breaker, tool: str, args: dict[str, object], result: str, *, call_id: str, batch: str) -> None:
    breaker.before_tool(tool, args, call_id=call_id, batch=batch)
    breaker.after_tool(tool, args, result=result, call_id=call_id)  # the call id says which batch it was


def three_same(breaker: Breaker) -> None:
    for n in range(3):
        finished(breaker, *SAME, "nothing new", call_id=f"s{n}", batch=f"m{n}")


@pytest.mark.parametrize("sibling_first", [True, False])
def test_a_sibling_that_finishes_first_does_not_change_the_verdict(sibling_first: bool) -> None:
    breaker = Breaker()
    three_same(breaker)
    if sibling_first:  # the fresh page runs and reports before the fourth identical lookup is checked
        finished(breaker, "fetch_page", {"page": 1}, "page 1: fresh text", call_id="p", batch="m3")
    with pytest.raises(LoopGuardTripped) as refused:
        breaker.before_tool(*SAME, call_id="s3", batch="m3")
    assert refused.value.reason == "loop"


@pytest.mark.parametrize("twin_first", [True, False])
def test_an_answer_that_repeats_a_call_twice_is_refused_whichever_twin_reports_first(twin_first: bool) -> None:
    # Two identical calls earlier, then one answer asking for the same call twice: the second twin is the 4th.
    breaker = Breaker()
    for n in range(2):
        finished(breaker, *SAME, "nothing new", call_id=f"s{n}", batch=f"m{n}")
    breaker.before_tool(*SAME, call_id="t1", batch="m2")
    if twin_first:  # the first twin ran and reported before the second is checked: it still counts
        breaker.after_tool(*SAME, result="nothing new", call_id="t1")
    with pytest.raises(LoopGuardTripped) as refused:
        breaker.before_tool(*SAME, call_id="t2", batch="m2")
    assert refused.value.reason == "loop"


def test_without_the_batch_a_finished_sibling_breaks_the_repeat() -> None:
    breaker = Breaker()
    three_same(breaker)
    breaker.before_tool("fetch_page", {"page": 1}, call_id="p")
    breaker.after_tool("fetch_page", {"page": 1}, result="page 1: fresh text", call_id="p")
    breaker.before_tool(*SAME, call_id="s3")  # judged after the page: progress in between, admitted


def test_the_next_answer_sees_the_whole_batch() -> None:
    breaker = Breaker()
    three_same(breaker)
    finished(breaker, "fetch_page", {"page": 1}, "page 1: fresh text", call_id="p", batch="m3")
    breaker.before_tool(*SAME, call_id="s4", batch="m4")  # a new answer: the page counts as progress now


def _race(breaker: Breaker, results: dict[str, str]) -> None:
    def page() -> None:
        finished(breaker, "fetch_page", {"page": 1}, "page 1: fresh text", call_id="p", batch="m3")

    def same() -> None:
        try:
            breaker.before_tool(*SAME, call_id="s3", batch="m3")
            results["same"] = "admitted"
        except LoopGuardTripped:
            results["same"] = "refused"

    threads = [threading.Thread(target=page), threading.Thread(target=same)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_parallel_siblings_on_threads_get_the_same_verdict_every_time() -> None:
    outcomes = set()
    for _ in range(30):
        breaker, results = Breaker(), {}
        three_same(breaker)
        _race(breaker, results)
        outcomes.add(results["same"])
    assert outcomes == {"refused"}


async def test_the_async_path_judges_batches_the_same_way() -> None:
    breaker = Breaker()
    for n in range(3):
        await breaker.abefore_tool(*SAME, call_id=f"s{n}", batch=f"m{n}")
        await breaker.aafter_tool(*SAME, result="nothing new", call_id=f"s{n}")
    await breaker.abefore_tool("fetch_page", {"page": 1}, call_id="p", batch="m3")
    await breaker.aafter_tool("fetch_page", {"page": 1}, result="page 1: fresh", call_id="p")
    with pytest.raises(LoopGuardTripped):
        await breaker.abefore_tool(*SAME, call_id="s3", batch="m3")
