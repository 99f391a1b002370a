"""Run the documented "my agent is stopped when it loops" examples, so the docs cannot drift from what works.

Each testing kit's module docstring holds the example after a line ending in ``::``; each
``docs/frameworks/<framework>.md`` repeats it in its "Testing your agent" section.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["docstring_example", "markdown_example", "run_example"]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "frameworks"


def docstring_example(module: ModuleType) -> str:
    """The literal block after the docstring's ``The test "...":: `` line."""
    lines = (module.__doc__ or "").splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("The test ") and line.endswith("::"))
    block: list[str] = []
    for line in lines[start + 2 :]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def markdown_example(doc: str, section: str = "Testing your agent") -> str:
    """The first ```python block of ``## <section>`` in ``docs/frameworks/<doc>``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match is not None, f"no python block in the {section!r} section of {doc}"
    return match.group(1)


def run_example(code: str) -> list[str]:
    """Execute the example and call each ``test_*`` function it defines; returns their names."""
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    exec(compile(code, "<doc example>", "exec"), namespace)
    tests = [name for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    assert tests, "the example defines no test function"
    for name in tests:
        namespace[name]()
    return tests
