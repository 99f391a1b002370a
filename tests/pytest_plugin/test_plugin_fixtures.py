"""The plugin's fixtures and marker, seen from user test files run by pytester."""

from __future__ import annotations

import pytest

from .helpers import RunPytest


def test_the_fixtures_are_new_for_each_test_and_wired_together(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        from loopguard_core import Breaker
        from loopguard_core.testing import BodyCounter, FakeClock, Recorder

        SEEN = []


        def test_wiring(breaker, loopguard_clock, loopguard_ledger, loopguard_bodies):
            assert isinstance(breaker, Breaker)
            assert isinstance(loopguard_clock, FakeClock) and breaker.clock is loopguard_clock
            assert isinstance(loopguard_ledger, Recorder) and breaker.ledger is loopguard_ledger
            assert isinstance(loopguard_bodies, BodyCounter) and loopguard_bodies.count() == 0
            breaker.before_tool("search", {"q": "a"})
            breaker.after_tool("search", {"q": "a"}, result="hit")
            assert [row["tool"] for row in loopguard_ledger.where(origin="tool")] == ["search"]
            SEEN.append(breaker)


        def test_a_second_test_gets_a_fresh_breaker(breaker, loopguard_ledger):
            assert breaker is not SEEN[0]
            assert loopguard_ledger.rows == [] and breaker.usage().tool_calls == 0
            assert breaker.limits.max_turns is None and breaker.limits.mode == "enforce"  # Breaker() defaults
        """
    )
    run_pytest().assert_outcomes(passed=2)


def test_the_fake_clock_moves_only_when_told_and_drives_wall_clock_limits(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from loopguard_pytest import assert_tripped


        @pytest.mark.loopguard(max_seconds=60)
        def test_wall_clock(breaker, loopguard_clock):
            start = loopguard_clock.monotonic()
            breaker.before_tool("deploy", {"env": "staging"})
            breaker.after_tool("deploy", {"env": "staging"}, result="queued")
            assert loopguard_clock.monotonic() == start  # no time passes unless told to
            loopguard_clock.advance(59)
            breaker.before_tool("status", {"env": "staging"})  # within the limit
            breaker.after_tool("status", {"env": "staging"}, result="running")
            loopguard_clock.advance(2)
            assert loopguard_clock.monotonic() == start + 61
            with assert_tripped(reason="wall_clock"):
                breaker.before_tool("deploy", {"env": "prod"})
        """
    )
    run_pytest().assert_outcomes(passed=1)


