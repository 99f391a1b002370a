"""Canonical call signatures and outcome digests, for any Python value.

Tool arguments come from a model and from framework code: dicts in any key order, strings with cosmetic
variation, and sometimes values that are not JSON at all (pydantic models, sets, bytes, cyclic objects,
NaN, multi-megabyte strings). Everything here is total: it never raises on a value, and its cost depends
only on the size of the value, never on the length of the session.

``loose`` folding (the default for loop detection) treats as equal what a person would call the same
request: key order, letter case, surrounding/inner whitespace, ``1`` vs ``1.0``. Word order is kept: in a
shell command, a query or code, order is meaning (``cp a b`` is not ``cp b a``); the same question asked in
other words is the paraphrase detector's business, and only for natural-language text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import operator
import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _quote
from typing import Any

from ._speedups_source import source_digest

__all__ = [
    "EMPTY_TEXTS",
    "call_signature",
    "canonical_text",
    "compiled_fast_path",
    "is_empty_result",
    "is_identifier",
    "is_informative",
    "outcome_digest",
    "question_words",
    "request_shape",
    "word_overlap",
]

_MAX_DEPTH = 32
_MAX_NODES = 20_000
_FREE_TEXT_MAX = 2_048  # word-order folding only for prompt-sized text
_HASH_ABOVE = 65_536  # longer strings are hashed, not normalised
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    (
        "a an the of for to in on at by with and or about from into is are be please me my our your what "
        "which how find search get show list"
    ).split()
)


def _fold_text(text: str, loose: bool) -> str:
    if len(text) > _HASH_ABOVE:
        return "h:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    if not loose:
        return text
    if len(text) <= _FREE_TEXT_MAX:
        return _fold_short(text)
    return _fold(text)


@functools.lru_cache(maxsize=8192)
def _fold_short(text: str) -> str:
    # Agents in a loop send the same strings again and again: caching makes the repeat cheap.
    return _fold(text)


_SPACES = re.compile(r"[ \t\f\v]+")


def _fold(text: str) -> str:
    """Case folded, every run of spaces one space; line breaks are kept: whether a line is indented is
    meaning in code (the same edit de-indented is another edit), how wide the indentation is mostly is not."""
    text = text.strip().casefold()
    if "\n" not in text and "\r" not in text:
        return " ".join(text.split())
    return "\n".join(_SPACES.sub(" ", line).rstrip() for line in text.splitlines())


class _Encoder:
    __slots__ = ("loose", "nodes", "path")

    def __init__(self, loose: bool) -> None:
        self.loose = loose
        self.nodes = 0
        self.path: set[int] = set()

    def encode(self, value: Any, depth: int = 0) -> str:
        kind = type(value)
        if kind is str:  # the common case first
            return '"' + _fold_text(value, self.loose).replace('"', '\\"') + '"'
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            return "…"
        if value is None or value is True or value is False:
            return repr(value)
        if isinstance(value, str):
            return '"' + _fold_text(value, self.loose).replace('"', '\\"') + '"'
        if isinstance(value, int):
            return _int_text(value)
        if isinstance(value, float):
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "Infinity" if value > 0 else "-Infinity"
            if self.loose and value.is_integer():
                return str(int(value))
            return repr(value)
        return self._compound(value, depth)

    def _compound(self, value: Any, depth: int) -> str:
        """Bytes, containers and anything else (the tail both encoders share): depth, cycles and raising
        containers bounded, so any value has a stable form."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return "b:" + hashlib.blake2b(bytes(value), digest_size=16).hexdigest()
        if depth >= _MAX_DEPTH:
            return "…"
        ident = id(value)
        if ident in self.path:
            return "<cycle>"
        self.path.add(ident)
        try:
            return self._container(value, depth + 1)
        except Exception:  # a container whose items(), __iter__ or __len__ raises: still a stable form
            return f"<unreadable {_type_name(value)}>"
        finally:
            self.path.discard(ident)

    def _container(self, value: Any, depth: int) -> str:
        if isinstance(value, Mapping):
            items = sorted((self.encode(k, depth), self.encode(v, depth)) for k, v in value.items())
            return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(self.encode(v, depth) for v in value) + "]"
        if isinstance(value, (set, frozenset)):
            return "{" + ",".join(sorted(self.encode(v, depth) for v in value)) + "}"
        dumped = _plain_form(value)
        if dumped is not None:
            return self.encode(dumped, depth)
        return '"' + _fold_text(_safe_repr(value), self.loose) + '"'


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than int-to-str conversion allows (4,300): hex has no such limit
        return "0x" + format(value, "x")


