"""The dashboard in a real headless browser: Debian's Chromium driven by Playwright (``executable_path``; no
browser download). Pages render from a real ledger, a row written after the page loaded appears without a
reload, an approval given in the browser resumes a run waiting in another process, and a cross-origin POST is
refused.

``LOOPGUARD_SCREENSHOTS=1`` writes the screenshots of docs/operations.md (docs/img/dashboard-*.png).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loopguard_core import Breaker, Ledger
from loopguard_core.approvals import approval_queue
from loopguard_core.dashboard import create_app
from tests.stores.conftest import REQUIRE_ENV, services_required

from .conftest import EVIL_AGENT, EVIL_SID, MODEL, PRICES, SPENT, TOKEN, World, build_world, write_hostile

CHROMIUM = os.environ.get("LOOPGUARD_CHROMIUM") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "img"
TIMEOUT_MS = 10_000


def _need_browser() -> None:
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install playwright; the dev extra has it)"
    elif importlib.util.find_spec("uvicorn") is None:
        missing = "uvicorn is not installed (pip install 'loopguard-core[dashboard]')"
    elif not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LOOPGUARD_CHROMIUM)"
    if missing is None:
        return
    if services_required():
        pytest.fail(f"{missing}; {REQUIRE_ENV}=1 makes this a failure", pytrace=False)
    pytest.skip(f"{missing}; the browser tests need Playwright and Debian's chromium (never a downloaded browser)")


class Served:
    """An ASGI app on a free loopback port, served by uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    _need_browser()
    return build_world(tmp_path_factory.mktemp("browser"), hostile=False)  # hostile names: tested below


@pytest.fixture(scope="module")
def dashboard(world: World) -> Iterator[Served]:
    app = create_app(world.db, budgets=world.budgets_url, token=TOKEN, previews=True, live_seconds=2, poll_seconds=0.25)
    served = Served(app)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 640})
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def shot(page: Any, name: str) -> None:
    """Save docs/img/dashboard-NAME.png when LOOPGUARD_SCREENSHOTS=1 (normal runs leave tracked files alone)."""
    if os.environ.get("LOOPGUARD_SCREENSHOTS") == "1":
        page.wait_for_timeout(150)  # let the live badge settle
        page.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)


def live(page: Any) -> None:
    page.wait_for_selector('#live-status[data-state="live"]')


def login(page: Any) -> None:
    page.get_by_role("link", name="Log in with the dashboard's token").click()
    page.fill('input[name="token"]', TOKEN)
    page.get_by_role("button", name="Log in").click()


def crawler_run(world: World) -> None:
    """A run that is working right now: a few model and tool calls under its limits."""
    ledger = Ledger(world.db)
    breaker = Breaker(ledger=ledger, prices=PRICES, max_turns=25, max_cost_usd=1.0)
    with breaker.run("crawler-5521"):
        for page_no in range(4):
            breaker.before_model(agent="crawler", **MODEL)
            breaker.after_model(agent="crawler", **SPENT)
            breaker.before_tool("fetch_page", {"page": page_no}, agent="crawler")
            breaker.after_tool("fetch_page", {"page": page_no}, result=f"page {page_no}", agent="crawler")
    ledger.close()


