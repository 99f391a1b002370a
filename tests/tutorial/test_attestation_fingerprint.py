from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.tutorial import (
    AttestationFingerprint,
    BucketAggregate,
    DriftAlert,
    DriftFinding,
    Fingerprint,
    FingerprintDiffResult,
    Ledger,
    ThresholdConfig,
    UsageRecord,
    UsageRecordsClient,
)
from loopguard_core.tutorial.attestation_fingerprint import DiffResult

NOW = datetime(2026, 6, 10, 12, 30, 0, tzinfo=timezone.utc)
LAST_MINUTE = NOW - timedelta(minutes=1)
BUCKET = LAST_MINUTE.replace(second=0, microsecond=0).isoformat()


class FakeUsageClient:
    """Scripted stand-in for Anthropic's Admin API usage report."""

    def __init__(self, responses: list[dict[str, Any]] | None = None) -> None:
        self._responses = list(responses or [])
        self.calls: list[dict[str, Any]] = []

    def get_messages_usage_report(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(copy.deepcopy(kwargs))
        if not self._responses:
            return {"data": [], "has_more": False, "next_page": None}
        return self._responses.pop(0)


def clock(now: datetime = NOW) -> Callable[[], datetime]:
    return lambda: now


def usage(
    *,
    bucket_start: str = BUCKET,
    model: str = "m",
    uncached_input: int = 0,
    output: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    cache_read: int = 0,
) -> dict[str, Any]:
    end = (datetime.fromisoformat(bucket_start) + timedelta(minutes=1)).isoformat()
    result = {
        "model": model,
        "api_key_id": "ak_test",
        "workspace_id": "ws_test",
        "uncached_input_tokens": uncached_input,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": 0},
    }
    return {"data": [{"starting_at": bucket_start, "ending_at": end, "results": [result]}]}


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def make(db_path: str, *responses: dict[str, Any], **kwargs: Any) -> AttestationFingerprint:
    return AttestationFingerprint(
        ledger_db_path=db_path,
        usage_client=FakeUsageClient(list(responses)),
        api_key_id="ak_test",
        workspace_id="ws_test",
        clock=clock(),
        **kwargs,
    )


def record(af: AttestationFingerprint, tokens_in: int, tokens_out: int, model: str = "m", turn: int = 1) -> int:
    return af.record_fingerprint(
        session_id="s",
        turn_count=turn,
        model_id=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        timestamp=LAST_MINUTE,
    )


def diff(af: AttestationFingerprint) -> list[DiffResult]:
    return af.diff_window(NOW - timedelta(minutes=3), NOW)


def classes(results: list[DiffResult]) -> list[tuple[str, str]]:
    return [(f.drift_class, f.severity) for r in results for f in r.drift_findings]


def test_tables_live_in_the_ledger_database_beside_the_ledger(db_path: str) -> None:
    Ledger(db_path)
    make(db_path)
    make(db_path)  # idempotent
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        fp_cols = [r[1] for r in conn.execute("PRAGMA table_info(fingerprints)")]
        dr_cols = [r[1] for r in conn.execute("PRAGMA table_info(diff_reports)")]
    assert {"ledger", "fingerprints", "diff_reports"} <= tables
    assert fp_cols == [
        "id",
        "timestamp_utc",
        "bucket_start",
        "model_id",
        "tokens_in",
        "tokens_out",
        "tool_call_count",
        "api_key_id",
        "workspace_id",
        "session_id",
        "turn_count",
        "created_at",
    ]
    assert dr_cols == [
        "id",
        "bucket_start",
        "bucket_end",
        "model_id",
        "api_key_id",
        "workspace_id",
        "ledger_call_count",
        "usage_records_present",
        "drift_findings_json",
        "severity",
        "created_at",
    ]


def test_record_fingerprint_buckets_by_minute(db_path: str) -> None:
    af = make(db_path)
    at = datetime(2026, 6, 10, 11, 0, 42, 500, tzinfo=timezone.utc)
    row_id = af.record_fingerprint(
        session_id="s1", turn_count=1, model_id="opus", tokens_in=100, tokens_out=200, tool_call_count=2, timestamp=at
    )
    assert row_id == 1
    [fp] = af.get_fingerprints_in_window(at - timedelta(minutes=1), at + timedelta(minutes=1))
    assert fp == Fingerprint(
        1, at.isoformat(), "2026-06-10T11:00:00+00:00", "opus", 100, 200, 2, "ak_test", "ws_test", "s1", 1
    )


def test_record_fingerprint_defaults_to_the_clock_and_utc_for_naive_times(db_path: str) -> None:
    af = make(db_path)
    af.record_fingerprint(session_id="s", turn_count=1, model_id="m", tokens_in=1, tokens_out=1)
    af.record_fingerprint(
        session_id="s", turn_count=2, model_id="m", tokens_in=1, tokens_out=1, timestamp=datetime(2026, 6, 10, 12, 0)
    )
    rows = af.get_fingerprints_in_window(datetime(2026, 6, 10, 11, 59), NOW + timedelta(minutes=1))
    assert [r.timestamp_utc for r in rows] == ["2026-06-10T12:00:00+00:00", NOW.isoformat()]


def test_window_is_half_open(db_path: str) -> None:
    af = make(db_path)
    af.record_fingerprint(session_id="s", turn_count=1, model_id="m", tokens_in=1, tokens_out=1, timestamp=NOW)
    assert af.get_fingerprints_in_window(NOW - timedelta(minutes=1), NOW) == []
    assert len(af.get_fingerprints_in_window(NOW, NOW + timedelta(minutes=1))) == 1


def test_retries_of_one_call_count_once_keeping_the_largest(db_path: str) -> None:
    af = make(db_path)
    record(af, 100, 200, turn=1)
    record(af, 110, 210, turn=1)  # SDK retry, larger
    record(af, 90, 190, turn=1)  # smaller attempt is not kept
    record(af, 50, 100, turn=2)
    [agg] = af.aggregate_buckets(af.get_fingerprints_in_window(NOW - timedelta(minutes=3), NOW))
    assert agg == BucketAggregate(BUCKET, NOW.replace(second=0).isoformat(), "m", "ak_test", "ws_test", 2, 160, 310, 0)


def test_aggregates_are_per_model(db_path: str) -> None:
    af = make(db_path)
    record(af, 10, 10, model="sonnet")
    af.record_fingerprint(
        session_id="t", turn_count=1, model_id="opus", tokens_in=20, tokens_out=20, timestamp=LAST_MINUTE
    )
    aggs = af.aggregate_buckets(af.get_fingerprints_in_window(NOW - timedelta(minutes=3), NOW))
    assert sorted((a.model_id, a.tokens_in) for a in aggs) == [("opus", 20), ("sonnet", 10)]


def test_usage_request_is_filtered_to_the_actor(db_path: str) -> None:
    af = make(db_path)
    af.fetch_usage_window(NOW, NOW + timedelta(minutes=5))
    assert isinstance(af.usage_client, FakeUsageClient)
    assert af.usage_client.calls == [
        {
            "starting_at": NOW.isoformat(),
            "ending_at": (NOW + timedelta(minutes=5)).isoformat(),
            "bucket_width": "1m",
            "group_by": ["model", "api_key_id", "workspace_id"],
            "api_key_ids": ["ak_test"],
            "workspace_ids": ["ws_test"],
        }
    ]


def test_usage_records_tolerate_missing_sub_objects_and_sum_every_token_kind() -> None:
    response = {
        "data": [
            {
                "starting_at": "2026-06-10T12:00:00+00:00",
                "ending_at": "2026-06-10T12:01:00+00:00",
                "results": [{"model": "m", "uncached_input_tokens": 100, "output_tokens": 50}],
            }
        ]
    }
    [r] = AttestationFingerprint._normalize_usage_records(response)
    assert (r.cache_creation_5m_input_tokens, r.cache_creation_1h_input_tokens, r.server_tool_use_count) == (0, 0, 0)
    assert r.total_tokens == 150
    full = UsageRecord("s", "e", "m", "ak", "ws", 10, 20, 5, 3, 100, 0)
    assert full.total_tokens == 138


def test_ghost_call_billing_without_ledger(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=500, output=200))
    [result] = diff(af)
    assert classes([result]) == [("ghost_call", "alert")]
    assert (result.severity, result.ledger_call_count, result.usage_records_present) == ("alert", 0, True)