def _type_name(value: Any) -> str:
    try:
        return type(value).__qualname__
    except Exception:
        return "object"


def _plain_form(value: Any) -> Any:
    """A plain structure for well-known object kinds (pydantic models, dataclasses), else None."""
    try:
        if hasattr(value, "model_dump") and callable(value.model_dump):
            return value.model_dump()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    except Exception:
        return None
    return None


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__qualname__}>"
    # Default reprs embed a memory address, which would make every call look new.
    return _ADDRESS.sub("", text)


def canonical_text(value: Any, *, loose: bool = True) -> str:
    """A deterministic text form of ``value`` (see module docs). Never raises.

    Loose text (what loop detection compares) is JSON-shaped: strings are JSON strings of their folded text,
    keys sorted, ``true``/``false``/``null``. Plain arguments (dicts, lists, str, int, float, bool, None) are
    written by the C JSON encoder whenever its text provably is this text (see :func:`_json_text`), else by a
    flat walk, else (any other value, or one too deep or too large) by the generic encoder; all three write the
    very same text, so a value's digest never depends on the path it took. Strict text (``loose=False``: ledger
    rows, idempotency keys and approval requests, which outlive a process) keeps its own, unchanged form.
    """
    if not loose:
        if type(value) is dict:
            flat = _flat_dict(value)
            if flat is not None:
                return flat
        return _Encoder(False).encode(value)
    if _loose_json is not None:
        data = _loose_json(value)
        if data is not None:
            return data.decode()
    return _python_loose_text(value)


def _python_loose_text(value: Any) -> str:
    """The loose text as the pure-Python encoders write it (what the compiled path left to them)."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        text = _json_text(value)
        if text is not None:
            return text
        try:
            return _plain(value, 0, [_MAX_NODES])
        except _NotPlain:
            pass
    return _LooseEncoder(True).encode(value)


class _LooseEncoder(_Encoder):
    """The generic loose encoder: :class:`_Encoder` writing JSON's strings, literals and numbers."""

    __slots__ = ()

    def encode(self, value: Any, depth: int = 0) -> str:
        kind = type(value)
        if kind is str:
            return _quote(_fold_loose(value))
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            return "…"
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, str):
            return _quote(_fold_text(value, True))
        if isinstance(value, int):
            return _json_int(value)
        if isinstance(value, float):
            return _json_float(value)
        return self._compound(value, depth)

    def _container(self, value: Any, depth: int) -> str:
        if isinstance(value, Mapping):
            # Keys in JSON's order (str keys by their folded text), then by their text and the value's.
            items = []
            for key, item in value.items():
                text = self.encode(key, depth)
                rank = (0, _fold_text(key, True)) if isinstance(key, str) else (1, text)
                items.append((rank, text, self.encode(item, depth)))
            items.sort()
            return "{" + ",".join([text + ":" + item for _, text, item in items]) + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ",".join([self.encode(v, depth) for v in value]) + "]"
        if isinstance(value, (set, frozenset)):
            return "{" + ",".join(sorted([self.encode(v, depth) for v in value])) + "}"
        dumped = _plain_form(value)
        if dumped is not None:
            return self.encode(dumped, depth)
        return _quote(_fold_text(_safe_repr(value), True))


def _json_int(value: int) -> str:
    try:
        return int.__repr__(value)  # as JSON writes it, for a subclass (an IntEnum) too
    except ValueError:  # more digits than int-to-str conversion allows (4,300): hex has no such limit
        return "0x" + format(value, "x")


def _json_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer():
        return str(int(value))  # 1 == 1.0
    return float.__repr__(value)


