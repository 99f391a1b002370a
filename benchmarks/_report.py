"""Write docs/benchmarks.md from the results of one run (tables, plots, the closing headline table)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._plots import plot_all

__all__ = ["write_report"]

VERDICT = {"in_time": "✔", "late": "late", "went_on": "soft", "missed": "✘", "false": "FALSE", "ok": "·"}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def headline(detection: dict[str, Any]) -> str:
    rows = []
    for s in detection["summaries"]:
        rows.append(
            [
                f"**{s['label']}**" if s["detector"] == "loopguard" else s["label"],
                f"{s['caught_in_time']}/{s['runaways']}",
                f"{s['stopped']}/{s['runaways']}",
                f"{s['false_stops']}/{s['legit']}",
                str(s["wasted"]),
                f"{s['wasted_tokens']:,}",
                _usd(s["wasted_usd"]),
            ]
        )
    return _table(
        [
            "detector",
            "runaways refused by deadline",
            "runaway runs ended",
            "legit runs falsely stopped",
            "tool calls wasted",
            "tokens wasted",
            "USD wasted",
        ],
        rows,
    )


def _cell(score: dict[str, Any]) -> str:
    if score["kind"] == "legit":
        return f"FALSE@{score['refused_at']}" if score["false_stop"] else "·"
    if score["refused_at"] is None:
        return "✘"
    mark = "✔" if score["caught_in_time"] else "late"
    soft = "" if score["stopped_at"] == score["refused_at"] else "~"
    return f"{mark}{soft}@{score['refused_at']}"


def matrix(detection: dict[str, Any]) -> str:
    keys = [s["detector"] for s in detection["summaries"]]
    short = {
        "loopguard": "loopguard",
        "agentguard_loop": "AG Loop",
        "agentguard_fuzzy": "AG Fuzzy",
        "crewai": "CrewAI",
        "lc_tool_limit": "LC tool lim.",
        "lc_model_limit": "LC model lim.",
        "agent_executor": "AgentExec.",
        "pydantic_default": "PAI default",
        "pydantic_tools": "PAI tool lim.",
    }
    by = {(s["detector"], s["scenario"], s["source"]): s for s in detection["scores"]}
    rows = []
    for case in detection["cases"]:
        first = by[(keys[0], case["name"], case["source"])]
        deadline = "-" if first["trip_by"] is None else str(first["trip_by"])
        rows.append(
            [f"{case['name']} ({case['source']})", case["kind"], deadline]
            + [_cell(by[(k, case["name"], case["source"])]) for k in keys]
        )
    return _table(["scenario", "kind", "deadline"] + [short.get(k, k) for k in keys], rows)


def _families(detection: dict[str, Any]) -> str:
    fam: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in detection["scores"]:
        if s["detector"] == "loopguard":
            fam.setdefault((s["family"] if s["source"] != "public" else "public corpus", s["kind"]), []).append(s)
    rows = []
    for (family, kind), items in sorted(fam.items()):
        right = [i["caught_in_time"] if kind == "runaway" else not i["false_stop"] for i in items]
        good = sum(right)
        rows.append([family, kind, f"{good}/{len(items)}", ", ".join(i["scenario"] for i in items)])
    return _table(["family", "kind", "loopguard right", "scenarios"], rows)


_FLOORS = {"SQLite ledger": "sqlite_raw", "PostgreSQL ledger": "pg_raw", "Redis store": "redis_raw"}
_GROUPS = ("in memory", "per call (issue 14)", "SQLite ledger", "PostgreSQL ledger", "Redis store")


def _overhead(results: dict[str, Any]) -> str:
    ov = results["overhead"]
    m = ov["measured"]
    bare, pb = m["bare"]["median_ns"], m["pybreaker"]["median_ns"]
    rows = []
    for group in _GROUPS:
        for item in (i for i in m.values() if i.get("group", "in memory") == group):
            over = "-" if item["key"] == "bare" else f"{(item['median_ns'] - bare) / (pb - bare):,.2f}"
            floor = m.get(_FLOORS.get(group, ""))
            if group == "per call (issue 14)":  # each size against the pure-Python floor of that size
                floor = m.get("floor_py_" + item["key"].rsplit("_", 1)[-1])
            vs_floor = "-" if floor is None else f"{item['median_ns'] / floor['median_ns']:.2f}"
            rows.append(
                [
                    group,
                    item["label"],
                    f"{item['median_ns']:,.0f}",
                    f"{item['p25_ns']:,.0f}-{item['p75_ns']:,.0f}",
                    f"{item['median_ns'] / bare:,.1f}",
                    over,
                    vs_floor,
                ]
            )
    table = _table(
        ["group", "variant", "ns per call (median)", "p25-p75", "x bare", "overhead / pybreaker's", "x raw floor"],
        rows,
    )
    goals = []
    for g in ov["goals"]:
        status = f"**{g['status']}**" if g["status"] in ("met", "not met") else g["status"]
        value = "-" if g["value"] is None else f"{g['value']}{g['unit']}"
        goals.append([g["name"], g["target"], value, status, g["note"] or ""])
    out = table + "\n\n" + _table(["goal", "target", "measured", "status", "note"], goals)
    large = ov.get("large_args") or []
    if large:
        out += (
            "\n\nLarge arguments (issue 14, goal 2), before + after with one large string argument, new per call:\n\n"
        )
        out += _table(
            ["case", "bytes", "µs per call (median)", "µs per MB"],
            [[r["case"], f"{r['bytes']:,}", f"{r['us_per_call']:,.0f}", f"{r['us_per_mb']:,.0f}"] for r in large],
        )
    if ov.get("context"):
        out += "\n\nContext (not goals):\n\n" + "\n".join(f"- {line}" for line in ov["context"])
    if ov.get("notes"):
        out += "\n\nNot measured in this run:\n\n" + "\n".join(f"- {line}" for line in ov["notes"])
    return out


def _scale(results: dict[str, Any]) -> str:
    sc = results["scale"]
    rows = [
        [
            f"{c['calls']:,}",
            f"{c['ns_per_call'] / 1000:.1f}",
            f"{c['fresh_ns_per_call'] / 1000:.1f}",
            f"{c['ratio']:.2f}",
            f"{m['peak_bytes'] / 2**20:.2f}",
        ]
        for c, m in zip(sc["cost"], sc["memory"])
    ]
    out = (
        "One `Breaker()` takes distinct tool calls (before + after) up to 10^6. At each decade, batches of the "
        "next 2,000 calls are timed, each paired in random order with the same batch on a fresh 100-call "
        "session, so the machine's noise of that moment hits both; the ratio of the two medians is the "
        "figure the goal is checked on. Peak memory is read in a separate pass under `tracemalloc`.\n\n"
    )
    out += _table(
        [
            "calls in the session",
            "µs per before+after (median)",
            "fresh 100-call session, timed beside it (µs)",
            "ratio",
            "peak traced memory (MiB)",
        ],
        rows,
    )
    met = "**met**" if sc["flatness"] <= 1.2 else "**not met**"
    out += (
        f"\n\nWorst ratio to a fresh session: **{sc['flatness']}x** (goal ≤ 1.2x: {met}). Max/min of the "
        f"medians across decades, without the pairing: {sc.get('spread', '-')}x."
    )
    verify = sc["verify"]
    if isinstance(verify, str):
        out += f"\n\nLedger verify: {verify}."
    else:
        source = verify[0].get("rss_source", "ru_maxrss") if verify else "-"
        vrows = [
            [
                f"{v['rows']:,}",
                f"{v['write_seconds']:.1f}",
                f"{v['seconds']:.2f}",
                f"{v['peak_rss_kb'] / 1024:.0f}",
                str(v["ok"]),
            ]
            for v in verify
        ]
        out += (
            "\n\nA SQLite ledger of N rows is written in one child process and verified in another, which "
            f"reports its own peak resident memory ({source}"
            + (", the high-water mark of the verifying process's own address space" if source == "VmHWM" else "")
            + "):\n\n"
        )
        out += _table(["ledger rows", "write (s)", "verify (s)", "verify peak RSS (MiB)", "ok"], vrows)
    return out


def _e2e(results: dict[str, Any]) -> str:
    from .end_to_end import render_markdown  # the section is written where it is measured

    e = results["end_to_end"]
    if "frameworks" not in e:
        return f"Pending: {e.get('pending', 'not run')}."
    return render_markdown(e)


def _compiled(results: dict[str, Any]) -> str:
    from .compiled import render_markdown  # the section is written where it is measured

    return render_markdown(results.get("compiled") or {"pending": "not run"})


_REAL_LABELS = {"loopguard": "**loopguard** `Breaker()`", "agentguard_loop": "agentguard47 `LoopGuard()`"}
_REAL_LABELS["agentguard_fuzzy"] = "agentguard47 `FuzzyLoopGuard()`"


def _real(results: dict[str, Any], rel: dict[str, str]) -> str:
    real = results.get("real_traces")
    if not real:
        return "## 0. Detection on real agent trajectories\n\n(not run)"
    parts = [
        """## 0. Detection on real agent trajectories (the bar)

