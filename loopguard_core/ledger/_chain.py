"""Backend-agnostic chain rules: the canonical row encoding, row hashing, genesis and input hashing.

Every backend stores exactly the values it hashes: text, integers and NULL, no floats, no timestamps
re-parsed. A row's hash is ``SHA-256(prev_hash_bytes || canonical(row))`` where ``canonical`` is the compact
ASCII JSON array of the row's stored values in :data:`HASHED_COLUMNS` order. The chain follows the integer
``seq`` (1, 2, 3, ...); ``seq`` itself is not hashed because the links already fix every row's place, which
lets the verifier tell an inserted or moved row from an edited one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from ._errors import LedgerConfigError
from ._model import COLUMNS, ORIGINS

__all__ = [
    "HASHED_COLUMNS",
    "InputHasher",
    "canonical",
    "genesis_hash",
    "row_hash",
    "to_micros",
    "utc_now",
    "validate_record",
]

#: The stored columns covered by a row's hash, in encoding order: every column but the sequence and the two
#: hashes themselves.
HASHED_COLUMNS: tuple[str, ...] = COLUMNS[1:-2]

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False)
# The same encoder's C core, built once: JSONEncoder.encode builds it anew on every call, which costs about
# as much as the encoding itself on the append path. Same arguments, so the same bytes.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_ITER_ENCODE: Any = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None,  # markers: check_circular=False
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
)
_GENESIS_DOMAIN = b"loopguard-ledger-genesis-v1\x00"
_KEY_CHECK_DOMAIN = b"loopguard-ledger-key-check-v1"


_ESC = json.encoder.encode_basestring_ascii  # what the encoder above writes a str with (C when available)
_sha256 = hashlib.sha256


def canonical(values: Sequence[Any]) -> bytes:
    """The canonical bytes of a row's hashed values (``HASHED_COLUMNS`` order; str, int or None only)."""
    data = _canonical_row(values) if len(values) == _N_HASHED else None
    return _encode(values) if data is None else data


def _encode(values: Sequence[Any]) -> bytes:
    """:func:`canonical` through the JSON encoder itself: any values, any number of them."""
    if _ITER_ENCODE is not None:
        return "".join(_ITER_ENCODE(values if type(values) in (list, tuple) else list(values), 0)).encode("ascii")
    return _ENCODER.encode(list(values)).encode("ascii")


_N_HASHED = len(HASHED_COLUMNS)


def _canonical_row(values: Sequence[Any]) -> bytes | None:
    """:func:`canonical` of a row shaped as every writer stores it, in one f-string; None for any other shape.

    The same bytes as the JSON encoder by construction: the integer columns must be exact ``int`` (written by
    ``int.__repr__``, as the encoder does) and every other value is ``None`` (``null``) or goes through the
    encoder's own string escaper, which refuses anything but ``str``. Any other value (a float, a bool, a
    blob in a tampered row) returns None and takes the encoder itself.
    """
    session, turn, origin, agent, tool, input_hash, tokens_in, tokens_out, micros, ms, passed, breach, at = values
    if not (
        type(turn) is int
        and type(tokens_in) is int
        and type(tokens_out) is int
        and type(micros) is int
        and type(ms) is int
        and type(passed) is int
    ):
        return None
    esc = _ESC
    try:
        text = (
            f"[{esc(session)},{turn},{esc(origin)},{'null' if agent is None else esc(agent)},"
            f"{'null' if tool is None else esc(tool)},{esc(input_hash)},{tokens_in},{tokens_out},{micros},{ms},"
            f"{passed},{'null' if breach is None else esc(breach)},{esc(at)}]"
        )
    except TypeError:  # a value that is neither str nor None where the ledger stores text
        return None
    return text.encode("ascii")


def row_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """``SHA-256(bytes.fromhex(prev_hash) || canonical(values))`` as 64 lowercase hex characters."""
    # canonical() inlined: this runs once per appended row and once per row verified.
    data = _canonical_row(values) if len(values) == _N_HASHED else None
    if data is None:
        data = _encode(values)
    return _sha256(bytes.fromhex(prev_hash) + data).hexdigest()


