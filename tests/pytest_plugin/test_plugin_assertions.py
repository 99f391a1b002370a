"""assert_tripped / assert_not_tripped as a user writes them: small test files run by pytester, on a real LangChain
``create_agent`` driven by the testing kit's scripted model, and on ``loopguard_core.testing.drive``."""

from __future__ import annotations

import textwrap

import pytest

from .helpers import RunPytest

AGENT = textwrap.dedent(
    '''
    import pytest
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from loopguard_core import LoopGuardTripped
    from loopguard_langchain import LoopGuardMiddleware
    from loopguard_pytest import assert_not_tripped, assert_tripped

    LOOP = ("search", {"q": "refund policy"})
    USER = {"messages": [{"role": "user", "content": "refund?"}]}


    def support_agent(model, breaker, bodies, *, on_trip="raise", guarded=True):
        @tool
        def search(q: str) -> str:
            """Search the docs."""
            bodies.hit("search")
            return "nothing new"

        middleware = [LoopGuardMiddleware(breaker, on_trip=on_trip)] if guarded else []
        return create_agent(model, [search], middleware=middleware)
    '''
)


def _needs_langchain() -> None:
    """Skip without LangChain; else import it here, once (pytester forgets what an inner run imported)."""
    pytest.importorskip("langchain.agents", reason="needs the langchain extra: pip install 'loopguard-core[langchain]'")
    for module in ("langchain_core.tools", "loopguard_langchain", "loopguard_langchain.testing"):
        pytest.importorskip(module)


def _lines(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines)


# -- "my agent is stopped when it loops" ---------------------------------------------------------------------


def test_a_looping_agent_is_shown_stopped_in_a_few_lines(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_my_agent_is_stopped_when_it_loops(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies)
                with assert_tripped(reason="loop", tool="search", max_body_runs=3, bodies=loopguard_bodies) as caught:
                    agent.invoke(USER)
                assert caught.trip.reason == "loop" and caught.trip.facts["rule"] == "repeat"
                assert loopguard_bodies.count("search") == 3
            """
        )
    )
    run_pytest().assert_outcomes(passed=1)


def test_a_wrong_reason_fails_saying_which_reason_came_and_the_trip(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_expects_a_turn_ceiling(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies)
                with assert_tripped(reason="turn_ceiling", tool="lookup", max_body_runs=2, bodies=loopguard_bodies):
                    agent.invoke(USER)
            """
        )
    )
    result = run_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: loopguard stopped the run, but not as expected:",
            "E*  reason: expected 'turn_ceiling', got 'loop'",
            "E*  tool: expected 'lookup', got 'search'",
            "E*  the trip: loopguard refused the call *",
        ]
    )
    output = _lines(result)
    # The message carries the trip; the framework's traceback of the trip is not repeated under it.
    assert "The above exception was the direct cause" not in output


def test_too_many_body_runs_fail_saying_the_trip_came_too_late(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_expects_two_runs_at_most(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies)
                with assert_tripped(reason="loop", tool="search", max_body_runs=2, bodies=loopguard_bodies):
                    agent.invoke(USER)
            """
        )
    )
    result = run_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["E*  body runs: the 'search' body ran 3 times, more than max_body_runs=2 (the trip came too late)"]
    )


def test_an_unguarded_agent_fails_saying_the_scripted_model_ran_out(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_forgot_the_middleware(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies, guarded=False)
                with assert_tripped(reason="loop"):
                    agent.invoke(USER)
            """
        )
    )
    result = run_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*expected loopguard to stop the run (reason='loop'), but the block raised ScriptExhausted: "
            "ScriptedChatModel 'fake-scripted' has no answer for model call 31*",
            "E*The scripted model ran out of answers, so nothing stopped the agent*",
        ]
    )


