"""The HTML review page renders in a real browser (headless Chromium) and shows the chart with the trip."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from loopguard_core.review import render_session

CHROMIUM = next(
    (
        p
        for p in (os.environ.get("LOOPGUARD_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"))
        if p and Path(p).exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (/usr/bin/chromium; apt-get install chromium)")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_html_review_renders_in_headless_chromium(db: Path, session: Callable[..., str], tmp_path: Path) -> None:
    sid = session(turns=8)
    page = tmp_path / "review.html"
    page.write_text(render_session(db, sid, format="html"), encoding="utf-8")
    url = page.as_uri()

    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    # The browser parsed the page into a DOM holding the inline SVG chart, its bars, the cost line and the trip.
    assert '<svg id="lg-chart"' in rendered
    assert rendered.count('class="bar"') == 17  # 8 model turns + 8 tool calls + 1 trip
    assert 'class="cost"' in rendered and 'class="trip"' in rendered and "trip: loop" in rendered

    shot = tmp_path / "review.png"
    result = _chromium("--window-size=1100,1300", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 1300)

    image_mod = pytest.importorskip("PIL.Image")
    with image_mod.open(shot) as img:
        rgb = img.convert("RGB")
        colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20) or []}
    # Pixels of the chart's colours prove the SVG was painted, not just parsed: model bars and trip line.
    assert any(abs(r - 0x4C) < 12 and abs(g - 0x78) < 12 and abs(b - 0xA8) < 12 for r, g, b in colours)
    assert any(abs(r - 0xD6) < 20 and abs(g - 0x27) < 20 and abs(b - 0x28) < 20 for r, g, b in colours)
    if os.environ.get("LOOPGUARD_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LOOPGUARD_KEEP_SCREENSHOT"])
