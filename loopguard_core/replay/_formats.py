"""Reading recorded tool-call traces in the formats people already have.

- ``jsonl``: one call per line, ``{"tool", "args", "result", "error", "agent"}``; a ``trace`` (or
  ``trace_id``, ``run_id``, ``session_id``, ``thread_id``) field groups lines into traces, otherwise the file
  is one trace.
- ``corpus``: a JSON list of ``{"name", "calls": [...], "label", "loop_start", "deadline"}`` (loopguard's
  real-trace corpus), or ``{"scenarios": [{"name", "kind", "trip_by", "calls"}]}`` (the synthetic one).
- ``otel``: OpenTelemetry spans exported as JSON: OTLP JSON (``resourceSpans`` ...), or a list of spans as
  the SDK's console/file exporters write them. Tool calls are spans with ``gen_ai.operation.name =
  execute_tool`` (or a ``gen_ai.tool.name``); arguments and result come from ``gen_ai.tool.call.arguments``
  / ``gen_ai.tool.call.result`` (or the ``input.value`` / ``output.value`` attributes of OpenInference).
- ``langsmith``: a LangSmith run export (JSON list or JSONL of runs); tool runs are ``run_type == "tool"``.

``auto`` tells them apart by content; a ``.gz`` file is read compressed. Nothing here needs a third-party
package.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "Trace", "TraceCall", "TraceFormatError", "load_traces"]

FORMATS = ("auto", "jsonl", "corpus", "otel", "langsmith")
_GROUP_KEYS = ("trace", "trace_id", "run_id", "session_id", "thread_id")


class TraceFormatError(ValueError):
    """A traces file that cannot be read as the format given (or as any, for ``auto``)."""


@dataclass(frozen=True)
class TraceCall:
    tool: str
    args: Any = None
    result: Any = None
    error: Any = None
    agent: str | None = None


@dataclass(frozen=True)
class Trace:
    """One recorded run. ``label`` (``runaway``/``legit``), ``loop_start`` and ``deadline`` (0-based call
    indices) come from labelled corpora and let a replay be scored."""

    name: str
    calls: tuple[TraceCall, ...]
    label: str | None = None
    loop_start: int | None = None
    deadline: int | None = None
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


def load_traces(path: str | Path, fmt: str = "auto") -> list[Trace]:
    """Every trace in ``path`` (see module docs for the formats)."""
    if fmt not in FORMATS:
        raise TraceFormatError(f"unknown trace format {fmt!r}: use one of {', '.join(FORMATS)}")
    file = Path(path)
    try:
        if file.suffix == ".gz":  # corpora are large: read them compressed as they are kept
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                text = handle.read()
        else:
            text = file.read_text(encoding="utf-8")
    except (OSError, EOFError) as exc:
        raise TraceFormatError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    except UnicodeDecodeError:
        raise TraceFormatError(f"{file} is not UTF-8 text (a trace file is JSON or JSONL)") from None
    records = _parse(text, file)
    if fmt == "auto":
        fmt = _sniff(records, file)
    reader = {"jsonl": _calls_file, "corpus": _corpus, "otel": _otel, "langsmith": _langsmith}[fmt]
    try:
        traces = reader(records, file)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TraceFormatError(f"{file} does not read as {fmt} traces: {type(exc).__name__}: {exc}") from None
    if not traces:
        raise TraceFormatError(f"{file} holds no tool calls in the {fmt} format")
    return traces


def _parse(text: str, file: Path) -> Any:
    stripped = text.strip()
    if not stripped:
        raise TraceFormatError(f"{file} is empty")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    lines = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{file}:{number} is not JSON ({exc.msg}); a trace file is JSON or JSONL") from None
    return lines


def _sniff(records: Any, file: Path) -> str:
    if isinstance(records, Mapping):
        if "resourceSpans" in records:
            return "otel"
        if "scenarios" in records:
            return "corpus"
        records = records.get("runs") or records.get("spans") or records.get("data") or [records]
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        first = records[0]
        if "calls" in first:
            return "corpus"
        if "run_type" in first or "dotted_order" in first:
            return "langsmith"
        if "resourceSpans" in first or "span_id" in first or "spanId" in first or "context" in first:
            return "otel"
        if "tool" in first:
            return "jsonl"
    raise TraceFormatError(
        f"cannot tell the format of {file}: give --format jsonl, corpus, otel or langsmith "
        "(jsonl lines need a 'tool' field)"
    )


def _call(record: Mapping[str, Any]) -> TraceCall:
    tool = record.get("tool") or record.get("name")
    if not isinstance(tool, str) or not tool:
        raise ValueError(f"a call without a tool name: {str(record)[:120]}")
    error = record.get("error")
    return TraceCall(tool, record.get("args"), record.get("result"), error or None, record.get("agent"))


def _calls_file(records: Any, file: Path) -> list[Trace]:
    if isinstance(records, Mapping):
        records = [records]
    groups: dict[str, list[TraceCall]] = {}
    for record in records:
        key = next((str(record[k]) for k in _GROUP_KEYS if record.get(k) is not None), file.stem)
        groups.setdefault(key, []).append(_call(record))
    return [Trace(name, tuple(calls), source=str(file)) for name, calls in groups.items()]


def _corpus(records: Any, file: Path) -> list[Trace]:
    if isinstance(records, Mapping) and "scenarios" in records:
        traces = []
        for scenario in records["scenarios"]:
            trip_by = scenario.get("trip_by")
            label = "runaway" if scenario.get("kind") == "runaway" else "legit"
            calls = tuple(_scenario_call(c) for c in scenario["calls"])
            deadline = None if trip_by is None else int(trip_by) - 1
            traces.append(
                Trace(scenario["name"], calls, label, 0 if deadline is not None else None, deadline, str(file))
            )
        return traces
    traces = []
    for record in records:
        calls = tuple(_call(c) for c in record["calls"])
        traces.append(
            Trace(
                record["name"],
                calls,
                record.get("label"),
                record.get("loop_start"),
                record.get("deadline"),
                record.get("source", str(file)),
                {k: record[k] for k in ("pattern", "tier") if k in record},
            )
        )
    return traces


def _scenario_call(record: Mapping[str, Any]) -> TraceCall:
    # The synthetic format: ``error`` is a flag and the result text is the error message.
    failed = record.get("error") not in (None, False, "")
    error = (record["error"] if isinstance(record["error"], str) else str(record.get("result"))) if failed else None
    return TraceCall(
        record["tool"], record.get("args"), None if failed else record.get("result"), error, record.get("agent")
    )


# -- OpenTelemetry ------------------------------------------------------------------------------------
def _otel(records: Any, file: Path) -> list[Trace]:
    spans = list(_spans(records))
    groups: dict[str, list[tuple[Any, TraceCall]]] = {}
    for span in spans:
        attrs = _attributes(span.get("attributes"))
        operation = attrs.get("gen_ai.operation.name")
        tool = attrs.get("gen_ai.tool.name")
        if operation != "execute_tool" and not tool:
            continue
        tool = tool or span.get("name") or "tool"
        if isinstance(tool, str) and tool.startswith("execute_tool "):
            tool = tool[len("execute_tool ") :]
        args = _maybe_json(attrs.get("gen_ai.tool.call.arguments", attrs.get("input.value")))
        result = _maybe_json(attrs.get("gen_ai.tool.call.result", attrs.get("output.value")))
        status = span.get("status") or {}
        code = status.get("code") or status.get("status_code") if isinstance(status, Mapping) else None
        failed = str(code).upper() in ("2", "ERROR", "STATUS_CODE_ERROR") or bool(attrs.get("error.type"))
        error = (
            (status.get("message") or attrs.get("error.type") or "error")
            if failed and isinstance(status, Mapping)
            else None
        )
        agent = attrs.get("gen_ai.agent.name")
        trace_id = span.get("traceId") or (span.get("context") or {}).get("trace_id") or file.stem
        start = span.get("startTimeUnixNano") or span.get("start_time") or 0
        groups.setdefault(str(trace_id), []).append(
            (_sortable(start), TraceCall(str(tool), args, result, error, agent))
        )
    return [
        Trace(name, tuple(call for _, call in sorted(items, key=lambda x: x[0])), source=str(file))
        for name, items in groups.items()
    ]


def _spans(records: Any) -> Iterable[Mapping[str, Any]]:
    batches = records if isinstance(records, list) else [records]
    for batch in batches:
        if not isinstance(batch, Mapping):
            continue
        if "resourceSpans" in batch:
            for resource in batch["resourceSpans"]:
                for scope in resource.get("scopeSpans") or resource.get("instrumentationLibrarySpans") or []:
                    yield from scope.get("spans", [])
        elif "spans" in batch and isinstance(batch["spans"], list):
            yield from batch["spans"]
        else:
            yield batch


def _attributes(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    out: dict[str, Any] = {}
    for item in raw or []:  # OTLP JSON: [{"key": k, "value": {"stringValue": v}}]
        value = item.get("value") or {}
        for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if kind in value:
                out[item["key"]] = value[kind]
                break
    return out


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _sortable(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return (0, value)
    try:
        return (0, int(value))
    except (TypeError, ValueError):
        return (1, str(value))


# -- LangSmith ------------------------------------------------------------------------------------------
def _langsmith(records: Any, file: Path) -> list[Trace]:
    runs = records.get("runs", records) if isinstance(records, Mapping) else records
    groups: dict[str, list[tuple[Any, TraceCall]]] = {}
    for run in runs:
        if run.get("run_type") != "tool":
            continue
        inputs = run.get("inputs") or {}
        args = inputs.get("input") if isinstance(inputs, Mapping) and set(inputs) == {"input"} else inputs
        outputs = run.get("outputs") or {}
        result = outputs.get("output", outputs) if isinstance(outputs, Mapping) else outputs
        if isinstance(result, Mapping) and "content" in result:  # a serialised ToolMessage
            result = result.get("content")
        metadata = (run.get("extra") or {}).get("metadata") or {}
        agent = metadata.get("lc_agent_name") or metadata.get("langgraph_node")
        order = run.get("dotted_order") or run.get("start_time") or ""
        trace_id = str(run.get("trace_id") or run.get("session_id") or file.stem)
        call = TraceCall(str(run.get("name") or "tool"), _maybe_json(args), result, run.get("error") or None, agent)
        groups.setdefault(trace_id, []).append((str(order), call))
    return [
        Trace(name, tuple(call for _, call in sorted(items, key=lambda x: x[0])), source=str(file))
        for name, items in groups.items()
    ]
