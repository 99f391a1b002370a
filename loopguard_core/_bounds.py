"""The one set of numeric bounds every store and ledger can hold exactly, and text every store can encode.

Redis scripts count in Lua doubles (exact integers up to 2**53) and pass them as msgpack; SQLite stores 64-bit
integers. Configurations are validated against these bounds at construction, and values reported at run time
are clamped to them: a value past any ceiling still trips that ceiling, and no store ever sees a number it
cannot hold.
"""

from __future__ import annotations

__all__ = ["MAX_COUNT", "MAX_SECONDS", "MAX_USD", "clamp", "label"]

#: the largest count (turns, tokens, tool calls, micro-USD) every store holds exactly
MAX_COUNT = 2**53 - 1
#: the largest ceiling in USD (in micro-USD it stays far below MAX_COUNT)
MAX_USD = 1e9
#: the largest duration in seconds (about 31 years; in microseconds still below MAX_COUNT)
MAX_SECONDS = 1e9


def clamp(value: int) -> int:
    """``value`` held within [0, MAX_COUNT]: anything larger is past every ceiling anyway."""
    return value if value <= MAX_COUNT else MAX_COUNT


def label(text: str) -> str:
    """A tool name, agent, call id or session id every store and ledger can encode: lone surrogates (which
    ``json.loads('"\\ud800"')`` can produce) become their ``\\udXXX`` escape, everything else is unchanged."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