Real tool-call trajectories written by real LLM agents, labelled runaway or legit by a written rule **before any
detector ran** (`benchmarks/corpus/real/README.md`): a runaway is a no-progress repetition episode (the same
call 4 times in a row with the same answer, volatile values masked; a block of 2-10 calls 4 times; the same call
and answer 4 times with only failed or no-op calls between), its *deadline* the call completing the 4th
occurrence; legitimate runs were chosen *for* repetition (paging, reruns after edits, the same search later),
including a borderline tier that repeats 3 times and moves on. Each detector runs on its defaults, one fresh
instance per trace, checked before each call; the first refusal ends the trace (`python -m benchmarks.real_traces`,
the corpus's own `score.py` semantics). The extra set was built by the same rule from other public sources
(`benchmarks/corpus/real/EXTRA.md`) after loopguard's rules were written, and was not used to tune them.
"""
    ]
    for corpus in real["corpora"].values():
        rows = []
        for d in real["detectors"]:
            r = corpus["results"].get(d["key"])
            if r is None:
                label = _REAL_LABELS.get(d["key"], d["label"])
                rows.append([label, f"unavailable: {d['unavailable']}", "", "", "", ""])
                continue
            rows.append(
                [
                    _REAL_LABELS.get(d["key"], d["label"]),
                    f"{r['caught_by_deadline']}/{r['runaways']}",
                    f"{r['early']}/{r['runaways']}",
                    f"{r['false_refusals']}/{r['legit']}",
                    f"{r['false_refusals_clear']}/{r['legit_clear']}",
                    f"{r['calls_run_in_runaways']} of {r['calls_in_runaways']}",
                ]
            )
        header = [
            "detector",
            "runaways refused by deadline",
            "refused before the loop began",
            "legit runs refused",
            "legit refused (borderline left out)",
            "calls run in runaway traces",
        ]
        where = f"**{corpus['about']}**, `{corpus['path']}`, {corpus['calls']:,} tool calls:"
        parts.append(f"{where}\n\n{_table(header, rows)}")
        lg = corpus["results"].get("loopguard")
        if lg:
            patterns = ", ".join(f"{p} {c}/{n}" for p, (c, n) in sorted(lg["by_pattern"].items()))
            families = ", ".join(
                f"{f} {c}/{n} runaway, {fr}/{ln} legit refused" for f, (c, n, fr, ln) in sorted(lg["by_family"].items())
            )
            note = f"loopguard by pattern: {patterns}. By source: {families}."
            if lg["false_refusal_names"]:
                note += f" Legitimate runs refused: {', '.join(lg['false_refusal_names'])}."
            if lg["missed_names"]:
                note += f" Runaways not refused by their deadline: {', '.join(lg['missed_names'])}."
            parts.append(note)
    if "real_traces.png" in rel:
        parts.append(f"![real traces]({rel['real_traces.png']})")
    return "\n\n".join(parts)


def write_report(results: dict[str, Any], doc: Path, img: Path) -> None:
    det = results["detection"]
    images = plot_all(results, img)
    rel = {p.name: os.path.relpath(p, doc.parent) for p in images}
    cost = det["cost"]
    configs = _table(
        ["detector", "configuration (how it was driven)"],
        [
            [d["label"], d["config"] + (f" — not installed: {d['unavailable']}" if d["unavailable"] else "")]
            for d in det["detectors"]
        ],
    )
    public = _table(
        ["detector", "refused by deadline", "falsely stopped", "wasted calls"],
        [
            [s["label"], f"{s['caught_in_time']}/{s['runaways']}", f"{s['false_stops']}/{s['legit']}", str(s["wasted"])]
            for s in det["summaries_public"]
        ],
    )
    families = ", ".join(sorted({c["family"] for c in det["cases"] if c["source"] != "public"})) or "-"
    n_run = det["summaries"][0]["runaways"]
    n_legit = det["summaries"][0]["legit"]
    text = f"""# Benchmarks: does it catch the loop, and what does it cost per call?

Generated by `{results["command"]}` (Python {results["python"]}, {results["platform"]}; {results["seconds"]} s).
Do not edit by hand: rerun the command. Raw numbers: `benchmarks/results/raw/`.

## Reproduce

```bash
python3 -m venv benchmarks/.env
benchmarks/.env/bin/pip install -r benchmarks/requirements.txt   # pinned: agentguard47 2.0.0, pybreaker 1.4.1,
                                                                  # purgatory 3.0.1, langchain 1.4.7, crewai 1.15.30,
                                                                  # pydantic-ai-slim 2.68.0, matplotlib 3.11.2, ...
benchmarks/.env/bin/python -m benchmarks            # everything: writes this page and docs/img/*.png
                                                    # (section 4's instruction counts need valgrind and gcc:
                                                    #  apt install valgrind gcc; without them: pending)
benchmarks/.env/bin/python -m benchmarks --smoke    # < 60 s, for CI (writes to benchmarks/results/raw/)
benchmarks/.env/bin/python -m benchmarks.detection  # the public corpus through Breaker() defaults
```

One measurement at a time: `python -m benchmarks.detection --own --detectors all`, `python -m benchmarks.overhead`,
`python -m benchmarks.scale`, `python -m benchmarks.end_to_end`. The synthetic scenario corpus is
`tests/data/tool_call_scenarios.json` (override: `--corpus PATH` or `LOOPGUARD_SCENARIOS=PATH`). The project's own
corpus is `benchmarks/corpus/families.json`, regenerated by `python -m benchmarks.make_corpus` (deterministic).
Timing rounds are shuffled with a fixed seed (6). Redis:
`LOOPGUARD_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/14`); PostgreSQL: `LOOPGUARD_BENCH_POSTGRES_URL`
(default `postgresql://postgres@127.0.0.1:5432/test`); an unreachable server is reported as pending. The machine is
a shared 2-vCPU VM: every timing is a median of interleaved rounds with its 25th-75th percentile; compare ratios,
not absolute numbers.

