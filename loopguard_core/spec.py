"""The spec: what a run is for, written before it starts, and checked for being checkable.

Three questions, as in the tutorial: what does this do, what does it NOT do, and what does done look like
in one sentence. The third answer is the acceptance criterion a reviewer compares the result with, so it
is validated: "the agent audits the site" cannot be checked by anyone; "crawl the URL, extract every title
and meta description, flag missing or over-length ones, and stop" can. Validation is a set of plain,
explainable rules (docs/spec.md): no model and no network are involved.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import SpecError

__all__ = [
    "QUESTIONS",
    "Spec",
    "SpecCheck",
    "SpecResult",
    "SpecStore",
    "SpecWriter",
    "validate_spec",
]

QUESTIONS: tuple[str, str, str] = (
    "What does this do?",
    "What does this NOT do?",
    "What does done look like in one sentence?",
)

# Verbs that name an outcome nobody can check on their own ("audit the site", "improve the docs").
_VAGUE_VERBS = frozenset(
    (
        "audit audits auditing improve improves improving optimize optimise optimizes optimises handle "
        "handles analyze analyse analyzes analyses look help helps explore explores investigate investigates "
        "understand manage manages work works deal deals review reviews research researches assist assists "
        "support supports enhance enhances address addresses fix fixes solve solves take care"
    ).split()
)
# Verbs that produce something a person can look at and tick off.
_CONCRETE_VERBS = frozenset(
    (
        "add adds append call calls check checks classify collect collects compare compares compute computes "
        "count counts crawl crawls create creates delete download downloads draft drafts email emit export "
        "exports extract extracts fetch fetches fill file files flag flags generate generates insert label "
        "list lists mark measure merge move open output outputs parse parses post print prints produce "
        "produces publish query read reads record records remove rename render replace report reports return "
        "returns run runs save saves scan scans score send sends sort split store stores submit summarise "
        "summarize summarizes tag tags test tests translate update updates upload validate verify verifies "
        "write writes"
    ).split()
)
_STOP_WORDS = re.compile(
    r"\b(stop|stops|then stop|until|once|when (?:all|every|each|done|finished)|finish(?:es)?|exit|halt|end)\b"
)
_SCOPE = re.compile(
    r"\b(every|each|all|both|no more than|at most|at least|exactly|only|\d+)\b|\b(?:https?://|www\.)\S+|"
    r"\b\S+\.(?:csv|json|md|txt|html|py|xlsx|pdf|sql)\b|\b[\w.+-]+@[\w-]+\.[\w.]+\b|\"[^\"]+\"|'[^']+'"
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class SpecCheck:
    """The verdict of :func:`validate_spec`: ``ok`` and, when not, one reason per problem."""

    ok: bool
    problems: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.ok


def _check_done(done: str) -> list[str]:
    text = done.casefold().strip()
    words = _WORD.findall(text)
    problems = []
    if len(words) < 6:
        problems.append(f"'done' has {len(words)} words; describe the finished state in one full sentence (6+ words)")
    concrete = sorted({w for w in words if w in _CONCRETE_VERBS})
    vague = sorted({w for w in words if w in _VAGUE_VERBS})
    if not concrete:
        hint = f" (it only says {', '.join(repr(v) for v in vague)})" if vague else ""
        problems.append(
            "'done' names no checkable action" + hint + "; say what is produced or changed, e.g. "
            "'extract every title', 'write report.csv', 'flag pages without a meta description'"
        )
    if not _SCOPE.search(text):
        problems.append(
            "'done' has no scope a reviewer can count or locate "
            "(every/each/all, a number, a URL, a file name, an email or a quoted name)"
        )
    if not _STOP_WORDS.search(text):
        problems.append("'done' has no stop condition; say when the agent stops (e.g. '..., and stop')")
    return problems


def validate_spec(what_it_does: str, what_it_does_not: str, done_looks_like: str) -> SpecCheck:
    """Check that a spec is complete and that its 'done' is concrete enough to review against."""
    problems: list[str] = []
    for name, value in (
        ("what_it_does", what_it_does),
        ("what_it_does_not", what_it_does_not),
        ("done_looks_like", done_looks_like),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        if not value.strip():
            problems.append(f"{name} is empty; all three questions need an answer")
    if problems:
        return SpecCheck(False, tuple(problems))
    if len(_WORD.findall(what_it_does.casefold())) < 3:
        problems.append("'what it does' is too short to state the task (3+ words)")
    if len(_WORD.findall(what_it_does_not.casefold())) < 2:
        problems.append("'what it does NOT do' should name at least one boundary (2+ words)")
    problems.extend(_check_done(done_looks_like))
    return SpecCheck(not problems, tuple(problems))


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class Spec:
    """A spec for one session (run). Frozen: a spec never changes once the run starts."""

    what_it_does: str
    what_it_does_not: str
    done_looks_like: str
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_utc_now)

    @classmethod
    def create(
        cls,
        *,
        what_it_does: str,
        what_it_does_not: str,
        done_looks_like: str,
        session_id: str | None = None,
        strict: bool = True,
    ) -> Spec:
        """Build a spec in code; with ``strict`` (default) a vague or incomplete one raises SpecError."""
        check = validate_spec(what_it_does, what_it_does_not, done_looks_like)
        if strict and not check.ok:
            raise SpecError("spec is not checkable: " + "; ".join(check.problems))
        return cls(
            what_it_does.strip(),
            what_it_does_not.strip(),
            done_looks_like.strip(),
            session_id or str(uuid.uuid4()),
        )

    def check(self) -> SpecCheck:
        return validate_spec(self.what_it_does, self.what_it_does_not, self.done_looks_like)

    def system_prompt(self) -> str:
        """The three answers as a system prompt block for the agent."""
        return (
            "You are an agent working on a tightly-scoped task.\n\n"
            f"What this does: {self.what_it_does}\n"
            f"What this does NOT do: {self.what_it_does_not}\n"
            f"Done looks like: {self.done_looks_like}\n"
        )


#: The tutorial's name for the same record.
SpecResult = Spec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS specs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    what_it_does TEXT NOT NULL,
    what_it_does_not TEXT NOT NULL,
    done_looks_like TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_specs_session ON specs(session_id);
CREATE TRIGGER IF NOT EXISTS specs_no_update BEFORE UPDATE ON specs
BEGIN SELECT RAISE(ABORT, 'loopguard specs are append-only: write a new spec instead'); END;
CREATE TRIGGER IF NOT EXISTS specs_no_delete BEFORE DELETE ON specs
BEGIN SELECT RAISE(ABORT, 'loopguard specs are append-only'); END;
"""