def test_the_marker_gives_the_breaker_its_limits_closest_first(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from loopguard_core.testing import ScriptedCall, drive
        from loopguard_pytest import assert_tripped

        pytestmark = pytest.mark.loopguard(max_turns=10, max_tool_calls=50)


        def test_module_marker(breaker):
            assert (breaker.limits.max_turns, breaker.limits.max_tool_calls) == (10, 50)


        @pytest.mark.loopguard(max_calls_per_tool={"fetch_page": 2})
        class TestPaging:
            def test_class_marker(self, breaker):
                assert dict(breaker.limits.max_calls_per_tool) == {"fetch_page": 2}
                assert breaker.limits.max_turns == 10

            @pytest.mark.loopguard(max_turns=3, loop_detection=False)
            def test_closest_marker_wins_key_by_key(self, breaker):
                assert breaker.limits.max_turns == 3 and breaker.limits.max_tool_calls == 50
                assert not breaker.limits.loop.enabled
                calls = [ScriptedCall("fetch_page", {"page": n}, result=n) for n in range(1, 5)]
                assert_tripped(drive(breaker, calls), reason="tool_ceiling", max_body_runs=2)
        """
    )
    run_pytest().assert_outcomes(passed=3)  # --strict-markers is on: the marker is registered


def test_a_wrong_marker_is_an_error_naming_the_marker(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(
        """
        import pytest
        from loopguard_core.testing import FakeClock


        @pytest.mark.loopguard(mode="bogus")
        def test_bad_value(breaker):
            pass


        @pytest.mark.loopguard(max_turnz=3)
        def test_unknown_keyword(breaker):
            pass


        @pytest.mark.loopguard(5)
        def test_positional(breaker):
            pass


        @pytest.mark.loopguard(clock=FakeClock())
        def test_owned(breaker):
            pass


        @pytest.mark.loopguard(mode="bogus")
        def test_not_using_the_breaker_is_not_affected():
            pass
        """
    )
    result = run_pytest()
    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*@pytest.mark.loopguard(mode='bogus') does not make a Breaker: mode must be 'enforce' or 'observe'*",
            "*@pytest.mark.loopguard(max_turnz=3) does not make a Breaker: *'max_turnz'*",  # Python's or mypyc's words
            "*@pytest.mark.loopguard takes the Breaker's keyword arguments only, got positional (5,)*",
            "*@pytest.mark.loopguard cannot set clock: the `breaker` fixture uses the `loopguard_clock` fixture(s)*",
        ]
    )


def test_the_marker_is_listed_and_the_option_documented(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    run_pytest("--markers").stdout.fnmatch_lines(
        ["@pytest.mark.loopguard(**kwargs): keyword arguments of the Breaker*"]
    )
    run_pytest("--help").stdout.fnmatch_lines(["*--loopguard-report*print each test's guarded calls and trips*"])


@pytest.mark.parametrize(
    ("framework", "kind", "kit"),
    [
        ("langchain", "ScriptedChatModel", "loopguard_langchain.testing"),
        ("langgraph", "ScriptedChatModel", "loopguard_langchain.testing"),
        ("crewai", "ScriptedLLM", "loopguard_crewai.testing"),
        ("pydantic-ai", "ScriptedModel", "loopguard_pydantic_ai.testing"),
        ("pydantic_ai", "ScriptedModel", "loopguard_pydantic_ai.testing"),
        ("anthropic", "ScriptedAPI", "loopguard_anthropic.testing"),
    ],
)
def test_scripted_model_builds_each_frameworks_fake(
    pytester: pytest.Pytester, run_pytest: RunPytest, framework: str, kind: str, kit: str
) -> None:
    # Imported here, once: pytester forgets what an inner run imported, and some frameworks do not survive that.
    pytest.importorskip(kit, reason=f"needs the {framework} extra")
    pytester.makepyfile(
        f"""
        def test_model(scripted_model):
            model = scripted_model({framework!r}, [("search", {{"q": "a"}}), "done"], loop=None, cap=5)
            assert type(model).__name__ == {kind!r}
            assert model.calls == 0
        """
    )
    run_pytest().assert_outcomes(passed=1)


def test_scripted_model_passes_options_and_refuses_an_unknown_framework(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytest.importorskip("loopguard_langchain.testing", reason="needs the langchain extra")
    pytester.makepyfile(
        """
        import pytest
        from loopguard_pytest import FRAMEWORKS, scripted_model as build


        def test_options(scripted_model):
            assert scripted_model is build
            model = scripted_model("langchain", loop=("search", {"q": "a"}), cap=2, model_name="gpt-4o")
            assert model.model_name == "gpt-4o" and model.cap == 2


        def test_unknown(scripted_model):
            with pytest.raises(ValueError, match="scripted_model knows no framework 'autogen'") as info:
                scripted_model("autogen")
            assert all(name in str(info.value) for name in FRAMEWORKS)
        """
    )
    run_pytest().assert_outcomes(passed=2)


def test_a_missing_framework_skips_naming_the_extra_to_install(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import sys


        def test_needs_crewai(scripted_model, monkeypatch):
            monkeypatch.setitem(sys.modules, "crewai", None)  # as if crewai were not installed
            scripted_model("crewai", loop=("search", {"q": "a"}))
            raise AssertionError("not reached: the test is skipped")
        """
    )
    result = run_pytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: scripted_model('crewai') needs the crewai extra: "
            'pip install "loopguard-core[[]crewai[]]" (crewai is not installed)'
        ]
    )


def test_a_run_that_uses_no_fixture_is_untouched(pytester: pytest.Pytester) -> None:
    """No autouse fixture, and nothing of loopguard imported: checked in a fresh interpreter."""
    pytester.makepyfile(
        """
        import sys

        FIXTURES = {"breaker", "loopguard_clock", "loopguard_ledger", "loopguard_bodies", "scripted_model"}


        def test_plain(request):
            assert request.config.pluginmanager.hasplugin("loopguard_pytest.plugin")
            assert not FIXTURES & set(request.fixturenames)
            assert not [name for name in sys.modules if name.startswith("loopguard_core")]
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:loopguard", "-p", "loopguard_pytest.plugin", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"
    )
    result.assert_outcomes(passed=1)
