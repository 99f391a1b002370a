"""Backend-agnostic verification of a ledger's hash chain.

The verifier streams the rows in ``seq`` order once, holding only the previous row and a record of each
place where the chain breaks, so memory stays constant for an intact ledger and grows only with damage.
Every row is re-hashed and every link is checked (a verifier that checks only the ends can be fooled:
immudb CVE-2022-36111). When links break, a second pass looks up the rows the broken links point at and
the pieces are reassembled to say *what* happened: a row edited, deleted, inserted or moved.

Rows are given as tuples in :data:`~._model.COLUMNS` order, exactly as stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._chain import row_hash
from ._model import Problem

__all__ = ["ChainReport", "format_seqs", "scan_chain"]

_GENESIS = "genesis"  # anchor of a segment that starts the chain
_MAX_NAMED = 10_000  # seqs listed in one problem; the message still gives the full range


def format_seqs(seqs: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts: list[str] = []
    ordered = sorted(set(seqs))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(parts)


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, min(last, first + _MAX_NAMED - 1) + 1))


@dataclass(eq=False)
class _Seg:
    """A run of rows (in seq order) whose links are intact: each row's prev_hash is the row before's hash."""

    first: int
    last: int
    head_prev: str  # prev_hash of the first row
    tail_hash: str  # stored row_hash of the last row
    anchor: int | str | None = None  # seq of the row whose hash head_prev names, _GENESIS, or None

    @property
    def weight(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class ChainReport:
    """What one streaming pass found: the rows seen, the head, and the problems."""

    rows: int
    head_seq: int
    head_hash: str
    problems: tuple[Problem, ...]
    hash_at: dict[int, str]  # stored row_hash of the rows asked for in ``watch``


def scan_chain(
    rows: Iterable[Sequence[Any]],
    genesis: str,
    find_hashes: Callable[[set[str]], dict[str, int]],
    *,
    watch: Iterable[int] = (),
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Check every row hash and every link; classify the damage.

    ``find_hashes(wanted)`` maps each stored ``row_hash`` in ``wanted`` to the lowest ``seq`` holding it
    (one more pass over the table, made only when links are broken). ``watch`` names seqs whose stored
    hash the caller wants back (for checkpoint comparison).
    """
    watched = set(watch)
    hash_at: dict[int, str] = {}
    bad_hash: list[int] = []
    gaps: list[tuple[int, int]] = []
    segs: list[_Seg] = []
    cur: _Seg | None = None
    prev_seq = 0
    count = 0
    for row in rows:
        seq, prev, stored = row[0], row[14], row[15]
        count += 1
        try:
            computed: str | None = row_hash(prev, row[1:14])
        except (ValueError, TypeError):
            computed = None  # prev_hash is not hex or a value has a type no writer stores
        if computed != stored:
            bad_hash.append(seq)
        if seq > prev_seq + 1 and not (count == 1 and seq < 1):
            gaps.append((prev_seq, seq))
        if cur is not None and prev == cur.tail_hash:
            cur.last = seq
            cur.tail_hash = stored
        else:
            cur = _Seg(seq, seq, prev, stored)
            segs.append(cur)
        if seq in watched:
            hash_at[seq] = stored
        prev_seq = seq
        if progress is not None and count % 4096 == 0:
            progress(count)
    if progress is not None:
        progress(count)
    head_seq = prev_seq if count else 0
    head_hash = cur.tail_hash if cur is not None else genesis

    problems = _classify(segs, gaps, bad_hash, genesis, find_hashes)
    return ChainReport(count, head_seq, head_hash, tuple(problems), hash_at)


