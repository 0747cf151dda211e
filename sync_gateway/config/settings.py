"""The settings, as typed frozen dataclasses (read once at start-up by :mod:`.loading`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from sync_gateway.render.common import DEFAULT_DENIED

ENV_PREFIX = "SYNC_GATEWAY_"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PATH_PREFIX = re.compile(r"(/(?!\.+(/|$))[A-Za-z0-9._~-]+)+")


WaitMode = Literal["long-poll", "poll"]
FormatName = Literal["output", "parse", "result", "full"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
AdapterName = Literal["theeye", "location-poll", "executejob"]
StoreBackend = Literal["memory", "redis"]
ExporterName = Literal["otlp", "console"]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The listening side."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    drain_seconds: float = 25.0
    workers: int = 1
    backlog: int = 16384
    handler_cancellation: bool = True
    # Open client connections at most (0: what the open-files limit leaves after the
    # upstream pool and long polls). Past it the oldest idle connection is closed first.
    max_connections: int = 0
    # A request head must arrive whole within this many seconds.
    header_timeout: float = 10.0
    # An idle keep-alive connection is closed after this many seconds.
    keepalive_timeout: float = 30.0
    # Behind a reverse proxy that serves the gateway under a path prefix ("/sync"): put in
    # front of every Location the gateway hands out. Configured, never taken from a request's
    # X-Forwarded-Prefix, which any client can send unless the proxy overwrites it.
    public_prefix: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """The job API behind the gateway and how we talk to it."""

    url: str = "http://127.0.0.1:60080"
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    max_result_bytes: int = 10_485_760
    wait: WaitMode = "long-poll"
    poll_interval: float = 1.0
    poll_max_interval: float = 5.0
    long_poll_timeout: float = 60.0
    # Whether the supervisor's long poll wakes when a job ends (TheEye's gateway publishes
    # job-finished on Redis). False: jobs are watched through the listing instead.
    notifications: bool = True
    max_long_polls: int = 500
    list_batch: int = 100
    # A job watched through the listing is verified this often by an unfiltered listing, and
    # read by its own request when that does not show it: the listing may hide it (ACL) or fail.
    verify_interval: float = 10.0
    pool_size: int = 256
    retry_attempts: int = 6


@dataclass(frozen=True, slots=True)
class WaitSettings:
    """How long a client's call may block."""

    default_seconds: float = 50.0
    max_seconds: float = 600.0
    watch_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long and how much of finished results the gateway keeps."""

    seconds: float = 3600.0
    max_bytes: int = 268_435_456


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Structured logs on stdout."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where retained results and idempotency keys live."""

    backend: StoreBackend = "memory"
    url: str = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """How many jobs may be followed at once before new creates are refused (0: no bound)."""

    max_jobs: int = 0
    max_jobs_per_customer: int = 0
    retry_after: int = 1


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Who may see a job, and what task output may set."""

    # The key of creator fingerprints (HMAC). Empty: a random one per process (memory
    # store), or one generated once and kept in Redis (Redis store).
    fingerprint_key: str = ""
    task_headers_denied: tuple[str, ...] = DEFAULT_DENIED


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """OpenTelemetry spans (the ``tracing`` extra): off unless enabled."""

    enabled: bool = False
    # "otlp": OTLP over HTTP (protobuf) to `endpoint`; "console": one JSON span a line on stdout.
    exporter: ExporterName = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "sync-gateway"
    # The share of new traces recorded; a call whose client's traceparent says "sampled" (or
    # not) follows its client's decision.
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class CorsSettings:
    """Browsers on other origins (CORS): off unless origins are listed."""

    allow_origins: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_headers: tuple[str, ...] = (
        "Authorization",
        "Content-Type",
        "Prefer",
        "Idempotency-Key",
        "X-Request-Id",
    )
    expose_headers: tuple[str, ...] = (
        "X-Job-Id",
        "Location",
        "Retry-After",
        "Preference-Applied",
        "X-Request-Id",
    )
    max_age: int = 600


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """One client-facing route served by a non-default adapter."""

    method: str
    path: str
    adapter: AdapterName
    upstream: str
    name: str = ""


def route_name(route: RouteSettings, index: int) -> str:
    """The name a configured route's jobs are known by (``/jobs/{name}/{id}/result``)."""
    return route.name or f"{route.adapter}-{index}"


def placeholders(template: str) -> list[str]:
    """The ``{name}`` placeholders of a route path or upstream URL template."""
    return _PLACEHOLDER.findall(template)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway reads at start-up."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    wait: WaitSettings = field(default_factory=WaitSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    log: LogSettings = field(default_factory=LogSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    default_format: FormatName = "output"
    cancel_on_disconnect: bool = False
    routes: tuple[RouteSettings, ...] = ()
