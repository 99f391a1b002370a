"""The framework-neutral parts of the testing kits (``loopguard_core.testing``): ModelScript, BodyCounter, Recorder.

Each framework's scripted model is built on ``ModelScript``; its own tests live next to the adapter's tests
(``tests/integrations/<framework>/test_testing_kit.py``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.testing import BodyCounter, ModelScript, Recorder, ScriptedTurn, ScriptExhausted
from loopguard_core.typing import LedgerSink

SEARCH = ("search", {"q": "refund policy"})


def test_a_script_plays_its_steps_in_order_then_says_clearly_that_it_ran_out() -> None:
    script = ModelScript([SEARCH, [("a", {"n": 1}), ("b", {})], "found it"], owner="ScriptedThing 'x'")

    assert script.next_turn() == ScriptedTurn(0, tool_calls=(("search", {"q": "refund policy"}),))
    assert script.next_turn().tool_calls == (("a", {"n": 1}), ("b", {}))
    final = script.next_turn()
    assert final.is_final and final.text == "found it" and final.index == 2
    with pytest.raises(ScriptExhausted) as info:
        script.next_turn()

    message = str(info.value)
    assert "ScriptedThing 'x' has no answer for model call 4" in message
    assert "3 scripted step(s)" in message
    assert "end the script with a final answer" in message
    assert (info.value.owner, info.value.call) == ("ScriptedThing 'x'", 4)
    assert isinstance(info.value, AssertionError)  # a broken test expectation, not something to retry
    assert script.calls == 3  # the call that found no answer was not answered


def test_loop_repeats_up_to_cap_calls_in_all_and_the_message_names_the_cap() -> None:
    script = ModelScript(["hello"], loop=SEARCH, cap=4)
    turns = [script.next_turn() for _ in range(4)]
    assert [turn.text for turn in turns] == ["hello", None, None, None]
    assert all(turn.tool_calls == (SEARCH,) for turn in turns[1:])
    with pytest.raises(ScriptExhausted, match=r"then `loop` up to cap=4 calls in all"):
        script.next_turn()


def test_every_turn_hands_out_fresh_arguments() -> None:
    script = ModelScript(loop=SEARCH)
    first = script.next_turn()
    first.tool_calls[0][1]["q"] = "mutated by a framework"
    assert script.next_turn().tool_calls[0][1] == {"q": "refund policy"}


@pytest.mark.parametrize(
    "bad",
    [[("search",)], [("search", "not a dict")], [[]], [42], [("", {})], [[SEARCH, "text"]]],
)
def test_a_malformed_step_fails_when_the_script_is_built_and_names_the_step(bad: list[object]) -> None:
    with pytest.raises(TypeError, match=r"script\[0\]"):
        ModelScript(bad)  # type: ignore[arg-type]


def test_a_bare_string_script_and_a_bad_cap_are_refused() -> None:
    with pytest.raises(TypeError, match="not a single str"):
        ModelScript("done")
    with pytest.raises(TypeError, match="loop"):
        ModelScript(loop=[])
    with pytest.raises(ValueError, match="cap"):
        ModelScript(loop=SEARCH, cap=-1)


def test_a_script_shared_by_threads_answers_each_call_once() -> None:
    script = ModelScript([(f"t{n}", {}) for n in range(200)])
    seen: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            turn = script.next_turn()
            with lock:
                seen.append(turn.index)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(200))
    assert script.calls == 200


def test_body_counter_counts_per_tool_and_in_total() -> None:
    counter = BodyCounter()
    counter.hit("search", {"q": "a"})
    counter.hit("search", {"q": "a"})
    counter.hit("fetch")
    assert (counter.count("search"), counter.count("fetch"), counter.count("other"), counter.count()) == (2, 1, 0, 3)
    assert counter.runs == [("search", {"q": "a"}), ("search", {"q": "a"}), ("fetch", None)]
    counter.runs.clear()  # a copy: the counts stay
    assert counter.count() == 3
    counter.reset()
    assert counter.count() == 0


def test_recorder_is_a_ledger_sink_that_keeps_the_rows_of_a_trip() -> None:
    ledger = Recorder()
    assert isinstance(ledger, LedgerSink)
    breaker = Breaker(ledger=ledger, session_id="s1")
    counter = BodyCounter()

    def agent_step() -> None:
        breaker.before_tool(*SEARCH, agent="researcher")
        counter.hit("search")
        breaker.after_tool(*SEARCH, result="nothing new", agent="researcher")

    for _ in range(3):
        agent_step()
    with pytest.raises(LoopGuardTripped):
        agent_step()

    assert counter.count("search") == 3
    assert [row["agent"] for row in ledger.where(origin="tool")] == ["researcher"] * 3
    (trip,) = ledger.where(origin="breaker")
    assert trip["breach_reason"].startswith("loop")
    assert ledger.where(origin="tool", agent="writer") == []
    assert len(ledger.where()) == len(ledger.rows)


def test_the_core_testing_module_still_imports_no_framework() -> None:
    code = (
        "import sys, loopguard_core.testing;"
        "print(','.join(m for m in ('langchain_core','crewai','pydantic_ai','anthropic','httpx2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_an_adapter_does_not_import_its_testing_kit() -> None:
    adapters = {
        "loopguard_langchain": "langchain.agents",
        "loopguard_crewai": "crewai",
        "loopguard_pydantic_ai": "pydantic_ai",
        "loopguard_anthropic": "anthropic",
    }
    installed = [name for name, framework in adapters.items() if importlib.util.find_spec(framework.split(".")[0])]
    if not installed:
        pytest.skip("no framework extra installed")
    code = (
        f"import sys, {', '.join(installed)};"
        "print(','.join(m for m in sys.modules if m.endswith('.testing') and m.startswith('loopguard_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
