"""Build /work/validation/extra.json: an extra, independently sourced validation corpus of real agent tool-call
trajectories, labelled by the written rule of /work/shared/corpus/README.md.

    MIRROR_ROOT=/work/.mirror python3 build.py            # build extra.json (+ extra_excluded.json)
    MIRROR_ROOT=/work/.mirror python3 build.py --review   # print every runaway candidate episode that needs a
                                                          # hand decision (same_args_changing, interleaved_repeat)
    MIRROR_ROOT=/work/.mirror python3 build.py --stats    # pool sizes per family and label, no output written

DIR/<owner>+<name>/repo is a bare git clone (or snapshot) of each source repository; every file is read with
`git show <commit>:<path>` at a pinned commit (see SOURCES below). The labelling helpers (label.py) and the
shared parsers (parsers.mini_swe, parsers.swe_action, parsers.trunc) are imported read-only from
/work/shared/corpus/build; classify(), episodes(), triples(), alternation(), max_pair(), rep_score(), sample(),
select() and record() are copied from build_corpus.py unchanged except where marked "CHANGED".
"""
import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("SHARED_BUILD", os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SHARED)
import parsers  # noqa: E402  (read-only reuse: mini_swe, swe_action, trunc)
from label import find_episodes, find_interleaved, ws, vol, out  # noqa: E402

MIRROR = os.environ.get("MIRROR_ROOT", "/work/.mirror")
OUT = os.path.join(HERE, "extra.json")
OUT_EXCL = os.path.join(HERE, "extra_excluded.json")
OUT_DECISIONS = os.path.join(HERE, "hand_decisions.json")

# ---- sources: repo -> pinned commit(s) ------------------------------------------------------------------------
CODER = ("NL2Code/CodeR", "d63468344bc215bbabb8f0c1ba4af24897a946df")
CSCI635 = "RussellRyanH/CSCI-635-LiveSWE-Agent"
CSCI635_COMMITS = {  # path prefix -> commit holding it (the run dirs were committed at different times)
    "results/llm-ablation/gpt-5-mini/": "2813cfb19465bb9f57d50ebd0798550480a2f836",   # HEAD
    "results/live-gpt-5-mini-verified/": "ab2510bc68d3ac6287e9944e5b49110a1503f263",  # later deleted
}
TAU2 = "sierra-research/tau2-bench"
# (commit, path, model label or None = from info.agent_info.llm, run label). Simulation result files of the tau2
# runner kept in the repository's history (experiment results, a judge-viewer input, leaderboard submissions
# with full trajectories). Files of 4 MiB and more are absent from the snapshot and cannot be used.
TAU2_FILES = [
    ("4b2fea6ac12db5c20001d91dddd261dbab95b61e",
     "data/simulations/2025-08-10T02:44:06.496849_telecom_llm_agent_gpt-4o_user_simulator_gpt-4o.json", None, "sim-20250810"),
    ("07c6aaca2241884938a700504bf621f10b886d33", "judge_viewer/data/simulations/azure-airline-full.json", None, "judge-viewer"),
    ("29510b1d0d47dbe502ada30079c642bd0d172ed9",
     "src/experiments/eval/data/qwen2.5-7b-retries/ollama_chat/qwen2.5:7b_airline_default_gpt-4.1-2025-04-14_1trials.json", None, "eval-retries"),
] + [
    ("29510b1d0d47dbe502ada30079c642bd0d172ed9", "src/experiments/model_training/results/" + f, None, "model-training")
    for f in ["ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm_airline_default_gpt-4.1_1trials.json",
              "ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm_retail_default_gpt-4.1_1trials.json",
              "ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm_telecom_default_gpt-4.1_1trials.json",
              "ft:gpt-4.1-2025-04-14:sierra:tau2-full-sft:BzrYdMNm_telecom_no-user_gpt-4.1_1trials.json",
              "gpt-4.1_airline_default_gpt-4.1_1trials.json", "gpt-4.1_retail_defautl_gpt-4.1_1trials.json",
              "gpt-4.1_telecom_default_gpt-4.1_1trials.json", "gpt-4.1_telecom_no-user_gpt-4.1_1trials.json"]
] + [
    ("0fcc3a3685235b27f557a063a10612b3c5f5e662", "src/experiments/tau2_trace/results/" + f, None, "tau2-trace")
    for f in ["e2e_airline_baseline.json", "e2e_retail_baseline.json", "e2e_telecom_adversarial.json", "e2e_telecom_baseline.json"]
] + [
    ("59b1453eaabb3c95c168709177e61e9ce49b6a9f", "web/leaderboard/public/submissions/adaptive-agent_community_2026-03-23/"
     "trajectories/adaptive_agent_airline_opus46_cascata.json", "claude-opus-4-6", "lb-adaptive-agent"),
    ("dfdc3f7bf914cebb203339e3d03fcccf4de22437", "web/leaderboard/public/submissions/button-claude-opus-4-6_distyl-ai_2026-03-04/"
     "trajectories/airline.json", None, "lb-button"),
    ("d09a02765032206730d6c8e967dd40cdf91de8f3", "web/leaderboard/public/submissions/claude-sonnet-4-5_aide-platform_2025-10-31/"
     "trajectories/claude-sonnet-4-5_airline_default_gpt4.1_1trials.json", None, "lb-aide"),
    ("52a4ed7b7b19189595e49dd10702cdfcbccdcb56", "web/leaderboard/public/submissions/gpt-oss-120b_openai_2025-11-26/"
     "trajectories/langchain_agent_airline_2025-11-26_00-37-06.json", None, "lb-langchain"),
    ("fe9d9054c375888892f4c52df1af19c3c5f94c02", "web/leaderboard/public/submissions/toolorchestra_nvidia_2025-12-02/"
     "trajectories/toolorchestra_airline_gpt-5_1trial.json", "toolorchestra", "lb-toolorchestra"),
    ("fe9d9054c375888892f4c52df1af19c3c5f94c02", "web/leaderboard/public/submissions/toolorchestra_nvidia_2025-12-02/"
     "trajectories/toolorchestra_retail_gpt-5_1trial.json", "toolorchestra", "lb-toolorchestra"),
] + [
    ("33b3701ab0ac3c06593a2b4cae25437362e4af21", "web/leaderboard/public/submissions/ironshell-ironforge_ironshell-ui_2026-03-09/"
     "trajectories/" + f, None, "lb-ironshell-" + f.split("_", 1)[1].rsplit(".", 1)[0])
    for f in ["ironshell_airline_gpt54_run1.json", "ironshell_airline_opus46_run1.json", "ironshell_ironforge_grok3_wave2.json",
              "ironshell_ironforge_o3_wave2.json", "ironshell_ironforge_v2_gpt54.json", "ironshell_ironforge_v2_sonnet46.json",
              "ironshell_ironforge_v3_deepseek.json"]
]
CC = ("jiayuanz3/SWEContextBench", "31bb04155f52b184bf31b220e3cff0607ac9c953")
CC_DIR = "cases/SWEContextBench Lite Past Experience"


