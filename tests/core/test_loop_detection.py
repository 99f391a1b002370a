"""Loop detection: a repeat with nothing new coming back is refused; a repeat that makes progress is not.

The families here are the ones real agent trajectories show (see benchmarks/corpus/real_public.json and
docs/loop-detection.md): each test names the behaviour a user depends on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from loopguard_core import Breaker, LoopDetection, LoopGuardTripped
from loopguard_core.detection import (
    SIMILAR,
    Call,
    Cycle,
    EmptyPages,
    Finding,
    Interleaved,
    Paraphrase,
    Repeat,
    Step,
    Thresholds,
)
from loopguard_core.stores._run_state import FIELDS
from loopguard_core.testing import ScriptedCall, drive


def calls(*spec: tuple[str, object, object]) -> list[ScriptedCall]:
    return [ScriptedCall(tool, args, result) for tool, args, result in spec]


# -- the same call, the same answer ------------------------------------------------------------------
def test_the_fourth_identical_call_with_identical_answers_is_refused_before_it_runs() -> None:
    result = drive(Breaker(), calls(*[("search", {"q": "x"}, "same")] * 6))
    assert result.refused_at == 4
    assert result.executed == 3
    assert result.trip is not None and result.trip.reason == "loop"
    facts = result.trip.facts
    assert (facts["rule"], facts["repeats"], facts["limit"], facts["positions"], facts["call"]) == (
        "repeat",
        3,
        3,
        [1, 2, 3],
        4,
    )


def test_three_identical_calls_then_moving_on_is_left_alone() -> None:
    # Real agents do this all the time: retry twice, see nothing changes, try something else.
    trace = calls(*[("sql", {"query": "SELECT 1"}, "Error: no such table")] * 3, ("sql", {"query": "SHOW TABLES"}, "t"))
    assert not drive(Breaker(), trace).tripped


def test_same_call_with_changing_results_is_progress() -> None:
    names = ["test_parse", "test_render", "test_cache", "test_auth", "test_io", "test_cli", "test_api"]
    trace = calls(*[("pytest", {"args": "-q"}, f"FAILED tests/{name}.py") for name in names])
    assert not drive(Breaker(), trace).tripped


def test_key_order_case_and_spaces_do_not_hide_a_repeat_but_word_order_and_indentation_matter() -> None:
    trace = calls(
        ("search", {"q": "Best practices for X", "n": 10}, "r"),
        ("search", {"n": 10.0, "q": "  best   PRACTICES for x "}, "r"),
        ("search", {"q": "best practices for x", "n": 10}, "r"),
        ("search", {"q": "BEST practices for X", "n": 10}, "r"),
    )
    assert drive(Breaker(), trace).refused_at == 4
    reordered = calls(*[("bash", {"command": f"cp {a} {b}"}, "") for a, b in [("x", "y"), ("y", "x")] * 3])
    assert not drive(Breaker(), reordered).tripped  # cp x y and cp y x are two different commands
    code = calls(*[("edit", {"text": f"line\n{'    ' * (n % 2)}body"}, f"ok {chr(97 + n)}") for n in range(6)])
    assert not drive(Breaker(), code).tripped


def test_loose_matching_can_be_turned_off() -> None:
    trace = calls(*[("search", {"q": q}, "r") for q in ("Best practices", "best practices", "BEST practices", "x")])
    strict = Breaker(loop_detection=LoopDetection(loose_matching=False))
    assert not drive(strict, trace).tripped


def test_numbers_in_arguments_are_never_folded_away() -> None:
    trace = calls(*[("list_users", {"page": n}, "users") for n in range(1, 8)])
    assert not drive(Breaker(), trace).tripped


def test_a_counter_in_the_answer_does_not_hide_the_same_failure() -> None:
    # SWE-agent on Java: the same failing `cd` 17-53 times, each error with the next shell line number.
    trace = [
        ScriptedCall("bash", {"command": "cd fastjson/"}, f"/bin/bash: line {11301 + n}: cd: fastjson/: No such file")
        for n in range(10)
    ]
    result = drive(Breaker(), trace)
    assert result.refused_at == 4


def test_timestamps_ids_and_addresses_are_volatile() -> None:
    answers = [
        f"request {uuid.uuid4()} failed at 2026-12-0{n % 9 + 1}T10:0{n}:00Z after {n * 13} ms <Conn at 0x7f{n:06x}>"
        for n in range(6)
    ]
    trace = calls(*[("post_webhook", {"url": "https://x"}, a) for a in answers])
    assert drive(Breaker(), trace).refused_at == 4


def test_an_answer_that_is_only_numbers_is_its_numbers() -> None:
    clock = calls(*[("get_time", {}, f"2026-11-21T10:{m:02d}:00Z") for m in range(20)])
    assert not drive(Breaker(), clock).tripped


def test_cd_up_three_times_is_allowed() -> None:
    trace = calls(*[("bash", {"command": "cd .."}, "")] * 3, ("bash", {"command": "ls"}, "repo"))
    assert not drive(Breaker(), trace).tripped


def test_the_same_call_across_agents_is_one_loop() -> None:
    trace = [ScriptedCall("lookup", {"email": "x@y"}, "c17", agent=name) for name in ("a", "b", "a", "b", "a")]
    result = drive(Breaker(), trace)
    assert result.refused_at == 4
    assert result.trip is not None and result.trip.agent == "b"


# -- nothing new: a REPL echoing, a file growing by the same block --------------------------------------
def test_rerunning_code_whose_output_only_repeats_earlier_output_is_a_loop() -> None:
    code = {"code": "print(poisson.pmf(0, 5, 3))"}
    outputs = ["0.0", "0.0\n0.0", "0.0\n0.0\n0.0", "0.0\n0.0\n0.0\n0.0", "0.0"]
    trace = calls(
        *[("python", code, f"Observation:\n{out}\nYou have {4 - n} steps left.") for n, out in enumerate(outputs)]
    )
    assert drive(Breaker(), trace).refused_at == 4


def test_the_same_edit_applied_again_and_again_is_a_loop_though_the_file_grows() -> None:
    block = "import os\nimport sys"
    edit = {"args": f"1:1\n{block}\nend_of_edit"}
    shown = []
    lines = ["def main():", "    pass"]
    for _ in range(6):
        lines = block.split("\n") + lines
        shown.append("[File: app.py]\n" + "\n".join(f"{i + 1}:{text}" for i, text in enumerate(lines[:20])))
    result = drive(Breaker(), calls(*[("edit", edit, page) for page in shown]))
    assert result.refused_at == 4


def test_paging_through_a_file_is_never_a_repeat_though_its_pages_share_their_words() -> None:
    names = ["parse", "render", "load", "save", "close", "open", "merge", "split"]
    pages = [
        f"[File: x.py]\n{n * 100}:def {name}(self):\n{n * 100 + 1}:    return self" for n, name in enumerate(names)
    ]
    pages[5] = pages[1].replace("100", "500").replace("101", "501")  # a page whose words were all seen before
    assert not drive(Breaker(), calls(*[("scroll_down", {}, page) for page in pages])).tripped


# -- repeats with something between them ------------------------------------------------------------
def test_a_rerun_after_each_real_change_is_never_a_loop() -> None:
    trace: list[ScriptedCall] = []
    for n in range(8):  # same traceback every time, but each edit went through: progress
        trace.append(ScriptedCall("bash", {"command": "python reproduce.py"}, "Traceback...\nKeyError: 'x'"))
        trace.append(ScriptedCall("bash", {"command": f"sed -i 's/v{n}/v{n + 1}/' app.py"}, ""))
    assert not drive(Breaker(), trace).tripped


def test_the_same_rejected_edit_between_rejected_variants_is_a_loop() -> None:
    rejected = "Your proposed edit has introduced new syntax error(s). Please retry."
    trace: list[ScriptedCall] = []
    for n in range(5):
        trace.append(ScriptedCall("edit", {"args": "463:463 'model': model"}, rejected + " E999 IndentationError"))
        trace.append(ScriptedCall("edit", {"args": f"462:46{n} variant {n}"}, rejected + f" E999 variant {n}"))
    result = drive(Breaker(), trace)
    assert result.refused_at == 7
    assert result.trip is not None and result.trip.facts["rule"] == "interleaved"
    assert result.trip.facts["positions"] == [1, 3, 5]


def test_echo_and_comments_between_repeats_are_no_progress() -> None:
    trace = calls(
        ("bash", {"command": 'echo "Session closed."'}, "Session closed."),
        ("bash", {"command": 'echo "End of session."'}, "End of session."),
        ("bash", {"command": 'echo "Session closed."'}, "Session closed."),
        ("bash", {"command": "# nothing left to do"}, ""),
        ("bash", {"command": 'echo "Session closed."'}, "Session closed."),
        ("bash", {"command": 'echo "Goodbye!"'}, "Goodbye!"),
        ("bash", {"command": 'echo "Session closed."'}, "Session closed."),
    )
    result = drive(Breaker(), trace)
    assert result.refused_at == 7


def test_a_cycle_of_three_calls_is_caught_when_it_would_complete_its_fourth_pass() -> None:
    cycle = [("read", {"p": "a"}, "A"), ("read", {"p": "b"}, "B"), ("read", {"p": "c"}, "C")]
    result = drive(Breaker(), calls(*(cycle * 5)))
    assert result.refused_at == 12  # three passes, then a, b of the fourth: its c is refused
    assert result.trip is not None
    assert (result.trip.facts["rule"], result.trip.facts["period"]) == ("cycle", 3)
    assert result.trip.facts["positions"] == [1, 4, 7]


def test_a_block_that_comes_round_with_new_answers_is_work() -> None:
    trace: list[ScriptedCall] = []
    for n in range(6):
        trace += calls(
            ("read_file", {"path": "main.py"}, f"v{chr(97 + n)}"), ("run_tests", {}, f"{chr(97 + n)} failed")
        )
    assert not drive(Breaker(), trace).tripped


# -- reworded questions, empty pages, polls ----------------------------------------------------------
def test_the_same_question_in_other_words_with_the_same_answer_is_a_loop() -> None:
    answer = "10 results: the rate limiting guide at example.com"
    trace = calls(
        ("web_search", {"q": "best practices for rate limiting"}, answer),
        ("web_search", {"q": "recommended practices for rate limiting"}, answer),
        ("web_search", {"q": "good practices for rate limiting"}, answer),
        ("web_search", {"q": "rate limiting practices that are best"}, answer),
    )
    result = drive(Breaker(), trace)
    assert result.refused_at == 4
    assert result.trip is not None and result.trip.facts["rule"] == "paraphrase"


def test_paraphrase_is_only_for_natural_language_never_commands_or_code() -> None:
    answer = "E: Unable to locate package: the package index is out of date"
    shell = calls(*[("bash", {"command": f"apt-get install -y {p} --no-install-recommends"}, answer) for p in "abcdef"])
    assert not drive(Breaker(), shell).tripped
    sql = calls(
        *[("sql", {"query": f"SELECT name FROM users WHERE id = {n}"}, "Error: no such table") for n in range(6)]
    )
    assert not drive(Breaker(), sql).tripped


def test_reworded_questions_with_new_answers_are_research() -> None:
    trace = calls(
        ("web_search", {"q": "best practices for rate limiting"}, "guide A about token buckets"),
        ("web_search", {"q": "recommended practices for rate limiting"}, "guide B about leaky buckets"),
        ("web_search", {"q": "good practices for rate limiting"}, "guide C about sliding windows"),
        ("web_search", {"q": "rate limiting practices in nginx"}, "guide D about limit_req"),
    )
    assert not drive(Breaker(), trace).tripped


def test_questions_about_different_identifiers_are_different_questions() -> None:
    answer = "No incidents reported for this region in the last 24 hours."
    regions = calls(
        *[
            ("search_incidents", {"q": f"is region {r} affected by the outage"}, answer)
            for r in ("us-east-1", "eu-west-1", "ap-south-1", "us-west-2", "eu-central-1")
        ]
    )
    assert not drive(Breaker(), regions).tripped


def test_short_identical_answers_do_not_make_similar_questions_a_loop() -> None:
    plans = calls(
        *[
            ("ask_docs", {"question": f"does the {p} plan include single sign-on"}, "Yes.")
            for p in ("team", "business", "enterprise", "starter", "basic")
        ]
    )
    assert not drive(Breaker(), plans).tripped


def test_paging_on_into_empty_pages_stalls_and_different_requests_with_nothing_do_not() -> None:
    past_end = calls(*[("list_orders", {"page": n}, f"orders {n}") for n in range(1, 6)]) + calls(
        *[("list_orders", {"page": n}, []) for n in range(6, 20)]
    )
    result = drive(Breaker(), past_end)
    assert result.refused_at == 10  # pages 6-9 came back empty: the fifth empty request is refused
    assert result.trip is not None and result.trip.reason == "stall"
    searches = calls(*[("search", {"q": f"term {chr(97 + n)}"}, []) for n in range(8)])
    assert not drive(Breaker(), searches).tripped
    writes = calls(*[("write_file", {"path": f"out/{n}.txt", "n": n}, None) for n in range(10)])
    assert not drive(Breaker(), writes).tripped  # None is what a tool that acts returns: never empty
    off = Breaker(loop_detection=LoopDetection(max_empty_results=None))
    assert drive(off, past_end).trip is None or drive(off, past_end).trip.reason != "stall"  # type: ignore[union-attr]


def test_status_polls_get_more_patience_than_other_tools() -> None:
    until_done = calls(*[("job_status", {"job": "b-18"}, "running")] * 7, ("job_status", {"job": "b-18"}, "done"))
    assert not drive(Breaker(), until_done).tripped
    stuck = calls(*[("job_status", {"job": "b-18"}, "running")] * 30)
    assert drive(Breaker(), stuck).refused_at == 9
    impatient = Breaker(loop_detection=LoopDetection(poll_max_repeats=2, max_repeats=2))
    assert drive(impatient, stuck).refused_at == 3


def test_an_answer_that_says_still_running_earns_poll_patience_whatever_the_tool_name() -> None:
    rollout = calls(
        *[("get_deployment", {"id": "dep-42"}, "in progress")] * 6, ("get_deployment", {"id": "dep-42"}, "ok")
    )
    assert not drive(Breaker(), rollout).tripped
    stuck = calls(*[("get_deployment", {"id": "dep-42"}, "in progress")] * 30)
    assert drive(Breaker(), stuck).refused_at == 9
    same = calls(*[("get_deployment", {"id": "dep-42"}, "region eu-west-1, 3 replicas")] * 5)
    assert drive(Breaker(), same).refused_at == 4


def test_sleeping_between_status_checks_is_waiting() -> None:
    trace: list[ScriptedCall] = []
    for _ in range(6):
        trace += calls(("bash", {"command": "sleep 10"}, ""), ("bash", {"command": "kubectl get pod web"}, "Pending"))
    trace += calls(("bash", {"command": "kubectl get pod web"}, "Running"))
    assert not drive(Breaker(), trace).tripped


def test_think_steps_between_repeats_are_no_progress() -> None:
    trace: list[ScriptedCall] = []
    for n in range(4):
        trace += calls(
            ("get_reservation", {"id": "ABC"}, "Error: reservation ABC not found"),
            ("think", {"thought": f"maybe try again, take {n}"}, ""),
        )
    result = drive(Breaker(), trace)
    assert result.refused_at == 7
    assert result.trip is not None and result.trip.facts["rule"] == "interleaved"


# -- composable policies, per tool, observe mode, your own detector ------------------------------------
def test_detectors_can_be_reordered_tuned_per_tool_or_left_out() -> None:
    polls = calls(*[("poll_job", {"id": 7}, "running")] * 12)
    relaxed = Breaker(loop_detection=LoopDetection(detectors=[Repeat(per_tool={"poll_job": 10})]))
    assert drive(relaxed, polls).refused_at == 11
    only_cycles = Breaker(loop_detection=LoopDetection(detectors=[Cycle()]))
    assert not drive(only_cycles, calls(*[("s", {}, "r")] * 10)).tripped
    assert not drive(Breaker(loop_detection=False), calls(*[("s", {}, "r")] * 10)).tripped
    exempt = Breaker(loop_detection=LoopDetection(exempt_tools={"poll_job"}))
    assert not drive(exempt, polls).tripped
    per_tool = Breaker(loop_detection=LoopDetection(max_repeats_per_tool={"poll_job": 4}))
    assert drive(per_tool, polls).refused_at == 5
    with pytest.raises(ValueError, match="duplicate names"):
        LoopDetection(detectors=[Repeat(), Repeat()])
    with pytest.raises(TypeError, match="detectors"):
        LoopDetection(detectors=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="mode"):
        Cycle(mode="warn")


def test_observe_mode_refuses_nothing_and_reports_what_it_would_have_refused() -> None:
    seen: list[LoopGuardTripped] = []
    breaker = Breaker(max_tool_calls=5, mode="observe", on_observe=seen.append)
    result = drive(breaker, calls(*[("search", {"q": "x"}, "same")] * 7))
    assert not result.tripped and result.executed == 7
    kinds = [(note.reason, note.facts.get("rule")) for note in seen]
    assert ("loop", "repeat") in kinds and ("tool_ceiling", None) in kinds
    assert all(note.facts["observe"] is True for note in seen)
    assert "would have refused" in str(seen[0]) and "it was made" in str(seen[0])


def test_loop_detection_can_observe_while_budgets_enforce() -> None:
    seen: list[LoopGuardTripped] = []
    breaker = Breaker(max_tool_calls=6, loop_detection=LoopDetection(mode="observe"), on_observe=seen.append)
    result = drive(breaker, calls(*[("search", {"q": "x"}, "same")] * 8))
    assert result.refused_at == 7
    assert result.trip is not None and result.trip.reason == "tool_ceiling"
    assert {note.facts["rule"] for note in seen} == {"repeat"}


def test_one_detector_can_observe_while_the_others_enforce() -> None:
    seen: list[LoopGuardTripped] = []
    loop = LoopDetection(detectors=[Repeat(mode="observe"), Cycle()])
    breaker = Breaker(loop_detection=loop, on_observe=seen.append)
    assert not drive(breaker, calls(*[("search", {"q": "x"}, "same")] * 6)).tripped
    assert len(seen) == 3
    cycle = drive(Breaker(loop_detection=loop), calls(*[("r", {"p": "a"}, "A"), ("r", {"p": "b"}, "B")] * 5))
    assert cycle.refused_at == 8


class _SameToolTooOften:
    """A detector of one's own: more than `limit` calls of one tool in the window."""

    name = "too_often"
    mode: str | None = None

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def check(self, window: Sequence[Step], call: Call, limits: Thresholds) -> Finding | None:
        mine = [step.seq for step in window if step.tool == call.tool]
        if len(mine) < self.limit:
            return None
        return Finding(self.name, "loop", len(mine), self.limit, tuple(mine[-self.limit :]))


