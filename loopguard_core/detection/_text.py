"""What an outcome says, read the way a reviewer reads a trace: volatile values masked, failures
recognised, content compared by the words it carries.

Everything here is total (never raises on a value) and costs time proportional to the text it reads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_TEXT",
    "STATUS_CHARS",
    "STATUS_WORDS",
    "folded_digest",
    "looks_failed",
    "mask_folded",
    "mask_volatile",
    "masked_digest",
    "says_in_progress",
    "text_failed",
    "text_of",
    "text_says_in_progress",
    "word_tokens",
]

MAX_TEXT = 1 << 20  # outcomes longer than this are compared by their first MiB and their length

# Values an agent cannot affect and that change on every call: object addresses, UUIDs, long hex ids
# (commit hashes, request ids), then every digit (counters, line and cell numbers, timestamps, PIDs,
# durations). What is left is what the call said.
_ADDRESS = re.compile(r"0x[0-9a-f]+")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_RUN = re.compile(r"\b[0-9a-f]{7,}\b")
_DROP_DIGITS = str.maketrans("", "", "0123456789")
# Bytes of a hex digit become "h", everything else " ": a run of 7 "h" is where a hex id may be.
_HEX_BYTES = bytes(104 if chr(b) in "0123456789abcdef" else 32 for b in range(256))
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d_]+")
_TWO_LETTERS = re.compile(r"[^\W\d_]{2}")
_DIGIT = re.compile(r"\d")


def _hex_id(match: re.Match[str]) -> str:
    run = match.group()
    # A hex id mixes digits and letters; an all-letter word ("deadbeef", "effaced") or a number is not one.
    return "#" if not run.isdigit() and any(ch.isdigit() for ch in run) else run


def text_of(value: Any) -> str:
    """A text form of a result or error for comparison (JSON for structures, never raises)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "b:" + hashlib.blake2b(bytes(value), digest_size=16).hexdigest()
    try:
        return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)
    except Exception:  # unsortable keys, a hostile __repr__: fall back to the loop-safe canonical form
        from ..signatures import canonical_text

        return canonical_text(value, loose=False)


def mask_volatile(text: str) -> str:
    """``text`` with case and whitespace folded and volatile values masked (digits dropped, ids as ``#``).

    ``"/bin/bash: line 11301: cd: x: No such file"`` and ``"... line 11302: ..."`` mask to the same text;
    ``"5 failed"`` and ``"4 failed"`` do too, which is why a test-fix loop is judged by the calls between
    its reruns, never by the rerun's output alone.
    """
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"…{len(text)}"
    return mask_folded(" ".join(text.split()).casefold())


def mask_folded(folded: str) -> str:
    """:func:`mask_volatile` of a text whose case and whitespace are folded already."""
    # Every volatile pattern holds a digit: most answers without one need no pass at all.
    if not _DIGIT.search(folded):
        return folded
    if "0x" in folded:
        folded = _ADDRESS.sub("#", folded)
    # Scanning text with a regular expression costs far more than a byte translation: look first.
    if b"hhhhhhh" in folded.encode("ascii", "replace").translate(_HEX_BYTES):
        folded = _HEX_RUN.sub(_hex_id, _UUID.sub("#", folded))
    return folded.translate(_DROP_DIGITS)  # digit runs of any length fold alike: "line 9" == "line 10"


def masked_digest(result: Any = None, error: Any = None) -> str:
    """A 16-hex-digit digest of an outcome after :func:`mask_volatile` (errors and results never collide).

    An answer without a single word (``"93.184.216.34"``, ``"2026-11-21T10:00:00Z"``, ``"[(5,)]"``) is its
    numbers: those are compared as they are, not masked.
    """
    failed = error is not None and error is not False
    raw = text_of(error if failed else result)
    if len(raw) <= _CACHED_TEXT:
        return _short_digest(raw, failed)  # short answers repeat ("ok", "File updated", an error line)
    return _text_digest(raw, failed)


_CACHED_TEXT = 256  # short answers only: the caches hold little text and little memory


@functools.lru_cache(maxsize=4_096)
def _short_digest(raw: str, failed: bool) -> str:
    return _text_digest(raw, failed)


def _text_digest(raw: str, failed: bool) -> str:
    if len(raw) > MAX_TEXT:
        text = mask_volatile(raw)
        if not _TWO_LETTERS.search(text):
            text = " ".join(raw[:MAX_TEXT].split()).casefold()
        return _digest(text, failed)
    return folded_digest(" ".join(raw.split()).casefold(), failed)


def folded_digest(folded: str, failed: bool) -> str:
    """:func:`masked_digest` of a text of at most 1 MiB whose case and whitespace are folded already."""
    masked = mask_folded(folded)
    return _digest(masked if _TWO_LETTERS.search(masked) else folded, failed)


