"""Write the project's detection corpus, ``benchmarks/corpus/families.json`` (deterministic, no randomness).

``python -m benchmarks.make_corpus`` regenerates it. Each scenario says what it models (``about``), which
family it belongs to, and for a runaway the deadline (``trip_by``) by which a guard should refuse it, by the
rule the real-trace corpus was labelled with (benchmarks/corpus/real/README.md): the call completing the
4th occurrence of the repeating unit, ``4 * L`` for a cycle of length L and ``useful + 4`` for an exact
repeat after useful work (before December 2026 these were the 3rd occurrence: ``2 * L + 2``, ``useful + 3``;
real agents legitimately repeat a call three times and move on), ``useful + 5`` for a failure streak.
Legit scenarios must never be refused.

The corpus predates loopguard's paraphrase, stall and status-poll rules and was not changed to suit them;
:func:`stress_legit` adds the legitimate work those rules could mistake for a loop (the rules were revised
afterwards with it in view), :func:`held_out_legit` more of it written after that revision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["build", "main"]

UNAVAILABLE = "503 Service Unavailable"
OUT = Path(__file__).resolve().parent / "corpus" / "families.json"


def c(tool: str, args: Any, result: Any, *, agent: str = "agent", error: bool = False) -> dict[str, Any]:
    return {"agent": agent, "tool": tool, "args": args, "result": result, "error": error}


def scenario(
    name: str, kind: str, family: str, about: str, calls: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {"name": name, "kind": kind, "family": family, "about": about, "calls": calls, **extra}


def _cycle(paths: list[str], rounds: int) -> list[dict[str, Any]]:
    return [c("read_file", {"path": p}, f"contents of {p}") for _ in range(rounds) for p in paths]


def runaways() -> list[dict[str, Any]]:
    out = []
    for length in (3, 4, 6):
        paths = [f"src/{chr(97 + i)}.py" for i in range(length)]
        out.append(
            scenario(
                f"cycle_{length}",
                "runaway",
                "longer cycles",
                f"A cycle of {length} reads, each returning the same file again and again.",
                _cycle(paths, 30 // length + 1)[:30],
                trip_by=4 * length,
            )
        )
    phrasings = [
        "best practices for rate limiting",
        "rate limiting best practices",
        "recommended practices for rate limiting",
        "what are good practices for rate limiting",
        "rate limiting: best practice guide",
        "how should I do rate limiting well",
    ]
    out.append(
        scenario(
            "paraphrase_same_answer",
            "runaway",
            "paraphrased queries",
            "The agent rephrases one question; the search engine answers the same each time.",
            [
                c("web_search", {"q": phrasings[i % len(phrasings)]}, "10 results: rate limiting guide")
                for i in range(24)
            ],
            trip_by=5,
        )
    )
    pages = [c("list_orders", {"page": p}, f"orders page {p}") for p in range(1, 6)]
    out.append(
        scenario(
            "pagination_same_empty_page",
            "runaway",
            "pagination past the end",
            "Five pages of data, then the agent asks for page 6 again and again: always empty.",
            pages + [c("list_orders", {"page": 6}, []) for _ in range(20)],
            trip_by=9,
        )
    )
    out.append(
        scenario(
            "pagination_past_end",
            "runaway",
            "pagination past the end",
            "Five pages of data, then page 6, 7, 8, ... all empty: the agent never notices the end.",
            pages + [c("list_orders", {"page": p}, []) for p in range(6, 26)],
            trip_by=10,
        )
    )
    out.append(
        scenario(
            "poll_never_changes",
            "runaway",
            "polling one job",
            "A status poll of one job that is stuck: 30 polls, the same answer every time.",
            [c("job_status", {"job": "build-17"}, "running") for _ in range(30)],
            trip_by=10,
        )
    )
    out.append(
        scenario(
            "retry_backoff_storm",
            "runaway",
            "retry storms",
            "Retries with backoff: the attempt number changes, the 503 never does.",
            [
                c(
                    "send_email",
                    {"to": "ops@example.com", "attempt": n, "backoff_s": 2**n},
                    "503 Service Unavailable",
                    error=True,
                )
                for n in range(20)
            ],
            trip_by=6,
        )
    )
    out.append(
        scenario(
            "unknown_tool_storm",
            "runaway",
            "retry storms",
            "Calls to a tool that does not exist, with varying arguments (langchain #37961).",
            [
                c("get_weather_v2", {"city": f"city {n % 3}"}, "ToolNotFound: get_weather_v2", error=True)
                for n in range(20)
            ],
            trip_by=6,
        )
    )
    prefix = [c("web_search", {"q": f"subtopic {n} of the report"}, f"notes on subtopic {n}") for n in range(20)]
    out.append(
        scenario(
            "repeat_after_long_work",
            "runaway",
            "exact repeats",
            "Twenty useful searches, then one search repeated: a count limit set above 20 sees nothing.",
            prefix + [c("web_search", {"q": "summary of the report"}, "no new results") for _ in range(20)],
            trip_by=24,
        )
    )
    out.append(
        scenario(
            "read_edit_read_no_progress",
            "runaway",
            "read-edit-read",
            "Read, write the same content back, read the same content again: no progress.",
            [
                c("read_file", {"path": "app.py"}, "v0")
                if i % 2 == 0
                else c("write_file", {"path": "app.py", "content": "v0"}, "ok")
                for i in range(24)
            ],
            trip_by=8,
        )
    )
    agents = ["planner", "researcher", "writer"]
    handoff = [
        c("delegate", {"to": agents[(i + 1) % 3], "task": "summarise Q3 numbers"}, "delegated", agent=agents[i % 3])
        for i in range(24)
    ]
    out.append(
        scenario(
            "crew_handoff_cycle",
            "runaway",
            "multi-agent",
            "Three agents hand the same task round in a circle.",
            handoff,
            trip_by=12,
            useful=3,
        )
    )
    four = ["a", "b", "c", "d"]
    out.append(
        scenario(
            "crew_same_lookup",
            "runaway",
            "multi-agent",
            "Four agents take turns making the same lookup.",
            [c("kb_search", {"q": "refund policy"}, "policy v3", agent=four[i % 4]) for i in range(24)],
            trip_by=4,
        )
    )
    return out


def legit() -> list[dict[str, Any]]:
    out = []
    statuses = ["queued", "running", "running", "running", "running", "running", "succeeded"]
    out.append(
        scenario(
            "poll_until_done",
            "legit",
            "polling one job",
            "Polling one job until it finishes: the same answer several times, then a new one.",
            [c("job_status", {"job": "build-18"}, s) for s in statuses],
        )
    )
    rounds = []
    for r in range(4):
        for job in range(8):
            rounds.append(c("job_status", {"job": f"etl-{job}"}, "succeeded" if r == 3 and job % 2 else "running"))
    out.append(
        scenario(
            "poll_many_jobs_rounds",
            "legit",
            "polling many jobs",
            "Waiting for eight jobs: four rounds of status polls, most still running.",
            rounds,
        )
    )
    out.append(
        scenario(
            "poll_many_jobs_once",
            "legit",
            "polling many jobs",
            "Sixty different jobs polled once each, all queued.",
            [c("job_status", {"job": f"batch-{n}"}, "queued") for n in range(60)],
        )
    )
    out.append(
        scenario(
            "long_research",
            "legit",
            "distinct work",
            "A hundred distinct searches: long, but every call is new.",
            [c("web_search", {"q": f"question {n} of the literature review"}, f"answer {n}") for n in range(100)],
        )
    )
    fetch = []
    for n in range(15):
        fetch.append(c("web_search", {"q": f"vendor {n} pricing"}, f"links for vendor {n}"))
        fetch.append(c("fetch_url", {"url": f"https://vendor{n}.example.com/pricing"}, f"pricing page {n}"))
    out.append(scenario("search_then_fetch", "legit", "distinct work", "Search, then fetch each hit.", fetch))
    pages = [c("list_orders", {"page": p}, f"orders page {p}") for p in range(1, 31)] + [
        c("list_orders", {"page": 31}, [])
    ]
    out.append(
        scenario("pagination_to_the_end", "legit", "pagination", "Thirty pages, then one empty page: done.", pages)
    )
    tdd = []
    for n in range(8, 0, -1):
        tdd.append(c("read_file", {"path": "lib.py"}, f"lib v{8 - n}"))
        tdd.append(c("edit_file", {"path": "lib.py", "patch": f"fix {n}"}, "ok"))
        tdd.append(c("run_tests", {"args": "-q"}, f"{n - 1} failed" if n > 1 else "all passed"))
    out.append(
        scenario(
            "read_edit_test_progress",
            "legit",
            "read-edit-read",
            "Read, edit, rerun the tests: the file and the failures change every round.",
            tdd,
        )
    )
    retry = [
        c("send_email", {"to": "ops@example.com", "attempt": 0}, "503 Service Unavailable", error=True),
        c("send_email", {"to": "ops@example.com", "attempt": 1}, "503 Service Unavailable", error=True),
        c("send_email", {"to": "ops@example.com", "attempt": 2}, "sent"),
    ] + [c("send_email", {"to": f"user{n}@example.com", "attempt": 0}, "sent") for n in range(10)]
    out.append(
        scenario("retry_then_success", "legit", "retry storms", "Two failures, a successful retry, more mail.", retry)
    )
    out.append(
        scenario(
            "recheck_once",
            "legit",
            "exact repeats",
            "The agent reads a config, does work, and reads the config once more to check it.",
            [c("read_file", {"path": "config.yaml"}, "replicas: 3")]
            + [c("kubectl", {"cmd": f"scale deploy/api-{n} --replicas=3"}, f"deploy/api-{n} scaled") for n in range(6)]
            + [c("read_file", {"path": "config.yaml"}, "replicas: 3")],
        )
    )
    crew = []
    for n in range(12):
        for agent, resource in (("sales", "orders"), ("support", "tickets"), ("finance", "invoices")):
            crew.append(c(f"list_{resource}", {"page": n + 1}, f"{resource} page {n + 1}", agent=agent))
    out.append(scenario("crew_parallel_pages", "legit", "multi-agent", "Three agents paginate three resources.", crew))
    shared = [c("read_file", {"path": "brief.md"}, "the brief", agent=a) for a in ("planner", "writer")]
    shared += [c("web_search", {"q": f"fact {n}"}, f"fact {n} found", agent="researcher") for n in range(10)]
    shared += [c("write_section", {"n": n}, "ok", agent="writer") for n in range(5)]
    out.append(
        scenario("crew_shared_brief", "legit", "multi-agent", "Two agents read the same brief once each.", shared)
    )
    clock = [c("get_time", {}, f"2026-11-21T10:{n:02d}:00Z") for n in range(20)]
    out.append(scenario("clock_reads", "legit", "polling one job", "A clock read twenty times, new time each.", clock))
    return out + stress_legit() + held_out_legit()


def stress_legit() -> list[dict[str, Any]]:
    """Legitimate work that looks like what the newer loop rules look for (added with those rules, so the
    corpus tests their false alarms too): empty answers that are findings, a status poll through a tool
    whose name does not say "status", and similar questions with the same or with new answers."""
    out = []
    hunt = [
        c("search_logs", {"q": q}, [])
        for q in ("payment timeout order 8812", "gateway 504 checkout", "card declined retry loop")
    ]
    hunt.append(c("search_logs", {"q": "idempotency key reused"}, ["10:02 order 8812: idempotency key reused"]))
    hunt += [c("get_order", {"id": "8812"}, "order 8812: charged twice"), c("refund", {"id": "8812"}, "refunded")]
    out.append(
        scenario(
            "empty_searches_then_hit",
            "legit",
            "empty answers",
            "Three different log searches find nothing, the fourth finds the cause, then the fix.",
            hunt,
        )
    )
    needles = [
        "legacy_auth(",
        "LegacyAuthClient",
        "from auth import legacy",
        "LEGACY_AUTH_URL",
        "--legacy-auth",
        "legacy auth docs",
    ]
    audit = [c("search_code", {"q": q}, []) for q in needles]
    audit.append(c("delete_file", {"path": "auth/legacy.py"}, "deleted"))
    out.append(
        scenario(
            "audit_no_findings",
            "legit",
            "empty answers",
            "Before deleting a module, six different code searches for its uses; every empty answer is a finding.",
            audit,
        )
    )
    rollout = ["queued"] + ["in progress"] * 5 + ["complete"]
    deploy = [c("get_deployment", {"id": "dep-42"}, s) for s in rollout]
    deploy.append(c("notify", {"channel": "#releases", "text": "dep-42 is live"}, "sent"))
    out.append(
        scenario(
            "poll_unnamed_status_tool",
            "legit",
            "polling one job",
            "Waiting for a rollout through get_deployment (the name does not say status): 'in progress' five times.",
            deploy,
        )
    )
    topics = ["timeout", "cancel a task", "gather results", "run in a thread", "limit concurrency", "shield a task"]
    related = [
        c("web_search", {"q": f"python asyncio how to {t} example"}, f"results about asyncio: {t}") for t in topics
    ]
    out.append(
        scenario(
            "related_questions_new_answers",
            "legit",
            "paraphrased queries",
            "Six similar-looking questions (most words shared), each with its own answer: research, not a loop.",
            related,
        )
    )
    plans = ["team", "business", "enterprise"]
    per_plan = [c("ask_docs", {"question": f"does the {p} plan include single sign-on"}, "Yes.") for p in plans]
    per_plan.append(c("write_answer", {"text": "SSO is in every plan"}, "ok"))
    out.append(
        scenario(
            "same_question_per_plan",
            "legit",
            "paraphrased queries",
            "One question asked for three plans (only the plan differs) and the docs say 'Yes.' each time.",
            per_plan,
        )
    )
    return out


def held_out_legit() -> list[dict[str, Any]]:
    """Legitimate work written after loopguard's rules were revised with :func:`stress_legit` in view
    (commit 68c8086), so at the time they were added the rules had not seen them."""
    out = []
    customers = [4101, 4117, 4120, 4188, 4203, 4250]
    overdue = [c("list_overdue_invoices", {"customer_id": n}, []) for n in customers]
    overdue.append(c("send_report", {"to": "finance@example.com", "text": "no overdue invoices"}, "sent"))
    out.append(
        scenario(
            "overdue_per_customer",
            "legit",
            "empty answers",
            "Six customers checked for overdue invoices; none has any (only the id changes, every answer empty).",
            overdue,
        )
    )
    answers = ["93.184.216.34"] * 5 + ["203.0.113.7"]
    dns = [c("dns_lookup", {"name": "api.example.com"}, a) for a in answers]
    dns.append(c("run_smoke_test", {"url": "https://api.example.com/health"}, "200 OK"))
    out.append(
        scenario(
            "dns_propagation_wait",
            "legit",
            "polling one job",
            "Waiting for a DNS change: the old address five times, then the new one (the answer never says 'pending').",
            dns,
        )
    )
    regions = ["us-east-1", "eu-west-1", "ap-south-1"]
    quiet = "No incidents reported for this region in the last 24 hours."
    incidents = [c("search_incidents", {"q": f"is region {r} affected by the outage"}, quiet) for r in regions]
    incidents.append(c("post_update", {"text": "all regions clear"}, "posted"))
    out.append(
        scenario(
            "incidents_per_region",
            "legit",
            "paraphrased queries",
            "One question asked for three regions; each region truly has no incidents (the same long answer).",
            incidents,
        )
    )
    return out


def build() -> dict[str, Any]:
    return {
        "about": (
            "loopguard's own detection corpus (generated by python -m benchmarks.make_corpus). Same format as "
            "tool_call_scenarios.json, plus 'family' and 'about'. Runaways must be refused by trip_by; legit "
            "scenarios never. The last eight legit scenarios (families 'empty answers', 'polling one job', "
            "'paraphrased queries') are legitimate work that looks like what the stall, poll and paraphrase rules "
            "look for: five added with those rules (which were then revised with them in view), three written "
            "after that revision."
        ),
        "scenarios": runaways() + legit(),
    }


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