def test_missing_record_ledger_without_billing(db_path: str) -> None:
    af = make(db_path)
    record(af, 10, 10)
    [result] = diff(af)
    assert classes([result]) == [("missing_record", "alert")]
    assert (result.ledger_call_count, result.usage_records_present) == (1, False)


def test_model_substitution_fires_even_with_matching_tokens(db_path: str) -> None:
    af = make(db_path, usage(model="opus", uncached_input=400, output=200))
    record(af, 400, 200, model="sonnet")
    results = diff(af)
    assert sorted(classes(results)) == [
        ("ghost_call", "alert"),
        ("missing_record", "alert"),
        ("model_substitution", "alert"),
    ]
    substitution = results[-1]
    assert substitution.model_id == "sonnet|opus"
    assert "model='sonnet'" in substitution.drift_findings[0].details


def test_no_substitution_when_models_agree(db_path: str) -> None:
    af = make(db_path, usage(model="sonnet", uncached_input=400, output=200))
    record(af, 400, 200, model="sonnet")
    [result] = diff(af)
    assert (result.drift_findings, result.severity) == ((), "info")


def test_diff_one_checks_the_model_directly(db_path: str) -> None:
    af = make(db_path)
    ledger = BucketAggregate("b", "e", "sonnet", "ak", "ws", 1, 100, 100, 0)
    billing = UsageRecord("b", "e", "opus", "ak", "ws", 100, 0, 0, 0, 100, 0)
    assert [(f.drift_class, f.severity) for f in af._diff_one(ledger, billing)] == [("model_substitution", "alert")]
    assert af._diff_one(None, None) == []


