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
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "call_signature",
    "canonical_text",
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
    """A deterministic text form of ``value`` (see module docs). Never raises."""
    if type(value) is dict:
        flat = _flat_dict(value, loose)
        if flat is not None:
            return flat
    return _Encoder(loose).encode(value)


def _flat_dict(value: dict[Any, Any], loose: bool) -> str | None:
    """Fast path for the usual tool args: a dict of str keys to str/int values (same output)."""
    parts = []
    for key, item in value.items():
        if type(key) is not str:
            return None
        kind = type(item)
        if kind is str:
            text = '"' + _fold_text(item, loose).replace('"', '\\"') + '"'
        elif kind is int:
            text = _int_text(item)
        else:
            return None
        parts.append(('"' + _fold_text(key, loose).replace('"', '\\"') + '"', text))
    parts.sort()
    return "{" + ",".join(f"{k}:{v}" for k, v in parts) + "}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def call_signature(tool: str, args: Any, *, loose: bool = True) -> str:
    """A 32-hex-digit signature of a tool call: equal for calls a person would call the same."""
    name = " ".join(str(tool).split()).casefold() if loose else str(tool)
    return _digest(name + "\x00" + canonical_text(args, loose=loose))


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


_EMPTY_TEXT = frozenset({"", "[]", "{}", "null", "()", '""', "''"})


def is_empty_result(result: Any) -> bool:
    """True for an answer with nothing in it: empty containers, blank or "[]"/"{}"/"null" text.

    ``None`` is not empty: it is what a tool that acts (writes, sends, deletes) returns on success.
    """
    if result is None:
        return False
    if isinstance(result, str):
        return " ".join(result.split()).casefold() in _EMPTY_TEXT
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
    if not isinstance(args, Mapping) or not any(isinstance(k, str) and _PAGING_KEY.match(k) for k in args):
        return ""
    masked = {k: "#" if isinstance(k, str) and _PAGING_KEY.match(k) else v for k, v in args.items()}
    return call_signature(tool, masked)


_INFORMATIVE_CHARS = 24


def is_informative(result: Any) -> bool:
    """Whether two identical answers say something: "Yes." twice proves little, ten identical results do."""
    if isinstance(result, str):
        return len(" ".join(result.split())) >= _INFORMATIVE_CHARS
    return result is not None and not is_empty_result(result) and not isinstance(result, (bool, int, float))