{_real(results, rel)}

## 1. Detection quality on the synthetic corpora

{n_run} runaway and {n_legit} legitimate tool-call traces written by us: the synthetic scenario corpus
(`tests/data/tool_call_scenarios.json`) plus, in the full run, loopguard's own corpus
`benchmarks/corpus/families.json` (families: {families}). Every scenario says what it models in its `about`
field. These are no longer the bar (section 0 is); they are kept passing. Their deadlines follow the real-trace
labelling rule since December 2026 (the call completing the 4th occurrence of the repeating unit; they were the
3rd before, which refused 23 of 147 legitimate real runs).

**loopguard's rules, as benchmarked** (`Breaker()` defaults; see [loop detection](loop-detection.md)): the
detectors `Repeat`, `Cycle`, `Interleaved`, `Paraphrase` and `EmptyPages` over the run's window of finished calls;
the 4th identical call (same canonical arguments, same answer after masking volatile values) is refused, and so
is the call completing the 4th pass of a 2-10 call block, the 4th occurrence of a call with only failed or no-op
calls between, the 4th reworded natural-language question with the same answer, and the 5th request paging into
empty answers (`stall`); status polls and answers saying "running" get 8; 5 identical failures in a row of one
tool end the run (`failures`).

**How the corpus and the rules evolved** (so a reader can tell evidence from fitting). The own corpus's first 25
scenarios predate the paraphrase, stall and poll rules and have not changed since, but those rules were written
with them in view (commit b623ef3 reports them at 20/20 caught, 0/19 false). Five legitimate scenarios were
added when those rules arrived, to measure their false alarms (`empty_searches_then_hit`,
`audit_no_findings`, `poll_unnamed_status_tool`, `related_questions_new_answers`, `same_question_per_plan`);
loopguard stopped three of them, and the rules were then revised with them in view (commit 68c8086: stall only
for the same request, patience for "still running" answers, paraphrase only on informative answers), so they are
no longer held out. Three more legitimate scenarios were written after that revision, unseen by it
(`overdue_per_customer`, `dns_propagation_wait`, `incidents_per_region`): six customers with no overdue
invoices, a DNS lookup polled until the new address appears, one question asked for three regions with the same
"no incidents" answer. loopguard stopped all three; the rules were then revised once more with them in view
(commit after fb199d5: stall only for paging parameters such as `page`/`offset`/`cursor`, and identifiers such as
`us-east-1` must match for two questions to be similar), which fixed two; the DNS wait is kept as a documented
known limit. None of the legitimate scenarios is held out any more: the next round of corpus additions should be
written without looking at the rules. In December 2026 the rules were rebuilt on real trajectories (section 0).
The first version of the new rules refused `clock_reads` (a clock read twenty times: masked, every answer looked
the same); one change followed it (an answer with no word in it is its numbers, compared as they are), so that
scenario too was seen; `dns_propagation_wait` stays the known limit. Every detector runs on its defaults; the
settings that fix loopguard's false alarms (`max_repeats_per_tool`, `exempt_tools`, `tools=`) are not applied.

