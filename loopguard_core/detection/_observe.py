"""From a raw tool call to what the detectors see: a :class:`Call` before it runs, a :class:`Step` after.

This runs in the caller's process (raw arguments and results never reach a store): digests, flags and
keyed word hashes leave it, nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..signatures import EMPTY_TEXTS, canonical_text, is_empty_result, is_informative, question_words, request_shape
from ..tools import ToolPolicy
from ._semantics import command_of, is_noop_command, is_shell_tool
from ._step import EMPTY, FAILED, NOOP, POLL, SIMILAR, STALE, WAITING
from ._text import (
    MAX_TEXT,
    STATUS_CHARS,
    STATUS_WORDS,
    folded_digest,
    looks_failed,
    masked_digest,
    says_in_progress,
    text_failed,
    text_of,
    text_says_in_progress,
    word_tokens,
)

__all__ = ["ProseWords", "RunTail", "answer_facts", "outcome_flags", "prose_words", "request_facts", "similar"]

# Arguments that hold code, commands or file content: never natural-language questions.
_CODE_KEYS = re.compile(
    r"^(code|command|cmd|script|sql|shell|bash|patch|diff|content|contents|body|file_text|new_str|old_str|"
    r"source|expression|expr|regex|pattern|program|snippet|html|xml|json|yaml)$",
    re.IGNORECASE,
)
_CODE_CHARS = re.compile(r"[{}\[\]();=<>|&$`\\*\n]|\s-{1,2}\w")
_SQL_START = ("select ", "insert ", "update ", "delete ", "with ", "create ", "drop ")
_MAX_PROSE = 2_048
_NONE: frozenset[int] = frozenset()


class ProseWords:
    """Keyed hashes of the content words of the natural-language text in a call's arguments.

    Only prose takes part: strings of three words or more with no code or shell syntax, under arguments
    that are not named like code (``code``, ``command``, ``sql``, ``content`` ...). Identifiers (words with a
    digit, kept whole: ``us-east-1``, ``INV-0042``) get the low bit set, so they can be matched exactly, and
    so does everything that is not prose (ids, pages, flags): it names the thing asked about. Word hashes
    are cached (a vocabulary repeats), so a call costs a few dictionary lookups.
    """

    __slots__ = ("_cache", "_key", "_texts")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[str, int] = {}
        self._texts: dict[str, frozenset[int]] = {}

    def __call__(self, args: Any) -> frozenset[int]:
        if isinstance(args, str):
            return self._text(args) if _is_prose(args) else _NONE
        texts, rest = _prose(args)
        if not texts:
            return _NONE
        words = self._text(texts[0]) if len(texts) == 1 else frozenset().union(*map(self._text, texts))
        if rest and words:
            raw = hashlib.blake2b(canonical_text(rest).encode("utf-8", "surrogatepass"), key=self._key, digest_size=4)
            return words | {int.from_bytes(raw.digest(), "big") | 1}  # not cached: ids change call to call
        return words

    def _text(self, text: str) -> frozenset[int]:
        known = self._texts.get(text)
        if known is None:
            words = question_words(text)
            known = frozenset(self._hash(word) for word in words.split()) if words else _NONE
            if len(self._texts) >= 4_096:
                self._texts.clear()
            self._texts[text] = known
        return known

    def _hash(self, word: str) -> int:
        known = self._cache.get(word)
        if known is None:
            raw = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), key=self._key, digest_size=4).digest()
            digest = int.from_bytes(raw, "big")
            identifier = any(ch.isdigit() for ch in word)
            known = digest | 1 if identifier else digest & ~1
            if len(self._cache) >= 65_536:
                self._cache.clear()
            self._cache[word] = known
        return known


def prose_words(args: Any, key: bytes) -> frozenset[int]:
    """:class:`ProseWords` for a single call (no cache kept)."""
    return ProseWords(key)(args)


def _prose(args: Any) -> tuple[list[str], dict[str, Any]]:
    """The natural-language strings of ``args`` and everything else (by key)."""
    if isinstance(args, str):
        return ([args], {}) if _is_prose(args) else ([], {})
    if not isinstance(args, Mapping):
        return [], {}
    found, rest = [], {}
    for count, (key, value) in enumerate(args.items()):
        if count == 32:
            break
        if type(value) is str and not (type(key) is str and _code_key(key)) and _is_prose(value):
            found.append(value)
        else:
            rest[str(key)] = value
    return found, rest


def _is_prose(text: str) -> bool:
    text = text.strip()
    return (
        len(text) <= _MAX_PROSE
        and text.count(" ") >= 2
        and not _CODE_CHARS.search(text)
        and not text[:7].casefold().startswith(_SQL_START)
        and len(text.split()) >= 3
    )


@functools.lru_cache(maxsize=1024)
def _code_key(key: str) -> bool:
    return _CODE_KEYS.match(key) is not None


def request_facts(tool: str, args: Any, policy: ToolPolicy) -> tuple[str, bool]:
    """(paging shape, is a poll) of a request; the shape is "" without a paging parameter."""
    shape = request_shape(tool, args)
    poll = bool(policy.poll)
    if not poll and is_shell_tool(tool):
        command = command_of(tool, args)
        poll = command is not None and command.lstrip().startswith("sleep ")
    return shape, poll


def outcome_flags(tool: str, args: Any, result: Any, error: Any, policy: ToolPolicy, answer: int | None = None) -> int:
    """The flags of a finished call (see ``_step``), except STALE and SIMILAR (see :class:`RunTail`). ``answer``: the
    flags :func:`answer_facts` read in a text result already."""
    failed = error is not None and error is not False
    if failed:
        flags = FAILED
    elif answer is not None:
        flags = answer
    elif type(result) is str:
        flags = answer_facts(result)[1]
    else:
        flags = _result_flags(result)
    if policy.noop:
        flags |= NOOP
    elif is_shell_tool(tool):
        command = command_of(tool, args)
        if command is not None and is_noop_command(command):
            flags |= NOOP
    if policy.poll:
        flags |= POLL
    return flags


_SHORT_ANSWER = 256  # short answers repeat ("ok", "File updated", an error line): what is read of them is cached


def answer_facts(result: str) -> tuple[str, int]:
    """``(masked_digest(result), flags)`` of a text a call returned (not an error): the flags FAILED, EMPTY and
    WAITING that :func:`outcome_flags` reads in a result, from one fold of the text that the digest shares."""
    if len(result) <= _SHORT_ANSWER:
        return _short_answer_facts(result)
    if len(result) > MAX_TEXT:  # the digest reads the first MiB; the flags, as ever, the whole text
        return masked_digest(result), _result_flags(result)
    return _answer_facts(result)


def _result_flags(result: Any) -> int:
    """FAILED, EMPTY and WAITING of any result, each read on its own."""
    flags = FAILED if looks_failed(result) else 0
    if is_empty_result(result):
        flags |= EMPTY
    elif says_in_progress(result):
        flags |= WAITING
    return flags


@functools.lru_cache(maxsize=4_096)
def _short_answer_facts(result: str) -> tuple[str, int]:
    return _answer_facts(result)


def _answer_facts(result: str) -> tuple[str, int]:
    words = result.split()
    joined = " ".join(words)
    folded = joined.casefold()
    flags = FAILED if result and text_failed(result) else 0  # (looks_failed, for a text)
    if folded in EMPTY_TEXTS:  # (is_empty_result)
        flags |= EMPTY
    elif (  # (says_in_progress)
        len(result) <= STATUS_CHARS
        and len(words) <= STATUS_WORDS
        and text_says_in_progress(folded if joined == result else result.casefold())
    ):
        flags |= WAITING
    return folded_digest(folded, False), flags


def similar(a: frozenset[int], b: frozenset[int], threshold: float) -> bool:
    """Two requests' word hashes ask the same question: their identifiers (low bit set) match exactly and
    their words overlap by at least ``threshold`` (Jaccard)."""
    if not a or not b or {w for w in a if w & 1} != {w for w in b if w & 1}:
        return False
    return len(a & b) >= threshold * len(a | b)


class RunTail:
    """The last call of one run, kept in the caller's process to judge the next one against it:

    - STALE: the same call again whose outcome told nothing its streak's earlier outcomes (or its own
      arguments) had not: a REPL re-printing earlier output, a file grown by the same block; the next page
      of a file is never stale.
    - SIMILAR: the same tool asked the same natural-language question in other words and got the same
      informative answer. Word hashes are computed only then, so ordinary calls never pay for them.

    Raw arguments and results are held only until the next call of the run; nothing raw leaves the process.
    """

    __slots__ = ("_action", "_args", "_last", "_outcome", "_seen", "_tool", "_words")

    def __init__(self) -> None:
        self._tool = self._action = self._outcome = ""
        self._args: Any = None
        self._last: Any = None
        self._seen: frozenset[str] | None = None
        self._words: frozenset[int] | None = None

    def observe(
        self,
        tool: str,
        action: str,
        outcome: str,
        args: Any,
        result: Any,
        failed: bool,
        paging: bool,
        prose: ProseWords | None,
        threshold: float,
    ) -> tuple[int, frozenset[int]]:
        """Record this call; its STALE / SIMILAR flags and, when SIMILAR, its word hashes."""
        flags, words = 0, _NONE
        if action == self._action and not paging and self._stale(args, result):
            flags |= STALE
        if (
            prose is not None
            and tool == self._tool
            and outcome == self._outcome
            and not failed
            and is_informative(result)
            and not is_shell_tool(tool)
        ):
            before = self._words if self._words is not None else prose(self._args)
            words = prose(args)
            if similar(before, words, threshold):
                flags |= SIMILAR
        if action != self._action or paging:
            self._seen = None
        self._tool, self._action, self._outcome = tool, action, outcome
        self._args, self._last, self._words = args, result, (words if words else None)
        return flags, words if flags & SIMILAR else _NONE

    def observe_safely(
        self,
        tool: str,
        action: str,
        outcome: str,
        args: Any,
        result: Any,
        failed: bool,
        paging: bool,
        prose: ProseWords | None,
        threshold: float,
    ) -> tuple[int, frozenset[int]]:
        """:meth:`observe`, for any value: arguments or results that raise when read get no STALE / SIMILAR."""
        try:
            return self.observe(tool, action, outcome, args, result, failed, paging, prose, threshold)
        except Exception:
            self._tool = self._action = self._outcome = ""
            self._args = self._last = self._seen = self._words = None
            return 0, _NONE

    def _stale(self, args: Any, outcome: Any) -> bool:
        if self._seen is None:  # the streak's first outcome, read only now that it has a repeat
            self._seen = word_tokens(text_of(self._last)) | word_tokens(_arg_text(args))
        # An answer without a word of two letters is its numbers: never "nothing new".
        words = frozenset(word for word in word_tokens(text_of(outcome)) if len(word) > 1)
        stale = bool(words) and words <= self._seen
        self._seen = self._seen | words
        return stale


def _arg_text(args: Any) -> str:
    parts: list[str] = []
    _strings(args, parts, 0)
    return " ".join(parts)


def _strings(value: Any, out: list[str], depth: int) -> None:
    if depth > 8 or len(out) > 256:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _strings(item, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value[:256]:
            _strings(item, out, depth + 1)