def test_a_trip_that_never_reaches_the_caller_fails_listing_the_refusal(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_the_adapter_ends_the_run_quietly(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies, on_trip="end")
                with assert_tripped(reason="loop"):
                    agent.invoke(USER)


            def test_the_breaker_form_sees_it(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies, on_trip="end")
                agent.invoke(USER)
                assert assert_tripped(breaker, reason="loop", tool="search").tool == "search"
            """
        )
    )
    result = run_pytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*expected loopguard to stop the run (reason='loop'), but the block finished without raising",
            "E*loopguard did refuse 1 call inside the block, but the trip never reached the caller *",
            "E*  1. loopguard refused the call [[]loop/repeat] *",
        ]
    )


def test_a_trip_wrapped_on_its_way_fails_naming_both(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(
        """
        from loopguard_core import LoopGuardTripped
        from loopguard_core.testing import ScriptedCall, drive
        from loopguard_pytest import assert_tripped


        class ToolFailed(Exception):
            pass


        def test_wrapped(breaker):
            with assert_tripped(reason="loop"):
                result = drive(breaker, [ScriptedCall("search", {"q": "x"}, result="same")] * 5)
                raise ToolFailed("the tool layer failed") from result.trip
        """
    )
    result = run_pytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*expected loopguard to stop the run (reason='loop'), but the block raised ToolFailed: the tool layer *",
            "E*It carries a LoopGuardTripped that was converted on its way to the caller: loopguard refused the call*",
        ]
    )


# -- "my agent's normal run is never stopped" ----------------------------------------------------------------


def test_a_normal_run_passes_and_a_stopped_one_fails_listing_its_trips(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    _needs_langchain()
    pytester.makepyfile(
        AGENT
        + textwrap.dedent(
            """
            def test_normal_run(breaker, loopguard_bodies, scripted_model):
                model = scripted_model("langchain", [LOOP, "Refunds take 5 days."])
                agent = support_agent(model, breaker, loopguard_bodies)
                with assert_not_tripped(breaker):
                    result = agent.invoke(USER)
                assert result["messages"][-1].content == "Refunds take 5 days."
                assert_not_tripped(breaker)


            def test_stopped_quietly(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies, on_trip="end")
                agent.invoke(USER)  # the adapter ended the run: no exception, but the breaker refused a call
                assert_not_tripped(breaker)


            def test_stopped_loudly(breaker, loopguard_bodies, scripted_model):
                agent = support_agent(scripted_model("langchain", loop=LOOP), breaker, loopguard_bodies)
                with assert_not_tripped(breaker):
                    agent.invoke(USER)
            """
        )
    )
    result = run_pytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_stopped_quietly _*",
            "E*AssertionError: expected the run to go untouched by loopguard, but it refused 1 call:",
            "E*  1. loopguard refused the call [[]loop/repeat] (agent 'tools'): call #4 to 'search' *",
            "*_ test_stopped_loudly _*",
            "E*AssertionError: expected the run to go untouched by loopguard, but this trip reached the caller: "
            "loopguard refused the call [[]loop/repeat]*",
        ]
    )


def test_observed_would_be_trips_fail_only_when_asked(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest
        from loopguard_core.testing import ScriptedCall, drive
        from loopguard_pytest import assert_not_tripped

        CALLS = [ScriptedCall("search", {"q": "x"}, result="same")] * 5
        pytestmark = pytest.mark.loopguard(mode="observe")


        def test_observe_mode_refuses_nothing(breaker):
            with assert_not_tripped(breaker):
                assert drive(breaker, CALLS).executed == 5


        def test_but_observed_true_sees_what_it_would_have_refused(breaker):
            drive(breaker, CALLS)
            assert_not_tripped(breaker, observed=True)
        """
    )
    result = run_pytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: expected the run to go untouched by loopguard, observe mode included",
            "E*observe mode would have refused 2 calls:",
            "E*  1. loopguard would have refused the call [[]loop/repeat]*mode is 'observe', so it was made.",
        ]
    )