**Definitions.**
- *Refused by deadline*: the detector refused a call (its tool body never ran) at or before the scenario's
  `trip_by` call. *Run ended*: the detector ended the run within the trace; some limits only refuse the
  call and let the agent go on (CrewAI's rule, `ToolCallLimitMiddleware`'s default `exit_behavior="continue"`).
- *Falsely stopped*: any call of a legitimate trace refused.
- *Useful prefix* of a runaway: the calls before the first call whose tool answers with something it
  already answered in this run (the same result or the same error text), unless the scenario states
  `useful`. *Wasted tool calls* = tool bodies run beyond the useful prefix. A detector that never stops a
  runaway wastes the rest of the trace (a lower bound: the real loop goes on).
- *Tokens and USD*: every proposed call costs one model turn of {cost["tokens_in"]:,} input + {cost["tokens_out"]}
  output tokens, priced for `{cost["model"]}` by genai-prices ({cost["usd_per_turn"]} USD per turn).
  Wasted turns = turns spent beyond the useful prefix, including turns whose call was refused while the
  run went on.

**How each detector was driven.** loopguard and agentguard47 are one object checked before every call of the
trace (shared by every agent of a crew, as both allow). The framework limits run in their real runtimes with a
scripted fake model that proposes the trace's calls one per turn: LangChain `create_agent` with the
middleware, the classic `AgentExecutor` with a scripted agent, a Pydantic AI `Agent` with a `FunctionModel`.
CrewAI's rule is crewai's own `ToolUsage._check_tool_repeated_usage` on a real `ToolsHandler`, plus the
`max_iter=25` forced final answer. Framework limits count per agent, so each agent of a multi-agent trace runs in
its own agent and the crew stops at the first stopped agent. Count limits have no default in LangChain; the
values are the ones in the middleware's own docstring examples.

