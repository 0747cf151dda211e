"""OpenTelemetry spans, off unless ``[tracing] enabled`` (the ``tracing`` extra installs them).

On, the project's official aiohttp instrumentations do the work: the server instrumentation
makes a SERVER span for every request the gateway answers (the child of the client's
``traceparent`` when it sends one), the client instrumentation a CLIENT span for every upstream
request (the upstream's ``traceparent`` names that span). A job's watch runs in the context of
the call that started it, so its upstream requests are children of that call's span. The
gateway's own log lines then carry the span's trace id, and :mod:`sync_gateway.core.tracing`
leaves the upstream ``traceparent`` to the instrumentation.

The instrumentations record URLs, and TheEye's ``access_token`` travels in the query: one span
processor (:class:`MaskCredentials`) masks them with the log redaction's
:func:`~sync_gateway.logging.scrub` as each span starts, before any exporter sees it.

Off, this module is never imported: no span, no middleware, no trace config.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from sync_gateway.config.settings import TracingSettings
from sync_gateway.core import tracing
from sync_gateway.logging import MASK, bind_log_context, is_secret_key, scrub

Handler = Callable[[web.Request], Any]
# The attributes that can hold a URL or a query (http.url, url.full, http.target, url.query,
# server.address, …): the others (methods, status codes, routes) cannot hold a credential.
_URL_LIKE = re.compile(r"url|target|query|path|address|host|name")
# Probes and scrapes, every few seconds from the orchestrator: no trace of their own.
UNTRACED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class MaskCredentials(SpanProcessor):
    """Masks credentials in the attributes a span starts with, as the log redaction does: a
    captured header named like a credential (``http.request.header.authorization``) whole, and
    the values in every URL, target and query (TheEye's ``access_token=``)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for key, value in list((span.attributes or {}).items()):
            if is_secret_key(key):
                span.set_attribute(key, MASK)
            elif isinstance(value, str) and _URL_LIKE.search(key):
                masked = scrub(value)
                if masked != value:
                    span.set_attribute(key, masked)

    def on_end(self, span: ReadableSpan) -> None:
        return None


class SkipProbes(Sampler):
    """The configured sampler, but for the probes' and the scrapes' requests: never recorded."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.SERVER
            and attributes
            and attributes.get("http.route") in UNTRACED_ROUTES
        ):
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SkipProbes{{{self._inner.get_description()}}}"


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint)


def _provider(settings: TracingSettings, exporter: SpanExporter | None) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=SkipProbes(ParentBased(TraceIdRatioBased(settings.sample_ratio))),
    )
    provider.add_span_processor(MaskCredentials())  # first: before any exporter sees a span
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    else:  # a test's (in-memory) exporter: each span as it ends
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@web.middleware
async def follow_span(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Runs inside the server span: the call's trace and log lines take its ids."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        trace_id = format(context.trace_id, "032x")
        tracing.CURRENT.set(
            tracing.TraceContext(
                trace_id,
                format(context.trace_flags, "02x"),
                context.trace_state.to_header(),
                carry=False,  # the client instrumentation sends each request's own span
            )
        )
        bind_log_context(trace_id=trace_id, span_id=format(context.span_id, "016x"))
    result: web.StreamResponse = await handler(request)
    return result


class Telemetry:
    """The spans of one gateway application: its provider, and where the instrumentations
    hook in (the application's class, a middleware, the upstream session's trace config)."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        self.provider = _provider(settings, exporter)

    def application(self, **kwargs: Any) -> web.Application:
        """A ``web.Application`` with the server instrumentation's middleware outermost.

        The instrumentor is process-wide by design (it replaces ``web.Application``): it is
        applied for this one application and taken back at once, so that other applications
        of the process (``demo``'s emulator, a test's upstream) are not traced. Instrumented
        already (``opentelemetry-instrument``), the process keeps it as it is.
        """
        instrumentor = AioHttpServerInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            return web.Application(**kwargs)
        instrumentor.instrument(tracer_provider=self.provider)
        try:
            return web.Application(**kwargs)
        finally:
            instrumentor.uninstrument()

    def middlewares(self) -> list[Middleware]:
        """Inside the request-context middleware: see :func:`follow_span`."""
        return [follow_span]

    def trace_configs(self) -> list[aiohttp.TraceConfig]:
        """For the upstream ClientSession: a CLIENT span for each request it sends."""
        return [create_trace_config(tracer_provider=self.provider)]

    async def close(self) -> None:
        """Export what is left, then stop exporting: in a thread, since a collector that is
        down holds it for the exporter's timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s)."""
        await asyncio.to_thread(self.provider.shutdown)