def gitdir(repo):
    base = os.path.join(MIRROR, repo.replace("/", "+"), "repo")
    return os.path.join(base, ".git") if os.path.isdir(os.path.join(base, ".git")) else base


def ls(repo, commit, prefix):
    o = subprocess.run(["git", "--git-dir", gitdir(repo), "ls-tree", "-r", "--name-only", commit, "--", prefix],
                       capture_output=True, text=True, check=True).stdout
    return sorted(p for p in o.split("\n") if p)


def show(repo, commit, path):
    p = subprocess.run(["git", "--git-dir", gitdir(repo), "show", f"{commit}:{path}"], capture_output=True)
    if p.returncode != 0:
        return None  # absent from the snapshot (files of 4 MiB and more)
    return p.stdout.decode("utf-8", errors="replace")


def src(repo, commit, path, extra=""):
    return f"github:{repo}@{commit[:12]}:{path}{extra}"


trunc = parsers.trunc


# ---- parsers ----------------------------------------------------------------------------------------------------
CODER_EXTRA = {"plan", "succeed", "fail", "stackoverflow_search", "similar_issue_search"}


def coder_action(action):
    """CodeR runs on SWE-agent's ACI (parsers.swe_action) plus its own commands: the Manager's `plan`, the role
    hand-offs `succeed`/`fail`, AutoCodeRover-style `rover_search_*`, `stackoverflow_search`,
    `similar_issue_search`. Each becomes its own tool with {"args": rest_of_line}."""
    a = action.strip()
    if not a:
        return None, None
    first = a.split(None, 1)[0]
    if first in CODER_EXTRA or first.startswith("rover_search"):
        return first, {"args": a[len(first):].strip()}
    return parsers.swe_action(a)