def _classify(
    segs: list[_Seg],
    gaps: list[tuple[int, int]],
    bad_hash: list[int],
    genesis: str,
    find_hashes: Callable[[set[str]], dict[str, int]],
) -> list[Problem]:
    problems: list[Problem] = []
    for before, after in gaps:
        missing = (before + 1, after - 1)
        problems.append(
            Problem(
                "deleted",
                _span(*missing),
                f"rows with seq {format_seqs(range(missing[0], missing[1] + 1))} are missing "
                f"(seq jumps from {before} to {after})"
                if missing[1] - missing[0] < 50
                else f"rows with seq {missing[0]}-{missing[1]} are missing (seq jumps from {before} to {after})",
            )
        )
    gap_after = {after: before for before, after in gaps}
    if len(segs) <= 1 and all(s.head_prev == genesis for s in segs):
        problems.extend(_edited(bad_hash, set()))
        return problems

    # Second pass: where does each broken link point?
    wanted = {s.head_prev for s in segs if s.head_prev != genesis}
    found = find_hashes(wanted) if wanted else {}
    for s in segs:
        s.anchor = _GENESIS if s.head_prev == genesis else found.get(s.head_prev)

    segs = _split_at_anchors(segs, gap_after)
    root = _Seg(0, 0, "", genesis, anchor=None)
    by_last: dict[int | str, _Seg] = {_GENESIS: root}
    for s in segs:
        by_last[s.last] = s
    succ: dict[int, list[_Seg]] = {id(s): [] for s in [root, *segs]}
    for s in segs:
        if s.anchor is not None and s.anchor in by_last:
            succ[id(by_last[s.anchor])].append(s)
    reach = _reach(root, segs, succ)

    visited: set[int] = set()

    def walk(start: _Seg) -> list[_Seg]:
        path: list[_Seg] = []
        node: _Seg | None = start
        while node is not None:
            visited.add(id(node))
            if node is not root:
                path.append(node)
            options = [t for t in succ[id(node)] if id(t) not in visited]
            node = max(options, key=lambda t: (reach[id(t)], -t.first)) if options else None
        return path

    genuine = walk(root)
    inserted: list[_Seg] = []
    explained_by_edit = set(bad_hash)
    seq_order = sorted(segs, key=lambda s: s.first)
    position = {id(s): i for i, s in enumerate(seq_order)}
    for s in seq_order:
        if id(s) in visited:
            continue
        i = position[id(s)]
        pred = seq_order[i - 1] if i > 0 else root
        nxt = seq_order[i + 1] if i + 1 < len(seq_order) else None
        if s.anchor is not None:
            inserted.extend(walk(s))  # hangs off a row that already has its real successor
            continue
        if nxt is not None and id(pred) in visited and any(t is nxt for t in succ[id(pred)]):
            inserted.extend(walk(s))  # the chain runs from the row before it straight to the row after it
            continue
        if s.first not in gap_after and pred.last not in explained_by_edit and s.first not in explained_by_edit:
            if pred is root:
                msg = (
                    f"row {s.first} does not link to the chain's genesis: earlier rows were deleted or it was rewritten"
                )
                named: tuple[int, ...] = (s.first,)
            else:
                msg = (
                    f"row {s.first} does not link to row {pred.last}: row {pred.last} was changed and its hash "
                    f"recomputed, rows between them were deleted and the rest renumbered, or row {s.first} "
                    "was inserted"
                )
                named = (pred.last, s.first)
            problems.append(Problem("unlinked", named, msg))
        genuine.extend(walk(s))

    inserted_seqs: set[int] = set()
    for s in inserted:
        inserted_seqs.update(range(s.first, s.last + 1))
    if inserted_seqs:
        problems.append(
            Problem(
                "inserted",
                tuple(sorted(inserted_seqs))[:_MAX_NAMED],
                f"rows with seq {format_seqs(sorted(inserted_seqs))} are not part of the chain "
                "(the rows around them link to each other directly)",
            )
        )
    moved = _out_of_order(genuine)
    if moved:
        problems.append(
            Problem(
                "reordered",
                tuple(moved)[:_MAX_NAMED],
                f"rows with seq {format_seqs(moved)} are out of chain order (rows were moved or renumbered)",
            )
        )
    problems.extend(_edited(bad_hash, inserted_seqs))
    return problems


def _edited(bad_hash: list[int], skip: set[int]) -> list[Problem]:
    seqs = [s for s in bad_hash if s not in skip]
    if not seqs:
        return []
    return [
        Problem(
            "edited",
            tuple(seqs)[:_MAX_NAMED],
            f"rows with seq {format_seqs(seqs)} no longer match their stored hash (a value was changed)",
        )
    ]


def _split_at_anchors(segs: list[_Seg], gap_after: dict[int, int]) -> list[_Seg]:
    """Cut segments after every row that a broken link points at, so that row ends a segment."""
    next_seq = {before: after for after, before in gap_after.items()}
    anchors = sorted({s.anchor for s in segs if isinstance(s.anchor, int)})
    out = sorted(segs, key=lambda s: s.first)
    for a in anchors:
        for i, s in enumerate(out):
            if s.first <= a < s.last:
                rest_first = next_seq.get(a, a + 1)
                # Links inside a segment are intact, so the row after ``a`` names ``a``'s hash.
                tail_of_a = next(t.head_prev for t in segs if t.anchor == a)
                out[i : i + 1] = [
                    _Seg(s.first, a, s.head_prev, tail_of_a, s.anchor),
                    _Seg(rest_first, s.last, tail_of_a, s.tail_hash, a),
                ]
                break
    return out


def _reach(root: _Seg, segs: list[_Seg], succ: dict[int, list[_Seg]]) -> dict[int, int]:
    """Rows reachable along the longest path from each segment (cycles, only possible with forged hashes, cut)."""
    reach: dict[int, int] = {}
    for start in [root, *segs]:
        if id(start) in reach:
            continue
        stack: list[tuple[_Seg, int]] = [(start, 0)]
        on_path = {id(start)}
        while stack:
            node, i = stack[-1]
            children = succ[id(node)]
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if id(child) not in reach and id(child) not in on_path:
                    stack.append((child, 0))
                    on_path.add(id(child))
                continue
            best = max((reach.get(id(c), 0) for c in children), default=0)
            reach[id(node)] = (0 if node is root else node.weight) + best
            on_path.discard(id(node))
            stack.pop()
    return reach


def _out_of_order(order: list[_Seg]) -> list[int]:
    """Rows of segments whose place in chain order differs from their place in seq order."""
    by_seq = sorted(order, key=lambda s: s.first)
    moved: list[int] = []
    for chain_pos, seg in enumerate(order):
        if by_seq[chain_pos] is not seg:
            moved.extend(range(seg.first, seg.last + 1))
    return sorted(moved)
