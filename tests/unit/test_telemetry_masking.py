"""The span processor that keeps credentials out of spans (tracing on)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sync_gateway.telemetry import MaskCredentials


def test_credentials_in_the_attributes_a_span_starts_with_are_masked() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(MaskCredentials())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    attributes = {
        "http.url": "http://127.0.0.1:60080/demo/job?customer=demo&access_token=t0k3n",
        "http.target": "/demo/task/1/job?access_token=t0k3n",
        "url.query": "access_token=t0k3n",
        "http.request.header.authorization": ("Bearer t0k3n",),
        "http.request.header.cookie": ("session=t0k3n",),
        "http.method": "POST",
        "http.route": "/{customer}/task/{task}/job",
    }
    provider.get_tracer("test").start_span("POST", attributes=attributes).end()
    (span,) = exported.get_finished_spans()
    assert span.attributes is not None
    seen = dict(span.attributes)
    assert "t0k3n" not in repr(seen)
    assert seen["http.url"] == "http://127.0.0.1:60080/demo/job?customer=***&access_token=***"
    assert seen["http.target"] == "/demo/task/1/job?access_token=***"
    assert seen["http.request.header.authorization"] == "***"
    # What cannot hold a credential is left as it was.
    assert seen["http.method"] == "POST"
    assert seen["http.route"] == "/{customer}/task/{task}/job"
