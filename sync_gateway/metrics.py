"""Prometheus metrics, one registry per app so that tests can build many apps in one process.

No label ever carries a credential or a job id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sync_gateway_requests", "Client requests answered", ["route", "status"], registry=r
        )
        self.wait_seconds = Histogram(
            "sync_gateway_wait_seconds",
            "Time a client spent waiting for a job",
            ["outcome"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.jobs_finished = Counter(
            "sync_gateway_jobs_finished",
            "Jobs seen finished, by final state",
            ["state"],
            registry=r,
        )
        self.budget_expired = Counter(
            "sync_gateway_budget_expired",
            "Waits that ran out of budget and answered 202",
            registry=r,
        )
        self.upstream_requests = Counter(
            "sync_gateway_upstream_requests",
            "Requests sent upstream, by kind and status",
            ["kind", "status"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "sync_gateway_upstream_retries", "Upstream requests retried", ["kind"], registry=r
        )
        self.active_waiters = Gauge(
            "sync_gateway_active_waiters", "Clients waiting for a job now", registry=r
        )
        self.active_watchers = Gauge(
            "sync_gateway_active_watchers", "Upstream watch loops running now", registry=r
        )
        self.retained_results = Gauge(
            "sync_gateway_retained_results", "Finished results kept for re-attach", registry=r
        )
        self.retained_bytes = Gauge(
            "sync_gateway_retained_bytes", "Bytes of finished results kept", registry=r
        )
