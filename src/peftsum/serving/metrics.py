"""Prometheus metrics of one server (``GET /metrics``), in a registry of its own.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). Per-adapter
series carry an ``adapter`` label (``__base__`` for the bare base).
"""

from __future__ import annotations

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Request latency buckets in seconds (CPU summaries of mt5-small take ~0.5-10 s)."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Requests per ``generate`` call."""


class ServerMetrics:
    """The counters, gauges and histograms ``peftsum serve`` exports.

    Attributes:
        registry: the ``prometheus_client.CollectorRegistry`` (one per app, so tests can run several).
        requests: ``peftsum_requests_total{adapter, status}`` finished generate requests (``status`` =
            HTTP code, 499 = cancelled by the client).
        errors: ``peftsum_errors_total{code}`` error responses of any route (4xx/5xx).
        latency: ``peftsum_request_latency_seconds{adapter}`` from arrival to the last token.
        queue_latency: ``peftsum_queue_seconds{adapter}`` waiting for a batch.
        input_tokens / generated_tokens: ``peftsum_{input,generated}_tokens_total{adapter}``.
        batch_size: ``peftsum_batch_size`` requests per ``generate`` call.
        batch_adapters: ``peftsum_batch_adapters`` distinct adapters per ``generate`` call.
        cancelled: ``peftsum_cancelled_total`` requests dropped because the client went away.
        queue_depth: ``peftsum_queue_depth`` requests waiting or decoding now.
        adapter_loads / evictions: ``peftsum_adapter_loads_total{adapter}``, ``peftsum_adapter_evictions_total``.
        resident_mb: ``peftsum_resident_adapter_mb`` summed size of the resident adapters.
    """

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("peftsum_requests", "Finished generate requests", ["adapter", "status"], registry=r)
        self.errors = Counter("peftsum_errors", "Error responses by HTTP status", ["code"], registry=r)
        self.latency = Histogram("peftsum_request_latency_seconds", "Generate request latency", ["adapter"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_latency = Histogram("peftsum_queue_seconds", "Time a request waited for its batch", ["adapter"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.input_tokens = Counter("peftsum_input_tokens", "Article tokens read", ["adapter"], registry=r)
        self.generated_tokens = Counter("peftsum_generated_tokens", "Summary tokens generated", ["adapter"],
                                        registry=r)
        self.batch_size = Histogram("peftsum_batch_size", "Requests per generate call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_adapters = Histogram("peftsum_batch_adapters", "Distinct adapters per generate call",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.cancelled = Counter("peftsum_cancelled", "Requests dropped because the client disconnected", registry=r)
        self.queue_depth = Gauge("peftsum_queue_depth", "Requests waiting or decoding", registry=r)
        self.adapter_loads = Counter("peftsum_adapter_loads", "Adapter loads (first load and reloads)", ["adapter"],
                                     registry=r)
        self.evictions = Gauge("peftsum_adapter_evictions", "Adapters evicted so far (LRU)", registry=r)
        self.resident_mb = Gauge("peftsum_resident_adapter_mb", "Summed size of resident adapters, MB", registry=r)

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` for ``GET /metrics`` (Prometheus text format)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
