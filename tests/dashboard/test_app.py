"""Every route of the dashboard, on a real ledger, approval queue and budget store (Starlette's TestClient)."""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from loopguard_core import Ledger
from loopguard_core.approvals import approval_queue
from loopguard_core.dashboard import create_app
from loopguard_core.dashboard._data import parse_mark
from loopguard_core.errors import MissingExtra
from loopguard_core.review import ReviewSurface

from .conftest import EVIL_AGENT, EVIL_SID, TOKEN, World

ORIGIN = "http://127.0.0.1:8765"


def client(world: World, **options: Any) -> TestClient:
    options.setdefault("token", None if options.get("read_only") else TOKEN)
    app = create_app(world.db, budgets=world.budgets_url, **options)
    return TestClient(app, base_url=ORIGIN, follow_redirects=False)


def login(c: TestClient) -> None:
    r = c.post("/login", data={"token": TOKEN, "next": "/approvals"}, headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"] == "/approvals"


def csrf(c: TestClient, url: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', c.get(url).text)
    assert found, f"no form on {url}"
    return found.group(1)


def text(html: str) -> str:
    """The page's text, tags dropped and whitespace collapsed (for phrases that span elements)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def status_of(world: World, request_id: str) -> str:
    request = approval_queue(str(world.db)).get(request_id)
    assert request is not None
    return request.status


# -- pages ------------------------------------------------------------------------------------------------
def test_runs_page_shows_every_run_with_its_spend_against_its_limits(shared_world: World) -> None:
    page = client(shared_world, read_only=True).get("/")
    assert page.status_code == 200
    html = page.text
    for sid in (shared_world.loop_sid, shared_world.cost_sid, shared_world.ok_sid, shared_world.waiting_sid):
        assert f'href="/run?session={sid}"' in html
    words = text(html)
    assert "stopped: loop" in words and "stopped: cost_ceiling" in words and "waiting for approval (1)" in words
    assert "$0.4500 of $2.00" in words and "5 of 40" in words  # the loop run: cost and turns against its limits
    assert "$0.1800 of $0.25" in words  # the batch that hit its ceiling
    assert (
        'href="/budgets#budget-tenant-acme" title="tenant-acme: cost $0.99 of $5.00 this day">tenant-acme · 20 %'
        in html
    )
    assert "3 trips" in words


def test_in_progress_and_recent_follow_live_seconds(shared_world: World) -> None:
    c = client(shared_world, read_only=True, live_seconds=300)
    live = c.get("/").text.split('id="runs-recent"')[0]
    assert shared_world.loop_sid in live  # every row is a moment old
    c.app.state.data.wall_clock = lambda: time.time() + 3_600  # type: ignore[attr-defined]
    live, recent = c.get("/").text.split('id="runs-recent"')
    assert shared_world.loop_sid not in live and shared_world.loop_sid in recent
    assert shared_world.waiting_sid in live  # a run waiting for a person stays in progress


def test_a_run_page_shows_its_trip_and_the_calls_that_caused_it(shared_world: World) -> None:
    html = client(shared_world, read_only=True).get(f"/run?session={shared_world.loop_sid}").text
    trips = html.split('id="trips"')[1].split("</section>")[0]
    words = text(trips)
    assert "trip: loop" in words and "tool web_search" in words
    assert "the last 3 call(s) to web_search before the refused one; 3 asked for exactly what was refused" in words
    assert trips.count("same input</span>") == 4  # three earlier calls and the refused one share one input hash
    limits = text(html.split('id="run-limits"')[1].split("</section>")[0])
    assert "Budgets it draws from tenant-acme · 20 %" in limits  # the budget's current period, every run in it
    assert "support-bot · 2 %" in limits and "$0.99 of $5.00" in limits
    assert "start max_turns=40 max_cost_usd=2.0" in html  # the start row, in the rows table


def test_a_model_trip_shows_the_model_calls_before_it(shared_world: World) -> None:
    html = client(shared_world, read_only=True).get(f"/run?session={shared_world.cost_sid}").text
    words = text(html.split('id="trips"')[1].split("</section>")[0])
    assert "trip: cost_ceiling" in words and "model call(s) before the refusal" in words


def test_unknown_run_is_404(shared_world: World) -> None:
    r = client(shared_world, read_only=True).get("/run?session=nope")
    assert r.status_code == 404 and "no run &#39;nope&#39;" in r.text


def test_trips_page_lists_every_trip_newest_first(shared_world: World) -> None:
    html = client(shared_world, read_only=True).get("/trips").text
    order = [m.group(1) for m in re.finditer(r'<span class="status stopped">trip: ([^<]+)</span>', html)]
    assert order == ["&lt;svg onload=alert(3)&gt;", "cost_ceiling", "loop"]


def test_budgets_page_charts_every_period(shared_world: World) -> None:
    html = client(shared_world, read_only=True).get("/budgets").text
    tenant = html.split('id="budget-tenant-acme"')[1].split("</article>")[0]
    assert "7 stored period(s)" in tenant
    assert tenant.count('<g class="bar') == 7  # six days of history and today
    assert 'class="limit"' in tenant and "limit $5.00" in tenant
    assert 'class="spend"' in tenant  # today's cost over time, from the ledger
    today = dt.datetime.now(dt.timezone.utc).strftime("%m-%d")
    assert f"<title>{today}: $0.99 used, 20 % of $5.00</title>" in tenant  # today's 11 calls of $0.09
    support = html.split('id="budget-support-bot"')[1].split("</article>")[0]
    assert "tool calls" in support and "10 of 500" in text(support)


def test_budgets_page_without_a_store_says_how_to_give_one(shared_world: World) -> None:
    app = create_app(shared_world.db, read_only=True)
    html = TestClient(app, base_url=ORIGIN).get("/budgets").text
    assert "--budgets sqlite:///budgets.db" in html


def test_review_page_embeds_the_frame_and_its_attestation_status(shared_world: World) -> None:
    c = client(shared_world, read_only=True)
    html = c.get(f"/run/review?session={shared_world.loop_sid}").text
    frame = ReviewSurface(shared_world.db).frame(shared_world.loop_sid)
    assert "NOT ATTESTED: nobody has attested this session" in html
    assert frame.frame_hash in html
    assert 'sandbox="" srcdoc="&lt;!DOCTYPE html&gt;' in html  # the CLI's HTML render, in a sandboxed frame
    assert "loopguard attest research-7f3a --reviewer NAME --frame-hash" in html  # read-only: the command instead
    html = c.get(f"/run/review?session={shared_world.ok_sid}").text
    assert "ATTESTED by ana@example.com" in html and "matches this frame" in html
    missing = c.get(f"/run/review?session={shared_world.cost_sid}")  # no spec was written for it
    assert missing.status_code == 404 and "spec" in missing.text


def test_approvals_list_and_detail(shared_world: World) -> None:
    c = client(shared_world, read_only=True)
    html = c.get("/approvals").text
    assert shared_world.request_id[:12] in html and "support-2291" in html and "refund" in html
    assert "refund 20 EUR" not in html  # previews are off by default
    detail = c.get(f"/approvals/{shared_world.request_id}").text
    assert shared_world.request_id in detail and "hidden: start the dashboard with --previews" in detail
    assert "refund 20 EUR" not in detail
    assert "tool_calls 1" in detail and "cost_usd 0.09" in detail
    assert c.get("/approvals/unknown").status_code == 404
    assert c.get("/approvals?status=approved").status_code == 200


def test_previews_are_shown_only_when_enabled(shared_world: World) -> None:
    c = client(shared_world, read_only=True, previews=True)
    assert "refund 20 EUR on A-17" in c.get("/approvals").text
    assert "refund 20 EUR on A-17" in c.get(f"/approvals/{shared_world.request_id}").text


def test_state_events_and_static_files(shared_world: World) -> None:
    c = client(shared_world, read_only=True)
    version = c.get("/api/state").json()["version"]
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    assert f'data-version="{version}"' in c.get("/").text
    settings = c.app.state.settings  # type: ignore[attr-defined]
    settings.stream_seconds, settings.poll_seconds = 0.2, 0.05
    events = c.get("/events")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert f"event: change\ndata: {version}\n\n" in events.text
    assert "EventSource" in c.get("/static/live.js").text
    assert c.get("/static/dashboard.css").headers["content-type"].startswith("text/css")
    assert c.get("/static/nope.js").status_code == 404


def test_every_response_carries_the_security_headers(shared_world: World) -> None:
    r = client(shared_world, read_only=True).get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


def test_live_updates_see_a_new_row(world: World) -> None:
    c = client(world, read_only=True)
    before = c.get("/api/state").json()["version"]
    Ledger(world.db).record(session_id=world.loop_sid, origin="model", turn=9, agent="late", input_text="x")
    time.sleep(0.6)  # the fingerprint is cached for half a second across connections
    assert c.get("/api/state").json()["version"] != before


# -- escaping ----------------------------------------------------------------------------------------------
def test_names_from_the_ledger_are_escaped_everywhere(shared_world: World) -> None:
    c = client(shared_world, read_only=True)
    pages = [c.get("/").text, c.get("/trips").text, c.get("/run", params={"session": EVIL_SID}).text]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<svg onload" not in html
        assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#34;sid&#34;)&lt;/script&gt;" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[2] and EVIL_AGENT not in pages[2]
    assert 'href="/run?session=%3Cscript%3Ealert%28%22sid%22%29%3C%2Fscript%3E"' in pages[0]


# -- changes and their protection ----------------------------------------------------------------------------
def test_an_approval_with_edited_arguments_is_decided_and_written_to_the_ledger(world: World) -> None:
    c = client(world)
    login(c)
    url = f"/approvals/{world.request_id}"
    page = c.get(url).text
    assert "Approve" in page and 'name="args"' in page
    r = c.post(
        f"{url}/approve",
        data={"csrf": csrf(c, url), "by": "carol", "args": '{"order": "A-17", "amount_eur": 15}', "note": "partial"},
        headers={"Origin": ORIGIN},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"{url}?decided=approved"
    request = approval_queue(str(world.db)).get(world.request_id)
    assert request is not None and request.status == "approved" and request.decided_by == "carol"
    assert request.args() == {"order": "A-17", "amount_eur": 15} and request.reason == "partial"
    rows = [r for r in Ledger(world.db, read_only=True).rows(world.waiting_sid) if r.origin == "approval"]
    assert [(r.breach_reason, r.agent) for r in rows][-1] == (f"approved:{world.request_id}", "carol")
    after = c.get(f"{url}?decided=approved").text
    assert "approved: the run goes on when it asks again" in after and 'name="args"' not in after
    assert "/approve" not in after.split("<main>")[1]  # no form once decided
    again = c.post(
        f"{url}/reject", data={"csrf": csrf(c, "/"), "by": "dan", "reason": "no"}, headers={"Origin": ORIGIN}
    )
    assert again.status_code == 409 and "only a pending request can be decided" in again.text


def test_a_rejection_needs_a_reason_and_is_written_to_the_ledger(world: World) -> None:
    c = client(world)
    login(c)
    url = f"/approvals/{world.request_id}"
    token = csrf(c, url)
    r = c.post(f"{url}/reject", data={"csrf": token, "by": "dan", "reason": " "}, headers={"Origin": ORIGIN})
    assert r.status_code == 400 and "give the reason" in r.text
    r = c.post(
        f"{url}/reject", data={"csrf": token, "by": "dan", "reason": "refunded on Monday"}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 303
    assert status_of(world, world.request_id) == "rejected"
    reasons = [r.breach_reason for r in Ledger(world.db, read_only=True).rows(world.waiting_sid)]
    assert f"rejected:{world.request_id}" in reasons


def test_bad_edited_arguments_are_refused_and_kept_in_the_form(world: World) -> None:
    c = client(world)
    login(c)
    url = f"/approvals/{world.request_id}"
    r = c.post(
        f"{url}/approve", data={"csrf": csrf(c, url), "by": "carol", "args": "{oops"}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 400 and "must be JSON" in r.text and "{oops</textarea>" in r.text
    assert status_of(world, world.request_id) == "pending"


def test_a_script_may_decide_with_the_token_header(world: World) -> None:
    c = client(world)
    url = f"/approvals/{world.request_id}/approve"
    assert c.post(url, data={"by": "ci"}, headers={"X-Loopguard-Token": "wrong-token-0123456789"}).status_code == 403
    assert status_of(world, world.request_id) == "pending"
    assert c.post(url, data={"by": "ci"}, headers={"X-Loopguard-Token": TOKEN}).status_code == 303
    assert status_of(world, world.request_id) == "approved"


@pytest.mark.parametrize(
    ("headers", "with_csrf", "why"),
    [
        ({"Origin": ORIGIN}, False, "the form is stale or forged"),  # logged in, but no CSRF value
        ({"Origin": "http://evil.example"}, True, "another origin"),
        ({"Origin": "http://127.0.0.1:9999"}, True, "another origin"),  # another port is another origin
        ({"Origin": "null"}, True, "another origin"),
        ({"Referer": "http://evil.example/page"}, True, "another origin"),
        ({}, True, "without Origin or Referer"),
    ],
)
def test_changes_from_elsewhere_are_refused(world: World, headers: dict[str, str], with_csrf: bool, why: str) -> None:
    c = client(world)
    login(c)
    url = f"/approvals/{world.request_id}"
    data = {"by": "mallory", **({"csrf": csrf(c, url)} if with_csrf else {})}
    r = c.post(f"{url}/approve", data=data, headers=headers)
    assert r.status_code == 403 and why in r.text
    assert status_of(world, world.request_id) == "pending"


def test_changes_without_the_token_are_refused(world: World) -> None:
    c = client(world)
    url = f"/approvals/{world.request_id}"
    page = c.get(url).text
    assert 'name="csrf"' not in page and "Log in with the dashboard" in page  # no form before logging in
    r = c.post(f"{url}/approve", data={"by": "mallory"}, headers={"Origin": ORIGIN})
    assert r.status_code == 403 and "log in" in r.text
    c.cookies.set("loopguard_session", f"{int(time.time())}.forged")
    forged = c.post(f"{url}/approve", data={"by": "m"}, headers={"Origin": ORIGIN})
    assert forged.status_code == 403 and "log in" in forged.text
    wrong = c.post("/login", data={"token": "not-the-token-at-all"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 403 and "wrong token" in wrong.text and "set-cookie" not in wrong.headers
    cross = c.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    assert status_of(world, world.request_id) == "pending"


def test_the_session_cookie_is_httponly_samesite_strict_and_not_the_token(world: World) -> None:
    c = client(world)
    r = c.post("/login", data={"token": TOKEN, "next": "https://evil.example/"}, headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"] == "/"  # never redirected off the dashboard
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    assert c.post("/logout", data={}, headers={"Origin": ORIGIN}).status_code == 303


@pytest.mark.parametrize(
    "path",
    [
        "/approvals/{rid}/approve",
        "/approvals/{rid}/reject",
        "/run/attest",
        "/logout",
    ],
)
def test_get_never_changes_anything(world: World, path: str) -> None:
    c = client(world)
    login(c)
    r = c.get(path.format(rid=world.request_id), params={"by": "m", "reason": "x"})
    assert r.status_code == 405
    assert status_of(world, world.request_id) == "pending"


def test_read_only_refuses_every_change_and_shows_no_button(world: World) -> None:
    c = client(world, read_only=True)
    url = f"/approvals/{world.request_id}"
    page = c.get(url).text
    assert "<form" not in page.split("<main>")[1] and "read-only" in page
    assert "<form" not in c.get(f"/run/review?session={world.loop_sid}").text.split("<main>")[1]
    for path in (f"{url}/approve", f"{url}/reject", "/run/attest", "/login"):
        r = c.post(path, data={"by": "x", "reason": "x", "token": TOKEN}, headers={"X-Loopguard-Token": TOKEN})
        assert r.status_code == 403 and "read-only" in r.text
    assert status_of(world, world.request_id) == "pending"


def test_other_host_names_are_refused(shared_world: World) -> None:
    """DNS rebinding: a site that points its own name at 127.0.0.1 gets nothing."""
    c = client(shared_world, read_only=True)
    r = c.get("/", headers={"Host": "evil.example:8765"})
    assert r.status_code == 400 and "unknown host" in r.text
    allowed = create_app(shared_world.db, read_only=True, allowed_hosts=["dash.example.com"])
    assert TestClient(allowed, base_url="http://dash.example.com").get("/").status_code == 200


def test_attest_from_the_dashboard_goes_through_the_review_surface(world: World) -> None:
    c = client(world)
    login(c)
    url = f"/run/review?session={world.loop_sid}"
    page = c.get(url).text
    frame_hash = re.search(r'name="frame_hash" value="([0-9a-f]{64})"', page)
    assert frame_hash
    form = {"csrf": csrf(c, url), "session": world.loop_sid, "reviewer": "ana", "notes": "loop accepted"}
    stale = c.post("/run/attest", data={**form, "frame_hash": "0" * 64}, headers={"Origin": ORIGIN})
    assert stale.status_code == 409 and "changed after the frame you reviewed" in stale.text
    r = c.post("/run/attest", data={**form, "frame_hash": frame_hash.group(1)}, headers={"Origin": ORIGIN})
    assert r.status_code == 303
    attestation = ReviewSurface(world.db).require_attestation(world.loop_sid)
    assert (attestation.reviewer, attestation.notes) == ("ana", "loop accepted")
    assert "ATTESTED by ana" in c.get(url).text
    cross = c.post("/run/attest", data={**form, "frame_hash": frame_hash.group(1)}, headers={"Origin": "http://x.y"})
    assert cross.status_code == 403
    empty = c.post(
        "/run/attest", data={**form, "reviewer": " ", "frame_hash": frame_hash.group(1)}, headers={"Origin": ORIGIN}
    )
    assert empty.status_code == 400 and "reviewer" in empty.text


# -- construction --------------------------------------------------------------------------------------------
def test_a_dashboard_that_can_change_state_needs_a_real_token(shared_world: World) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        create_app(shared_world.db)
    with pytest.raises(ValueError, match="at least 16"):
        create_app(shared_world.db, token="short")
    with pytest.raises(ValueError, match="live_seconds"):
        create_app(shared_world.db, read_only=True, live_seconds=0)


def test_the_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, shared_world: World) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(MissingExtra, match=r'pip install "loopguard-core\[dashboard\]"'):
        create_app(shared_world.db, read_only=True)


def test_start_rows_are_parsed_into_limits() -> None:
    mark, values = parse_mark("start max_turns=40 max_cost_usd=2.0 budgets=tenant acme,b turns=0 tokens=0")
    assert mark == "start"
    assert values == {"max_turns": "40", "max_cost_usd": "2.0", "budgets": "tenant acme,b", "turns": "0", "tokens": "0"}
    assert parse_mark(None) == ("", {})


def test_decisions_on_a_keyed_ledger_need_its_key(tmp_path: Any) -> None:
    from loopguard_core import ApprovalRequired, Breaker

    from .conftest import refund_tools

    key = bytes(range(32))
    db = tmp_path / "keyed.db"
    breaker = Breaker(ledger=Ledger(db, hmac_key=key), tools=refund_tools())
    with breaker.run("keyed-run"), pytest.raises(ApprovalRequired) as asked:
        breaker.before_tool("refund", {"order": "C-1", "amount_eur": 5})
    rid = asked.value.request_id
    url = f"/approvals/{rid}/approve"
    without = TestClient(create_app(db, token=TOKEN), base_url=ORIGIN)
    r = without.post(url, data={"by": "carol"}, headers={"X-Loopguard-Token": TOKEN})
    assert r.status_code == 503 and "LOOPGUARD_HMAC_KEY" in r.text
    request = approval_queue(str(db)).get(rid or "")
    assert request is not None and request.status == "pending"  # nothing decided without its ledger row
    keyed = TestClient(create_app(db, token=TOKEN, hmac_key=key), base_url=ORIGIN, follow_redirects=False)
    assert keyed.post(url, data={"by": "carol"}, headers={"X-Loopguard-Token": TOKEN}).status_code == 303
    rows = [r.breach_reason for r in Ledger(db, read_only=True).rows("keyed-run")]
    assert f"approved:{rid}" in rows and Ledger(db, read_only=True).verify().ok


def test_a_ledger_object_is_read_and_written_as_given(world: World) -> None:
    ledger = Ledger(world.db)
    c = TestClient(create_app(ledger, token=TOKEN), base_url=ORIGIN, follow_redirects=False)
    assert world.loop_sid in c.get("/").text
    r = c.post(
        f"/approvals/{world.request_id}/reject",
        data={"by": "bot", "reason": "no"},
        headers={"X-Loopguard-Token": TOKEN},
    )
    assert r.status_code == 303
    assert f"rejected:{world.request_id}" in [r.breach_reason for r in ledger.rows(world.waiting_sid)]


class _DownStore:
    url = "redis://:secret@cache.internal:6379/0"

    def states(self, prefix: str = "") -> dict[str, Any]:
        from loopguard_core.errors import StoreError

        raise StoreError("budgets in Redis at redis://cache.internal:6379/0 are unreachable")


def test_storage_failures_are_pages_that_say_what_failed(shared_world: World) -> None:
    app = create_app(shared_world.db, budgets=_DownStore(), read_only=True)  # type: ignore[arg-type]
    c = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
    runs = c.get("/")
    assert runs.status_code == 200 and "the budget store is not available" in runs.text  # the runs still show
    assert shared_world.loop_sid in runs.text
    budgets = c.get("/budgets")
    assert budgets.status_code == 503 and "unreachable" in budgets.text
    assert "secret" not in budgets.text

    class Down:
        url = "postgresql://loopguard:hunter2@db.internal/ledger"

        def sessions(self) -> Any:
            from loopguard_core.ledger import LedgerUnreachable

            raise LedgerUnreachable("the ledger at postgresql://loopguard@db.internal/ledger is unreachable")

        rows = sessions

    app.state.data.ledger = Down()
    down = c.get("/")
    assert down.status_code == 503 and "the ledger at postgresql://loopguard@db.internal/ledger" in down.text
    assert "hunter2" not in down.text and "ledger <code>postgresql://loopguard@db.internal/ledger</code>" in down.text


def test_importing_the_package_imports_no_web_framework() -> None:
    import subprocess

    code = (
        "import sys, loopguard_core.dashboard, loopguard_core.cli._serve;"
        "print([m for m in ('starlette', 'uvicorn', 'jinja2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
