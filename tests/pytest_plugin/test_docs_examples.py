"""docs/testing.md stays in step with the plugin: its example test files run (and pass) under pytester, and the
report it shows is the one they print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helpers import RunPytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
FRAMEWORKS = ("loopguard_langchain.testing", "langchain.agents", "loopguard_pydantic_ai.testing", "pydantic_ai")


def example_files() -> dict[str, str]:
    """Each ```python block of the doc that starts with a ``# test_*.py`` line, by that file name."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    files = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        match = re.fullmatch(r"# (test_\w+\.py)", first.strip())
        if match:
            files[match.group(1)] = rest
    return files


def report_sample() -> list[str]:
    """The lines of the doc's sample report, as fnmatch patterns (a line ending in '...' matches its start)."""
    text = DOC.read_text(encoding="utf-8").split("## The report", 1)[1]
    sample = re.search(r"```text\n(.*?)```", text, re.S)
    assert sample is not None, "no sample report in docs/testing.md"
    lines = []
    for line in sample.group(1).splitlines():
        if line.strip() in ("", "..."):
            continue
        if line.startswith("="):  # the separator: as wide as the terminal
            line = "*= " + line.strip("= ") + " =*"
        pattern = line[:-3] + "*" if line.endswith("...") else line
        lines.append(pattern.replace("[", "[[]"))
    return lines


def test_the_doc_has_the_examples_it_promises() -> None:
    assert set(example_files()) == {"test_support_agent.py", "test_report_reader.py", "test_drive.py"}


def test_the_docs_examples_pass_and_print_the_report_shown(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    for module in FRAMEWORKS:  # imported here once: an inner run's imports do not last
        pytest.importorskip(module, reason="the examples need the langchain and pydantic-ai extras")
    files = example_files()
    for name, code in files.items():
        pytester.makepyfile(**{name.removesuffix(".py"): code})
    result = run_pytest("--loopguard-report")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(report_sample())