def _fold_loose(text: str) -> str:
    if len(text) <= _FREE_TEXT_MAX:
        return _fold_short(text)
    return _fold_text(text, True)


class _NotPlain(Exception):
    """Not plain JSON-shaped data the walk handles: the generic encoder writes it."""


def _plain(value: Any, depth: int, budget: list[int]) -> str:
    """:class:`_LooseEncoder`'s text for a dict, list or tuple of plain values (:class:`_NotPlain` else).

    ``budget`` bounds the nodes visited from above (every item counts, strings too), so a value that could reach
    the generic encoder's node limit is handed to it whole, and its truncation stays exactly its own.
    """
    if depth >= _MAX_DEPTH:
        raise _NotPlain
    budget[0] -= len(value) + 1
    if budget[0] < 0:
        raise _NotPlain
    depth += 1
    if type(value) is dict:
        items: list[tuple[str, str, str]] = []
        append = items.append
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            kind = type(item)
            if kind is str:
                text = _quote(_fold_loose(item))
            elif kind is int:
                text = _json_int(item)
            elif kind is dict or kind is list or kind is tuple:
                text = _plain(item, depth, budget)
            else:
                text = _plain_scalar(item)
            folded = _fold_loose(key)
            append((folded, _quote(folded), text))
        items.sort()
        return "{" + ",".join([key + ":" + item for _, key, item in items]) + "}"
    texts: list[str] = []
    add = texts.append
    for item in value:
        kind = type(item)
        if kind is str:
            add(_quote(_fold_loose(item)))
        elif kind is int:
            add(_json_int(item))
        elif kind is dict or kind is list or kind is tuple:
            add(_plain(item, depth, budget))
        else:
            add(_plain_scalar(item))
    return "[" + ",".join(texts) + "]"


def _plain_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float:
        return _json_float(value)
    raise _NotPlain


# -- the C JSON encoder's text, when it is the walk's ---------------------------------------------------------
def _c_encoder() -> Callable[[Any, int], list[str]] | None:
    if _c_make_encoder is None:
        return None
    try:  # compact, keys sorted, non-ASCII kept, NaN allowed, no circular check (a cycle ends in RecursionError)
        made: Callable[[Any, int], list[str]] = _c_make_encoder(None, None, _quote, None, ":", ",", True, False, True)
    except Exception:  # another signature: the walk writes every text
        return None
    return made


_C_ENCODE = _c_encoder()
_JSON_MAX = 32_768  # no string reaches _HASH_ABOVE, no value the node limit (a node takes 2 characters at least)
_BIG_ITEM = 8_192  # a top-level string this long goes to the walk: the JSON encoder would copy it for nothing
# A JSON key starting like a number may have been an int or float key (JSON writes them as strings).
_KEY_CLASS = bytes(
    ord("{")
    if b in b"{,"
    else ord('"')
    if b == ord('"')
    else ord("1")
    if b in b"-0123456789"
    else ord("w")
    if b in b"tfn"
    else ord("x")
    for b in range(256)
)
_WORD_KEYS = ('"true":', '"false":', '"null":')
_ESCAPED_QUOTE = '\\"'
# Text that loose folding would change: runs of spaces, leading or trailing whitespace (of a string or of a
# line), tabs, carriage returns and other escaped controls.
_UNFOLDED_ESCAPES = ("\\t", "\\r", "\\f", "\\u00", " \\n", '"\\n', '\\n"')
_UNFOLDED_SPACE = re.compile(r' (?:(?=[ "])|(?<=" ))')
_OTHER_SPACE = re.compile(r"[^\S ]")
_INT_FLOAT = re.compile(r"(?<=[\[:,])-?[0-9]+(?:\.0|(?:\.[0-9]+)?e\+[0-9]+)(?=[,\]}])")
_KEY_END = '":'
_KEY_NAME = operator.itemgetter(2)
_AFTER_QUOTE = operator.methodcaller("rpartition", '"')
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_NESTING = bytes(b for b in range(256) if b not in b'[]{}"')


