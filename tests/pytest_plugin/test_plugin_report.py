"""``--loopguard-report``: each test's guarded calls and trips in the terminal summary."""

from __future__ import annotations

import pytest

from loopguard_pytest._report import REPORT_SECTION, format_report

from .helpers import PLUGIN_ARGS, RunPytest

TESTS = """
import pytest
from loopguard_core.testing import ScriptedCall, drive
from loopguard_pytest import assert_tripped

SAME = ScriptedCall("search", {"q": "refund policy"}, result="nothing new")


def test_loops(breaker):
    breaker.before_model(model="claude-sonnet-4-6", estimated_input_tokens=100, max_output_tokens=50)
    breaker.after_model(model="claude-sonnet-4-6", input_tokens=120, output_tokens=30)
    assert_tripped(drive(breaker, [SAME] * 5), reason="loop")


@pytest.mark.loopguard(max_turns=1, mode="observe")
def test_observed(breaker):
    for _ in range(2):
        breaker.before_model(model="gpt-4o", estimated_input_tokens=10)
        breaker.after_model(model="gpt-4o", input_tokens=10, output_tokens=5)
    failing = ScriptedCall("deploy", {"env": "prod"}, error="HTTP 500")
    drive(breaker, [failing])


def test_without_the_fixture():
    pass
"""


def test_the_report_lists_each_tests_calls_and_trips(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(test_agent=TESTS)
    result = run_pytest("--loopguard-report")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*= loopguard report =*",
            "test_agent.py::test_loops",
            "  1 model call(s) and 3 tool call(s) ran, 1 trip(s)",
            "    1. model 'claude-sonnet-4-6', turn 1: admitted (120 in + 30 out tokens)",
            "    2. tool 'search', turn 1: admitted",
            "    3. tool 'search', turn 1: admitted",
            "    4. tool 'search', turn 1: admitted",
            "    5. tool 'search', turn 1: REFUSED [[]loop[]]",
            "  trip: loopguard refused the call [[]loop/repeat[]]: call #4 to 'search' would make the same request *",
            "test_agent.py::test_observed",
            "  2 model call(s) and 1 tool call(s) ran, 0 trip(s), 1 observed",
            "  breaker: max_turns=1, mode='observe'",
            "    1. model 'gpt-4o', turn 1: admitted (10 in + 5 out tokens)",
            "    2. model call, turn 2: admitted, observe mode would refuse it [[]turn_ceiling[]]",
            "    3. model 'gpt-4o', turn 2: admitted (10 in + 5 out tokens)",
            "    4. tool 'deploy', turn 2: admitted, failed",
            "  observed: loopguard would have refused the call [[]turn_ceiling[]]: model turn 2 would exceed *",
        ]
    )
    assert "test_without_the_fixture" not in result.stdout.str().split("loopguard report")[1]


def test_no_report_without_the_option(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(test_agent=TESTS)
    result = run_pytest()
    result.assert_outcomes(passed=3)
    assert "loopguard report" not in result.stdout.str()


def test_the_report_says_when_no_test_used_the_breaker(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run_pytest("--loopguard-report")
    result.stdout.fnmatch_lines(["*= loopguard report =*", "no test used the `breaker` fixture: nothing to report"])


def test_the_report_travels_in_the_teardown_report_and_covers_failed_tests(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        from loopguard_core.testing import ScriptedCall, drive


        def test_fails_after_a_trip(breaker):
            drive(breaker, [ScriptedCall("search", {"q": "x"}, result="same")] * 4)
            assert False, "the test itself failed"
        """
    )
    result = run_pytest("--loopguard-report")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["test_*.py::test_fails_after_a_trip", "    4. tool 'search': REFUSED [[]loop[]]"])
    recorded = pytester.inline_run(*PLUGIN_ARGS, "--loopguard-report")
    (teardown,) = [r for r in recorded.getreports("pytest_runtest_logreport") if r.when == "teardown"]
    (text,) = [content for name, content in teardown.sections if name == REPORT_SECTION]
    assert "REFUSED [loop]" in text


def test_format_report_reads_model_names_from_any_canonical_input() -> None:
    rows = [
        {"origin": "model", "turn": 1, "input_text": '{"input":None,"model":"gpt-4o"}', "cost_usd": 0.0012},
        {"origin": "model", "turn": 2, "input_text": "not json", "input_tokens": 1, "output_tokens": 2},
        {"origin": "breaker", "turn": 3, "agent": "writer", "passed": False, "breach_reason": "cost_ceiling"},
    ]
    assert format_report(rows, [], limits={"max_cost_usd": 0.01}).splitlines() == [
        "  2 model call(s) and 0 tool call(s) ran, 0 trip(s)",
        "  breaker: max_cost_usd=0.01",
        "    1. model 'gpt-4o', turn 1: admitted (0 in + 0 out tokens, 0.001200 USD)",
        "    2. model, turn 2: admitted (1 in + 2 out tokens)",
        "    3. model call (agent 'writer'), turn 3: REFUSED [cost_ceiling]",
    ]
