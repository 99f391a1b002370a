"""InvocationRuns: one breaker run per LangGraph invocation, the least recently used released past capacity."""

from __future__ import annotations

from loopguard_core import Breaker
from loopguard_langchain._scope import InvocationRuns


class _Invocation:  # what LangGraph's RunControl is to the registry: an object keyed by identity
    pass


def _run_of(runs: InvocationRuns, key: object) -> str | None:
    scope = runs.scope(key)
    return getattr(scope, "run_id", None)


def test_the_invocation_a_hook_entered_last_is_kept_past_capacity() -> None:
    breaker = Breaker()
    runs = InvocationRuns(breaker, capacity=2)
    a, b, c, d = _Invocation(), _Invocation(), _Invocation(), _Invocation()
    with runs.scope(a, touch=True):
        breaker.before_tool("t", {"n": 1})
    first = _run_of(runs, a)
    with runs.scope(a, touch=True):  # a's next hook
        pass
    with runs.scope(b, touch=True):  # b opens its run: the newest
        pass
    with runs.scope(a, touch=True):  # a hook of a again: a is the newest now, though b was opened after it
        breaker.before_tool("t", {"n": 2})
    with runs.scope(c, touch=True):  # a third invocation: the least recently used one (b) is released
        pass
    assert _run_of(runs, b) is None
    assert _run_of(runs, a) == first
    with runs.scope(a, touch=True):  # a hook of the newest, again: still its run and its counts
        assert breaker.usage().tool_calls == 2
    with runs.scope(d, touch=True):  # then c goes, and a stays
        pass
    assert _run_of(runs, c) is None
    assert _run_of(runs, a) == first
    assert len(runs) == 2
