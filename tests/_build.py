"""Which build the tests run against: the source as Python, or a wheel built with ``LOOPGUARD_COMPILE=1``."""

from __future__ import annotations

from loopguard_core._mypyc import compiled_modules

#: True when loopguard's hot path runs compiled by mypyc (CI runs the suite against both builds)
COMPILED = bool(compiled_modules())


def type_error(message: str) -> str:
    """The ``match`` for the TypeError of an argument of the wrong type: loopguard's own ``message`` (it names the
    parameter). Compiled, mypyc checks a parameter annotated with a builtin type (``int | None``, ``str``) before
    loopguard's code runs, and says what it expected instead: "int or None object expected; got float"."""
    return f"{message}|object expected; got " if COMPILED else message
