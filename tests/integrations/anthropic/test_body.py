"""The Messages API body readers (``loopguard_anthropic._body``), and the usage they hand the breaker."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

pytest.importorskip("anthropic", reason="needs the anthropic extra: pip install 'loopguard-core[anthropic]'")

import anthropic

from loopguard_anthropic import guard
from loopguard_anthropic._body import usage_tokens
from loopguard_anthropic.testing import ScriptedAPI
from loopguard_core import Breaker

FULL = {"input_tokens": 100, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 30, "output_tokens": 20}


def _message(message_id: str, content: list[Any], *, stop: str = "tool_use", usage: Any = None) -> dict[str, Any]:
    """A Messages API reply, as the API sends it."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 10, "output_tokens": 5},
    }


def _scripted(answer: Any) -> anthropic.Anthropic:
    """A real client whose HTTP requests ``answer`` serves (no network)."""
    transport = httpx2.MockTransport(answer)
    return anthropic.Anthropic(
        api_key="test", base_url="http://scripted.test", http_client=httpx2.Client(transport=transport), max_retries=0
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (FULL, (100, 7, 30, 20)),
        ({**FULL, "cache_read_input_tokens": 0}, (100, 7, 0, 20)),
        ({"input_tokens": 100, "output_tokens": 20}, (100, 0, 0, 20)),  # no cache fields
        ({**FULL, "cache_creation_input_tokens": None}, (100, 0, 30, 20)),  # null, as the API may send it
        ({**FULL, "input_tokens": -5}, (0, 7, 30, 20)),  # nonsense counts count nothing
        ({**FULL, "output_tokens": True}, (100, 7, 30, 0)),
        ({**FULL, "output_tokens": 2.5}, (100, 7, 30, 0)),
        ({**FULL, "input_tokens": "100"}, (0, 7, 30, 20)),
        ({}, (0, 0, 0, 0)),
        (None, (0, 0, 0, 0)),
    ],
)
def test_usage_tokens_reads_every_count_and_zeroes_what_is_not_one(
    usage: dict[str, Any] | None, expected: tuple[int, int, int, int]
) -> None:
    assert usage_tokens(usage) == expected


def test_cache_reads_and_writes_count_toward_the_runs_tokens() -> None:
    def answer(request: Any) -> Any:
        message = _message("msg_1", [{"type": "text", "text": "done"}], stop="end_turn", usage=FULL)
        return httpx2.Response(200, json=message)

    client = _scripted(answer)
    breaker = Breaker()
    guarded = guard(client, breaker)

    with breaker.run():
        guarded.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        assert breaker.usage().tokens == 100 + 7 + 30 + 20


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": "msg_1", "content": []}', {"id": "msg_1", "content": []}),
        ('{"text": "caf\u00e9 \u2713"}'.encode(), {"text": "caf\u00e9 \u2713"}),  # UTF-8 beyond ASCII
        ('{"id": "msg_2"}'.encode("utf-16"), {"id": "msg_2"}),  # a byte-order mark: sniffed as json.loads does
        ('{"id": "msg_3"}'.encode("utf-16-le"), {"id": "msg_3"}),  # zero bytes, no mark
        (b'{"id": "\xff"}', {}),  # not UTF-8: nothing to read, never an exception
        (b'{"id": "\\ud800"}', {"id": "\ud800"}),  # a lone surrogate escape: jiter refuses it, json reads it
        (b'{"n": Infinity, "big": 1180591620717411303424}', {"n": float("inf"), "big": 2**70}),  # as json reads them
        (b"[1, 2]", {}),  # not an object
        (b"", {}),
    ],
)
def test_a_reply_body_is_read_in_any_encoding_json_accepts(content: bytes, expected: dict[str, Any]) -> None:
    from loopguard_anthropic._middleware import _json

    assert _json(content) == expected


# A reply with what a parser can get wrong: text beyond ASCII, a float, an integer past 64 bits, an escape.
ODD_INPUT = {"path": "caf\u00e9/\u2713.txt", "ratio": 0.1, "big": 2**70, "quote": 'say "hi"\n'}
ODD_CALL = ("write", ODD_INPUT)