def _digest(text: str, failed: bool) -> str:
    text = ("E\x00" if failed else "R\x00") + text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def word_tokens(text: str) -> frozenset[str]:
    """The words (letters only, case folded) of ``text``: what an outcome tells, for novelty checks."""
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT]
    return frozenset(_WORD.findall(text.casefold()))


# -- failures -------------------------------------------------------------------------------------------
# Harnesses hand failures back as text more often than as exceptions: a shell's exit code, a traceback, a
# rejected edit, "Error executing query". Only the head of the text is read: a successful answer may quote
# the word "error" further down (a file listing, source code, a log), its first line rarely does.
_EXIT_CODE = re.compile(
    r"<returncode>\s*(-?\d+)\s*</returncode>|\bexit(?:ed with)? (?:code|status)[:= ]+(-?\d+)", re.IGNORECASE
)
_WRAPPER = re.compile(r"^\s*(?:observation:|<output>|output:)\s*", re.IGNORECASE)
_FAILURE = re.compile(
    r"\b(?:error|errors|exception|traceback|fatal|failed|failure|invalid|denied|forbidden|unauthorized|"
    r"not found|no such|cannot|can't|could not|couldn't|unable to|unknown|unrecognized|unexpected|malformed|"
    r"refused|timed out|timeout|did not pass|wrong|usage:)\b|\bnot (?:allowed|permitted|supported)\b"
)
# Substrings one of which every failure word contains: one cheap scan (no word boundaries) before the regex.
_FAILURE_HINT = re.compile(
    "err|xcept|trace|fatal|fail|invalid|denied|forbid|auth|not |no such|can|could|unable|unknown|unrecog|"
    "unexpect|malform|refused|time|did not|wrong|usage:"
)
_HEAD = 240


def looks_failed(result: Any) -> bool:
    """Whether a result reports a failure (a rejected edit, a non-zero exit, a traceback, an error line).

    Structured results fail when they say so (``{"error": ...}``, ``{"ok": false}``, ``{"success": false}``,
    ``{"status": "error"}``). Text fails on a non-zero exit code, a Python traceback, or a failure word in its
    first line (after a harness wrapper such as ``Observation:``).
    """
    if isinstance(result, Mapping):
        return _mapping_failed(result)
    if not isinstance(result, str) or not result:
        return False
    if len(result) <= _CACHED_TEXT:
        return _short_failed(result)
    return text_failed(result)


@functools.lru_cache(maxsize=4_096)
def _short_failed(result: str) -> bool:
    return text_failed(result)


def text_failed(result: str) -> bool:
    """:func:`looks_failed` of a text."""
    window = result[:2_000]
    if "eturncode" in window or "xit" in window or "XIT" in window:  # cheap filter before the regex
        code = _EXIT_CODE.search(window)
        if code is not None:
            value = code.group(1) or code.group(2)
            return value.strip() not in ("0", "-0")
    if "Traceback (most recent call last)" in result[:20_000]:
        return True
    head = result[:_HEAD].lstrip()
    if head[:1] in ("O", "o", "<"):  # a harness wrapper such as "Observation:" or "<output>"
        head = _WRAPPER.sub("", head).lstrip()
    first = head.split("\n", 1)[0].casefold()
    return _FAILURE_HINT.search(first) is not None and _FAILURE.search(first) is not None


def _mapping_failed(result: Mapping[Any, Any]) -> bool:
    try:
        error = result.get("error")
        if error not in (None, False, "", [], {}):
            return True
        for key in ("ok", "success"):
            if result.get(key) is False:
                return True
        status = result.get("status")
        return isinstance(status, str) and status.casefold() in ("error", "failed", "failure")
    except Exception:  # a hostile mapping: not a failure we can read
        return False


# -- "still running" ------------------------------------------------------------------------------------
_IN_PROGRESS = re.compile(
    r"\b(queued|pending|running|in[ _-]progress|processing|waiting|starting|scheduled|building|deploying|"
    r"provisioning|not (?:yet )?ready|not (?:yet )?done|not finished|still)\b"
)


STATUS_CHARS, STATUS_WORDS = 48, 6  # a status is short: longer text is data that may mention one


@functools.lru_cache(maxsize=1024)
def _status_says_in_progress(text: str) -> bool:
    return text_says_in_progress(text.casefold())


def text_says_in_progress(folded: str) -> bool:
    """:func:`says_in_progress` of a short status whose case is folded already (its length not checked)."""
    return _IN_PROGRESS.search(folded) is not None


def says_in_progress(result: Any) -> bool:
    """True for a short status answer saying work is still under way ("running", "in progress", ...).

    Polling until such an answer changes is waiting, not looping, so these outcomes get poll patience
    whatever the tool is called. A status, not data that mentions one: "build-18: in progress (step 3/7)"
    qualifies, "account 42: balance 0, last refund pending" does not.
    """
    if not isinstance(result, str) or len(result) > STATUS_CHARS or len(result.split()) > STATUS_WORDS:
        return False
    return _status_says_in_progress(result)