def _json_text(value: Any) -> str | None:
    """The loose text of ``value`` as the C JSON encoder writes it, or None when that text could differ from the
    walk's: a string folding would change, a key that was not a str or that folding would change (the order of
    keys could change with it), a float equal to an int, nesting past the walk's depth, or more text than the
    walk's limits allow. Single-character searches (memchr) come first: most texts need no other pass."""
    if _C_ENCODE is None:
        return None
    nested = type(value) is not dict
    if not nested:
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or (kind is str and len(item) > _BIG_ITEM):
                return None
            if kind is dict or kind is list or kind is tuple:
                nested = True
    try:
        text = "".join(_C_ENCODE(value, 0))
    except Exception:  # not JSON (sets, bytes, objects), mixed keys, a cycle, an int too long to print
        return None
    if len(text) > _JSON_MAX or ("N" in text and "NaN" in text) or ("I" in text and "Infinity" in text):
        return None
    escaped = "\\" in text
    if escaped:
        for unfolded in _UNFOLDED_ESCAPES:
            if unfolded in text:
                return None
    if " " in text and _UNFOLDED_SPACE.search(text) is not None:
        return None
    if not text.isascii() and _OTHER_SPACE.search(text) is not None:
        return None
    raw = b""
    if nested:  # keys of inner dicts: were they all str?
        raw = text.encode("utf-8", "surrogatepass")
        classes = raw.translate(_KEY_CLASS)
        if b'{"1' in classes:
            return None
        if b'{"w' in classes:
            for word in _WORD_KEYS:
                if word in text:
                    return None
    # Without an escaped quote, every quote is a delimiter: what is inside a string is told by the quotes before it.
    plain_quotes = not escaped or _ESCAPED_QUOTE not in text
    folded = text.casefold()  # folds every string at once: structure and literals are lower case already
    if folded != text:
        if not plain_quotes or _keys(folded) != _keys(text):
            return None  # a key would change, and the order of keys with it
        text = folded
        raw = b""
    if ("." in text or "+" in text) and _INT_FLOAT.search(text) is not None:
        if not plain_quotes:
            return None
        text = _INT_FLOAT.sub(_int_float, text)
        raw = b""
    if text.count("[") + text.count("{") > _MAX_DEPTH and not (
        plain_quotes and _shallow(raw or text.encode("utf-8", "surrogatepass"))
    ):
        return None
    return text


# -- the optional compiled fast path (_speedups.c: signatures._plain in C, the same text) ------------------------
def _load_compiled() -> Callable[..., bytes | None] | None:
    if os.environ.get("LOOPGUARD_PURE_PYTHON") == "1":
        return None
    try:
        from loopguard_core import _speedups
    except ImportError:  # not built (no compiler at install time): the pure-Python encoders write every text
        return None
    if not _built_from_this_source(_speedups):
        logging.getLogger("loopguard").warning(
            "loopguard: the compiled fast path was built from other source than loopguard_core/_speedups.c and is"
            " not used (pure Python serves); rebuild it: pip install -e . (or reinstall the package)"
        )
        return None
    # The Unicode folding and JSON quoting stay here: the C walk hands them every string that is not printable ASCII.
    _speedups.configure(_fold_loose, _quote, _MAX_DEPTH, _MAX_NODES, _HASH_ABOVE)
    found: Callable[..., bytes | None] = _speedups.loose_json
    return found


def _built_from_this_source(module: Any) -> bool:
    """Whether the compiled module was built from the ``_speedups.c`` beside it (a stale build in a source tree would
    write another text than this module's encoders). Without the source beside it (stripped), it is trusted."""
    source = resources.files("loopguard_core").joinpath("_speedups.c")
    if not source.is_file():
        return True
    return getattr(module, "source_digest", None) == source_digest(source.read_bytes())


_COMPILED = _load_compiled()
_loose_json = _COMPILED


def compiled_fast_path(enabled: bool | None = None) -> bool:
    """Whether signatures are written by the optional compiled fast path (``loopguard_core._speedups``).

    ``enabled=False`` switches it off and ``True`` on again (when it was built); verdicts are the same either way,
    it only changes speed. Set ``LOOPGUARD_PURE_PYTHON=1`` to keep it off from the start (or to build without it).
    """
    global _loose_json
    if enabled is not None:
        _loose_json = _COMPILED if enabled else None
    return _loose_json is not None