def parse_coder(d, agent):
    calls = []
    for step in d.get("trajectory", []):
        if step.get("action", "").strip().startswith("exit_"):
            continue  # harness pseudo-steps (exit_cost), as in parsers.swe_agent
        tool, args = coder_action(step.get("action", ""))
        if tool is None:
            continue
        calls.append({"tool": tool, "args": args, "result": trunc(step.get("observation")), "error": None, "agent": agent})
    return calls


def parse_tau2(sim, agent):
    """tau2-bench simulation: assistant messages carry tool_calls [{id, name, arguments, requestor}], each answered
    by a role 'tool' message with the same id and an `error` flag. Only the agent's calls (requestor 'assistant')
    are kept; in telecom the user simulator has its own device tools (requestor 'user'), which are not agent calls.
    A tool message with error=true becomes `error` (its text, e.g. 'Error: ...'), as parsers.tau does for 'Error:'."""
    msgs = sim.get("messages") or []
    res = {}
    for m in msgs:
        if m.get("role") == "tool":
            res[m.get("id")] = m
    calls = []
    for m in msgs:
        if m.get("role") != "assistant":
            continue
        for tc in m.get("tool_calls") or []:
            if tc.get("requestor", "assistant") != "assistant":
                continue
            args = tc.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = {"raw": args}
            r = res.get(tc.get("id"))
            content = None if r is None else r.get("content")
            if r is not None and r.get("error"):
                calls.append({"tool": tc["name"], "args": args or {}, "result": None, "error": trunc(content or "error"), "agent": agent})
            else:
                calls.append({"tool": tc["name"], "args": args or {}, "result": trunc(content), "error": None, "agent": agent})
    return calls


def _cc_text(c):
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(x.get("text", "") if isinstance(x, dict) else str(x) for x in c)
    return "" if c is None else json.dumps(c)


def parse_cc(lines, agent):
    """Claude Code session log (JSONL): assistant records carry `tool_use` blocks {id, name, input}; the answer is
    a `tool_result` block {tool_use_id, content, is_error} in a later user record. is_error=true (a failed command
    with non-zero exit, a rejected Edit, a missing file, a hook refusal) becomes `error`."""
    uses, results = [], {}
    for r in lines:
        m = r.get("message") or {}
        if r.get("type") == "assistant":
            for b in m.get("content") or []:
                if isinstance(b, dict) and b.get("type") == "tool_use":
                    uses.append(b)
        elif r.get("type") == "user" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    results[b.get("tool_use_id")] = b
    calls = []
    for u in uses:
        b = results.get(u.get("id"))
        if b is None:
            continue  # never answered (session cut off)
        txt = _cc_text(b.get("content"))
        args = u.get("input") if isinstance(u.get("input"), dict) else {"input": u.get("input")}
        if b.get("is_error"):
            calls.append({"tool": u["name"], "args": args, "result": None, "error": trunc(txt), "agent": agent})
        else:
            calls.append({"tool": u["name"], "args": args, "result": trunc(txt), "error": None, "agent": agent})
    return calls


# ---- iterators: (name, source, agent, calls, meta) -------------------------------------------------------------
def iter_coder():
    repo, commit = CODER
    agent = "CodeR/gpt-4-turbo"
    for path in ls(repo, commit, "trajs"):
        if not path.endswith(".traj"):
            continue
        txt = show(repo, commit, path)
        if txt is None:
            continue
        d = json.loads(txt)
        inst = os.path.basename(path)[:-5]
        info = d.get("info") or {}
        yield (f"sweagent-coder/gpt-4-turbo/{inst}", src(repo, commit, path), agent, parse_coder(d, agent),
               {"exit_status": str(info.get("exit_status")),
                "api_calls": (info.get("model_stats") or {}).get("api_calls")})


def iter_csci635():
    repo = CSCI635
    for prefix, commit in CSCI635_COMMITS.items():
        for path in ls(repo, commit, prefix):
            if not path.endswith(".traj.json"):
                continue
            txt = show(repo, commit, path)
            if txt is None:
                continue
            d = json.loads(txt)
            info = d.get("info") or {}
            model = ((info.get("config") or {}).get("model") or {}).get("model_name", "unknown").split("/")[-1]
            agent = f"mini-swe-agent/{model}"
            run = prefix.strip("/").split("/")[-1]
            inst = os.path.basename(path)[:-len(".traj.json")]
            yield (f"mini-csci635/{model}/{run}/{inst}", src(repo, commit, path), agent, parsers.mini_swe(d, agent),
                   {"exit_status": str(info.get("exit_status")), "mini_version": info.get("mini_version"),
                    "api_calls": (info.get("model_stats") or {}).get("api_calls")})