@pytest.mark.parametrize(
    ("billed", "expected"),
    [
        (1020, []),  # 2 %: infra noise
        (1050, []),  # 4.8 % of the larger count: below the 5 % tolerance
        (1120, [("token_mismatch", "warn")]),  # ~10.7 %
        (1200, [("token_mismatch", "warn")]),  # ~16.7 %
        (1250, [("token_mismatch", "warn")]),  # exactly 20 %: the alert boundary is strict
        (1260, [("token_mismatch", "alert")]),  # ~20.6 %
        (2000, [("token_mismatch", "alert")]),  # 50 %
    ],
)
def test_token_mismatch_bands(db_path: str, billed: int, expected: list[tuple[str, str]]) -> None:
    af = make(db_path, usage(uncached_input=billed // 2, output=billed - billed // 2))
    record(af, 500, 500)
    results = diff(af)
    assert classes(results) == expected
    assert [r.severity for r in results] == [expected[0][1] if expected else "info"]


def test_every_comparison_is_stored(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=100, output=100))
    [result] = diff(af)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT id, severity, drift_findings_json, usage_records_present FROM diff_reports"
        ).fetchall()
    assert rows == [(result.id, "alert", json.dumps([f.to_dict() for f in result.drift_findings], sort_keys=True), 1)]


def test_empty_window_gives_no_results(db_path: str) -> None:
    assert diff(make(db_path)) == []


def test_shadow_mode_records_alerts_without_raising(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=10000, output=10000))
    assert af.shadow_mode is True
    assert [r.severity for r in diff(af)] == ["alert"]


def test_outside_shadow_mode_an_alert_raises_after_being_stored(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=1000, output=1000), shadow_mode=False)
    with pytest.raises(DriftAlert) as exc:
        diff(af)
    assert exc.value.result.severity == "alert"
    assert str(exc.value) == f"drift detected: alert at {BUCKET} (model=m, actor=ak_test)"
    assert af.get_actor_drift_history("ak_test")[0].id == exc.value.result.id


def _seed_history(db_path: str, *minutes_ago: int) -> None:
    findings = json.dumps([{"drift_class": "token_mismatch", "severity": "warn", "details": "prior"}], sort_keys=True)
    with sqlite3.connect(db_path) as conn:
        for m in minutes_ago:
            at = (NOW - timedelta(minutes=m)).isoformat()
            conn.execute(
                "INSERT INTO diff_reports (bucket_start, bucket_end, model_id, api_key_id, workspace_id, "
                "ledger_call_count, usage_records_present, drift_findings_json, severity, created_at) "
                "VALUES (?, ?, 'm', 'ak_test', 'ws_test', 1, 1, ?, 'warn', ?)",
                (at, at, findings, at),
            )