{configs}

![detection]({rel["detection.png"]})

{headline(det)}

On the public corpus alone:

{public}

Per scenario (✔ refused by the deadline, late = refused after it, ~ = the call was refused but the run went on,
✘ = never refused; @n = the call refused; FALSE@n = a legitimate run refused at call n):

{matrix(det)}

loopguard by family:

{_families(det)}

## 2. Overhead per guarded call

Every variant runs in the same interleaved rounds ({results["overhead"]["rounds"]} rounds, each in a fresh random
order). Each wraps a no-op "tool" that answers `"ok"`; loopguard's variants call `before_tool` + `after_tool` with
distinct arguments per call (as real work).

- **In memory**: the goal compares loopguard's added time over the bare call with pybreaker's.
- **SQLite ledger**: the goal pair (issue 14, goal 5) is a full guarded turn (breaker before + after + its
  ledger row) against a raw `sqlite3` INSERT in autocommit mode (one commit per row) of a row of the same
  sixteen columns into a table of the same schema. Both files are in WAL mode with `synchronous=NORMAL` (the
  ledger's default). The goal is reported twice: with the default ledger (every row its own commit) and with
  `Ledger(defer_seconds=0.05)`, where routine rows wait in the process and are committed together (a refusal
  or trip never waits; docs/ledger.md says what a crash can lose). Every row is written inside the timed
  batch that recorded it: the batches committed along the way, and the rows still waiting at the batch's end
  by a `flush()` timed with it (the ledger's background writer would otherwise write them between batches,
  unmeasured). The ledger's own per-row append, `Ledger.record` of the row the breaker writes for a tool call, is a
  context row: the turn adds the loop-detection bookkeeping on top of it.
- **PostgreSQL ledger** (PostgreSQL at `{results["overhead"].get("postgres_url", "-")}`): `Ledger.record`
  against a raw prepared psycopg INSERT in autocommit mode (one commit per row) of a row of the same columns into
  a table of the same schema and index; each variant writes into its own schema, dropped at the end. Issue 6 sets
  no target for this pair; the ratio is reported as measured.
- **Redis store**: a loopguard store check (`before_tool`, one FCALL round trip; EVALSHA where the server has no
  Functions) against raw redis-py `EVALSHA` of a one-line script; the full turn (two round trips) as context.
  The guarded call's goal rows come twice: one client (the interleaved rounds above) and 4 processes at once
  (`benchmarks.redis_path`'s measurement: each process a client of its own, raw and guarded alternating in five
  phases, ops/s of all four together, medians). Then, on the server's own account (`INFO commandstats`, run
  alone), the µs of scripts and the Redis commands they run per guarded call, against the one-line script's
  (issue 14, goal 3's "script cost near a trivial script's").
- **Per call, in CPU instructions** (context for goal 1, judged on time): the per-call contenders (loopguard with
  and without its compiled fast path, agentguard47, the floors) each counted by valgrind's callgrind in a child
  process of its own, warmed up, over 2,000 calls with small args and 300 with medium ones. The count is exact
  and does not move with the machine's load, which swings the timed rows by up to 2x between two runs; it does
  not see cache misses, which time does. Pending without valgrind and gcc, and under `--smoke`. Every contender's
  tool answers `"ok"`; one more count, small args only, answers each call differently (`"value of <n in letters>"`,
  different even once digits are masked), so that no cache of what loopguard reads in an answer hits: what a run
  whose answers never repeat pays per call.

"x raw floor" is the time per call divided by the raw storage baseline of its group; throughput shares in the
goal table are its inverse.

{_overhead(results)}

![overhead]({rel["overhead.png"]})

## 3. Scale

{_scale(results)}

![scale]({rel["scale.png"]})

## 4. End to end

Issue 14, goal 4. Five runtimes, each driven by a scripted model (no network) through 50 distinct tool calls:
**unguarded**, with a **pass-through** that installs the same hooks in the same places and does nothing in them
(the framework's own cost of having hooks), and **guarded** by `Breaker()` (`benchmarks/end_to_end.py` says how
each is built and timed). A real model call takes 10^5-10^6 times longer than these turns, so this is the worst
case for the guard's share. The second table counts the same whole runs in CPU instructions (callgrind): the
machine's noise moves wall times here by more than the 2 % the goal allows, and does not move a count. The
tables after it time the hooks themselves turn by turn over a 500-call run: flat means no hook does work
proportional to the history.

{_e2e(results)}

## 5. The compiled build

Issue 14 welcomes a compiled fast path as an option: goals 1 and 4 again, with the hot path compiled by mypyc
from the same source (`benchmarks/compiled.py` builds the wheel from this checkout and measures it in child
processes beside the default install, round after round).

{_compiled(results)}

## Closing note: the headline

{headline(det)}

Every figure above comes from one run of `{results["command"]}`. Benchmarks are never timed assertions in the
test suite. The quick mode for CI is `python -m benchmarks --smoke` (under 60 s, in the benchmark environment);
`tests/benchmarks/` checks only that the detection command runs, that loopguard refuses 7/7 public runaways by
their deadline and 0/7 legitimate runs, that goal rows report the measured figure and whether it met the target,
and that the storage variants leave no schema or key behind.
"""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
