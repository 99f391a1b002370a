"""Render a review frame as plain text, Markdown, or one self-contained HTML page (inline CSS and SVG).

Renders are deterministic: the same frame gives the same bytes (no "generated at" time), and each one
ends with the frame hash the reviewer attests.
"""

from __future__ import annotations

from html import escape

from ..ledger import LedgerRow
from ._frame import ReviewFrame

__all__ = ["FORMATS", "render", "render_html", "render_markdown", "render_text"]

FORMATS = ("text", "md", "html")


def _usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.6f}"


def _tools(frame: ReviewFrame) -> str:
    d = frame.diff
    if not d.tools:
        return str(d.tool_calls)
    return f"{d.tool_calls} (" + ", ".join(f"{name} x{n}" for name, n in d.tools) + ")"


def _summary(frame: ReviewFrame) -> list[tuple[str, str]]:
    d = frame.diff
    return [
        ("Outcome", d.outcome),
        ("Ledger rows", str(d.rows)),
        ("Model turns", str(d.model_turns)),
        ("Tool calls", _tools(frame)),
        ("Tokens", f"{d.tokens:,} (in {d.input_tokens:,} / out {d.output_tokens:,})"),
        ("Cost", _usd(d.cost_micros)),
        ("Failed calls", str(d.failures)),
        ("First row", d.first_at),
        ("Last row", d.last_at),
    ]


def _row_cells(r: LedgerRow) -> list[str]:
    return [
        str(r.seq),
        str(r.turn),
        r.origin,
        r.agent or "",
        r.tool or "",
        f"{r.tokens:,}",
        _usd(r.cost_micros),
        str(r.duration_ms),
        "yes" if r.passed else "NO",
        r.breach_reason or "",
        r.input_hash[:12],
    ]


_HEAD = ["seq", "turn", "origin", "agent", "tool", "tokens", "cost", "ms", "passed", "reason", "input hash"]


def _ledger_line(frame: ReviewFrame) -> str:
    if frame.ledger_ok:
        return "the ledger verifies (every row hash and link checked)"
    return "THE LEDGER DOES NOT VERIFY: " + "; ".join(frame.ledger_problems)


def _attest_hint(frame: ReviewFrame) -> str:
    return (
        f"To accept this result: loopguard attest {frame.session_id} --reviewer NAME "
        f"(pins frame hash {frame.frame_hash})"
    )