def iter_tau2():
    for commit, path, model, run in TAU2_FILES:
        txt = show(TAU2, commit, path)
        if txt is None:
            continue
        d = json.loads(txt)
        info = d.get("info") or {}
        llm = model or (info.get("agent_info") or {}).get("llm") or "unknown"
        llm = llm.split("/")[-1]
        if llm.startswith("ft:"):
            llm = "ft-gpt-4.1-sft"
        domain = (info.get("environment_info") or {}).get("domain_name") or (
            "airline" if "airline" in path else "retail" if "retail" in path else "telecom" if "telecom" in path else "unknown")
        impl = (info.get("agent_info") or {}).get("implementation", "?")
        agent = f"tau2 {impl}/{llm}"
        for k, sim in enumerate(d.get("simulations") or []):
            tid = str(sim.get("task_id", k))
            tid = re.sub(r"[^A-Za-z0-9_.\[\]:-]+", "_", tid)
            name = f"tau2/{llm}/{domain}-{run}/task{tid}-trial{sim.get('trial', 0)}"
            ri = sim.get("reward_info") or {}
            yield (name, src(TAU2, commit, path, f"[simulations.{k}]"), agent, parse_tau2(sim, agent),
                   {"reward": ri.get("reward"), "termination_reason": sim.get("termination_reason"), "domain": domain})


def iter_cc():
    repo, commit = CC
    seen = collections.Counter()
    for path in ls(repo, commit, CC_DIR):
        if not path.endswith(".jsonl"):
            continue
        txt = show(repo, commit, path)
        if txt is None:
            continue
        lines = []
        for ln in txt.splitlines():
            try:
                lines.append(json.loads(ln))
            except ValueError:
                continue
        models = collections.Counter((r.get("message") or {}).get("model") for r in lines if r.get("type") == "assistant")
        model = models.most_common(1)[0][0] if models else "unknown"
        agent = f"ClaudeCode/{model}"
        first = next((_cc_text((r.get("message") or {}).get("content")) for r in lines if r.get("type") == "user"), "")
        m = re.search(r"instance_id:\s*(\S+)", first)
        inst = m.group(1) if m else os.path.basename(path)[:-6]
        seen[inst] += 1
        sess = os.path.basename(path)[:-6]
        yield (f"cc-swecontext/{model.replace('-20250929', '')}/{inst}-{sess}", src(repo, commit, path), agent,
               parse_cc(lines, agent), {"session": sess, "claude_code_version": next(
                   (r.get("version") for r in lines if r.get("version")), None)})


def iter_all():
    yield from iter_coder()
    yield from iter_csci635()
    yield from iter_tau2()
    yield from iter_cc()


