"""Render a review frame as plain text, Markdown, or one self-contained HTML page (inline CSS and SVG).

Renders are deterministic: the same frame, attestations and ledger path give the same bytes (no "generated
at" time), and each one ends with the frame hash the reviewer attests and the command that attests it.

Attestations are not part of the frame (attesting must not change the hash it pins); pass them as
``attestations`` to show who attested, when, which frame hash, and whether it still matches this frame.
``ReviewSurface.render`` passes them, and the ledger path, for you.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from html import escape

from ..ledger import LedgerRow
from ._attest import Attestation
from ._frame import ReviewFrame

__all__ = ["FORMATS", "attest_command", "attestation_status", "render", "render_html", "render_markdown", "render_text"]

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


#: The ledger path the CLI uses when none is given; a hint for any other ledger names it with ``--db``.
DEFAULT_LEDGER = "ledger.db"


def attest_command(frame: ReviewFrame, db: str | None = None) -> str:
    """The shell command that attests this exact frame (``--frame-hash`` refuses it if the session changed)."""
    where = "" if db is None or db == DEFAULT_LEDGER else f" --db {shlex.quote(db)}"
    return f"loopguard attest {shlex.quote(frame.session_id)}{where} --reviewer NAME --frame-hash {frame.frame_hash}"


_ATTEST_LEAD = "To accept this result (replace NAME with yours), run:"


def _attest_hint(frame: ReviewFrame, db: str | None) -> str:
    return f"{_ATTEST_LEAD} {attest_command(frame, db)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _matches(frame: ReviewFrame, a: Attestation) -> bool:
    return a.frame_hash == frame.frame_hash


def attestation_status(frame: ReviewFrame, attestations: Sequence[Attestation]) -> tuple[bool, str]:
    """``(attested, one line)``: whether the current frame is attested, and by whom or why not."""
    current = [a for a in attestations if _matches(frame, a)]
    if current:
        a = current[-1]
        more = f" (and {len(current) - 1} earlier attestation(s) of this frame)" if len(current) > 1 else ""
        return True, f"ATTESTED by {_one_line(a.reviewer)} at {a.attested_at}; matches this frame{more}"
    if attestations:
        return False, (
            f"NOT ATTESTED: its {len(attestations)} attestation(s) are for an earlier frame "
            "(the session or the ledger changed after review)"
        )
    return False, "NOT ATTESTED: nobody has attested this session"


def _attestation_fields(frame: ReviewFrame, a: Attestation) -> tuple[str, str, str, str, str]:
    """reviewer, time, frame hash, match, notes."""
    match = "matches this frame" if _matches(frame, a) else "EARLIER FRAME: does not match this frame"
    return _one_line(a.reviewer), a.attested_at, a.frame_hash, match, _one_line(a.notes)


def render_text(frame: ReviewFrame, attestations: Sequence[Attestation] | None = None, *, db: str | None = None) -> str:
    """A plain-text frame for a terminal or a log (with ``attestations``: their status and list)."""
    s = frame.spec
    out = [
        f"REVIEW FRAME  session {frame.session_id}",
        f"frame hash    {frame.frame_hash}",
    ]
    if attestations is not None:
        out.append(f"attestation   {attestation_status(frame, attestations)[1]}")
    out += [
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
    if attestations is not None:
        out += ["", f"ATTESTATIONS ({len(attestations)})"]
        if not attestations:
            out.append("  None: nobody has attested this session.")
        for a in attestations:
            reviewer, at, frame_hash, match, notes = _attestation_fields(frame, a)
            out += [f"  - {reviewer} at {at}: {match}", f"    frame hash {frame_hash}"]
            if notes:
                out.append(f"    notes: {notes}")
    out += ["", _attest_hint(frame, db)]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def render_markdown(
    frame: ReviewFrame, attestations: Sequence[Attestation] | None = None, *, db: str | None = None
) -> str:
    """A Markdown frame (for a pull request, a ticket or a chat message)."""
    s = frame.spec
    out = [
        f"# Review frame: session {_md_code(frame.session_id)}",
        "",
        f"Frame hash: `{frame.frame_hash}`",
        "",
    ]
    if attestations is not None:
        attested, status = attestation_status(frame, attestations)
        out += [f"Attestation: {'✅' if attested else '❌'} {_md(status)}", ""]
    out += [
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
    if attestations is not None:
        out += ["", "## Attestations", ""]
        if not attestations:
            out.append("None: nobody has attested this session.")
        else:
            out += ["| reviewer | attested at (UTC) | frame hash | status | notes |", "|---|---|---|---|---|"]
            for a in attestations:
                reviewer, at, frame_hash, match, notes = _attestation_fields(frame, a)
                out.append(f"| {_md(reviewer)} | {at} | `{frame_hash}` | {match} | {_md(notes)} |")
    out += ["", f"{_ATTEST_LEAD} {_md_code(attest_command(frame, db))}"]
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
.attest{margin:8px 0 0;font-weight:600}code{font:12px ui-monospace,Menlo,monospace;word-break:break-all}
#attestations td.hash{font:12px ui-monospace,Menlo,monospace;word-break:break-all}
#attestations td.nowrap{white-space:nowrap}
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
        if r.is_trip:
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


def _html_attestations(frame: ReviewFrame, attestations: Sequence[Attestation]) -> str:
    e = escape
    if not attestations:
        body = "<p>None: nobody has attested this session.</p>"
    else:
        rows = []
        for a in attestations:
            reviewer, at, frame_hash, match, notes = _attestation_fields(frame, a)
            cls = "ok" if _matches(frame, a) else "bad"
            rows.append(
                f'<tr><td>{e(reviewer)}</td><td class="nowrap">{e(at)}</td><td class="hash">{e(frame_hash)}</td>'
                f'<td class="{cls} nowrap">{e(match)}</td><td>{e(notes)}</td></tr>'
            )
        body = (
            "<table><thead><tr><th>reviewer</th><th>attested at (UTC)</th><th>frame hash</th><th>status</th>"
            f"<th>notes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return f'<section id="attestations"><h2>Attestations</h2>{body}</section>'


def render_html(frame: ReviewFrame, attestations: Sequence[Attestation] | None = None, *, db: str | None = None) -> str:
    """One self-contained HTML page: inline CSS and SVG, no script, no network."""
    s = frame.spec
    e = escape
    status = ""
    attested_section = ""
    if attestations is not None:
        attested, line = attestation_status(frame, attestations)
        status = f'<p class="attest {"ok" if attested else "bad"}">{e(line)}</p>'
        attested_section = _html_attestations(frame, attestations)
    summary = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _summary(frame))
    head = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    numeric = {0, 1, 5, 6, 7}
    body_rows = []
    for r in frame.evidence:
        cls = ' class="trip"' if r.is_trip else (' class="fail"' if not r.passed else "")
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
        f'<div class="hash">frame hash {frame.frame_hash}</div>{status}'
        "<section><h2>1. Original promise</h2><dl>"
        f"<dt>What it does</dt><dd>{e(s.what_it_does)}</dd>"
        f"<dt>What it does NOT do</dt><dd>{e(s.what_it_does_not)}</dd>"
        f"<dt>Spec written</dt><dd>{e(s.created_at)}</dd></dl></section>"
        "<section><h2>2. Acceptance criteria</h2>"
        f"<blockquote>{e(frame.acceptance_criteria)}</blockquote></section>"
        f"<section><h2>3. Diff: what the run did</h2><dl>{summary}</dl>{_chart(frame)}{legend}</section>"
        f'<section><h2>4. Evidence</h2><p class="{ledger_cls}">{e(_ledger_line(frame))}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body_rows)}</tbody></table></section>"
        f"<section><h2>5. Unresolved assumptions</h2>{assumptions}</section>{attested_section}"
        f'<p class="hash">{e(_ATTEST_LEAD)} <code>{e(attest_command(frame, db))}</code></p>'
        "</main></body></html>\n"
    )


def render(
    frame: ReviewFrame,
    format: str = "text",
    *,
    attestations: Sequence[Attestation] | None = None,
    db: str | None = None,
) -> str:
    """Render as ``text``, ``md`` (``markdown``) or ``html``.

    ``attestations`` (the session's, oldest first) adds the attestation status and list; ``db`` (the ledger
    path) is named with ``--db`` in the attest command unless it is the default ``ledger.db``.
    """
    fmt = {"markdown": "md", "txt": "text"}.get(format, format)
    if fmt == "text":
        return render_text(frame, attestations, db=db)
    if fmt == "md":
        return render_markdown(frame, attestations, db=db)
    if fmt == "html":
        return render_html(frame, attestations, db=db)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
