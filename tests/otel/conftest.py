"""An OpenTelemetry SDK wired to in-memory exporters, never installed globally (tests stay independent)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel tests need opentelemetry-sdk (the dev extra)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer


@dataclass
class Otel:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    @property
    def tracer(self) -> Tracer:
        """The application's (or framework's) tracer: it starts the spans loopguard joins."""
        return self.tracer_provider.get_tracer("app")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def points(self, metric: str) -> list[tuple[dict[str, Any], float]]:
        """(attributes, value) of every data point of one metric."""
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], float]] = []
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        out.extend(
                            (dict(p.attributes or {}), p.value)
                            for p in m.data.data_points
                            if isinstance(p, NumberDataPoint)
                        )
        return out

    def unit(self, metric: str) -> str | None:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        return m.unit
        return None

    def total(self, metric: str, **match: Any) -> float:
        return sum(v for attrs, v in self.points(metric) if all(attrs.get(k) == w for k, w in match.items()))

    def everything(self) -> str:
        """All exported data as text: spans (names, attributes, events) and metrics."""
        spans = [s.to_json() for s in self.spans()]
        data = self.reader.get_metrics_data()
        return "\n".join(spans) + (data.to_json() if data is not None else "")


@pytest.fixture(autouse=True)
def no_watched_budgets() -> Iterator[None]:
    """Watched budgets are process-wide: each test starts and ends with none."""
    from loopguard_core import otel as module

    module._BUDGETS.clear()
    yield
    module._BUDGETS.clear()


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    # CI (and CrewAI's import) set OTEL_SDK_DISABLED=true to keep frameworks from exporting anything; these
    # providers are private to the test and must be live.
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, meter_provider, exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()