def test_pages_render_with_data_from_a_real_ledger(world: World, dashboard: Served, page: Any) -> None:
    time.sleep(max(0.0, 2.2 - (time.time() - world.built_at)))  # the world's runs are no longer "in progress"
    crawler_run(world)
    page.goto(dashboard.url + "/")
    live(page)
    in_progress = page.locator("#runs-live table.runs tbody tr")
    assert in_progress.count() == 2  # the crawler working now, and the run waiting for a person
    assert "crawler-5521" in page.locator("#runs-live").inner_text()
    recent = page.locator("#runs-recent").inner_text()
    assert "stopped: loop" in recent and "$0.4500 of $2.00" in recent
    shot(page, "runs")

    page.get_by_role("link", name=world.loop_sid).first.click()
    card = page.locator(".trip-card")
    assert "trip: loop" in card.inner_text()
    assert card.locator(".same-tag").count() == 4
    shot(page, "run")

    page.goto(f"{dashboard.url}/budgets")
    tenant = page.locator("#budget-tenant-acme")
    assert tenant.locator("svg g.bar").count() == 7
    assert tenant.locator("svg polyline.spend").count() == 1
    box = tenant.locator("svg g.bar").nth(4).locator("rect.used").bounding_box()
    assert box is not None and box["height"] > 50  # drawn by the browser, not only present in the markup
    shot(page, "budgets")

    page.goto(f"{dashboard.url}/approvals")
    assert "refund 20 EUR on A-17" in page.locator("#approvals-list").inner_text()
    shot(page, "approvals")

    page.goto(f"{dashboard.url}/run/review?session={world.loop_sid}")
    frame = page.frame_locator("iframe.frame")
    assert "Review frame: session research-7f3a" in frame.locator("h1").inner_text()
    assert frame.locator("#lg-chart rect.bar").count() == 11
    assert "NOT ATTESTED" in page.locator(".attest").inner_text()
    login(page)  # back on the review, with the attest form
    page.wait_for_url(f"**/run/review?session={world.loop_sid}")
    page.fill('input[name="reviewer"]', "ana@example.com")
    page.fill('textarea[name="notes"]', "the loop is expected: the search API was down; sources found by hand")
    shot(page, "review")


def test_hostile_names_stay_text_in_the_browser(world: World, dashboard: Served, page: Any) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    write_hostile(Ledger(world.db))
    for path in ("/", "/trips", f"/run?session={urllib.parse.quote(EVIL_SID, safe='')}"):
        page.goto(dashboard.url + path)
        live(page)
        assert EVIL_SID in page.locator("main").inner_text()
    assert EVIL_AGENT in page.locator("#run-rows").inner_text()
    assert page.locator("main script, main img, main svg[onload], main b:text-is('bold')").count() == 0
    assert dialogs == []


def test_a_row_written_after_the_page_loaded_appears_without_a_reload(
    world: World, dashboard: Served, page: Any
) -> None:
    page.goto(f"{dashboard.url}/run?session={world.ok_sid}")
    live(page)
    page.evaluate("window.__same_page = true")
    rows = page.locator("#run-rows tbody tr")
    before = rows.count()
    Ledger(world.db).record(session_id=world.ok_sid, origin="tool", turn=4, agent="late-writer", tool="label_ticket")
    page.wait_for_selector("#run-rows >> text=late-writer")
    assert rows.count() == before + 1
    assert page.evaluate("window.__same_page") is True  # refreshed in place, not reloaded


def test_polling_takes_over_when_event_streams_are_blocked(world: World, dashboard: Served, page: Any) -> None:
    page.route("**/events", lambda route: route.fulfill(status=503, body="no streams here"))
    page.goto(f"{dashboard.url}/trips")
    page.wait_for_selector('#live-status[data-state="polling"]')
    Ledger(world.db).record(
        session_id="poll-check", origin="breaker", turn=1, tool="poller", passed=False, breach_reason="poll_seen"
    )
    page.wait_for_selector("#trips-list >> text=trip: poll_seen")


WAITING_RUN = textwrap.dedent(
    """
    import json, sys
    from loopguard_core import Breaker, Ledger, ToolPolicy

    db, out = sys.argv[1], sys.argv[2]
    tools = {"refund": ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['amount_eur']} EUR on {a['order']}")}
    breaker = Breaker(ledger=Ledger(db), tools=tools, approval_wait_seconds=60)
    asked = {"order": "B-99", "amount_eur": 40}
    with breaker.run("refund-b99"):
        approved = breaker.before_tool("refund", asked, agent="support")   # waits here for a person
        args = approved.args() if approved is not None and approved.args() is not None else asked
        with open(out, "a", encoding="utf-8") as body:                     # the tool's body: runs once
            body.write(json.dumps(args, sort_keys=True) + "\\n")
        breaker.after_tool("refund", asked, result=f"refunded {args['amount_eur']} EUR", agent="support")
    print("resumed", flush=True)
    """
)