def genesis_hash(chain_id: str) -> str:
    """The ``prev_hash`` of a chain's first row; binds the chain to its identity (the checkpoint origin)."""
    return hashlib.sha256(_GENESIS_DOMAIN + chain_id.encode("utf-8")).hexdigest()


_second_cache: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """UTC ISO-8601 with microseconds, e.g. ``2025-01-31T12:00:00.123456+00:00`` (stored and hashed as text).

    Same text as ``datetime.now(timezone.utc).isoformat(timespec="microseconds")``; the date-time part is
    formatted once per second because this runs on every append.
    """
    global _second_cache
    sec, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second_cache  # one read of an immutable pair: safe across threads
    if cached[0] != sec:
        cached = (sec, datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"))
        _second_cache = cached
    return f"{cached[1]}.{micros:06d}+00:00"


def to_micros(cost_usd: float) -> int:
    """USD to integer micro-USD (rounded half to even), refusing negative or non-finite amounts."""
    if not isinstance(cost_usd, (int, float)) or isinstance(cost_usd, bool):
        raise LedgerConfigError(f"cost_usd must be a number of US dollars, got {type(cost_usd).__name__}")
    if not math.isfinite(cost_usd) or cost_usd < 0:
        raise LedgerConfigError(f"cost_usd must be a finite amount >= 0, got {cost_usd!r}")
    if cost_usd > _MAX_USD:  # the column is a 64-bit integer of micro-USD
        raise LedgerConfigError(
            f"cost_usd must be at most {_MAX_USD:,.0f} USD (a 64-bit count of micro-USD), got {cost_usd!r}"
        )
    return round(cost_usd * 1_000_000)


_MAX_USD = (2**63 - 1) // 1_000_000


def validate_record(session_id: object, origin: object, turn: object, counts: dict[str, object]) -> None:
    """Refuse values the ledger cannot store faithfully, with a message that says what to fix."""
    if not isinstance(session_id, str) or not session_id:
        raise LedgerConfigError(f"session_id must be a non-empty string, got {session_id!r}")
    if origin not in ORIGINS:
        raise LedgerConfigError(f"origin must be one of {sorted(ORIGINS)}, got {origin!r}")
    if not isinstance(turn, int) or isinstance(turn, bool) or turn < 0:
        raise LedgerConfigError(f"turn must be an integer >= 0, got {turn!r}")
    if turn > 2**63 - 1:
        raise LedgerConfigError("turn must fit in 64 bits (the ledger's integer columns are 64-bit)")
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise LedgerConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if value > 2**63 - 1:
            raise LedgerConfigError(
                f"{name} must fit in 64 bits (the ledger's integer columns are 64-bit); it has {value.bit_length()}"
            )


class InputHasher:
    """Hashes call inputs: SHA-256, or HMAC-SHA256 with a secret key so short inputs cannot be guessed.

    ``mode`` is what the ledger records about its hashing: ``"sha256"`` or ``"hmac-sha256:<check>"``, where
    ``<check>`` is a 16-hex key check value that lets a reopened ledger refuse a different key without
    revealing the key.
    """

    __slots__ = ("_key", "digest", "mode")

    def __init__(self, key: bytes | None) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise LedgerConfigError("hmac_key must be bytes of at least 16 random bytes (e.g. os.urandom(32))")
        self._key = key
        #: ``self(text)`` as a plain function (the append path calls it once per row, without ``__call__``'s frame).
        self.digest: Callable[[str], str]
        if key is None:
            self.mode = "sha256"
            self.digest = _sha256_text
        else:
            check = hmac.new(key, _KEY_CHECK_DOMAIN, hashlib.sha256).hexdigest()[:16]
            self.mode = f"hmac-sha256:{check}"
            self.digest = functools.partial(_hmac_text, key)

    def __call__(self, text: str) -> str:
        return self.digest(text)


def _sha256_text(text: str) -> str:
    return _sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _hmac_text(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), _sha256).hexdigest()
