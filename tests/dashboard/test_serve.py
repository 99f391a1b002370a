"""``loopguard serve``: its checks before starting, and a real server started by the command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

click = pytest.importorskip("click", reason="needs the cli extra")
pytest.importorskip("uvicorn", reason="needs the dashboard extra: pip install 'loopguard-core[dashboard]'")

from click.testing import CliRunner  # noqa: E402

from loopguard_core.cli import _serve  # noqa: E402

from .conftest import TOKEN, World  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# The command as `loopguard serve` runs it (the group in loopguard_core.cli registers the same module).
LAUNCH = textwrap.dedent(
    """
    import sys, click
    from loopguard_core.cli import _serve
    group = click.Group()
    _serve.register(group)
    group.main(args=sys.argv[1:], prog_name="loopguard")
    """
)


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    group = click.Group()
    _serve.register(group)
    return CliRunner().invoke(group, ["serve", *args], env=env or {})


def test_no_ledger_is_refused(tmp_path: Path) -> None:
    result = invoke("--db", str(tmp_path / "missing.db"))
    assert result.exit_code == 2 and "no ledger at" in result.output


def test_another_host_warns_and_needs_an_explicit_token(shared_world: World) -> None:
    result = invoke("--db", str(shared_world.db), "--host", "0.0.0.0", env={"LOOPGUARD_DASHBOARD_TOKEN": ""})
    assert result.exit_code == 2
    assert "WARNING: listening on 0.0.0.0, not loopback" in result.output
    assert "needs an explicit token" in result.output


def test_a_short_token_is_refused(shared_world: World) -> None:
    result = invoke("--db", str(shared_world.db), "--token", "short")
    assert result.exit_code == 2 and "at least 16 characters" in result.output


def test_the_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, shared_world: World) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = invoke("--db", str(shared_world.db))
    assert result.exit_code == 2 and 'pip install "loopguard-core[dashboard]"' in result.output


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    found = re.search(r"loopguard dashboard on (http://127\.0\.0\.1:\d+/)", first)
    if not found:
        proc.kill()
        pytest.fail(f"the dashboard did not start: {first!r} {proc.communicate()[1]!r}")
    lines = [first]
    if "read-only" not in first:
        lines.append(proc.stdout.readline())
    return proc, found.group(1), lines


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def _post(url: str, data: dict[str, str], origin: str) -> Any:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), headers={"Origin": origin})
    try:
        return urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    except urllib.error.HTTPError as exc:
        return exc


def test_serve_starts_a_dashboard_with_a_generated_token(shared_world: World) -> None:
    proc, url, lines = _start("--db", str(shared_world.db), "--budgets", shared_world.budgets_url)
    try:
        token = re.search(r"token \(log in at .*login to approve, reject or attest\): (\S+)", lines[1])
        assert token, lines
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and shared_world.loop_sid in page.read().decode()
        with urllib.request.urlopen(url + "budgets", timeout=10) as page:
            assert "tenant-acme" in page.read().decode()
        origin = url.rstrip("/")
        assert _post(url + "login", {"token": "wrong-token-0123456789"}, origin).status == 403
        ok = _post(url + "login", {"token": token.group(1)}, origin)
        assert ok.status == 303 and "HttpOnly" in ok.headers["set-cookie"]
    finally:
        _stop(proc)


def test_serve_read_only_takes_no_token(shared_world: World) -> None:
    proc, url, lines = _start("--db", str(shared_world.db), "--read-only", env={"LOOPGUARD_DASHBOARD_TOKEN": TOKEN})
    try:
        assert "(read-only)" in lines[0] and len(lines) == 1
        assert _post(url + "login", {"token": TOKEN}, url.rstrip("/")).status == 403
    finally:
        _stop(proc)


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://lg:hunter2@db/ledger?schema=lg", "postgresql://lg:***@db/ledger?schema=lg"),
        ("postgresql://lg@db/ledger?password=hunter2&schema=lg", "postgresql://lg@db/ledger?schema=lg"),
        ("sqlite:///budgets.db", "sqlite:///budgets.db"),
        ("runs.db", "runs.db"),
    ],
)
def test_printed_locations_hold_no_password(given: str, printed: str) -> None:
    assert _serve._redacted(given) == printed
