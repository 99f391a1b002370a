from __future__ import annotations

import pickle

import pytest

from loopguard_core.tutorial import CircuitBreaker, CircuitBreakerError


def test_defaults_are_five_turns_and_15000_tokens() -> None:
    cb = CircuitBreaker()
    assert (cb.turn_limit, cb.token_limit) == (5, 15000)


def test_custom_limits_are_public_attributes() -> None:
    cb = CircuitBreaker(turn_limit=10, token_limit=50000)
    assert (cb.turn_limit, cb.token_limit) == (10, 50000)


@pytest.mark.parametrize(("turns", "tokens"), [(3, 5000), (5, 14999), (4, 15000), (5, 15000)])
def test_reaching_a_limit_exactly_is_allowed_and_silent(
    turns: int, tokens: int, capsys: pytest.CaptureFixture[str]
) -> None:
    CircuitBreaker(turn_limit=5, token_limit=15000).check(turns, tokens)
    assert capsys.readouterr().out == ""


def test_turn_ceiling_trips_on_turn_six(capsys: pytest.CaptureFixture[str]) -> None:
    cb = CircuitBreaker(turn_limit=5, token_limit=15000)
    with pytest.raises(CircuitBreakerError) as exc:
        cb.check(turn_count=6, accumulated_tokens=1000)
    assert (exc.value.reason, exc.value.turn_count, exc.value.accumulated_tokens) == ("turn_ceiling", 6, 1000)
    out = capsys.readouterr().out
    assert "CIRCUIT BREAKER CHECKPOINT" in out
    assert "turn_ceiling" in out


def test_token_ceiling_trips_one_token_over(capsys: pytest.CaptureFixture[str]) -> None:
    cb = CircuitBreaker(turn_limit=5, token_limit=15000)
    with pytest.raises(CircuitBreakerError) as exc:
        cb.check(turn_count=2, accumulated_tokens=15001)
    assert (exc.value.reason, exc.value.turn_count, exc.value.accumulated_tokens) == ("token_ceiling", 2, 15001)
    assert "token_ceiling" in capsys.readouterr().out


def test_token_ceiling_is_independent_of_turns() -> None:
    with pytest.raises(CircuitBreakerError) as exc:
        CircuitBreaker(turn_limit=5, token_limit=15000).check(turn_count=1, accumulated_tokens=20000)
    assert exc.value.reason == "token_ceiling"


def test_turn_ceiling_wins_when_both_are_exceeded(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CircuitBreakerError) as exc:
        CircuitBreaker(turn_limit=5, token_limit=15000).check(turn_count=6, accumulated_tokens=20000)
    assert exc.value.reason == "turn_ceiling"
    out = capsys.readouterr().out
    assert out.count("CIRCUIT BREAKER CHECKPOINT") == 1
    assert "token_ceiling" not in out


def test_checkpoint_banner_names_counts_limits_and_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CircuitBreakerError):
        CircuitBreaker(turn_limit=3, token_limit=1000).check(turn_count=4, accumulated_tokens=500)
    out = capsys.readouterr().out
    assert "limit 3" in out
    assert "limit 1000" in out
    lines = out.splitlines()
    assert lines[:7] == [
        "",
        "=== CIRCUIT BREAKER CHECKPOINT ===",
        "reason         : turn_ceiling",
        "turn_count     : 4 / limit 3",
        "tokens_used    : 500 / limit 1000",
        "action         : halt loop, surface to human reviewer",
        "==================================",
    ]


def test_error_carries_its_fields_and_message() -> None:
    err = CircuitBreakerError(reason="token_ceiling", turn_count=4, accumulated_tokens=15500)
    assert (err.reason, err.turn_count, err.accumulated_tokens) == ("token_ceiling", 4, 15500)
    assert str(err) == "circuit breaker tripped: token_ceiling (turn=4, tokens=15500)"
    assert isinstance(err, Exception)


def test_error_survives_pickling() -> None:
    err = CircuitBreakerError(reason="turn_ceiling", turn_count=6, accumulated_tokens=10)
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.reason, clone.turn_count, clone.accumulated_tokens, str(clone)) == (
        "turn_ceiling",
        6,
        10,
        str(err),
    )