def test_a_detector_of_your_own_composes_with_the_rest() -> None:
    breaker = Breaker(loop_detection=LoopDetection(detectors=[Repeat(), _SameToolTooOften(5)]))
    result = drive(breaker, calls(*[("fetch", {"url": f"https://x/{n}"}, f"page {chr(97 + n)}") for n in range(9)]))
    assert result.refused_at == 6
    assert result.trip is not None and result.trip.facts["rule"] == "too_often"
    assert "[loop/too_often]" in str(result.trip)


# -- messages ----------------------------------------------------------------------------------------
def test_the_refusal_names_the_rule_the_earlier_calls_and_what_to_do() -> None:
    result = drive(Breaker(), calls(("a", {}, "x"), *[("search", {"q": "secret-token-123"}, "same")] * 5))
    assert result.trip is not None
    text = str(result.trip)
    assert "[loop/repeat]" in text
    assert "call #5" in text and "#2, #3, #4" in text
    assert "To continue" in text and "max_repeats_per_tool" in text
    assert "secret-token-123" not in text  # positions, never raw arguments


# -- robustness ----------------------------------------------------------------------------------------
def test_without_results_repeats_still_count() -> None:
    breaker = Breaker()
    for _ in range(3):
        breaker.before_tool("s", {"q": 1})
    with pytest.raises(LoopGuardTripped) as caught:
        breaker.before_tool("s", {"q": 1})
    assert caught.value.facts["in_flight"] == 3


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
    for _ in range(3):
        breaker.before_tool("t", args)
        breaker.after_tool("t", args, result="same")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("t", args)