def _keys(text: str) -> list[str]:
    return list(map(_KEY_NAME, map(_AFTER_QUOTE, text.split(_KEY_END))))


def _int_float(match: re.Match[str]) -> str:
    token = match.group()
    return str(int(float(token))) if match.string.count('"', 0, match.start()) % 2 == 0 else token


def _shallow(raw: bytes) -> bool:
    """Whether no container of the JSON text (UTF-8) is nested _MAX_DEPTH deep (the walk's limit). Each pass drops
    the innermost pairs of brackets: the text empties within _MAX_DEPTH passes exactly then."""
    nesting = raw.translate(_PARENS, _NOT_NESTING).replace(b'""', b"")
    if b'"' in nesting:
        return False  # a string holds a bracket
    for _ in range(_MAX_DEPTH):
        if not nesting:
            return True
        nesting = nesting.replace(b"()", b"")
    return not nesting


def _flat_dict(value: dict[Any, Any]) -> str | None:
    """Fast path of the strict text for the usual tool args: a dict of str keys to str/int values (same output).
    Anything else (another key or value type, a string long enough to be hashed, an int past the digit limit)
    returns None and takes the generic encoder, which writes the same text."""
    parts = []
    for key, item in value.items():
        if type(key) is not str or len(key) > _HASH_ABOVE:
            return None
        kind = type(item)
        if kind is str:
            if len(item) > _HASH_ABOVE:
                return None
            text = '"' + item.replace('"', '\\"') + '"'
        elif kind is int:
            try:
                text = str(item)
            except ValueError:  # more digits than int-to-str conversion allows
                return None
        else:
            return None
        parts.append(('"' + key.replace('"', '\\"') + '"', text))
    if len(parts) > 1:
        parts.sort()
    return "{" + ",".join([f"{k}:{v}" for k, v in parts]) + "}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def call_signature(tool: str, args: Any, *, loose: bool = True) -> str:
    """A 32-hex-digit signature of a tool call: equal for calls a person would call the same."""
    if not loose:
        return _digest(str(tool) + "\x00" + canonical_text(args, loose=False))
    name = _tool_key(tool) if type(tool) is str else " ".join(str(tool).split()).casefold()
    if _loose_json is not None:  # the compiled path hashes the same bytes: name, NUL, the loose text
        data = _loose_json(args, _prefix(name))
        if data is not None:
            return hashlib.blake2b(data, digest_size=16).hexdigest()
    return _digest(name + "\x00" + _python_loose_text(args))


@functools.lru_cache(maxsize=4_096)
def _tool_key(tool: str) -> str:
    return " ".join(tool.split()).casefold()


@functools.lru_cache(maxsize=4_096)
def _prefix(name: str) -> bytes:
    return (name + "\x00").encode("utf-8", "surrogatepass")


def outcome_digest(result: Any = None, error: Any = None) -> str:
    """A 32-hex-digit digest of what a call returned (or how it failed).

    Results are compared with case and whitespace folded but word order kept: "5 failed" and
    "4 failed" differ, which is how a test-fix loop shows progress.
    """
    if error is not None and error is not False:
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        return _digest("E\x00" + canonical_text(error, loose=False).casefold())
    if isinstance(result, str):
        return _digest("R\x00" + " ".join(result.casefold().split()))
    return _digest("R\x00" + canonical_text(result, loose=False))


def question_words(args: Any) -> str:
    """The content words of the free text in ``args`` (sorted, space-separated), or "" if it has none.

    Used to recognise the same question asked in other words. Only strings of three words or more take
    part; short identifiers, paths and ids never do, so "job 1" and "job 2" are never merged this way.
    """
    texts: list[str] = []
    _collect_text(args, texts, 0)
    if not texts:
        return ""
    if len(texts) == 1:
        return _content_words(texts[0])
    words: set[str] = set()
    for text in texts:
        words.update(_content_words(text).split())
    return " ".join(sorted(words))