class SpecStore:
    """Specs in SQLite (by default the same file as the ledger, so one file holds a session)."""

    def __init__(self, path: str | Path = "ledger.db") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def save(self, spec: Spec) -> Spec:
        if not isinstance(spec, Spec):
            raise TypeError(f"save() takes a Spec, got {type(spec).__name__}")
        with self._lock, self._connect() as conn:
            conn.execute(
                "INSERT INTO specs (session_id, what_it_does, what_it_does_not, done_looks_like, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (spec.session_id, spec.what_it_does, spec.what_it_does_not, spec.done_looks_like, spec.created_at),
            )
        return spec

    def load(self, session_id: str) -> Spec | None:
        """The latest spec written for ``session_id``, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT what_it_does, what_it_does_not, done_looks_like, session_id, created_at FROM specs"
                " WHERE session_id = ? ORDER BY id DESC LIMIT 1",
                (session_id,),
            ).fetchone()
        return None if row is None else Spec(*row)


class SpecWriter:
    """Asks the three questions (input and output injectable), validates, stores, returns a Spec."""

    def __init__(
        self,
        store: SpecStore | str | Path = "ledger.db",
        *,
        input_fn: Callable[[str], str] = input,
        output_fn: Callable[[str], object] = print,
        validate: bool = True,
        max_attempts: int = 5,
    ) -> None:
        self.store = store if isinstance(store, SpecStore) else SpecStore(store)
        self._input = input_fn
        self._output = output_fn
        self._validate = validate
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._max_attempts = max_attempts

    def _ask(self, prompt: str) -> str:
        for _ in range(self._max_attempts):
            answer = self._input(f"{prompt} ").strip()
            if answer:
                return answer
            self._output(f"[missing answer for: {prompt}] every question needs an answer.")
        raise SpecError(f"no answer for {prompt!r} after {self._max_attempts} attempts")

    def run(self, session_id: str | None = None) -> Spec:
        does, does_not, done = (self._ask(q) for q in QUESTIONS)
        attempts = 1
        while self._validate:
            check = validate_spec(does, does_not, done)
            if check.ok:
                break
            for problem in check.problems:
                self._output(f"[spec] {problem}")
            if attempts >= self._max_attempts:
                raise SpecError("spec is not checkable: " + "; ".join(check.problems))
            attempts += 1
            # Only re-ask what the problems point at, so a person is not made to retype good answers.
            if any(p.startswith("'what it does NOT") for p in check.problems):
                does_not = self._ask(QUESTIONS[1])
            if any(p.startswith("'what it does'") for p in check.problems):
                does = self._ask(QUESTIONS[0])
            if any(p.startswith("'done'") for p in check.problems):
                done = self._ask(QUESTIONS[2])
        spec = Spec(does, does_not, done, session_id or str(uuid.uuid4()))
        return self.store.save(spec)