@pytest.mark.parametrize(
    "result", [object(), {"x": {1, 2}}, b"\x00" * 100, "y" * 3_000_000, float("nan"), [None] * 10_000, {1: "a", "b": 2}]
)
def test_any_result_is_accepted(result: Any) -> None:
    breaker = Breaker()
    for _ in range(3):
        breaker.before_tool("t", {"a": 1})
        breaker.after_tool("t", {"a": 1}, result=result)


def test_cyclic_args_never_crash() -> None:
    cyclic: dict[str, object] = {"a": 1}
    cyclic["self"] = cyclic
    breaker = Breaker()
    breaker.before_tool("t", cyclic)
    breaker.after_tool("t", cyclic, result=cyclic)


def test_loop_memory_is_bounded_on_very_long_runs() -> None:
    breaker = Breaker(loop_detection=LoopDetection(memory=100, window=30))
    for n in range(5_000):
        breaker.before_tool("t", {"n": n})
        breaker.after_tool("t", {"n": n}, result=n)
        breaker.before_tool("never_reported", {"n": n})
    state = breaker._store._runs[breaker._key()]  # type: ignore[attr-defined]
    assert len(state.window) == 30
    assert len(state.inflight) <= 100
    assert len(state.seen) == 0  # no call ids given: nothing to remember for idempotency


