"""Prometheus metrics of one server, in a registry of its own (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class ServerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "splitveil_requests", "Inference requests by HTTP status", ["status"], registry=self.registry
        )
        self.errors = Counter(
            "splitveil_errors", "Refused or failed requests by reason", ["reason"], registry=self.registry
        )
        self.latency = Histogram(
            "splitveil_request_seconds", "Time from request to answer", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "splitveil_batch_samples",
            "Samples per forward pass of the cloud",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.samples = Counter("splitveil_samples", "Samples classified", registry=self.registry)
        self.in_flight = Gauge("splitveil_in_flight", "Requests being served", registry=self.registry)
        self.pending_bytes = Gauge(
            "splitveil_pending_body_bytes", "Bytes of request bodies held now", registry=self.registry
        )
        self.capture_frames = Counter(
            "splitveil_capture_frames", "Requests recorded in the capture file", registry=self.registry
        )
        self.capture_failures = Counter(
            "splitveil_capture_failures", "Capture writes that failed, by cause", ["cause"], registry=self.registry
        )
        self.capture_skipped = Counter(
            "splitveil_capture_skipped",
            "Requests served without being captured (--capture-errors skip)",
            registry=self.registry,
        )
        self.capture_failing = Gauge(
            "splitveil_capture_failing", "1 while the last capture write failed", registry=self.registry
        )

    def count_refusal(self, reason: str) -> None:
        """Count a connection refused before it reached a route (cap, header or body timeout)."""
        self.errors.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
