"""A dependency-free token estimate for pre-flight projections.

Adapters pass the provider's own count when they have one; otherwise about four characters per token
(rounded up) is the usual rule of thumb for English text and JSON. It only has to be good enough to
stop a call that would clearly cross a ceiling; the real usage is recorded after the call.

A model call is sent the whole conversation every turn, so estimating (or hashing) it from scratch makes each
turn of a long run cost more than the last. :class:`History` does it incrementally: it remembers, per
conversation, how far it has counted, and on the next turn only reads the messages added since.
"""

from __future__ import annotations

import hashlib
import json
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["History", "chars_to_tokens", "estimate_tokens", "history_digest", "message_chars"]

_CHARS_PER_TOKEN = 4
_PER_MESSAGE_OVERHEAD = 4


def estimate_tokens(content: Any) -> int:
    """Estimate the tokens in a string, a message dict, or a list of messages/content blocks."""
    return -(-_count_chars(content, 0) // _CHARS_PER_TOKEN)


def message_chars(item: Any) -> int:
    """The characters ``estimate_tokens`` counts for one item of a list (so a list's estimate is
    ``chars_to_tokens(sum(message_chars(m) for m in items))``)."""
    return _count_chars(item, 1)


def chars_to_tokens(chars: int) -> int:
    """Characters to estimated tokens, rounded up (what ``estimate_tokens`` does with its count)."""
    return -(-chars // _CHARS_PER_TOKEN)


def _count_chars(content: Any, depth: int) -> int:
    if depth > 16 or content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    # The Mapping ABC's isinstance is a Python-level call, and this runs for every new message part: the exact
    # built-in types (a dict is one, a list or tuple is not) are told apart without it.
    kind = type(content)
    if kind is dict or (kind is not list and kind is not tuple and isinstance(content, Mapping)):
        return _mapping_chars(content, depth)
    if isinstance(content, (list, tuple)):
        return sum([_count_chars(item, depth + 1) for item in content])
    text = getattr(content, "content", None)
    if text is not None:
        return _count_chars(text, depth + 1) + _PER_MESSAGE_OVERHEAD * _CHARS_PER_TOKEN
    return len(str(content))


def _mapping_chars(content: Mapping[str, Any], depth: int) -> int:
    total = _PER_MESSAGE_OVERHEAD * _CHARS_PER_TOKEN if "role" in content else 0
    for key in _COUNTED_KEYS:
        if key in content:
            value = content[key]
            kind = type(value)
            if kind is dict or (kind is not str and kind is not list and isinstance(value, Mapping)):
                value = str(value)
            total += _count_chars(value, depth + 1)
    return total


_COUNTED_KEYS = ("content", "text", "input", "system", "arguments", "args")


# -- incremental: one conversation read once, however many turns it lasts ------------------------------------
_DIGEST_SEED = hashlib.sha256(b"loopguard-history-digest-v1").digest()


class _Seen:
    """How far one conversation was read: witnesses (position, message) of what it was then, and the totals."""

    __slots__ = ("chars", "count", "digest", "prefix", "witnesses")

    def __init__(self) -> None:
        self.witnesses: tuple[tuple[int, Any], ...] = ()
        self.prefix: list[Any] | None = None  # every message digested (references), kept only for a digest
        self.count = 0
        self.chars = 0
        self.digest: bytes | None = None  # None until a digest is asked for


def _witnesses(messages: Sequence[Any], n: int, spread: int) -> tuple[tuple[int, Any], ...]:
    """``(position, message)`` for the first and last of ``n`` messages and ``spread`` evenly spaced between."""
    if n <= spread + 2:
        return tuple(enumerate(messages[:n]))
    step = (n - 1) / (spread + 1)
    return tuple((at, messages[at]) for at in [0, *[int(step * i) for i in range(1, spread + 1)], n - 1])


class History:
    """Running token estimates and digests of conversations whose message lists grow between model calls.

    ``History(chars=..., view=..., same=operator.is_)``; ``chars(message)`` is what one message counts (default
    :func:`message_chars`), ``view(message)`` what of it goes into :meth:`digest` (default: the message itself),
    and ``same`` how a message is recognised on the next turn: ``operator.is_`` where the framework hands the
    same message objects every turn (LangChain, Pydantic AI, CrewAI), ``operator.eq`` where every request is a
    fresh copy (a JSON request body).

    For an estimate, a list is taken as the continuation of one seen before when its first message, the last
    message seen then and ``spread`` messages evenly spaced between them are the same; only the messages after it
    are read, so the check costs the same at turn 500 as at turn 1. Anything else (a history trimmed, summarised or
    replaced) is read from the start, once, and remembered from there. What the sample cannot see is one message
    replaced in place at a position it did not sample (LangGraph's ``add_messages`` does that for a message with
    the id of an earlier one): the estimate then counts the old message's size, which is only an estimate. A
    :meth:`digest` commits to the whole history, so it also compares every message seen (a pointer test each, or
    C-level equality for fresh copies: nanoseconds per message, no hashing) and reads the history again when any
    differs. Up to ``capacity`` conversations are remembered (least recently used first out). Thread-safe.
    """

    def __init__(
        self,
        chars: Callable[[Any], int] = message_chars,
        *,
        view: Callable[[Any], Any] | None = None,
        same: Callable[[Any, Any], bool] = operator.is_,
        capacity: int = 64,
        spread: int = 6,
    ) -> None:
        self._chars = chars
        self._view = view
        self._same = same
        self._identity = same is operator.is_
        self._capacity = capacity
        self._spread = spread
        self._seen: list[_Seen] = []  # most recently used last
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy (copy, deepcopy, pickle) starts with nothing remembered: the totals are only a shortcut.
        return (_new_history, (self._chars, self._view, self._same, self._capacity, self._spread))

    def chars(self, messages: Sequence[Any]) -> int:
        """The characters of every message of ``messages`` (only the new ones are counted)."""
        if not messages:
            return 0
        with self._lock:
            return self._update(messages, digest=False).chars

    def estimate(self, messages: Sequence[Any], extra_chars: int = 0) -> int:
        """Estimated tokens of ``messages`` plus ``extra_chars``, exactly what ``estimate_tokens`` would say of the
        list (with the extra items in it)."""
        return chars_to_tokens(self.chars(messages) + extra_chars)

    def digest(self, messages: Sequence[Any]) -> dict[str, Any]:
        """``{"messages": n, "sha256": hex}``: a digest of every message of ``messages`` in order, chained
        (``h_0`` a fixed seed, ``h_i = SHA-256(h_(i-1) || text(view(message_i)))``, the text being compact JSON with
        sorted keys, or ``canonical_text`` for what JSON cannot hold), so it commits to the
        whole history while each turn hashes only the messages added since the last. :func:`history_digest`
        computes the same from scratch."""
        if not messages:
            return {"messages": 0, "sha256": _DIGEST_SEED.hex()}
        with self._lock:
            seen = self._update(messages, digest=True)
            assert seen.digest is not None
            return {"messages": seen.count, "sha256": seen.digest.hex()}

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def _find(self, messages: Sequence[Any], n: int, *, exact: bool) -> _Seen | None:
        seen_list = self._seen
        identity = self._identity
        same = self._same
        for index in range(len(seen_list) - 1, -1, -1):
            seen = seen_list[index]
            if seen.count > n:
                continue
            found = True
            try:
                for at, message in seen.witnesses:
                    if not (messages[at] is message if identity else same(message, messages[at])):
                        found = False
                        break
                prefix = seen.prefix
                if found and exact and prefix is not None:
                    # A digest commits to the whole history: every message seen is compared (in C: a pointer
                    # test per message, or equality for fresh copies), far cheaper than hashing it again.
                    head = messages[: seen.count]
                    found = all(map(operator.is_, head, prefix)) if identity else list(head) == prefix
            except Exception:  # an odd message whose comparison fails: not this conversation
                continue
            if found:
                if index != len(seen_list) - 1:
                    seen_list.append(seen_list.pop(index))
                return seen
        return None

    def _update(self, messages: Sequence[Any], *, digest: bool) -> _Seen:
        n = len(messages)
        seen = self._find(messages, n, exact=digest)
        if seen is None:
            seen = _Seen()
            self._seen.append(seen)
            if len(self._seen) > self._capacity:
                del self._seen[0]
        elif digest and seen.digest is None and seen.count:
            seen.count = seen.chars = 0  # digests were not kept for it: read it again, once, keeping both
        start = seen.count
        if start < n:
            count = self._chars
            chars = seen.chars
            new = messages[start:n]
            for message in new:
                chars += count(message)
            seen.chars = chars
            if digest or seen.digest is not None:
                seen.digest = _chain(seen.digest if start else None, new, self._view)
            seen.count = n
            seen.witnesses = _witnesses(messages, n, self._spread)
            if seen.digest is not None:
                seen.prefix = list(messages[:n])  # references, not copies
        elif digest and seen.digest is None:
            seen.digest = _DIGEST_SEED
        return seen


_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


def _text(view: Any) -> str:
    """A message as it is hashed: compact JSON with sorted keys (what a message is: text, dicts, lists, numbers),
    else ``canonical_text`` (deterministic for anything else, memory addresses removed)."""
    try:
        return _JSON(view)
    except (TypeError, ValueError, RecursionError):
        from .signatures import canonical_text  # here: a plain estimate never loads it

        return canonical_text(view, loose=False)


def _new_history(
    chars: Callable[[Any], int],
    view: Callable[[Any], Any] | None,
    same: Callable[[Any, Any], bool],
    capacity: int,
    spread: int,
) -> History:
    return History(chars, view=view, same=same, capacity=capacity, spread=spread)


def _chain(state: bytes | None, messages: Sequence[Any], view: Callable[[Any], Any] | None) -> bytes:
    h = _DIGEST_SEED if state is None else state
    sha256 = hashlib.sha256
    for message in messages:
        text = _text(message if view is None else view(message))
        h = sha256(h + text.encode("utf-8", "surrogatepass")).digest()
    return h


def history_digest(messages: Sequence[Any], view: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """What :meth:`History.digest` returns for ``messages``, computed from scratch (to check a ledger row)."""
    return {"messages": len(messages), "sha256": _chain(None, messages, view).hex()}