# ---- hand review (filled in after reading `--review`; no detector had been run on this corpus) -----------------
# Interleaved repeats (rule 5), decided per episode (keyed by the episode's first position). True = confirmed
# no-progress: every call between the occurrences is a failed or no-op call; False = not confirmed (a call in
# between made progress or is legitimate waiting), so the episode is not used (a trace with no other episode then
# stays excluded as a long-interval recurrence, as in the public build).
INTERLEAVED = {
    "sweagent-coder/gpt-4-turbo/django__django-12453": {
        50: (True, "same rejected edit 27:32 x10, one rejected variant (27:27) in between")},
    "sweagent-coder/gpt-4-turbo/django__django-13158": {
        51: (True, "same rejected edit 70:70 x3, a rejected indented variant, then again")},
    "sweagent-coder/gpt-4-turbo/django__django-16400": {
        31: (True, "same rejected edit 95:95 x13, only rejected 95:96 variants in between"),
        33: (True, "same rejected edit 95:96, only rejected 95:95 variants in between")},
    "sweagent-coder/gpt-4-turbo/django__django-16816": {
        35: (True, "same rejected edit 72:73, rejected 72:72 / 72:74 variants in between, then x30 in a row")},
    "sweagent-coder/gpt-4-turbo/matplotlib__matplotlib-18869": {
        20: (True, "same rejected edit 149:149 x3, a rejected dedented variant, repeated")},
    "sweagent-coder/gpt-4-turbo/sphinx-doc__sphinx-8273": {
        10: (True, "same rejected edit '90:90' (empty), only rejected '90:90 + blank line' variants in between"),
        12: (True, "same rejected edit '90:90 + blank line', only rejected '90:90' variants in between")},
    "sweagent-coder/gpt-4-turbo/sympy__sympy-16503": {
        30: (True, "same `open pretty.py 1575` view, one rejected edit in between, then x7 in a row")},
    "sweagent-coder/gpt-4-turbo/mwaskom__seaborn-3010": {
        31: (True, "same rejected edit 22:34, one rejected variant in between, then x11 in a row")},
    "sweagent-coder/gpt-4-turbo/django__django-12589": {
        42: (False, "same failing `python reproduce.py`, but applied edits to reproduce.py in between"),
        48: (False, "same applied edit 64:64 repeated; between the 1st and 2nd a test run (not failed/no-op); "
                    "the consecutive repeat from call 50 stands")},
    "sweagent-coder/gpt-4-turbo/django__django-15695": {
        38: (False, "same failing `python reproduce.py`, but applied edits to reproduce.py in between"),
        46: (False, "same applied edit 73:80; between the 1st and 2nd a test run; the consecutive repeat from 48 stands")},
    "sweagent-coder/gpt-4-turbo/django__django-16408": {
        51: (False, "same failing `python reproduce.py`, applied (different) edits to reproduce.py in between")},
    "sweagent-coder/gpt-4-turbo/django__django-12983": {
        6: (False, "`succeed` role hand-offs (empty result); real navigation, an applied edit and a test run between")},
    "sweagent-coder/gpt-4-turbo/django__django-16527": {
        13: (False, "`succeed` role hand-offs (empty result); navigation, an applied edit and a test run between")},
    "sweagent-coder/gpt-4-turbo/sympy__sympy-24152": {
        6: (False, "scroll_down at the end of the file, but `goto 241` (a different window) in between: reading")},
    "cc-swecontext/claude-sonnet-4-5/django__django-15814-70262753": {
        29: (False, "BashOutput polls of a hung background test run with deliberate `sleep 30/30/60` in between, "
                    "then KillShell: bounded waiting on a job, not a failed/no-op repeat; left excluded")},
    "tau2/qwen2.5:7b/airline-eval-retries/task20-trial0": {
        0: (False, "same search_direct_flight, but successful other searches (onestop, list_all_airports) between")},
    "tau2/qwen2.5:7b/airline-eval-retries/task27-trial0": {
        2: (False, "same failing get_reservation_details (a user id as reservation id) x3, then a successful "
                   "get_flight_status between the 3rd and 4th: not failed/no-op; left excluded (ambiguous)")},
    "tau2/qwen2.5:7b/airline-eval-retries/task37-trial0": {
        6: (False, "same failing book_reservation, but a successful get_user_details between the 1st and 2nd; "
                   "the consecutive repeat from 8 stands")},
    "tau2/qwen2.5:7b/airline-eval-retries/task38-trial0": {
        17: (False, "same get_reservation_details, alternating with search_onestop_flight for new dates: searching")},
    "tau2/toolorchestra/retail-lb-toolorchestra/task9-trial0": {
        5: (False, "same get_product_details, other successful product/user look-ups in between")},
}
# consecutive 'same_args_changing' runs judged runaway: the result changes only through the call's own side effect
SAME_ARGS_RUNAWAY = {
    "sweagent-coder/gpt-4-turbo/mwaskom__seaborn-3010": "the same rejected edit 22:34 x11 with an identical "
        "rejection (calls 33-43); the 12th (44) is a dedented edit that whitespace folding makes 'the same' and "
        "gets a different error: the result never changes through progress",
}
# candidate episodes read and judged NOT a loop (the trace is then classified as a non-runaway)
NOT_RUNAWAY = {
    "sweagent-coder/gpt-4-turbo/sympy__sympy-18698": "the same rejected edit 408:423 x3, then a dedented version "
        "(the 'same' call only after whitespace folding) that applies: three identical failures, then progress",
}
# read and left out as ambiguous
AMBIGUOUS = {}


def cycle_covered(e, eps):
    """An interleaved episode whose first four occurrences lie inside a consecutive `cycle` episode is the cycle itself:
    the cycle sets loop_start/deadline, as in the public corpus (intercode-sql/vicuna/.../task988, a 2-call cycle
    of two failing queries, keeps the cycle's deadline). Not a separate decision."""
    return any(c["kind"] == "cycle" and c["start"] <= e["start"] and e["positions"][3] <= c["end"] for c in eps or [])


