"""Loop detection: repeats that return the same thing are refused; repeats that make progress are not."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, LoopDetection, LoopGuardTripped
from loopguard_core.testing import ScriptedCall, drive


def calls(*spec: tuple[str, object, object]) -> list[ScriptedCall]:
    return [ScriptedCall(tool, args, result) for tool, args, result in spec]


def test_third_identical_call_with_identical_results_is_refused_before_it_runs() -> None:
    result = drive(Breaker(), calls(*[("search", {"q": "x"}, "same")] * 5))
    assert result.refused_at == 3
    assert result.executed == 2
    assert result.trip is not None and result.trip.reason == "loop"
    assert result.trip.facts["repeats"] == 2


def test_same_call_with_changing_results_is_progress() -> None:
    trace = calls(*[("pytest", {"args": "-q"}, f"{n} failed") for n in range(10, 0, -1)])
    assert not drive(Breaker(), trace).tripped


def test_argument_order_case_whitespace_and_word_order_do_not_hide_a_repeat() -> None:
    trace = calls(
        ("search", {"q": "Best practices for X", "n": 10}, "r"),
        ("search", {"n": 10.0, "q": "  best   PRACTICES for x "}, "r"),
        ("search", {"q": "X best practices", "n": 10}, "r"),
    )
    assert drive(Breaker(), trace).refused_at == 3


def test_loose_matching_can_be_turned_off() -> None:
    trace = calls(
        ("search", {"q": "Best practices for X"}, "r"),
        ("search", {"q": "best practices for x"}, "r"),
        ("search", {"q": "X best practices"}, "r"),
    )
    strict = Breaker(loop_detection=LoopDetection(loose_matching=False, similarity=None))
    assert not drive(strict, trace).tripped


def test_numbers_are_never_folded_away() -> None:
    trace = calls(*[("list_users", {"page": n}, "users") for n in range(1, 8)])
    assert not drive(Breaker(), trace).tripped
    text = calls(*[("search", {"q": f"topic number {n} of the survey"}, "notes") for n in range(8)])
    assert not drive(Breaker(), text).tripped


def test_a_cycle_of_three_calls_is_caught_at_the_third_pass() -> None:
    cycle = [("read", {"p": "a"}, "A"), ("read", {"p": "b"}, "B"), ("read", {"p": "c"}, "C")]
    result = drive(Breaker(), calls(*(cycle * 5)))
    assert result.refused_at == 7  # a, b, c, a, b, c, then the third a


def test_the_same_call_across_agents_is_one_loop() -> None:
    trace = [ScriptedCall("lookup", {"email": "x@y"}, "c17", agent=name) for name in ("a", "b", "a", "b")]
    result = drive(Breaker(), trace)
    assert result.refused_at == 3
    assert result.trip is not None and result.trip.agent == "a"


def test_repeated_identical_errors_are_a_loop_and_a_failure_streak_trips_on_varied_args() -> None:
    storm = [ScriptedCall("hook", {"u": 1}, "ConnectionError", error="ConnectionError: refused")] * 5
    assert drive(Breaker(), storm).refused_at == 3
    streak = [ScriptedCall("fetch", {"id": n}, None, error="403") for n in range(10)]
    result = drive(Breaker(), streak)
    assert result.refused_at == 6
    assert result.trip is not None and result.trip.reason == "failures"


def test_a_success_resets_the_failure_streak() -> None:
    trace = []
    for n in range(12):
        trace.append(ScriptedCall("fetch", {"id": n}, None, error="timeout" if n % 4 else False))
    assert not drive(Breaker(), trace).tripped


def test_failure_streak_limit_is_configurable_and_can_be_disabled() -> None:
    streak = [ScriptedCall("fetch", {"id": n}, None, error="403") for n in range(10)]
    assert drive(Breaker(max_consecutive_failures=2), streak).refused_at == 3
    assert not drive(Breaker(max_consecutive_failures=None), streak).tripped


def test_exempt_tools_and_per_tool_repeat_limits() -> None:
    polls = calls(*[("poll_job", {"id": 7}, "running")] * 6)
    assert not drive(Breaker(loop_detection=LoopDetection(exempt_tools={"poll_job"})), polls).tripped
    relaxed = Breaker(loop_detection=LoopDetection(max_repeats_per_tool={"poll_job": 4}))
    assert drive(relaxed, polls).refused_at == 5


def test_loop_detection_off() -> None:
    assert not drive(Breaker(loop_detection=False), calls(*[("s", {}, "r")] * 10)).tripped


def test_without_results_repeats_still_count() -> None:
    breaker = Breaker()
    breaker.before_tool("s", {"q": 1})
    breaker.before_tool("s", {"q": 1})
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("s", {"q": 1})


@pytest.mark.parametrize(
    "args",
    [
        {"obj": object()},
        {"set": {3, 1, 2}},
        {"bytes": b"\x00\xff" * 10},
        {"nan": float("nan"), "inf": float("inf")},
        {"huge": "x" * 5_000_000},
        "not json at all {",
        None,
        ("tuple", 1),
    ],
)
def test_non_json_args_never_crash_a_check_and_still_repeat(args: object) -> None:
    breaker = Breaker()
    for _ in range(2):
        breaker.before_tool("t", args)
        breaker.after_tool("t", args, result="same")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("t", args)


def test_cyclic_args_never_crash() -> None:
    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    breaker = Breaker()
    breaker.before_tool("t", cyclic)
    breaker.after_tool("t", cyclic, result=cyclic)


def test_loop_memory_is_bounded_on_very_long_runs() -> None:
    breaker = Breaker(loop_detection=LoopDetection(memory=100))
    for n in range(5_000):
        breaker.before_tool("t", {"n": n})
        breaker.after_tool("t", {"n": n}, result=n)
    state = breaker._store._runs[breaker._key()]  # type: ignore[attr-defined]
    assert len(state.signatures) == 100
    assert len(state.seen) == 0  # no call ids given: nothing to remember for idempotency


def test_parallel_identical_calls_cannot_slip_past_the_limit_together() -> None:
    # A model turn asks for the same call 8 times; the framework runs them concurrently, so the
    # first outcome arrives while the others are still in flight.
    breaker = Breaker()
    admitted = 0
    breaker.before_tool("search", {"q": "x"}, call_id="c0")
    admitted += 1
    breaker.before_tool("search", {"q": "x"}, call_id="c1")
    admitted += 1
    breaker.after_tool("search", {"q": "x"}, result="r", call_id="c0")
    for n in range(2, 8):
        try:
            breaker.before_tool("search", {"q": "x"}, call_id=f"c{n}")
            admitted += 1
        except LoopGuardTripped:
            break
    assert admitted == 2


def test_the_same_question_in_other_words_with_the_same_answer_is_a_loop() -> None:
    answer = "10 results: the rate limiting guide at example.com"
    trace = calls(
        ("web_search", {"q": "best practices for rate limiting"}, answer),
        ("web_search", {"q": "recommended practices for rate limiting"}, answer),
        ("web_search", {"q": "good practices for rate limiting"}, answer),
    )
    result = drive(Breaker(), trace)
    assert result.refused_at == 3
    assert result.trip is not None
    assert result.trip.facts["similar"] is True


def test_reworded_questions_with_new_answers_are_research() -> None:
    trace = calls(
        ("web_search", {"q": "best practices for rate limiting"}, "guide A"),
        ("web_search", {"q": "recommended practices for rate limiting"}, "guide B"),
        ("web_search", {"q": "good practices for rate limiting"}, "guide C"),
        ("web_search", {"q": "rate limiting practices in nginx"}, "guide D"),
    )
    assert not drive(Breaker(), trace).tripped


def test_similar_questions_about_different_numbers_are_different() -> None:
    trace = calls(*[("web_search", {"q": f"sales report for region {n} in 2025"}, "no data") for n in range(6)])
    assert not drive(Breaker(), trace).tripped


def test_empty_answers_in_a_row_stall_and_any_real_answer_resets() -> None:
    past_end = calls(*[("list_orders", {"page": n}, f"orders {n}") for n in range(1, 6)]) + calls(
        *[("list_orders", {"page": n}, []) for n in range(6, 20)]
    )
    result = drive(Breaker(), past_end)
    assert result.refused_at == 10  # pages 6-9 came back empty: the fifth empty request is refused
    assert result.trip is not None
    assert result.trip.reason == "stall"
    mixed = calls(*[("search", {"q": n}, [] if n % 3 else ["hit"]) for n in range(20)])
    assert not drive(Breaker(), mixed).tripped
    # Different requests that each find nothing are not paging into nothing.
    searches = calls(*[("search", {"q": f"term {chr(97 + n)}"}, []) for n in range(8)])
    assert not drive(Breaker(), searches).tripped
    # Tools that act return None on success: never "empty".
    writes = calls(*[("write_file", {"path": f"out/{n}.txt", "n": n}, None) for n in range(10)])
    assert not drive(Breaker(), writes).tripped
    off = Breaker(loop_detection=LoopDetection(max_empty_results=None))
    assert not drive(off, past_end).tripped


def test_status_polls_get_more_patience_than_other_tools() -> None:
    until_done = calls(*[("job_status", {"job": "b-18"}, "running")] * 6, ("job_status", {"job": "b-18"}, "done"))
    assert not drive(Breaker(), until_done).tripped
    stuck = calls(*[("job_status", {"job": "b-18"}, "running")] * 30)
    assert drive(Breaker(), stuck).refused_at == 9
    impatient = Breaker(loop_detection=LoopDetection(poll_max_repeats=2))
    assert drive(impatient, stuck).refused_at == 3


def test_new_loop_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="similarity"):
        LoopDetection(similarity=1.5)
    with pytest.raises(ValueError, match="poll_tools"):
        LoopDetection(poll_tools="(")
    with pytest.raises(ValueError, match="max_empty_results"):
        LoopDetection(max_empty_results=0)


def test_an_answer_that_says_still_running_earns_poll_patience_whatever_the_tool_name() -> None:
    rollout = calls(
        *[("get_deployment", {"id": "dep-42"}, "in progress")] * 5, ("get_deployment", {"id": "dep-42"}, "complete")
    )
    assert not drive(Breaker(), rollout).tripped
    stuck = calls(*[("get_deployment", {"id": "dep-42"}, "in progress")] * 30)
    assert drive(Breaker(), stuck).refused_at == 9
    same = calls(*[("get_deployment", {"id": "dep-42"}, "region eu-west-1, 3 replicas")] * 5)
    assert drive(Breaker(), same).refused_at == 3


def test_short_identical_answers_do_not_make_similar_questions_a_loop() -> None:
    plans = calls(
        *[
            ("ask_docs", {"question": f"does the {p} plan include single sign-on"}, "Yes.")
            for p in ("team", "business", "enterprise", "starter")
        ]
    )
    assert not drive(Breaker(), plans).tripped


def test_different_ids_that_each_have_nothing_are_not_paging_into_nothing() -> None:
    customers = calls(*[("list_overdue_invoices", {"customer_id": 4100 + 17 * n}, []) for n in range(8)])
    assert not drive(Breaker(), customers).tripped
    offsets = calls(*[("list_orders", {"status": "open", "offset": 50 * n}, []) for n in range(8)])
    result = drive(Breaker(), offsets)
    assert result.trip is not None
    assert result.trip.reason == "stall"


def test_questions_about_different_identifiers_are_different_questions() -> None:
    answer = "No incidents reported for this region in the last 24 hours."
    regions = calls(
        *[
            ("search_incidents", {"q": f"is region {r} affected by the outage"}, answer)
            for r in ("us-east-1", "eu-west-1", "ap-south-1", "us-west-2")
        ]
    )
    assert not drive(Breaker(), regions).tripped


def test_an_outcome_is_filed_under_the_call_as_admitted_even_if_the_tool_mutates_its_args() -> None:
    breaker = Breaker()
    for _ in range(2):
        args = {"q": "x"}
        breaker.before_tool("search", args)
        args["q"] = "mutated by the tool body"
        breaker.after_tool("search", args, result="same")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "x"})
