from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import loopguard_core.tutorial as tutorial

TUTORIAL_MODULES = (
    "spec_writer",
    "circuit_breaker",
    "ledger",
    "agent_loop",
    "review_surface",
    "attestation_fingerprint",
)


def test_all_lists_every_public_name_and_each_resolves() -> None:
    assert sorted(tutorial.__all__) == sorted(set(tutorial.__all__))
    for name in tutorial.__all__:
        assert getattr(tutorial, name) is not None
    for name in (
        "SpecWriter",
        "SpecResult",
        "QUESTIONS",
        "CircuitBreaker",
        "CircuitBreakerError",
        "Ledger",
        "LedgerRow",
        "AgentLoop",
        "LoopResult",
        "MessagesEndpoint",
        "LLMClient",
        "ReviewSurface",
        "ReviewFrame",
        "DiffResult",
        "AttestationResult",
        "SessionNotFoundError",
        "AttestationFingerprint",
        "DriftAlert",
        "ThresholdConfig",
    ):
        assert name in tutorial.__all__


def test_each_tutorial_module_exists_under_its_tutorial_name() -> None:
    import importlib

    for module in TUTORIAL_MODULES:
        assert importlib.import_module(f"loopguard_core.tutorial.{module}").__all__


def test_importing_the_layer_loads_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "OURS = ('loopguard_core', 'loopguard_core__mypyc')  # the package and, compiled, its mypyc runtime\n"
        "before = set(sys.modules)\n"
        "import loopguard_core.tutorial\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(n for n in new if n not in sys.stdlib_module_names and n not in OURS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _Usage:
    def __init__(self, i: int, o: int) -> None:
        self.input_tokens, self.output_tokens = i, o


class _Block:
    def __init__(self, text: str) -> None:
        self.text = text


class _Response:
    def __init__(self, text: str, stop_reason: str) -> None:
        self.usage, self.content, self.stop_reason = _Usage(100, 50), [_Block(text)], stop_reason


class _Client:
    def __init__(self, replies: Iterable[_Response]) -> None:
        self._replies = list(replies)
        self.messages = self

    def create(self, **_: Any) -> _Response:
        return self._replies.pop(0)


def _answers(*values: str) -> Callable[[str], str]:
    it = iter(values)
    return lambda _prompt: next(it)


def test_the_tutorials_whole_flow_with_one_import_line(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)  # the tutorial's default paths: spec.db and ledger.db in the working directory
    from loopguard_core.tutorial import AgentLoop, CircuitBreaker, Ledger, ReviewSurface, SpecWriter

    spec = SpecWriter(input_fn=_answers("audit one URL", "render JS", "report printed")).run()
    loop = AgentLoop(spec, CircuitBreaker(turn_limit=2), Ledger(), _Client([_Response("x", "tool_use")] * 2))
    result = loop.run("audit https://example.com")
    assert (result.success, result.turns, result.total_tokens, result.breach_reason) == (
        False,
        3,
        300,
        "turn_ceiling",
    )
    surface = ReviewSurface()
    text = surface.render(spec.session_id)
    assert "Turns completed:     2" in text
    assert "Total tokens:        300" in text
    assert "    - turn 3: circuit_breaker fired (turn_ceiling)" in text
    attestation = surface.attest(spec.session_id, reviewer="dana", notes="loop confirmed")
    assert surface.get_attestations(spec.session_id) == [attestation]
    assert "=== CIRCUIT BREAKER CHECKPOINT ===" in capsys.readouterr().out