# ---- selection --------------------------------------------------------------------------------------------------
# None: every runaway found is kept (single-model families, as the public corpus kept all SWE-agent runaways);
# tau2 (8 agents): sampled by SHA-1 of the name with a per-model cap, so that one looping agent does not dominate
RUNAWAY_QUOTA = {"sweagent-coder": None, "mini-csci635": None, "tau2": 15, "cc-swecontext": None}
PER_MODEL_CAP = 3
CAP = {"tau2": 5}
LEGIT_QUOTA = {  # family -> (chosen for repetition with changing results, borderline, ordinary)
    "sweagent-coder": (40, 10, 6), "mini-csci635": (10, 3, 2), "tau2": (40, 10, 6), "cc-swecontext": (40, 10, 6),
}

PATTERN_NOTE = {
    "exact_repeat": "same call, same result, consecutive",
    "volatile_repeat": "same call, result identical except a volatile counter (e.g. a line or cell number)",
    "same_args_changing": "same call re-applied; result changes only through its own side effect or a volatile value",
    "cycle": "a block of 2-10 calls repeated with identical results",
    "interleaved_repeat": "same call + same result repeated, interleaved with failed/no-op calls",
}
PAGING = {"scroll_down", "scroll_up"}


def family(name):
    return name.split("/")[0]


def model_of(name):
    return name.split("/")[1]


def h(name):
    return hashlib.sha1(name.encode()).hexdigest()


def episodes(name, calls):
    eps = []
    for e in find_episodes(calls):
        if e["occ"] < 4 or e["kind"] == "flail_same_result":
            continue
        if e["kind"] == "same_args_changing" and calls[e["start"]]["tool"] in PAGING:
            continue
        eps.append({"kind": e["kind"], "start": e["start"], "end": e["end"], "k": e["k"], "occ": e["occ"],
                    "deadline": e["start"] + 4 * e["k"] - 1})
    return eps


def interleaved(calls, starts=None):
    """CHANGED: optionally only the episodes starting at `starts` (the ones confirmed by hand)."""
    return [{"kind": "interleaved_repeat", "start": e["start"], "end": e["end"], "k": 1, "occ": e["occ"],
             "deadline": e["positions"][3], "positions": e["positions"]} for e in find_interleaved(calls)
            if starts is None or e["start"] in starts]


def needs_review(ep):
    return ep["kind"] == "same_args_changing"


def triples(calls):
    return len([e for e in find_episodes(calls) if e["occ"] == 3 and e["kind"] != "flail_same_result"
                and not (e["kind"] == "same_args_changing" and calls[e["start"]]["tool"] in PAGING)])


def alternation(calls):
    keys = [(c["tool"], ws(c["args"]), vol(out(c))) for c in calls]
    best = None
    for k in range(2, 11):
        for i in range(len(keys) - k):
            if len(set(x[:2] for x in keys[i:i + k])) < 2:
                continue
            j = i + k
            while j < len(keys) and keys[j] == keys[j - k]:
                j += 1
            span = j - i
            if span >= 2 * k + 1 and span >= 7 and (best is None or span > best[2]):
                best = (i, k, span)
    return best


def max_pair(calls):
    c = collections.Counter((x["tool"], ws(x["args"]), vol(out(x))) for x in calls)
    return max(c.values()) if c else 0


def rep_score(calls):
    seen = collections.Counter()
    s = 0
    for c in calls:
        k = (c["tool"], ws(c["args"]))
        if seen[k]:
            s += 1
        seen[k] += 1
    return s


def classify(name, calls):
    """-> ('runaway', episodes) | ('legit', None) | ('excluded', reason) | ('candidate', episodes)"""
    if name in AMBIGUOUS:
        return "excluded", AMBIGUOUS[name]
    eps = [] if name in NOT_RUNAWAY else episodes(name, calls)
    confirmed = {st for st, (ok, _) in INTERLEAVED.get(name, {}).items() if ok}
    if confirmed:  # CHANGED: per-episode decisions instead of a per-trace list
        eps += interleaved(calls, confirmed)
    if eps:
        if any(needs_review(e) for e in eps) and name not in SAME_ARGS_RUNAWAY:
            return "candidate", eps
        return "runaway", eps
    if max_pair(calls) >= 4:
        return "excluded", "same call+result recurs >=4 times at long intervals among other attempts (ambiguous)"
    if [e for e in find_episodes(calls) if e["kind"] == "flail_same_result"]:
        return "excluded", "flail: many different requests, same empty/error result (ambiguous)"
    if find_interleaved(calls):
        return "excluded", "unreviewed interleaved repeat"
    alt = alternation(calls)
    if alt:
        return "excluded", (f"alternation: a {alt[1]}-call block recurs with identical results over {alt[2]} calls "
                            f"from call {alt[0]}, short of 4 passes (ambiguous)")
    return "legit", None