def _counting_json(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    parses: list[int] = []
    original = httpx2.Response.json

    def json(self: httpx2.Response, **kwargs: Any) -> Any:
        parses.append(1)
        return original(self, **kwargs)

    monkeypatch.setattr(httpx2.Response, "json", json)
    return parses


@pytest.mark.parametrize("on_trip", ["raise", "steer"])
def test_the_sdk_takes_the_guards_parse_of_a_reply_and_gets_what_the_api_sent(
    monkeypatch: pytest.MonkeyPatch, on_trip: str
) -> None:
    parses = _counting_json(monkeypatch)
    plain = (
        ScriptedAPI([ODD_CALL])
        .client(max_retries=0)
        .messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    )
    assert parses == [1]  # unguarded, the SDK parses the reply itself
    breaker = Breaker()
    with breaker.run():
        reply = guard(ScriptedAPI([ODD_CALL]).client(max_retries=0), breaker, on_trip=on_trip).messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert parses == [1]  # guarded, the reply was parsed once, by the guard, and the SDK took that parse
    assert reply.model_dump() == plain.model_dump()
    assert reply.content[0].input == ODD_INPUT  # type: ignore[union-attr]
    assert breaker.usage().tool_calls == 1


def test_a_raw_response_lends_the_guards_parse_once_and_parses_afresh_after(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = _counting_json(monkeypatch)
    client = ScriptedAPI([ODD_CALL]).client(max_retries=0)
    breaker = Breaker()
    with breaker.run():
        raw = guard(client, breaker).messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    first = raw.http_response.json()
    second = raw.http_response.json()
    assert first == second and first is not second  # a caller mutating one never changes the other
    assert parses == [1]  # the second call is the response's own
    assert raw.parse().content[0].input == ODD_INPUT  # type: ignore[union-attr]


async def test_the_async_client_takes_the_guards_parse_too(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = _counting_json(monkeypatch)
    client = ScriptedAPI([ODD_CALL]).async_client(max_retries=0)
    breaker = Breaker()
    with breaker.run():
        reply = await guard(client, breaker).messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert parses == []
    assert reply.content[0].input == ODD_INPUT  # type: ignore[union-attr]


def test_a_response_that_takes_no_attribute_of_its_own_is_left_to_the_sdks_parse() -> None:
    from loopguard_anthropic._middleware import _lend_parse

    class Slotted:  # a response class with __slots__, as an HTTP library might one day have
        __slots__ = ()

        def json(self) -> Any:
            return {"parsed": "by the SDK"}

    response = Slotted()
    _lend_parse(response, {"id": "msg_1"})  # never an exception: the request goes on
    assert response.json() == {"parsed": "by the SDK"}


def _escaped_reply(request: Any) -> Any:  # json.dumps escapes every character beyond ASCII: \u00e9, \ud83d\ude00
    use = {"type": "tool_use", "id": "toolu_esc", "name": "write", "input": {**ODD_INPUT, "emoji": "\U0001f600"}}
    message = _message("msg_esc", [use])
    return httpx2.Response(200, content=json.dumps(message).encode(), headers={"content-type": "application/json"})


def test_escaped_text_beyond_ascii_reaches_the_caller_as_the_api_sent_it() -> None:
    escaped = _scripted(_escaped_reply)
    raw = ScriptedAPI([ODD_CALL]).client(max_retries=0)
    breaker = Breaker()
    hi = [{"role": "user", "content": "hi"}]
    with breaker.run():
        first = guard(escaped, breaker).messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=hi)
    with breaker.run():  # a parser's string cache must not carry the first reply's text into the next
        second = guard(raw, breaker).messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=hi)
    assert first.content[0].input == {**ODD_INPUT, "emoji": "\U0001f600"}  # type: ignore[union-attr]
    assert second.content[0].input == ODD_INPUT  # type: ignore[union-attr]


def test_a_tool_changing_its_arguments_in_place_never_changes_what_the_guard_recorded() -> None:
    client = ScriptedAPI([("plan", {"opts": {"steps": [1, 2]}})]).client(max_retries=0)
    breaker = Breaker()
    guarded = guard(client, breaker)
    middleware = guarded._middleware[0]
    with breaker.run():
        reply = guarded.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    args = reply.content[0].input  # type: ignore[union-attr]
    args["opts"]["steps"].append("changed by the tool")  # what a tool may do to the arguments it was given
    args["opts"]["seen"] = True
    assert middleware._pending["toolu_000_0"] == ("plan", {"opts": {"steps": [1, 2]}})  # reported by after_tool later