def test_parallel_identical_calls_cannot_slip_past_the_limit_together() -> None:
    # A model turn asks for the same call 8 times; the framework runs them concurrently.
    breaker = Breaker()
    breaker.before_tool("search", {"q": "x"}, call_id="c0")
    breaker.after_tool("search", {"q": "x"}, result="r", call_id="c0")
    admitted = 1
    for n in range(1, 8):
        try:
            breaker.before_tool("search", {"q": "x"}, call_id=f"c{n}")
            admitted += 1
        except LoopGuardTripped:
            break
    assert admitted == 3


def test_an_outcome_is_filed_under_the_call_as_admitted_even_if_the_tool_mutates_its_args() -> None:
    breaker = Breaker()
    for _ in range(3):
        args = {"q": "x"}
        breaker.before_tool("search", args)
        args["q"] = "mutated by the tool body"
        breaker.after_tool("search", args, result="same")
    with pytest.raises(LoopGuardTripped):
        breaker.before_tool("search", {"q": "x"})


def test_free_text_reaches_the_store_only_as_keyed_hashes() -> None:
    breaker = Breaker()
    for q in ("lookup account sk-live-abc123 please", "please lookup the account sk-live-abc123"):
        breaker.before_tool("web_search", {"q": q})
        breaker.after_tool("web_search", {"q": q}, result="nothing found for this account here at all")
    state = breaker._store._runs[breaker._key()]  # type: ignore[attr-defined]
    assert "sk-live-abc123" not in repr([getattr(state, name) for name in FIELDS])
    assert not state.window[0].words  # an ordinary call keeps no words at all
    assert state.window[1].flags & SIMILAR  # the reworded question: its words, as keyed 32-bit hashes only
    assert state.window[1].words and all(isinstance(w, int) and w < 2**32 for w in state.window[1].words)


def test_loop_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="similarity"):
        LoopDetection(similarity=1.5)
    with pytest.raises(ValueError, match="poll_tools"):
        LoopDetection(poll_tools="(")
    with pytest.raises(ValueError, match="max_empty_results"):
        LoopDetection(max_empty_results=0)
    with pytest.raises(ValueError, match="window"):
        LoopDetection(window=0)
    with pytest.raises(ValueError, match="max_gap"):
        Interleaved(max_gap=0)
    with pytest.raises(ValueError, match="similarity"):
        Paraphrase(similarity=0)
    with pytest.raises(ValueError, match="max_empty"):
        EmptyPages(max_empty=0)
    with pytest.raises(ValueError, match="mode"):
        Breaker(mode="warn")
