"""``loopguard replay``: recorded traces in every supported format, through the CLI, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopguard_core.cli import build
from loopguard_core.replay import TraceFormatError, load_traces, replay, summarize

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLES = DATA / "replay"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(build(), ["replay", *args])
    return result.exit_code, result.output


def test_jsonl_calls_grouped_into_traces_show_where_and_why(runner: CliRunner) -> None:
    code, out = run(runner, str(SAMPLES / "calls.jsonl"))
    assert code == 1  # something would have been refused
    assert "java-build" in out and "call 4 (bash): refused [loop/repeat]" in out
    assert "fix-loop" not in out  # a rerun between edits that went through: never refused
    assert "traces with a refusal" in out and "first refusal: loop/repeat" in out


def test_verbose_lists_the_traces_left_alone_too(runner: CliRunner) -> None:
    _, out = run(runner, "-v", str(SAMPLES / "calls.jsonl"))
    assert "fix-loop (9 calls)" in out and "nothing refused" in out


def test_opentelemetry_genai_spans_are_replayed(runner: CliRunner) -> None:
    code, out = run(runner, str(SAMPLES / "otel_spans.json"))
    assert code == 1
    assert "call 4 (get_reservation_details): refused [loop/repeat]" in out
    assert "agent 'airline-agent'" in out
    traces = load_traces(SAMPLES / "otel_spans.json")
    assert [len(t.calls) for t in traces] == [5]  # the model span is not a tool call
    assert traces[0].calls[0].args == {"reservation_id": "ZFA04Y"}
    assert traces[0].calls[0].error  # status ERROR: a failed call


def test_langsmith_run_exports_are_replayed(runner: CliRunner) -> None:
    code, out = run(runner, "--format", "langsmith", str(SAMPLES / "langsmith_runs.json"))
    assert code == 1
    assert "call 4 (kb_search): refused [loop/repeat]" in out and "agent 'support'" in out


def test_a_labelled_corpus_is_scored(runner: CliRunner) -> None:
    code, out = run(runner, str(DATA / "tool_call_scenarios.json"))
    assert code == 1
    assert "runaway caught by its deadline" in out and "7/7" in out
    assert "legitimate runs refused" in out and "0/7" in out


def test_json_output_carries_every_refusal(runner: CliRunner) -> None:
    code, out = run(runner, "--json", str(SAMPLES / "calls.jsonl"))
    assert code == 1
    report = json.loads(out)
    assert report["summary"]["refused"] == 1
    build_trace = next(t for t in report["traces"] if t["name"] == "java-build")
    assert build_trace["ran"] == 3
    assert [(r["index"], r["reason"], r["rule"]) for r in build_trace["refusals"]] == [(3, "loop", "repeat")]


def test_observe_mode_lists_every_call_that_would_be_refused(runner: CliRunner) -> None:
    code, out = run(runner, "--observe", "--json", str(SAMPLES / "calls.jsonl"))
    assert code == 1
    build_trace = next(t for t in json.loads(out)["traces"] if t["name"] == "java-build")
    assert build_trace["ran"] == 6
    assert [(r["index"], r["observed"]) for r in build_trace["refusals"]] == [(3, True), (4, True), (5, True)]


def test_a_configuration_file_replays_your_own_breaker(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "guard.py"
    config.write_text(
        "from loopguard_core import Breaker, LoopDetection\n"
        "def make_breaker():\n"
        "    return Breaker(loop_detection=LoopDetection(max_repeats_per_tool={'bash': 6}))\n"
    )
    code, out = run(runner, "--config", str(config), str(SAMPLES / "calls.jsonl"))
    assert code == 0
    assert "traces with a refusal" in out
    code, out = run(runner, "--max-repeats", "6", str(SAMPLES / "calls.jsonl"))
    assert code == 0


def test_bad_input_gets_a_clear_error_and_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"tool": "a"}\nnot json\n')
    code, out = run(runner, str(broken))
    assert code == 2 and "broken.jsonl:2 is not JSON" in out
    unknown = tmp_path / "unknown.json"
    unknown.write_text('[{"x": 1}]')
    code, out = run(runner, str(unknown))
    assert code == 2 and "give --format" in out
    code, out = run(runner, str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in out
    bad_config = tmp_path / "bad.py"
    bad_config.write_text("x = 1\n")
    code, out = run(runner, "--config", str(bad_config), str(SAMPLES / "calls.jsonl"))
    assert code == 2 and "make_breaker()" in out
    with pytest.raises(TraceFormatError, match="unknown trace format"):
        load_traces(SAMPLES / "calls.jsonl", "csv")


def test_the_library_api_scores_a_labelled_corpus() -> None:
    from loopguard_core import Breaker

    traces = load_traces(DATA / "tool_call_scenarios.json")
    results = [replay(trace, Breaker) for trace in traces]
    summary = summarize(results)
    assert (summary.runaway, summary.caught, summary.legit, summary.false_refusals) == (7, 7, 7, 0)
    assert all(r.first is None or r.first.index < len(r.trace.calls) for r in results)
