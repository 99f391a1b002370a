"""The tutorial's sixth primitive (v2.0): cross-check the agent's own records against billing.

The agent writes its own ledger, so the review frame's evidence is self-reported. This module records a
fingerprint per model call and compares them, per one-minute bucket, model, API key and workspace, with
Anthropic's usage report (an independent record). Drift classes: ``missing_record`` (ledger without
billing), ``ghost_call`` (billing without ledger), ``model_substitution`` (zero tolerance, also checked
across keys of the same bucket and actor) and ``token_mismatch`` (warn above 5 %, alert above 20 %). A
warn on an actor with recent drift history is elevated to alert in a new row. It does not catch
fabricated content with honest metadata.

Shadow mode (the default) only records; with ``shadow_mode=False`` an alert raises :class:`DriftAlert`.
Both tables are append-only in the database.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, runtime_checkable

from ._db import DbPath, append_only_triggers, connect, lastrowid

__all__ = [
    "SCHEMA",
    "AttestationFingerprint",
    "BucketAggregate",
    "DiffResult",
    "DriftAlert",
    "DriftFinding",
    "Fingerprint",
    "ThresholdConfig",
    "UsageRecord",
    "UsageRecordsClient",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp_utc TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    model_id TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tool_call_count INTEGER NOT NULL,
    api_key_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    turn_count INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_fp_bucket ON fingerprints(bucket_start);
CREATE INDEX IF NOT EXISTS idx_fp_actor ON fingerprints(api_key_id, workspace_id);
CREATE INDEX IF NOT EXISTS idx_fp_session ON fingerprints(session_id);

CREATE TABLE IF NOT EXISTS diff_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket_start TEXT NOT NULL,
    bucket_end TEXT NOT NULL,
    model_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    ledger_call_count INTEGER NOT NULL,
    usage_records_present INTEGER NOT NULL,
    drift_findings_json TEXT NOT NULL,
    severity TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_dr_bucket ON diff_reports(bucket_start);
CREATE INDEX IF NOT EXISTS idx_dr_actor ON diff_reports(api_key_id);
CREATE INDEX IF NOT EXISTS idx_dr_severity ON diff_reports(severity);
"""

_SEVERITY_ORDER = {"alert": 3, "warn": 2, "info": 1}
_BucketKey = tuple[str, str, str, str]  # (bucket_start, model, api_key_id, workspace_id)