# A token keeps inner dots and dashes, so an identifier stays whole: "us-east-1", "inv-0042", "v2.3", "4101".
_TOKEN = re.compile(r"[^\W_](?:[\w.-]*[^\W_])?")


@functools.lru_cache(maxsize=8192)
def _content_words(text: str) -> str:
    words: set[str] = set()
    for token in _TOKEN.findall(text.casefold()):
        if is_identifier(token):  # names one thing: must match exactly, kept whole
            words.add(token)
        else:
            words.update(w for w in _WORD.findall(token) if w not in _STOPWORDS)
    return " ".join(sorted(words))


def _collect_text(value: Any, out: list[str], depth: int) -> None:
    if depth > 8 or len(out) > 32:
        return
    if isinstance(value, str):
        if " " in value.strip() and len(value) <= _FREE_TEXT_MAX and len(_WORD.findall(value)) >= 3:
            out.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect_text(item, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value[:64]:
            _collect_text(item, out, depth + 1)


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two :func:`question_words` strings; 0.0 when their identifiers differ."""
    if not a or not b:
        return 0.0
    left, right = set(a.split()), set(b.split())
    # Identifiers name things (page 2, job 7, us-east-1): different identifiers are different questions.
    if {w for w in left if is_identifier(w)} != {w for w in right if is_identifier(w)}:
        return 0.0
    return len(left & right) / len(left | right)


def is_identifier(word: str) -> bool:
    """A word of :func:`question_words` that names one thing (it contains a digit)."""
    return any(ch.isdigit() for ch in word)


EMPTY_TEXTS = frozenset({"", "[]", "{}", "null", "()", '""', "''"})


def is_empty_result(result: Any) -> bool:
    """True for an answer with nothing in it: empty containers, blank or "[]"/"{}"/"null" text.

    ``None`` is not empty: it is what a tool that acts (writes, sends, deletes) returns on success.
    """
    if result is None:
        return False
    if isinstance(result, str):
        return " ".join(result.split()).casefold() in EMPTY_TEXTS
    if isinstance(result, (list, tuple, dict, set, frozenset, bytes, bytearray)):
        return len(result) == 0
    return False


_PAGING_KEY = re.compile(
    r"^(page|pages|page_?(number|num|no|index|token)|offset|skip|start|start_?index|cursor|after|before|"
    r"from|next|next_?(page|token|cursor)|continuation(_?token)?|marker|p)$",
    re.IGNORECASE,
)


def request_shape(tool: str, args: Any) -> str:
    """The request with its paging parameters masked (``page``, ``offset``, ``cursor``, ...), or "" if it
    has none: ``list(page=6)`` and ``list(page=7)`` match, ``invoices(customer_id=1)`` and ``(customer_id=2)``
    do not (they are different questions, not pages of one)."""
    if type(args) is not dict and not isinstance(args, Mapping):  # (a dict skips the ABC check: hot path)
        return ""
    if type(args) is dict and len(args) <= 64:
        try:
            paging = _paging_keys(tuple(args))  # a tool's calls share their keys: judged once per key set
        except TypeError:  # an unhashable key
            paging = any(isinstance(k, str) and _PAGING_KEY.match(k) for k in args)
    else:
        paging = any(isinstance(k, str) and _PAGING_KEY.match(k) for k in args)
    if not paging:
        return ""
    masked = {k: "#" if isinstance(k, str) and _PAGING_KEY.match(k) else v for k, v in args.items()}
    return call_signature(tool, masked)


@functools.lru_cache(maxsize=4_096)
def _paging_keys(keys: tuple[Any, ...]) -> bool:
    return any(isinstance(k, str) and _PAGING_KEY.match(k) for k in keys)


_INFORMATIVE_CHARS = 24


def is_informative(result: Any) -> bool:
    """Whether two identical answers say something: "Yes." twice proves little, ten identical results do."""
    if isinstance(result, str):
        return len(" ".join(result.split())) >= _INFORMATIVE_CHARS
    return result is not None and not is_empty_result(result) and not isinstance(result, (bool, int, float))