def interleaved_todo(name, calls, kind, info):
    """CHANGED (new): interleaved_repeat episodes that still need a hand decision. For a runaway/candidate: those
    that start or complete their 4th occurrence earlier than the consecutive episodes (the public corpus's 'Label
    corrections' check). For a trace with no consecutive episode: every interleaved episode (without a decision it
    is excluded as a long-interval recurrence, exactly as in the public build)."""
    if name in AMBIGUOUS:
        return []
    decided = INTERLEAVED.get(name, {})
    il = [e for e in interleaved(calls) if e["start"] not in decided]
    if not il:
        return []
    if kind in ("runaway", "candidate"):
        cons = [e for e in info if e["kind"] != "interleaved_repeat"]
        first_start = min(e["start"] for e in cons)
        first_dl = min(e["deadline"] for e in cons)
        return [e for e in il if (e["start"] < first_start or e["deadline"] < first_dl) and not cycle_covered(e, cons)]
    return il


def collect():
    pools = collections.defaultdict(lambda: {"runaway": [], "candidate": [], "legit": [], "excluded": []})
    seen = set()
    scanned = collections.Counter()
    todo_il = []
    for name, source, agent, calls, meta in iter_all():
        scanned[family(name)] += 1
        if not calls:
            continue
        key = (family(name), json.dumps([(c["tool"], c["args"]) for c in calls], sort_keys=True))
        if key in seen:
            continue  # identical action sequence already taken from this family (re-runs, copies)
        seen.add(key)
        kind, info = classify(name, calls)
        rec = {"name": name, "source": source, "agent": agent, "calls": calls, "meta": meta, "info": info}
        pools[family(name)][kind].append(rec)
        t = interleaved_todo(name, calls, kind, info)
        if t:
            todo_il.append((rec, t))
    return pools, scanned, todo_il


def sample(lst, quota, cap=PER_MODEL_CAP):
    lst = sorted(lst, key=lambda r: h(r["name"]))
    if quota is None:
        return lst
    out_, per = [], collections.Counter()
    for r in lst:
        if len(out_) >= quota:
            break
        if per[model_of(r["name"])] >= cap:
            continue
        per[model_of(r["name"])] += 1
        out_.append(r)
    return out_


def select(pools):
    runaway, legit, excluded, pending = [], [], [], []
    for fam, p in sorted(pools.items()):
        q = RUNAWAY_QUOTA.get(fam)
        picked = sample(p["runaway"] + p["candidate"], q, CAP.get(fam, PER_MODEL_CAP))
        for r in picked:
            (runaway if r in p["runaway"] else pending).append(r)
        excluded += [(r["name"], r["info"]) for r in p["excluded"]]
        nrep, nbord, nord = LEGIT_QUOTA.get(fam, (0, 0, 0))
        for r in p["legit"]:
            r["triples"] = triples(r["calls"])
            r["rep_score"] = rep_score(r["calls"])
        by_rep = sorted(p["legit"], key=lambda r: (-r["rep_score"], h(r["name"])))
        rep = [r for r in by_rep if r["triples"] > 0][:nbord] + [r for r in by_rep if r["triples"] == 0][:nrep]
        rest = [r for r in p["legit"] if r not in rep]
        ordn = sorted(rest, key=lambda r: h(r["name"]))[:nord]
        for r in rep:
            r["selection"] = "repetition"
        for r in ordn:
            r["selection"] = "ordinary"
        legit += rep + ordn
    return runaway, legit, excluded, pending