def test_an_approval_in_the_browser_resumes_a_run_waiting_in_another_process(
    world: World, dashboard: Served, page: Any, tmp_path: Path
) -> None:
    body = tmp_path / "refund-body.jsonl"
    run = subprocess.Popen(
        [sys.executable, "-c", WAITING_RUN, str(world.db), str(body)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queue = approval_queue(str(world.db))
        deadline = time.monotonic() + 20
        while not [r for r in queue.list("pending") if r.session_id == "refund-b99"]:
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the run never asked for approval"
            time.sleep(0.05)
        (request,) = [r for r in queue.list("pending") if r.session_id == "refund-b99"]

        page.goto(f"{dashboard.url}/approvals")
        page.locator(f'a[href="/approvals/{request.id}"]').click()
        assert "refund 40 EUR on B-99" in page.locator("#approval-detail").inner_text()
        login(page)  # the login page sends the browser back to the request
        page.wait_for_url(f"**/approvals/{request.id}")
        page.fill('form.approve input[name="by"]', "carol")
        page.fill('form.approve textarea[name="args"]', '{"order": "B-99", "amount_eur": 25}')
        page.fill('form.approve input[name="note"]', "partial refund agreed with the customer")
        shot(page, "approval")
        page.get_by_role("button", name="Approve").click()
        assert "approved: the run goes on when it asks again" in page.locator(".notice").inner_text()

        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        assert "resumed" in out
        assert body.read_text().splitlines() == [json.dumps({"amount_eur": 25, "order": "B-99"}, sort_keys=True)]
        page.wait_for_selector("#approval-detail .status.used")  # the run used the decision: live on the page
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    rows = list(Ledger(world.db, read_only=True).rows("refund-b99"))
    assert [r.breach_reason for r in rows if r.origin == "approval"] == [
        f"requested:{request.id}",
        f"approved:{request.id}",
    ]
    assert [r.agent for r in rows if r.origin == "approval"][1] == "carol"
    assert len([r for r in rows if r.origin == "tool" and r.tool == "refund"]) == 1


class _Attacker(BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_post_from_another_origin_is_refused(world: World, dashboard: Served, page: Any) -> None:
    # Log in and read a real CSRF value: even a page that somehow had it cannot post from elsewhere.
    page.goto(f"{dashboard.url}/login?next=/approvals/{world.request_id}")
    page.fill('input[name="token"]', TOKEN)
    page.get_by_role("button", name="Log in").click()
    csrf = page.locator('form.approve input[name="csrf"]').get_attribute("value")
    target = f"{dashboard.url}/approvals/{world.request_id}/approve"
    # Another port on the same host is the same *site* (so the SameSite cookie is sent) but another origin.
    _Attacker.html = f"""<!DOCTYPE html><html><body>
        <form id="f" method="post" action="{target}">
          <input name="by" value="mallory"><input name="csrf" value="{csrf}">
          <input name="args" value='{{"order": "A-17", "amount_eur": 20000}}'>
        </form>
        <script>
          fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
                              body: new URLSearchParams({{by: "mallory", csrf: "{csrf}"}})}})
            .finally(() => document.getElementById("f").submit());
        </script></body></html>""".encode()
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with page.expect_response(lambda r: r.url == target and r.request.method == "POST") as answered:
            page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        assert answered.value.status == 403
        page.wait_for_url(target)
        assert "another origin" in page.locator(".error").inner_text()
    finally:
        attacker.shutdown()
        attacker.server_close()
    request = approval_queue(str(world.db)).get(world.request_id)
    assert request is not None and request.status == "pending"
