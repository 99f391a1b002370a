"""What the project tells a user to read or run points at something real, in the right words.

Skip reasons are shown to whoever runs the tests (``pytest -rs``): a file they name must exist. Examples
print what they did: an example of one framework does not speak in another framework's terms.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The calls whose text reaches the user running the tests.
SKIP_CALLS = {"skip", "skipif", "importorskip", "xfail", "fail", "require_service"}
#: A file name in prose: a path ending in one of the extensions the repository keeps.
FILE_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:md|py|txt|toml|json|jsonl|ya?ml|cfg|ini|sh|lua))\b")


def _strings(node: ast.AST) -> Iterator[str]:
    """Every literal string inside ``node``, f-string pieces included."""
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child.value


def _skip_texts() -> Iterator[tuple[str, int, str]]:
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in SKIP_CALLS:
                for text in _strings(node):
                    yield str(path.relative_to(ROOT)), node.lineno, text


def _exists(name: str, test_file: str) -> bool:
    here = (ROOT / test_file).parent
    return any((base / name).exists() for base in (ROOT, ROOT / "docs", here))


def test_the_scan_sees_the_skip_reasons() -> None:
    texts = [text for _, _, text in _skip_texts()]
    assert any("pip install 'loopguard-core[" in t for t in texts)
    assert any("=1 to fail" in t for t in texts)  # a piece of an f-string: the PostgreSQL and Redis skips


def test_every_file_a_skip_reason_names_exists() -> None:
    missing = [
        f"{test_file}:{line}: {name!r} in {text!r}"
        for test_file, line, text in _skip_texts()
        for name in FILE_NAME.findall(text)
        if not _exists(name, test_file)
    ]
    assert not missing, "skip/fail reasons name files that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py") if "crewai" not in p.name))
def test_examples_outside_crewai_do_not_speak_of_a_crew(example: str) -> None:
    text = (ROOT / "examples" / example).read_text(encoding="utf-8")
    assert not re.search(r"\bcrews?\b", text, re.IGNORECASE), f"{example} calls its agents a crew"


def test_the_delegation_example_names_what_it_stopped() -> None:
    text = (ROOT / "examples" / "pydantic_ai_delegation.py").read_text(encoding="utf-8")
    assert 'print(f"loopguard stopped the editor and its researcher: {trip}")' in text
