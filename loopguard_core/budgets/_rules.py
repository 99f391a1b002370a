"""The one copy of the budget rules, over a plain JSON-ready dict (every store loads, applies and saves it).

State of one budget period::

    {"used": {"turns": 3, "tool_calls": 7, "tokens": 5200, "cost_micros": 81000},
     "held": {"<reservation id>": {"amounts": {"turns": 1, "tokens": 1200, "cost_micros": 9000},
                                   "counted": false, "expires": 1733.0}}}

A call reserves what it may spend (a model call: one turn, its projected tokens and cost; a tool call: one
call) before it runs, against ``used + held + this <= ceiling`` for every ceiling: reaching a ceiling is
allowed, exceeding it is refused. A tool call is counted at once (``counted``: the hold only remembers how to
undo it); a model call's report settles its hold with what it really spent. A call the run refused after all
gives its reservation back; holds of calls that never report expire.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AMOUNTS", "Refusal", "new_state", "release", "reserve", "settle", "totals"]

AMOUNTS: tuple[str, ...] = ("turns", "tool_calls", "tokens", "cost_micros")
Refusal = dict[str, Any]
_MAX_HELD = 4_096


def new_state() -> dict[str, Any]:
    return {"used": dict.fromkeys(AMOUNTS, 0), "held": {}}


def totals(state: dict[str, Any]) -> dict[str, int]:
    """Used plus what uncounted holds may still spend, per amount."""
    out = {k: int(state["used"].get(k, 0)) for k in AMOUNTS}
    for hold in state["held"].values():
        if not hold.get("counted"):
            for k, v in hold["amounts"].items():
                out[k] = out.get(k, 0) + int(v)
    return out


def _expire(state: dict[str, Any], now: float) -> None:
    held = state["held"]
    for rid in [r for r, h in held.items() if h["expires"] <= now]:
        del held[rid]


def reserve(
    state: dict[str, Any],
    ceilings: dict[str, int],
    rid: str,
    amounts: dict[str, int],
    now: float,
    hold_seconds: float,
    *,
    count_now: bool = False,
) -> Refusal | None:
    """Reserve ``amounts`` under ``rid`` unless a ceiling would be exceeded; the first broken ceiling otherwise.

    A model call (one with ``turns``) counts at least one token and one micro-USD against the ceilings that are
    set, so at a ceiling exactly the next call is refused. ``count_now`` adds the amounts to ``used`` at once
    (a tool call: nothing to settle later), keeping only how to undo it."""
    _expire(state, now)
    if rid in state["held"]:
        return None  # asked again (a retry): already reserved
    current = totals(state)
    wanted = {k: int(v) for k, v in amounts.items() if v}
    if wanted.get("turns"):
        for amount in ("tokens", "cost_micros"):
            if amount in ceilings:
                wanted[amount] = max(wanted.get(amount, 0), 1)
    for amount, ceiling in ceilings.items():
        want = wanted.get(amount, 0)
        if want and current[amount] + want > ceiling:
            spent = int(state["used"].get(amount, 0))
            return {
                "amount": amount,
                "spent": spent,
                "in_flight": current[amount] - spent,
                "this_call": want,
                "limit": ceiling,
            }
    if count_now:
        used = state["used"]
        for k, v in wanted.items():
            used[k] = int(used.get(k, 0)) + v
    state["held"][rid] = {"amounts": wanted, "counted": count_now, "expires": now + hold_seconds}
    if len(state["held"]) > _MAX_HELD:
        state["held"].pop(next(iter(state["held"])))
    return None


def settle(state: dict[str, Any], rid: str, spent: dict[str, int]) -> None:
    """A model call's hold becomes what it really spent (its turn, tokens and cost)."""
    hold = state["held"].pop(rid, None)
    if hold is not None and hold.get("counted"):
        return  # already counted when reserved
    used = state["used"]
    for k, v in spent.items():
        if v:
            used[k] = int(used.get(k, 0)) + int(v)


def release(state: dict[str, Any], rid: str) -> None:
    """The call did not happen after all: its reservation is given back (and a counted one uncounted)."""
    hold = state["held"].pop(rid, None)
    if hold is not None and hold.get("counted"):
        used = state["used"]
        for k, v in hold["amounts"].items():
            used[k] = max(0, int(used.get(k, 0)) - int(v))
