"""OpenTelemetry metrics for aiocache_secure (``pip install 'aiocache_secure[otel]'``).

::

    from aiocache_secure.metrics.otel import OpenTelemetryMetrics
    manager.namespace("users", metrics=OpenTelemetryMetrics())

Instruments (namespace, operation and outcome as attributes — never keys):

* ``aiocache_secure.operations`` — counter of operations;
* ``aiocache_secure.operation.duration`` — histogram of durations in seconds.

To Prometheus: install ``opentelemetry-exporter-prometheus``, create a
``PrometheusMetricReader()``, build ``MeterProvider(metric_readers=[reader])`` and pass it as
``meter_provider=`` (or set it globally); Prometheus then scrapes the exporter's endpoint.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import metrics as otel_metrics
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("OpenTelemetry metrics need the 'otel' extra") from exc

__all__ = ["OpenTelemetryMetrics"]


class OpenTelemetryMetrics:
    """A :class:`~aiocache_secure.metrics.MetricsHook` recording an OpenTelemetry counter and a
    duration histogram, from ``meter_provider`` (default: the global one)."""

    def __init__(self, meter_provider: Any = None) -> None:
        meter = (meter_provider or otel_metrics.get_meter_provider()).get_meter("aiocache_secure")
        self._count = meter.create_counter(
            "aiocache_secure.operations", unit="1", description="cache operations"
        )
        self._duration = meter.create_histogram(
            "aiocache_secure.operation.duration", unit="s", description="cache operation time"
        )

    def record(self, operation: str, namespace: str, outcome: str, duration: float) -> None:
        """Count the operation and record its duration, with attributes but never keys."""
        attributes = {"operation": operation, "namespace": namespace, "outcome": outcome}
        self._count.add(1, attributes)
        self._duration.record(duration, attributes)
