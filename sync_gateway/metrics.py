"""Prometheus metrics, one registry per app so that tests can build many apps in one process.

No label ever carries a credential or a job id: ``route`` is the route's pattern (or
``unmatched``), ``status`` an HTTP status, ``kind``/``outcome`` fixed words, ``state`` a job's
final state (folded into ``other`` past a small number of distinct values).

With ``--workers`` > 1 every worker is its own process; prometheus-client's multiprocess mode
(the ``PROMETHEUS_MULTIPROC_DIR`` environment variable, which it reads when it is imported)
keeps each worker's values in files there, and a scrape of any worker adds them all up.
"""

from __future__ import annotations

import os
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
MAX_STATES = 16  # distinct job states before the rest are counted as "other"


class _KeptChildren:
    """A labelled metric that keeps the child of each label set it handed out: ``labels()``
    is on every request's path (several times), and prometheus-client checks the names, turns
    every value into a string and takes a lock each time. The label sets are bounded (see
    the module's docstring), so is what is kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[tuple[Any, ...], Any] = {}

    def labels(self, *values: Any, **named: Any) -> Self:
        key = (values, *named.items())
        child: Self | None = self._kept.get(key)
        if child is None:
            child = self._kept[key] = super().labels(*values, **named)  # type: ignore[misc]
        return child

    def remove(self, *values: Any) -> None:
        self._kept.clear()
        super().remove(*values)  # type: ignore[misc]

    def clear(self) -> None:
        self._kept.clear()
        super().clear()  # type: ignore[misc]


class LabelledCounter(_KeptChildren, Counter):
    """A Counter whose children are looked up once per label set."""


class LabelledHistogram(_KeptChildren, Histogram):
    """A Histogram whose children are looked up once per label set."""


class BoundedLabelCounter:
    """A counter with one label whose values come from outside (an upstream's job states):
    the first ``cap`` distinct values are kept, any later one is counted as ``other``."""

    def __init__(self, counter: Counter, label: str, cap: int) -> None:
        self.counter = counter
        self.label = label
        self.cap = cap
        self._seen: set[str] = set()

    def labels(self, **labels: str) -> Counter:
        value = labels[self.label]
        if value not in self._seen:
            if len(self._seen) >= self.cap:
                value = "other"
            else:
                self._seen.add(value)
        return self.counter.labels(**{self.label: value})


class Metrics:
    """Every metric the gateway exports."""

    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # prometheus-client picked its value store from this variable at import: follow it.
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        r = self.registry
        self.requests = LabelledCounter(
            "sync_gateway_requests",
            "Client requests answered, by route pattern and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.wait_seconds = LabelledHistogram(
            "sync_gateway_wait_seconds",
            "Time a client spent blocked on a job (outcome: finished or accepted)",
            ["outcome"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.jobs_finished = BoundedLabelCounter(
            LabelledCounter(
                "sync_gateway_jobs_finished",
                "Jobs seen finished, by final state",
                ["state"],
                registry=r,
            ),
            "state",
            MAX_STATES,
        )
        self.budget_expired = Counter(
            "sync_gateway_budget_expired",
            "Answers 202 Accepted: the job goes on, the client re-attaches",
            registry=r,
        )
        self.upstream_requests = LabelledCounter(
            "sync_gateway_upstream_requests",
            "Requests sent upstream, by kind and status (or connect_error, timeout, io_error)",
            ["kind", "status"],
            registry=r,
        )
        self.upstream_retries = LabelledCounter(
            "sync_gateway_upstream_retries", "Upstream requests retried", ["kind"], registry=r
        )
        self.admission_refused = Counter(
            "sync_gateway_admission_refused",
            "Creates refused with 429 at an admission bound (scope: total or customer)",
            ["scope"],
            registry=r,
        )
        self.jobs_lost = Counter(
            "sync_gateway_jobs_lost",
            "Jobs the upstream no longer had before their result was read (deleted, restarted)",
            registry=r,
        )
        self.active_waiters = self._gauge(
            "sync_gateway_active_waiters", "Clients blocked on a job now"
        )
        self.active_watchers = self._gauge(
            "sync_gateway_active_watchers", "Jobs being followed upstream now"
        )
        self.retained_results = self._gauge(
            "sync_gateway_retained_results", "Finished results kept for re-attach"
        )
        self.retained_bytes = self._gauge(
            "sync_gateway_retained_bytes",
            "Bytes the finished results kept for re-attach take (counted as retention.max_bytes"
            " bounds them)",
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        # livesum: the sum over the workers that are alive (each has its own waiters and store).
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's registry, or every worker's values."""
        return generate_latest(self._scraped())

    def negotiated(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition in the format an ``Accept`` header asks for, chosen as
        prometheus-client's own handler chooses it (OpenMetrics when asked for, else the text
        format 0.0.4): the body and its Content-Type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._scraped()), content_type

    def _scraped(self) -> CollectorRegistry:
        """This process's registry, or one that reads every worker's values."""
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return registry
