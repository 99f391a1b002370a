"""Hypothesis properties: never admits past a ceiling; only legal transitions, whatever the sequence."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from loopguard_core import TRANSITIONS, Breaker, BreakerState, LoopGuardTripped
from loopguard_core.testing import FakeClock


@settings(max_examples=200, deadline=None)
@given(
    max_tokens=st.integers(1, 5_000),
    calls=st.lists(st.tuples(st.integers(0, 800), st.integers(0, 800), st.integers(0, 800)), max_size=40),
)
def test_never_admits_a_call_whose_projection_crosses_the_token_ceiling(
    max_tokens: int, calls: list[tuple[int, int, int]]
) -> None:
    breaker = Breaker(max_tokens=max_tokens, output_reserve_tokens=0)  # cap 0 here: "this call writes nothing"
    tripped = False
    for estimate, cap, actual in calls:
        spent = breaker.usage().tokens
        try:
            breaker.before_model(estimated_input_tokens=estimate, max_output_tokens=cap)
        except LoopGuardTripped as error:
            # The first refusal is the ceiling; after it the run is over (terminal), whatever the projection.
            assert tripped or (error.reason == "token_ceiling" and spent + max(estimate + cap, 1) > max_tokens)
            tripped = True
            continue
        assert not tripped
        assert spent + max(estimate + cap, 1) <= max_tokens
        # Honest providers report at most what was projected.
        breaker.after_model(input_tokens=min(actual, estimate), output_tokens=min(actual, cap))
    assert breaker.usage().tokens <= max_tokens


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 50), attempts=st.integers(0, 120))
def test_turns_and_tool_calls_never_exceed_their_limits(limit: int, attempts: int) -> None:
    breaker = Breaker(max_turns=limit, max_tool_calls=limit, loop_detection=False)
    for n in range(attempts):
        for call in (lambda: breaker.before_model(), lambda n=n: breaker.before_tool("t", {"n": n})):
            try:
                call()
            except LoopGuardTripped:
                pass
    assert breaker.usage().turns <= limit
    assert breaker.usage().tool_calls <= limit


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of calls, outcomes, time and resets; every transition must be legal."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.moves: list[tuple[BreakerState, BreakerState]] = []
        self.breaker = Breaker(
            max_turns=30,
            max_consecutive_failures=2,
            recovery_seconds=5,
            clock=self.clock,
            on_state_change=lambda a, b, why: self.moves.append((a, b)),
        )

    @rule(
        tool=st.sampled_from(["a", "b"]), arg=st.integers(0, 2), result=st.sampled_from(["x", "y"]), fails=st.booleans()
    )
    def tool_call(self, tool: str, arg: int, result: str, fails: bool) -> None:
        try:
            self.breaker.before_tool(tool, {"arg": arg})
        except LoopGuardTripped:
            return
        self.breaker.after_tool(tool, {"arg": arg}, result=result, error="boom" if fails else None)

    @rule()
    def model_call(self) -> None:
        try:
            self.breaker.before_model()
        except LoopGuardTripped:
            return
        self.breaker.after_model(input_tokens=1, output_tokens=1)

    @rule(seconds=st.floats(0, 10))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def reset(self) -> None:
        self.breaker.reset()

    @invariant()
    def only_legal_transitions(self) -> None:
        for move in self.moves:
            assert move in TRANSITIONS
        assert self.breaker.usage().turns <= 30


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
