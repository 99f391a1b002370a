"""A run's state as JSON, field by field and versioned: what a durable store keeps of a :class:`RunState`.

The decision rules live in :mod:`._run_state` only; a durable store loads a state with :func:`decode`, runs
the same ``RunState`` method the memory store runs, and saves it with :func:`encode`. So the encoding must be
faithful: a decoded state decides every later step exactly as the original would (the property tests in
``tests/stores/test_sqlite_store.py`` replay random call sequences through both and compare).

JSON and never pickle: a database file must not be able to run code when it is loaded. Every value is
checked on the way in, so a damaged or hostile row gives a :class:`StoreError` naming the field, never a
state that fails later in a rule. Values of facts that JSON cannot hold are tagged (``{"$tuple": [...]}``,
``{"$state": "open"}``, ...); an object of any other type is kept as its ``repr`` (facts are counts, limits,
names and digests; a custom detector's exotic detail is the only thing that could be one).

Nothing here is raw input: a state holds counters, tool and agent names, call ids, digests of calls and
outcomes, keyed 32-bit word hashes, and the facts of verdicts (counts, limits, call numbers, digests).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..detection import Step
from ..errors import StoreError
from ..state import BreakerState
from ._run_state import RunState
from .base import Transition, Verdict

__all__ = [
    "SCHEMA_VERSION",
    "decode",
    "decode_verdict",
    "encode",
    "encode_verdict",
    "rebase",
    "state_from_dict",
    "state_to_dict",
]

#: the version of the encoding written; a state written by a newer version is refused, never guessed at
SCHEMA_VERSION = 1

_VERDICT_FIELDS = ("admitted", "reason", "terminal", "facts", "transitions", "turn", "probe", "duplicate", "observed")
_STATES = {state.value: state for state in BreakerState}
_COUNTERS = ("turns", "tokens", "cost_micros", "tool_calls", "trips", "refusals", "reserved_tokens", "reserved_micros")
_MAX_DEPTH = 32
_NO_WORDS: frozenset[int] = frozenset()
_STEP_JSON: dict[int, tuple[Step, str]] = {}
_MAX_STEP_JSON = 16_384


# -- values of facts ------------------------------------------------------------------------------------
def _value(value: Any, depth: int = 0) -> Any:
    """A fact's value as JSON (tags for what JSON cannot hold as it is)."""
    if depth > _MAX_DEPTH:
        return {"$repr": "<nested too deep>"}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, BreakerState):
        return {"$state": value.value}
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_value(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_value(v, depth + 1) for v in value]}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _value(v, depth + 1) for k, v in value.items()}
        return {"$dict": [[_value(k, depth + 1), _value(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, frozenset):
        return {"$frozenset": [_value(v, depth + 1) for v in value]}
    if isinstance(value, set):
        return {"$set": [_value(v, depth + 1) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).hex()}
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return {"$repr": text[:200]}


def _unvalue(data: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH + 1:
        raise _Malformed("facts nested too deep")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [_unvalue(v, depth + 1) for v in data]
    if not isinstance(data, dict):
        raise _Malformed(f"a fact of type {type(data).__name__}")
    if len(data) == 1:
        ((tag, inner),) = data.items()
        if tag.startswith("$"):
            return _untag(tag, inner, depth)
    if any(k.startswith("$") for k in data):
        raise _Malformed("an untagged mapping with a '$' key")
    return {k: _unvalue(v, depth + 1) for k, v in data.items()}


def _untag(tag: str, inner: Any, depth: int) -> Any:
    if tag == "$state":
        if inner not in _STATES:
            raise _Malformed(f"breaker state {inner!r}")
        return _STATES[inner]
    if tag == "$repr":
        return _str(inner, "a fact")
    if tag == "$bytes":
        try:
            return bytes.fromhex(_str(inner, "a fact"))
        except ValueError:
            raise _Malformed("bytes that are not hex") from None
    items = _list(inner, f"{tag} fact")
    if tag == "$tuple":
        return tuple(_unvalue(v, depth + 1) for v in items)
    if tag in ("$frozenset", "$set"):
        members = [_unvalue(v, depth + 1) for v in items]
        try:
            return frozenset(members) if tag == "$frozenset" else set(members)
        except TypeError:
            raise _Malformed(f"unhashable members of a {tag[1:]}") from None
    if tag == "$dict":
        out: dict[Any, Any] = {}
        for pair in items:
            key, val = _pair(pair, "$dict entry")
            try:
                out[_unvalue(key, depth + 1)] = _unvalue(val, depth + 1)
            except TypeError:
                raise _Malformed("an unhashable key of a mapping") from None
        return out
    raise _Malformed(f"unknown tag {tag!r}")


# -- verdicts ---------------------------------------------------------------------------------------
def encode_verdict(verdict: Verdict) -> list[Any]:
    """A verdict (what a call id is answered with again) as a JSON list, its facts and transitions included."""
    if Verdict._fields != _VERDICT_FIELDS:  # pragma: no cover - guards a change of the Verdict tuple
        raise StoreError(f"Verdict has fields {Verdict._fields}; the SQLite codec knows {_VERDICT_FIELDS}")
    return [
        verdict.admitted,
        verdict.reason,
        verdict.terminal,
        _value(verdict.facts),
        [[t.source.value, t.target.value, t.reason] for t in verdict.transitions],
        verdict.turn,
        verdict.probe,
        verdict.duplicate,
        [[reason, _value(facts)] for reason, facts in verdict.observed],
    ]


def decode_verdict(data: Any) -> Verdict:
    """The verdict :func:`encode_verdict` wrote (:class:`StoreError` if ``data`` is not one)."""
    try:
        return _decode_verdict(data)
    except _Malformed as exc:
        raise _store_error(exc) from None


def _decode_verdict(data: Any) -> Verdict:
    items = _list(data, "verdict")
    if len(items) != len(_VERDICT_FIELDS):
        raise _Malformed(f"a verdict of {len(items)} fields")
    admitted, reason, terminal, facts, moves, turn, probe, duplicate, observed = items
    transitions = []
    for move in _list(moves, "transitions"):
        parts = _list(move, "transition")
        if len(parts) != 3:
            raise _Malformed("a transition")
        source, target, why = parts
        transitions.append(Transition(_state(source), _state(target), _str(why, "transition reason")))
    noted = []
    for entry in _list(observed, "observed"):
        what, what_facts = _pair(entry, "observed entry")
        noted.append((_str(what, "observed reason"), _mapping(_unvalue(what_facts), "observed facts")))
    return Verdict(
        _bool(admitted, "verdict admitted"),
        _opt_str(reason, "verdict reason"),
        _bool(terminal, "verdict terminal"),
        _mapping(_unvalue(facts), "verdict facts"),
        tuple(transitions),
        _int(turn, "verdict turn"),
        _bool(probe, "verdict probe"),
        _bool(duplicate, "verdict duplicate"),
        tuple(noted),
    )


# -- the state ----------------------------------------------------------------------------------------
def state_to_dict(state: RunState, *, seen: bool = True) -> dict[str, Any]:
    """Every field of ``state`` as JSON-ready data (``seen=False`` leaves the call-id memory out, for a store
    that keeps it row by row)."""
    data = _state_dict(state, seen)
    data["window"] = [_step_list(step) for step in state.window]
    return data


def _step_list(s: Step) -> list[Any]:
    return [s.seq, s.tool, s.action, s.outcome, s.flags, s.shape, sorted(s.words) if s.words else []]


def _step_json(step: Step) -> str:
    """A window step as JSON, computed once per step (a run's window changes by one step per call)."""
    cached = _STEP_JSON.get(id(step))
    if cached is not None and cached[0] is step:
        return cached[1]
    text = json.dumps(_step_list(step), separators=(",", ":"))
    if len(_STEP_JSON) >= _MAX_STEP_JSON:
        _STEP_JSON.clear()
    _STEP_JSON[id(step)] = (step, text)  # the step is kept alive with its text: its id is not reused meanwhile
    return text


def _state_dict(state: RunState, seen: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "state": state.state.value,
        "terminal": state.terminal,
        "trip_reason": state.trip_reason,
        "trip_facts": _value(state.trip_facts),
        "opened_at": state.opened_at,
        "started_at": state.started_at,
        "probe_key": state.probe_key,
        "probe_until": state.probe_until,
    }
    for name in _COUNTERS:
        data[name] = getattr(state, name)
    data["reservation_seq"] = state._reservation_seq
    data["calls_per_tool"] = [[tool, count] for tool, count in state.calls_per_tool.items()]
    data["failures"] = [[tool, count, error] for tool, (count, error) in state.failures.items()]
    data["inflight"] = [[signature, list(seqs)] for signature, seqs in state.inflight.items()]
    data["reservations"] = [[rid, t, m, expires] for rid, (t, m, expires) in state.reservations.items()]
    if seen:
        data["seen"] = [[key, encode_verdict(verdict)] for key, verdict in state.seen.items()]
    return data


def state_from_dict(data: Any) -> RunState:
    """The state ``data`` describes (:class:`StoreError` if it is malformed or from a newer version)."""
    try:
        return _state_from_dict(data)
    except _Malformed as exc:
        raise _store_error(exc) from None


def _state_from_dict(data: Any) -> RunState:
    if not isinstance(data, dict):
        raise _Malformed(f"a state of type {type(data).__name__}")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Malformed("no schema_version")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"a stored run state has schema_version {version}, newer than this loopguard knows "
            f"({SCHEMA_VERSION}): it was written by a newer loopguard-core; upgrade this one to read it"
        )
    if version < 1:
        raise _Malformed(f"schema_version {version}")
    state = RunState()
    state.state = _state(data.get("state"))
    state.terminal = _bool(data.get("terminal"), "terminal")
    state.trip_reason = _opt_str(data.get("trip_reason"), "trip_reason")
    state.trip_facts = dict(_mapping(_unvalue(data.get("trip_facts", {})), "trip_facts"))
    state.opened_at = _opt_time(data.get("opened_at"), "opened_at")
    state.started_at = _opt_time(data.get("started_at"), "started_at")
    state.probe_key = _opt_str(data.get("probe_key"), "probe_key")
    state.probe_until = _time(data.get("probe_until"), "probe_until")
    for name in _COUNTERS:
        setattr(state, name, _int(data.get(name), name))
    state._reservation_seq = _int(data.get("reservation_seq"), "reservation_seq")
    for entry in _list(data.get("calls_per_tool"), "calls_per_tool"):
        tool, count = _pair(entry, "calls_per_tool entry")
        state.calls_per_tool[_str(tool, "tool name")] = _int(count, "calls_per_tool count")
    for entry in _list(data.get("failures"), "failures"):
        items = _list(entry, "failures entry")
        if len(items) != 3:
            raise _Malformed("a failures entry")
        state.failures[_str(items[0], "tool name")] = (_int(items[1], "failure count"), _str(items[2], "error"))
    for entry in _list(data.get("window"), "window"):
        state.window.append(_step(entry))
    for entry in _list(data.get("inflight"), "inflight"):
        signature, seqs = _pair(entry, "inflight entry")
        state.inflight[_str(signature, "signature")] = [_int(s, "call number") for s in _list(seqs, "call numbers")]
    for entry in _list(data.get("reservations"), "reservations"):
        items = _list(entry, "reservation")
        if len(items) != 4:
            raise _Malformed("a reservation")
        rid = _str(items[0], "reservation id")
        state.reservations[rid] = (_int(items[1], "tokens"), _int(items[2], "micro-USD"), _time(items[3], "expiry"))
    seen: OrderedDict[str, Verdict] = OrderedDict()
    for entry in _list(data.get("seen", []), "seen"):
        key, verdict = _pair(entry, "seen entry")
        seen[_str(key, "call id")] = _decode_verdict(verdict)
    state.seen = seen
    return state


def encode(state: RunState, *, seen: bool = True) -> str:
    """``state`` as compact JSON text (ASCII: lone surrogates in names survive as escapes)."""
    head = json.dumps(_state_dict(state, seen), separators=(",", ":"), allow_nan=True)
    return head[:-1] + ',"window":[' + ",".join(map(_step_json, state.window)) + "]}"


def decode(text: str | bytes) -> RunState:
    """The state :func:`encode` wrote (:class:`StoreError` if the text is not one)."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise StoreError(
            f"a stored run state is not valid JSON ({type(exc).__name__}); the file was damaged or written by "
            "something else: drop the run or restore the file from a backup"
        ) from None
    return state_from_dict(data)


def rebase(state: RunState, shift: float) -> None:
    """Move every clock reading ``state`` holds by ``shift`` seconds (the breaker's clock restarted: a reboot).

    Elapsed times (since the run started, since the breaker opened, until a probe or a reservation expires)
    are kept as they were at the last step before the restart.
    """
    if state.started_at is not None:
        state.started_at += shift
    if state.opened_at is not None:
        state.opened_at += shift
    if state.probe_key is not None:
        state.probe_until += shift
    for rid, (tokens, micros, expires) in list(state.reservations.items()):
        state.reservations[rid] = (tokens, micros, expires + shift)


# -- checks -------------------------------------------------------------------------------------------
class _Malformed(Exception):
    pass


def _store_error(exc: _Malformed) -> StoreError:
    return StoreError(
        f"a stored run state is malformed ({exc}); the file was damaged or written by something else: "
        "drop the run (store.drop(RunKey(scope, run_id))) or restore the file from a backup"
    )


def _step(entry: Any) -> Step:
    # Written flat (a window of 48 steps is decoded on every step of a run another process wrote last).
    if type(entry) is list and len(entry) == 7:
        seq, tool, action, outcome, flags, shape, words = entry
        if (
            type(seq) is int
            and type(tool) is str
            and type(action) is str
            and type(outcome) is str
            and type(flags) is int
            and type(shape) is str
            and type(words) is list
        ):
            if not words:
                return Step(seq, tool, action, outcome, flags, shape, _NO_WORDS)
            if all(type(w) is int for w in words):
                return Step(seq, tool, action, outcome, flags, shape, frozenset(words))
    raise _Malformed("a window step")


def _state(value: Any) -> BreakerState:
    state = _STATES.get(value) if isinstance(value, str) else None
    if state is None:
        raise _Malformed(f"breaker state {value!r}")
    return state


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{what} is not an int")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _Malformed(f"{what} is not a bool")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{what} is not a str")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _time(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Malformed(f"{what} is not a number")
    return value


def _opt_time(value: Any, what: str) -> float | None:
    return None if value is None else _time(value, what)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"{what} is not a list")
    return value


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    items = _list(value, what)
    if len(items) != 2:
        raise _Malformed(what)
    return items[0], items[1]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"{what} is not a mapping")
    return value
