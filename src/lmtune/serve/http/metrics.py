"""``GET /metrics``: requests, tokens, latency and batching in Prometheus text format (prometheus_client).

Each server has its own registry, so several servers in one process (tests) keep separate counts.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's counters, histograms and gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.http = Counter("lmtune_http_requests", "HTTP requests by route and status code",
                            ["method", "route", "status"], registry=r)
        self.requests = Counter("lmtune_generation_requests", "Completed generation requests",
                                ["endpoint", "model"], registry=r)
        self.prompt_tokens = Counter("lmtune_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generated_tokens = Counter("lmtune_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.latency = Histogram("lmtune_request_latency_seconds", "Generation request latency, received to last token",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("lmtune_batch_rows", "Rows decoded together per step", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.rejected = Counter("lmtune_rejected_requests", "Requests refused with 429 (queue full)", registry=r)
        self.waiting = Gauge("lmtune_waiting_sequences", "Sequences waiting to start", registry=r)
        self.running = Gauge("lmtune_running_sequences", "Sequences being decoded", registry=r)

    def finished(self, endpoint: str, model: str, seconds: float, usage: dict) -> None:
        """Record one completed generation request."""
        self.requests.labels(endpoint, model).inc()
        self.prompt_tokens.labels(model).inc(usage["prompt_tokens"])
        self.generated_tokens.labels(model).inc(usage["completion_tokens"])
        self.latency.labels(endpoint).observe(seconds)

    def render(self, engines) -> bytes:
        """The exposition text, with the queue gauges read now."""
        self.waiting.set(sum(e.waiting for e in engines))
        self.running.set(sum(e.active for e in engines))
        return generate_latest(self.registry)