def record(r):
    if "triples" in r:  # legit
        t = {"name": r["name"], "source": r["source"], "label": "legit", "deadline": None,
             "triples": r["triples"], "rep_score": r["rep_score"], "selection": r["selection"],
             "meta": r["meta"], "calls": r["calls"]}
        t["tier"] = "borderline" if r["triples"] else "clear"
        if r["selection"] == "ordinary":
            t["pattern"] = "ordinary run (sampled without regard to repetition)"
        else:
            t["pattern"] = "three identical no-change calls then moves on" if r["triples"] else "repetition with changing results"
        return t
    eps = r["info"]
    first = min(eps, key=lambda e: e["deadline"])
    prim = [e for e in eps if e["kind"] != "interleaved_repeat"]
    kind = (min(prim, key=lambda e: e["deadline"]) if prim else first)["kind"]
    t = {"name": r["name"], "source": r["source"], "label": "runaway", "deadline": first["deadline"],
         "loop_start": min(e["start"] for e in eps), "pattern": kind, "pattern_note": PATTERN_NOTE[kind],
         "episodes": [{k: v for k, v in e.items() if k != "positions"} for e in eps],
         "meta": r["meta"], "calls": r["calls"], "tier": "clear"}
    notes = [f"interleaved from call {st}: {note}" for st, (ok, note) in sorted(INTERLEAVED.get(r["name"], {}).items()) if ok]
    notes += [x for x in (SAME_ARGS_RUNAWAY.get(r["name"]),) if x]
    if notes:
        t["review"] = "; ".join(notes)
    return t


# ---- review -----------------------------------------------------------------------------------------------------
def show_calls(calls, a=0, b=None, w=160):
    for i, x in enumerate(calls[a:b], a):
        res = x["result"] if x["result"] is not None else "ERR:" + str(x["error"])
        print(f"  {i:3d} {x['tool']} {json.dumps(x['args'])[:w]!s} => {res[:w]!r}")


def review(pools, todo_il):
    print("######## same_args_changing candidates (consecutive runs needing a decision)")
    for fam, p in sorted(pools.items()):
        for r in sorted(p["candidate"], key=lambda r: r["name"]):
            eps = r["info"]
            print(f"===== [CANDIDATE] {r['name']}  n={len(r['calls'])}  "
                  + str([(e['kind'], e['start'], e['end'], e['k']) for e in eps]))
            for e in eps:
                if e["kind"] == "same_args_changing":
                    show_calls(r["calls"], max(0, e["start"] - 1), min(len(r["calls"]), e["end"] + 2), 240)
    print("######## interleaved_repeat episodes needing a decision")
    for r, il in sorted(todo_il, key=lambda x: x[0]["name"]):
        for e in il:
            print(f"===== [INTERLEAVED] {r['name']}  n={len(r['calls'])}  positions={e['positions']}  "
                  f"(other episodes: {[(x['kind'], x['start'], x['deadline']) for x in (r['info'] if isinstance(r['info'], list) else [])]})")
            show_calls(r["calls"], e["start"], e["end"] + 1, 200)


def main():
    t0 = time.time()
    pools, scanned, todo_il = collect()
    if "--review" in sys.argv:
        review(pools, todo_il)
        return
    stats = {fam: {"scanned": scanned[fam], **{k: len(v) for k, v in p.items()}} for fam, p in sorted(pools.items())}
    print(json.dumps(stats))
    if "--stats" in sys.argv:
        print("interleaved episodes awaiting a decision:", len(todo_il))
        return
    runaway, legit, excluded, pending = select(pools)
    if pending or todo_il:
        print(f"{len(pending)} selected same_args_changing candidates and {len(todo_il)} interleaved episodes still "
              "need a hand decision (run with --review):")
        for r in pending:
            print("  ", r["name"])
        for r, _ in todo_il:
            print("  ", r["name"])
        sys.exit(1)
    corpus = [record(r) for r in runaway] + [record(r) for r in legit]
    json.dump(corpus, open(OUT, "w"), indent=1)
    json.dump(sorted(excluded), open(OUT_EXCL, "w"), indent=1)
    json.dump({"INTERLEAVED": {n: {str(k): {"runaway": ok, "note": note} for k, (ok, note) in v.items()}
                               for n, v in INTERLEAVED.items()},
               "SAME_ARGS_RUNAWAY": SAME_ARGS_RUNAWAY, "NOT_RUNAWAY": NOT_RUNAWAY, "AMBIGUOUS": AMBIGUOUS},
              open(OUT_DECISIONS, "w"), indent=1)
    c = collections.Counter((family(t["name"]), t["label"], t.get("tier"), t.get("selection", "")) for t in corpus)
    for k, v in sorted(c.items()):
        print(k, v)
    print("runaway", len(runaway), "legit", len(legit), "excluded (all, incl. unsampled pools)", len(excluded),
          "calls", sum(len(t["calls"]) for t in corpus), "bytes", os.path.getsize(OUT))
    print(collections.Counter(t["pattern"] for t in corpus if t["label"] == "runaway"))
    print(f"built in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