@runtime_checkable
class UsageRecordsClient(Protocol):
    """Mirrors Anthropic's Admin API ``get_messages_usage_report`` (one-minute buckets)."""

    def get_messages_usage_report(
        self,
        *,
        starting_at: str,
        ending_at: str | None = None,
        bucket_width: str = "1m",
        group_by: list[str] | None = None,
        models: list[str] | None = None,
        api_key_ids: list[str] | None = None,
        workspace_ids: list[str] | None = None,
        page: str | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Fingerprint:
    id: int
    timestamp_utc: str
    bucket_start: str
    model_id: str
    tokens_in: int
    tokens_out: int
    tool_call_count: int
    api_key_id: str
    workspace_id: str
    session_id: str
    turn_count: int


@dataclass(frozen=True)
class BucketAggregate:
    bucket_start: str
    bucket_end: str
    model_id: str
    api_key_id: str
    workspace_id: str
    call_count: int
    tokens_in: int
    tokens_out: int
    tool_call_count: int


@dataclass(frozen=True)
class UsageRecord:
    starting_at: str
    ending_at: str
    model: str | None
    api_key_id: str | None
    workspace_id: str | None
    uncached_input_tokens: int
    cache_read_input_tokens: int
    cache_creation_5m_input_tokens: int
    cache_creation_1h_input_tokens: int
    output_tokens: int
    server_tool_use_count: int

    @property
    def total_tokens(self) -> int:
        return (
            self.uncached_input_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_5m_input_tokens
            + self.cache_creation_1h_input_tokens
            + self.output_tokens
        )


@dataclass(frozen=True)
class DriftFinding:
    drift_class: str
    severity: str
    details: str

    def to_dict(self) -> dict[str, str]:
        return {"drift_class": self.drift_class, "severity": self.severity, "details": self.details}


@dataclass(frozen=True)
class DiffResult:
    """One stored comparison (a ``diff_reports`` row); not the review surface's ``DiffResult``."""

    id: int
    bucket_start: str
    bucket_end: str
    model_id: str
    api_key_id: str
    workspace_id: str
    ledger_call_count: int
    usage_records_present: bool
    drift_findings: tuple[DriftFinding, ...]
    severity: str
    created_at: str


@dataclass(frozen=True)
class ThresholdConfig:
    model_id_mismatch_tolerance: int = 0
    token_mismatch_percent_infra: float = 0.05
    token_mismatch_percent_adversarial: float = 0.20
    ghost_call_count_threshold: int = 1
    actor_window_minutes: int = 15
    actor_drift_threshold: int = 3


class DriftAlert(Exception):
    """Raised outside shadow mode when a comparison's severity is ``alert``; ``result`` holds it."""

    def __init__(self, result: DiffResult) -> None:
        super().__init__(
            f"drift detected: {result.severity} at {result.bucket_start} "
            f"(model={result.model_id}, actor={result.api_key_id})"
        )
        self.result = result


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _bucket_end(bucket_start: str) -> str:
    return (datetime.fromisoformat(bucket_start) + timedelta(minutes=1)).isoformat()


class AttestationFingerprint:
    """Records fingerprints in the ledger database and diffs them against the usage report."""

    def __init__(
        self,
        ledger_db_path: DbPath,
        usage_client: UsageRecordsClient,
        api_key_id: str,
        workspace_id: str,
        threshold_config: ThresholdConfig | None = None,
        shadow_mode: bool = True,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ledger_db_path = ledger_db_path
        self.usage_client = usage_client
        self.api_key_id = api_key_id
        self.workspace_id = workspace_id
        self.config = threshold_config or ThresholdConfig()
        self.shadow_mode = shadow_mode
        self._clock = clock
        with connect(self.ledger_db_path) as conn:
            conn.executescript(
                SCHEMA + append_only_triggers("fingerprints") + "\n" + append_only_triggers("diff_reports")
            )

    # -- recording ------------------------------------------------------------------------------------

    def record_fingerprint(
        self,
        *,
        session_id: str,
        turn_count: int,
        model_id: str,
        tokens_in: int,
        tokens_out: int,
        tool_call_count: int = 0,
        timestamp: datetime | None = None,
    ) -> int:
        """Store one call (naive timestamps are taken as UTC) and return its row id."""
        ts = timestamp or self._clock()
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        bucket = ts.replace(second=0, microsecond=0)
        with connect(self.ledger_db_path) as conn:
            cursor = conn.execute(
                "INSERT INTO fingerprints (timestamp_utc, bucket_start, model_id, tokens_in, tokens_out, "
                "tool_call_count, api_key_id, workspace_id, session_id, turn_count, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ts.isoformat(),
                    bucket.isoformat(),
                    model_id,
                    tokens_in,
                    tokens_out,
                    tool_call_count,
                    self.api_key_id,
                    self.workspace_id,
                    session_id,
                    turn_count,
                    self._clock().isoformat(),
                ),
            )
            return lastrowid(cursor)

    def get_fingerprints_in_window(self, starting_at: datetime, ending_at: datetime) -> list[Fingerprint]:
        """Fingerprints with ``starting_at <= timestamp < ending_at``, oldest first."""
        with connect(self.ledger_db_path) as conn:
            rows = conn.execute(
                "SELECT id, timestamp_utc, bucket_start, model_id, tokens_in, tokens_out, tool_call_count, "
                "api_key_id, workspace_id, session_id, turn_count FROM fingerprints "
                "WHERE timestamp_utc >= ? AND timestamp_utc < ? ORDER BY timestamp_utc ASC",
                (self._iso(starting_at), self._iso(ending_at)),
            ).fetchall()
        return [Fingerprint(*r) for r in rows]

    def aggregate_buckets(self, fingerprints: Iterable[Fingerprint]) -> list[BucketAggregate]:
        """Sum fingerprints per (bucket, model, key, workspace), counting SDK retries once.

        Retries of one logical call share (bucket, session, turn); the attempt with the most tokens is
        kept, since that is the one billing records.
        """
        deduped: dict[tuple[str, str, int], Fingerprint] = {}
        for fp in fingerprints:
            key = (fp.bucket_start, fp.session_id, fp.turn_count)
            existing = deduped.get(key)
            if existing is None or fp.tokens_in + fp.tokens_out > existing.tokens_in + existing.tokens_out:
                deduped[key] = fp

        groups: dict[_BucketKey, list[Fingerprint]] = {}
        for fp in deduped.values():
            groups.setdefault((fp.bucket_start, fp.model_id, fp.api_key_id, fp.workspace_id), []).append(fp)

        return [
            BucketAggregate(
                bucket_start=bucket_start,
                bucket_end=_bucket_end(bucket_start),
                model_id=model_id,
                api_key_id=api_key_id,
                workspace_id=workspace_id,
                call_count=len(items),
                tokens_in=sum(i.tokens_in for i in items),
                tokens_out=sum(i.tokens_out for i in items),
                tool_call_count=sum(i.tool_call_count for i in items),
            )
            for (bucket_start, model_id, api_key_id, workspace_id), items in groups.items()
        ]

    # -- billing side ---------------------------------------------------------------------------------

    def fetch_usage_window(
        self, starting_at: datetime, ending_at: datetime, bucket_width: str = "1m"
    ) -> list[UsageRecord]:
        """Ask the usage client for this actor's records, grouped by model, key and workspace."""
        response = self.usage_client.get_messages_usage_report(
            starting_at=self._iso(starting_at),
            ending_at=self._iso(ending_at),
            bucket_width=bucket_width,
            group_by=["model", "api_key_id", "workspace_id"],
            api_key_ids=[self.api_key_id],
            workspace_ids=[self.workspace_id],
        )
        return self._normalize_usage_records(response)

    @staticmethod
    def _normalize_usage_records(response: Mapping[str, Any]) -> list[UsageRecord]:
        records: list[UsageRecord] = []
        for bucket in response.get("data", []):
            for result in bucket.get("results", []):
                cache_creation = result.get("cache_creation") or {}
                server_tool_use = result.get("server_tool_use") or {}
                records.append(
                    UsageRecord(
                        starting_at=bucket["starting_at"],
                        ending_at=bucket["ending_at"],
                        model=result.get("model"),
                        api_key_id=result.get("api_key_id"),
                        workspace_id=result.get("workspace_id"),
                        uncached_input_tokens=result.get("uncached_input_tokens", 0),
                        cache_read_input_tokens=result.get("cache_read_input_tokens", 0),
                        cache_creation_5m_input_tokens=cache_creation.get("ephemeral_5m_input_tokens", 0),
                        cache_creation_1h_input_tokens=cache_creation.get("ephemeral_1h_input_tokens", 0),
                        output_tokens=result.get("output_tokens", 0),
                        server_tool_use_count=server_tool_use.get("web_search_requests", 0),
                    )
                )
        return records

    # -- diffing --------------------------------------------------------------------------------------

    def diff_window(self, starting_at: datetime, ending_at: datetime) -> list[DiffResult]:
        """Compare ledger and billing for the window; every comparison is stored and returned."""
        ledger_by_key: dict[_BucketKey, BucketAggregate] = {
            (b.bucket_start, b.model_id, b.api_key_id, b.workspace_id): b
            for b in self.aggregate_buckets(self.get_fingerprints_in_window(starting_at, ending_at))
        }
        usage_by_key: dict[_BucketKey, UsageRecord] = {
            (r.starting_at, r.model or "", r.api_key_id or "", r.workspace_id or ""): r
            for r in self.fetch_usage_window(starting_at, ending_at)
        }

        results: list[DiffResult] = []
        for key in sorted(set(ledger_by_key) | set(usage_by_key)):
            bucket_start, model_id, api_key_id, workspace_id = key
            ledger_agg = ledger_by_key.get(key)
            usage_rec = usage_by_key.get(key)
            findings = self._diff_one(ledger_agg, usage_rec)
            results.append(
                self._record_diff(
                    bucket_start=bucket_start,
                    bucket_end=_bucket_end(bucket_start),
                    model_id=model_id,
                    api_key_id=api_key_id,
                    workspace_id=workspace_id,
                    ledger_call_count=ledger_agg.call_count if ledger_agg else 0,
                    usage_records_present=usage_rec is not None,
                    findings=findings,
                    severity=self._highest_severity(findings),
                )
            )

        # Grouping by model turns a swapped model into missing_record + ghost_call; this check names the
        # substitution itself, whatever happens to those two signals.
        for (
            bucket_start,
            api_key_id,
            workspace_id,
            ledger_model,
            billing_model,
        ) in self._detect_cross_key_model_substitutions(ledger_by_key, usage_by_key):
            results.append(
                self._record_diff(
                    bucket_start=bucket_start,
                    bucket_end=_bucket_end(bucket_start),
                    model_id=f"{ledger_model}|{billing_model}",
                    api_key_id=api_key_id,
                    workspace_id=workspace_id,
                    ledger_call_count=0,
                    usage_records_present=True,
                    findings=[
                        DriftFinding(
                            drift_class="model_substitution",
                            severity="alert",
                            details=(
                                f"Ledger claims model={ledger_model!r} but billing claims "
                                f"model={billing_model!r} for (bucket={bucket_start}, actor={api_key_id})"
                            ),
                        )
                    ],
                    severity="alert",
                )
            )
        return self._apply_actor_accumulation(results)

    @staticmethod
    def _detect_cross_key_model_substitutions(
        ledger_by_key: Mapping[_BucketKey, object], usage_by_key: Mapping[_BucketKey, object]
    ) -> list[tuple[str, str, str, str, str]]:
        ledger_models: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        usage_models: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        for bucket, model, api_key, workspace in ledger_by_key:
            ledger_models[(bucket, api_key, workspace)].add(model)
        for bucket, model, api_key, workspace in usage_by_key:
            usage_models[(bucket, api_key, workspace)].add(model)

        substitutions: list[tuple[str, str, str, str, str]] = []
        for actor_bucket in sorted(set(ledger_models) & set(usage_models)):
            bucket, api_key, workspace = actor_bucket
            ledger_only = ledger_models[actor_bucket] - usage_models[actor_bucket]
            billing_only = usage_models[actor_bucket] - ledger_models[actor_bucket]
            substitutions.extend(
                (bucket, api_key, workspace, lm, bm) for lm in sorted(ledger_only) for bm in sorted(billing_only)
            )
        return substitutions

    def diff_recent_buckets(self, lookback_minutes: int = 15, lag_buffer_minutes: int = 6) -> list[DiffResult]:
        """Diff the window ending ``lag_buffer_minutes`` ago (billing data arrives about 5 minutes late)."""
        ending_at = self._clock() - timedelta(minutes=lag_buffer_minutes)
        return self.diff_window(ending_at - timedelta(minutes=lookback_minutes), ending_at)

    def _diff_one(self, ledger: BucketAggregate | None, usage: UsageRecord | None) -> list[DriftFinding]:
        if ledger is not None and usage is None:
            return [
                DriftFinding(
                    drift_class="missing_record",
                    severity="alert",
                    details=(
                        f"Ledger has {ledger.call_count} call(s) but no API "
                        "usage record for this (bucket, actor, model)"
                    ),
                )
            ]
        if ledger is None and usage is not None:
            return [
                DriftFinding(
                    drift_class="ghost_call",
                    severity="alert",
                    details="API usage records present but ledger has 0 calls for this (bucket, actor, model)",
                )
            ]
        if ledger is None or usage is None:
            return []

        findings: list[DriftFinding] = []
        if usage.model and ledger.model_id != usage.model:
            findings.append(
                DriftFinding(
                    drift_class="model_substitution",
                    severity="alert",
                    details=f"Ledger model={ledger.model_id!r} but billing model={usage.model!r}",
                )
            )

        ledger_total = ledger.tokens_in + ledger.tokens_out
        usage_total = usage.total_tokens
        if ledger_total > 0 or usage_total > 0:
            drift_ratio = abs(ledger_total - usage_total) / max(ledger_total, usage_total, 1)
            counts = f"(ledger={ledger_total}, billing={usage_total})"
            if drift_ratio > self.config.token_mismatch_percent_adversarial:
                findings.append(
                    DriftFinding(
                        drift_class="token_mismatch",
                        severity="alert",
                        details=f"Token drift {drift_ratio:.1%} exceeds adversarial threshold {counts}",
                    )
                )
            elif drift_ratio > self.config.token_mismatch_percent_infra:
                findings.append(
                    DriftFinding(
                        drift_class="token_mismatch",
                        severity="warn",
                        details=f"Token drift {drift_ratio:.1%} above infra-noise tolerance {counts}",
                    )
                )
        return findings

    @staticmethod
    def _highest_severity(findings: Sequence[DriftFinding]) -> str:
        if not findings:
            return "info"
        return max(findings, key=lambda f: _SEVERITY_ORDER.get(f.severity, 0)).severity

    def _record_diff(
        self,
        *,
        bucket_start: str,
        bucket_end: str,
        model_id: str,
        api_key_id: str,
        workspace_id: str,
        ledger_call_count: int,
        usage_records_present: bool,
        findings: Sequence[DriftFinding],
        severity: str,
    ) -> DiffResult:
        created_at = self._clock().isoformat()
        findings_json = json.dumps([f.to_dict() for f in findings], sort_keys=True)
        with connect(self.ledger_db_path) as conn:
            cursor = conn.execute(
                "INSERT INTO diff_reports (bucket_start, bucket_end, model_id, api_key_id, workspace_id, "
                "ledger_call_count, usage_records_present, drift_findings_json, severity, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bucket_start,
                    bucket_end,
                    model_id,
                    api_key_id,
                    workspace_id,
                    ledger_call_count,
                    int(usage_records_present),
                    findings_json,
                    severity,
                    created_at,
                ),
            )
            row_id = lastrowid(cursor)
        result = DiffResult(
            id=row_id,
            bucket_start=bucket_start,
            bucket_end=bucket_end,
            model_id=model_id,
            api_key_id=api_key_id,
            workspace_id=workspace_id,
            ledger_call_count=ledger_call_count,
            usage_records_present=usage_records_present,
            drift_findings=tuple(findings),
            severity=severity,
            created_at=created_at,
        )
        # The row is stored first, so the audit trail keeps the alert even when it is raised.
        if not self.shadow_mode and severity == "alert":
            raise DriftAlert(result)
        return result

    # -- per-actor accumulation -----------------------------------------------------------------------

    def get_actor_drift_history(self, api_key_id: str, window_minutes: int | None = None) -> list[DiffResult]:
        """Stored comparisons for the key created within the window (default 15 min), newest first."""
        window = window_minutes or self.config.actor_window_minutes
        cutoff = (self._clock() - timedelta(minutes=window)).isoformat()
        with connect(self.ledger_db_path) as conn:
            rows = conn.execute(
                "SELECT id, bucket_start, bucket_end, model_id, api_key_id, workspace_id, ledger_call_count, "
                "usage_records_present, drift_findings_json, severity, created_at FROM diff_reports "
                "WHERE api_key_id = ? AND created_at >= ? ORDER BY created_at DESC",
                (api_key_id, cutoff),
            ).fetchall()
        return [self._row_to_diff(r) for r in rows]

    @staticmethod
    def _row_to_diff(r: Sequence[Any]) -> DiffResult:
        findings = tuple(
            DriftFinding(drift_class=f["drift_class"], severity=f["severity"], details=f["details"])
            for f in json.loads(r[8])
        )
        return DiffResult(
            id=r[0],
            bucket_start=r[1],
            bucket_end=r[2],
            model_id=r[3],
            api_key_id=r[4],
            workspace_id=r[5],
            ledger_call_count=r[6],
            usage_records_present=bool(r[7]),
            drift_findings=findings,
            severity=r[9],
            created_at=r[10],
        )

    def _apply_actor_accumulation(self, results: Sequence[DiffResult]) -> list[DiffResult]:
        # One warn is noise; a warn on an actor with recent drift is a pattern. The warn row stays as it
        # was and the elevation is a new row, so the audit trail shows when accumulation tripped.
        elevated: list[DiffResult] = []
        for result in results:
            if result.severity != "warn" or not result.drift_findings or self.config.actor_drift_threshold <= 0:
                elevated.append(result)
                continue
            history = self.get_actor_drift_history(result.api_key_id)
            drift_count = sum(1 for h in history if h.drift_findings)
            if drift_count < self.config.actor_drift_threshold:
                elevated.append(result)
                continue
            elevated.append(
                self._record_diff(
                    bucket_start=result.bucket_start,
                    bucket_end=result.bucket_end,
                    model_id=result.model_id,
                    api_key_id=result.api_key_id,
                    workspace_id=result.workspace_id,
                    ledger_call_count=result.ledger_call_count,
                    usage_records_present=result.usage_records_present,
                    findings=[
                        DriftFinding(
                            drift_class=f.drift_class,
                            severity="alert",
                            details=f"{f.details} [ACCUMULATED: actor has {drift_count} recent drift events]",
                        )
                        for f in result.drift_findings
                    ],
                    severity="alert",
                )
            )
        return elevated

    @staticmethod
    def _iso(dt: datetime) -> str:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.isoformat()
