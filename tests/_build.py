"""Which build the tests run against: the source as Python, or a wheel built with ``LOOPGUARD_COMPILE=1``."""

from __future__ import annotations

import types

from loopguard_core._mypyc import compiled_modules

#: True when loopguard's hot path runs compiled by mypyc (CI runs the suite against both builds)
COMPILED = bool(compiled_modules())


def type_error(message: str) -> str:
    """The ``match`` for the TypeError of an argument of the wrong type: loopguard's own ``message`` (it names the
    parameter). Compiled, mypyc checks a parameter annotated with a builtin type (``int | None``, ``str``) before
    loopguard's code runs, and says what it expected instead: "int or None object expected; got float"."""
    return f"{message}|object expected; got " if COMPILED else message


def declared_fields(cls: type) -> set[str]:
    """The attributes ``cls`` (and its bases) declare, in either build: slots as Python, a native class's
    descriptors when compiled; neither has a ``__dict__`` to read them from."""
    descriptors = (types.MemberDescriptorType, types.GetSetDescriptorType)
    return {
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, descriptors) and not name.startswith("__")  # not __dict__, __weakref__, __class__
    }