def render_text(frame: ReviewFrame) -> str:
    """A plain-text frame for a terminal or a log."""
    s = frame.spec
    out = [
        f"REVIEW FRAME  session {frame.session_id}",
        f"frame hash    {frame.frame_hash}",
        "",
        "[1] ORIGINAL PROMISE",
        f"  What it does:      {s.what_it_does}",
        f"  What it does NOT:  {s.what_it_does_not}",
        f"  Spec written:      {s.created_at}",
        "",
        "[2] ACCEPTANCE CRITERIA",
        f"  Done looks like:   {frame.acceptance_criteria}",
        "",
        "[3] DIFF (what the run did)",
    ]
    out += [f"  {k + ':':<18} {v}" for k, v in _summary(frame)]
    out += ["", f"[4] EVIDENCE: {_ledger_line(frame)}"]
    table = [_HEAD] + [_row_cells(r) for r in frame.evidence]
    widths = [max(len(row[i]) for row in table) for i in range(len(_HEAD))]
    out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    out += ["", "[5] UNRESOLVED ASSUMPTIONS"]
    out += [f"  - {a}" for a in frame.assumptions] or ["  None found in the ledger."]
    out += ["", _attest_hint(frame)]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(frame: ReviewFrame) -> str:
    """A Markdown frame (for a pull request, a ticket or a chat message)."""
    s = frame.spec
    out = [
        f"# Review frame: session `{frame.session_id}`",
        "",
        f"Frame hash: `{frame.frame_hash}`",
        "",
        "## 1. Original promise",
        "",
        f"- **What it does:** {_md(s.what_it_does)}",
        f"- **What it does NOT do:** {_md(s.what_it_does_not)}",
        f"- **Spec written:** {s.created_at}",
        "",
        "## 2. Acceptance criteria",
        "",
        f"> {_md(frame.acceptance_criteria)}",
        "",
        "## 3. Diff: what the run did",
        "",
        "| | |",
        "|---|---|",
    ]
    out += [f"| {k} | {_md(v)} |" for k, v in _summary(frame)]
    out += ["", "## 4. Evidence", "", f"{'✅' if frame.ledger_ok else '❌'} {_md(_ledger_line(frame))}", ""]
    out += ["| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    out += ["| " + " | ".join(_md(c) for c in _row_cells(r)) + " |" for r in frame.evidence]
    out += ["", "## 5. Unresolved assumptions", ""]
    out += [f"- {_md(a)}" for a in frame.assumptions] or ["None found in the ledger."]
    out += ["", f"_{_attest_hint(frame)}_"]
    return "\n".join(out) + "\n"


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 18px;margin:14px 0}
.hash{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;color:#5b6472;word-break:break-all}
dl{display:grid;grid-template-columns:190px 1fr;gap:4px 12px;margin:0}dt{color:#5b6472}dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 6px;border-bottom:1px solid #eceef2;
text-align:left}th{color:#5b6472;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.trip td{background:#fdecec}tr.fail td{background:#fff6e5}.mono{font-family:ui-monospace,Menlo,monospace}
.ok{color:#17803d;font-weight:600}.bad{color:#b42318;font-weight:600}
blockquote{margin:0;padding:8px 12px;border-left:4px solid #4c78a8;background:#f2f6fb}
ul{margin:0;padding-left:20px}.legend{font-size:12px;color:#5b6472;margin-top:6px}
.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
"""


def _chart(frame: ReviewFrame) -> str:
    """Per-row tokens (bars) and cumulative cost (line), with every trip marked by a red line."""
    rows = frame.evidence
    width, height = 960, 280
    left, right, top, bottom = 64, 80, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(rows)
    step = plot_w / max(n, 1)
    bar_w = max(1.0, step * 0.7)
    max_tokens = max((r.tokens for r in rows), default=0) or 1
    total_cost = sum(r.cost_micros for r in rows) or 1
    parts = [
        f'<svg id="lg-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="Tokens and cumulative cost per ledger row">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fbfcfd" stroke="#dde1e7"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef2"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#5b6472">'
            f"{round(max_tokens * frac):,}</text>"
        )
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" font-size="11" fill="#b35c00">'
            f"${total_cost * frac / 1_000_000:.4f}</text>"
        )
    cum = 0
    points = []
    label_every = max(1, n // 20)
    for i, r in enumerate(rows):
        x = left + i * step + (step - bar_w) / 2
        h = max(plot_h * r.tokens / max_tokens, 3.0)  # calls without tokens still show as a tick
        colour = {"model": "#4c78a8", "tool": "#72b7b2", "breaker": "#e45756"}.get(r.origin, "#9d9d9d")
        stroke = ' stroke="#e45756" stroke-width="1.5"' if not r.passed else ""
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{colour}"{stroke}><title>row {r.seq}, turn {r.turn}, {escape(r.origin)}'
            f"{' ' + escape(r.tool) if r.tool else ''}: {r.tokens:,} tokens, {_usd(r.cost_micros)}</title></rect>"
        )
        cum += r.cost_micros
        cx = left + i * step + step / 2
        points.append(f"{cx:.1f},{top + plot_h * (1 - cum / total_cost):.1f}")
        if i % label_every == 0:
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle" '
                f'fill="#5b6472">{r.turn}</text>'
            )
        if r.origin == "breaker":
            parts.append(
                f'<line class="trip" x1="{cx:.1f}" x2="{cx:.1f}" y1="{top}" y2="{top + plot_h}" '
                'stroke="#d62728" stroke-width="2" stroke-dasharray="6 4"/>'
                f'<text x="{cx:.1f}" y="{top - 6}" font-size="12" font-weight="600" fill="#d62728" '
                f'text-anchor="middle">trip: {escape(r.breach_reason or "unknown")}</text>'
            )
    if points:
        parts.append(
            f'<polyline class="cost" points="{" ".join(points)}" fill="none" stroke="#f58518" stroke-width="2"/>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle" fill="#5b6472">'
        "turn (one bar per ledger row)</text>"
        f'<text x="14" y="{top + plot_h / 2}" font-size="11" fill="#5b6472" '
        f'transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">tokens</text>'
        f'<text x="{width - 12}" y="{top + plot_h / 2}" font-size="11" fill="#b35c00" '
        f'transform="rotate(90 {width - 12} {top + plot_h / 2})" text-anchor="middle">cumulative USD</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_html(frame: ReviewFrame) -> str:
    """One self-contained HTML page: inline CSS and SVG, no script, no network."""
    s = frame.spec
    e = escape
    summary = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _summary(frame))
    head = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    numeric = {0, 1, 5, 6, 7}
    body_rows = []
    for r in frame.evidence:
        cls = ' class="trip"' if r.origin == "breaker" else (' class="fail"' if not r.passed else "")
        cells = "".join(
            f'<td class="num">{e(c)}</td>' if i in numeric else f"<td>{e(c)}</td>" for i, c in enumerate(_row_cells(r))
        )
        body_rows.append(f"<tr{cls}>{cells}</tr>")
    ledger_cls = "ok" if frame.ledger_ok else "bad"
    assumptions = (
        "<ul>" + "".join(f"<li>{e(a)}</li>" for a in frame.assumptions) + "</ul>"
        if frame.assumptions
        else "<p>None found in the ledger.</p>"
    )
    legend = (
        '<div class="legend"><span class="swatch" style="background:#4c78a8"></span>model turn'
        '<span class="swatch" style="background:#72b7b2"></span>tool call'
        '<span class="swatch" style="background:#e45756"></span>trip'
        '<span class="swatch" style="background:#f58518"></span>cumulative cost</div>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Review: {e(frame.session_id)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>Review frame: session <span class="mono">{e(frame.session_id)}</span></h1>'
        f'<div class="hash">frame hash {frame.frame_hash}</div>'
        "<section><h2>1. Original promise</h2><dl>"
        f"<dt>What it does</dt><dd>{e(s.what_it_does)}</dd>"
        f"<dt>What it does NOT do</dt><dd>{e(s.what_it_does_not)}</dd>"
        f"<dt>Spec written</dt><dd>{e(s.created_at)}</dd></dl></section>"
        "<section><h2>2. Acceptance criteria</h2>"
        f"<blockquote>{e(frame.acceptance_criteria)}</blockquote></section>"
        f"<section><h2>3. Diff: what the run did</h2><dl>{summary}</dl>{_chart(frame)}{legend}</section>"
        f'<section><h2>4. Evidence</h2><p class="{ledger_cls}">{e(_ledger_line(frame))}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body_rows)}</tbody></table></section>"
        f"<section><h2>5. Unresolved assumptions</h2>{assumptions}</section>"
        f'<p class="hash">{e(_attest_hint(frame))}</p>'
        "</main></body></html>\n"
    )


def render(frame: ReviewFrame, format: str = "text") -> str:
    """Render as ``text``, ``md`` (``markdown``) or ``html``."""
    fmt = {"markdown": "md", "txt": "text"}.get(format, format)
    if fmt == "text":
        return render_text(frame)
    if fmt == "md":
        return render_markdown(frame)
    if fmt == "html":
        return render_html(frame)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