def test_warn_on_an_actor_with_drift_history_is_elevated_in_a_new_row(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=560, output=560))
    _seed_history(db_path, 10, 11, 12)
    record(af, 500, 500)
    [result] = diff(af)
    assert result.severity == "alert"
    assert result.drift_findings[0].details.endswith("[ACCUMULATED: actor has 4 recent drift events]")
    with sqlite3.connect(db_path) as conn:
        stored = [r[0] for r in conn.execute("SELECT severity FROM diff_reports ORDER BY id")]
    assert stored == ["warn", "warn", "warn", "warn", "alert"]  # the new warn row is kept as audit


def test_first_warn_is_not_elevated(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=560, output=560))
    record(af, 500, 500)
    assert [r.severity for r in diff(af)] == ["warn"]


def test_threshold_zero_disables_elevation(db_path: str) -> None:
    af = make(db_path, usage(uncached_input=560, output=560), threshold_config=ThresholdConfig(actor_drift_threshold=0))
    _seed_history(db_path, 1, 2, 3, 4)
    record(af, 500, 500)
    assert [r.severity for r in diff(af)] == ["warn"]


def test_drift_history_is_windowed_and_newest_first(db_path: str) -> None:
    af = make(db_path)
    _seed_history(db_path, 5, 60, 2)
    assert [r.bucket_start for r in af.get_actor_drift_history("ak_test")] == [
        (NOW - timedelta(minutes=2)).isoformat(),
        (NOW - timedelta(minutes=5)).isoformat(),
    ]
    assert len(af.get_actor_drift_history("ak_test", window_minutes=90)) == 3
    assert af.get_actor_drift_history("someone_else") == []


def test_recent_buckets_leave_a_lag_buffer(db_path: str) -> None:
    af = make(db_path)
    af.diff_recent_buckets(lookback_minutes=10, lag_buffer_minutes=6)
    assert isinstance(af.usage_client, FakeUsageClient)
    call = af.usage_client.calls[0]
    assert datetime.fromisoformat(call["ending_at"]) == NOW - timedelta(minutes=6)
    assert datetime.fromisoformat(call["starting_at"]) == NOW - timedelta(minutes=16)


def test_highest_severity() -> None:
    assert AttestationFingerprint._highest_severity([]) == "info"
    findings = [DriftFinding("a", "warn", "x"), DriftFinding("b", "alert", "y"), DriftFinding("c", "info", "z")]
    assert AttestationFingerprint._highest_severity(findings) == "alert"


def test_iso_takes_naive_times_as_utc() -> None:
    assert AttestationFingerprint._iso(datetime(2026, 6, 10, 12, 0)) == "2026-06-10T12:00:00+00:00"


def test_defaults_and_value_types() -> None:
    assert ThresholdConfig() == ThresholdConfig(0, 0.05, 0.20, 1, 15, 3)
    assert FingerprintDiffResult is DiffResult
    assert isinstance(FakeUsageClient(), UsageRecordsClient)
    fp = Fingerprint(1, "t", "b", "m", 0, 0, 0, "ak", "ws", "s", 1)
    with pytest.raises(AttributeError):
        fp.tokens_in = 99  # type: ignore[misc]
    result = DiffResult(1, "b", "e", "m", "ak", "ws", 0, True, (), "alert", "now")
    assert DriftAlert(result).result is result


@pytest.mark.parametrize("table", ["fingerprints", "diff_reports"])
@pytest.mark.parametrize("verb", ["UPDATE {t} SET model_id = 'forged'", "DELETE FROM {t}"])
def test_fingerprint_tables_refuse_update_and_delete(db_path: str, table: str, verb: str) -> None:
    af = make(db_path)
    record(af, 10, 10)
    diff(af)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match=f"{table} is append-only"):
            conn.execute(verb.format(t=table))
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 1
    finally:
        conn.close()
