"""OpenTelemetry (``[tracing] enabled``, the ``tracing`` extra): a SERVER span for each call, a
CLIENT span for each upstream request made for it, credentials masked in every span, log lines
with the span's ids; off by default, and then nothing of OpenTelemetry is even imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Gateway, gateway_settings, started_gateway
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.helpers import eventually
from support.miniature import JOB, header_recording_supervisor
from support.processes import cli_env, free_port, start_cli, stop_cli

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TOKEN = "a-secret-token-5d1c"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
ON = {"enabled": True}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    async with header_recording_supervisor() as (url, seen):
        yield url, seen


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced_gateway(cleanup: AsyncExitStack, spans: InMemorySpanExporter) -> Callable[..., Any]:
    """Gateways with tracing on, their spans in the in-memory exporter."""

    async def make(upstream_url: str, **tracing: Any) -> Gateway:
        settings = gateway_settings(upstream_url, tracing={**ON, **tracing})
        return await started_gateway(cleanup, settings, spans)

    return make


async def call(http: aiohttp.ClientSession, gw: Gateway, headers: dict[str, str]) -> None:
    url = f"{gw.url}/demo/task/{JOB}/job?access_token={TOKEN}"
    async with http.post(url, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == ["ok"]


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """A span's trace id, span id and parent span id, as traceparent writes them."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = format(span.parent.span_id, "016x") if span.parent else None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), parent


@pytest.mark.usefixtures("product_logging")
async def test_a_call_is_a_server_span_and_each_upstream_request_a_client_span_of_it(
    upstream: tuple[str, list[dict[str, str]]],
    traced_gateway: Callable[..., Any],
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = upstream
    gw: Gateway = await traced_gateway(url)
    await call(http, gw, {"traceparent": f"00-{TRACE}-{PARENT_SPAN}-01"})
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert server.name == "POST /{customer}/task/{task}/job"
    trace_id, server_id, parent = hex_ids(server)
    assert (trace_id, parent) == (TRACE, PARENT_SPAN)  # the client's trace, under its span
    assert server.attributes is not None and server.attributes["http.status_code"] == 200
    # The create and two long polls: each a CLIENT span under the call's, and each request's
    # traceparent names its own span.
    assert len(seen) == len(clients) == 3
    sent = [TRACEPARENT.fullmatch(h["traceparent"]) for h in seen]
    assert all(m is not None for m in sent)
    sent_ids = {m.group(2) for m in sent if m is not None}
    assert {m.group(1) for m in sent if m is not None} == {TRACE}
    assert sent_ids == {hex_ids(s)[1] for s in clients}
    assert {hex_ids(s)[2] for s in clients} == {server_id}
    out = capsys.readouterr().out
    assert f"trace_id={TRACE}" in out and f"span_id={server_id}" in out


async def test_a_watch_that_outlives_its_call_still_makes_children_of_its_span(
    upstream: tuple[str, list[dict[str, str]]],
    traced_gateway: Callable[..., Any],
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
) -> None:
    url, seen = upstream
    gw: Gateway = await traced_gateway(url)
    target = f"{gw.url}/demo/task/{JOB}/job?access_token={TOKEN}"
    async with http.post(target, headers={"Prefer": "respond-async"}) as resp:
        assert resp.status == 202  # the call has ended; the job's watch goes on
    await eventually(lambda: len(seen) == 3, "the watch to read the finished job")
    await eventually(
        lambda: len(spans.get_finished_spans()) == 4, "the watch's requests to end their spans"
    )
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
    assert server.attributes is not None and server.attributes["http.status_code"] == 202
    server_id = hex_ids(server)[1]
    clients = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert {hex_ids(s)[2] for s in clients} == {server_id}
    # The last read was made after the call's span had ended.
    assert server.end_time is not None
    assert max(s.end_time or 0 for s in clients) > server.end_time


async def test_no_credential_reaches_a_span(
    upstream: tuple[str, list[dict[str, str]]],
    traced_gateway: Callable[..., Any],
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
) -> None:
    url, _ = upstream
    gw: Gateway = await traced_gateway(url)
    await call(http, gw, {"Authorization": f"Bearer {TOKEN}"})
    exported = [json.loads(s.to_json()) for s in spans.get_finished_spans()]
    assert len(exported) == 4
    text = json.dumps(exported)
    assert TOKEN not in text
    # The instrumentations did record the URLs, masked: the redaction ran, not a blank.
    assert "access_token=***" in text


@pytest.mark.usefixtures("product_logging")
async def test_a_call_without_a_trace_starts_one_and_logs_its_id(
    upstream: tuple[str, list[dict[str, str]]],
    traced_gateway: Callable[..., Any],
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = upstream
    gw: Gateway = await traced_gateway(url)
    await call(http, gw, {})
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    trace_id, _, parent = hex_ids(server)
    assert parent is None  # a root span
    assert {h["traceparent"].split("-")[1] for h in seen} == {trace_id}
    assert f"trace_id={trace_id}" in capsys.readouterr().out


async def test_the_sample_ratio_decides_new_traces_and_a_clients_decision_is_kept(
    upstream: tuple[str, list[dict[str, str]]],
    traced_gateway: Callable[..., Any],
    spans: InMemorySpanExporter,
    http: aiohttp.ClientSession,
) -> None:
    url, seen = upstream
    gw: Gateway = await traced_gateway(url, sample_ratio=0.0)
    await call(http, gw, {})  # a new trace, left out by the ratio
    assert spans.get_finished_spans() == ()
    first = len(seen)
    await call(http, gw, {"traceparent": f"00-{TRACE}-{PARENT_SPAN}-01"})  # "sampled"
    assert len(spans.get_finished_spans()) == 1 + len(seen) - first
    sent = [TRACEPARENT.fullmatch(h["traceparent"]) for h in seen]
    sampled = [int(m.group(3), 16) & 1 for m in sent if m is not None]  # W3C's "sampled" bit
    # Each upstream request says whether its trace is recorded.
    assert sampled == [0] * first + [1] * (len(seen) - first)


def test_off_by_default_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from sync_gateway.app import create_app\n"
        "from sync_gateway.config import load\n"
        "app = create_app(load(None, {}, {}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP collector in miniature: decodes what it is sent."""
    got: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        got.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/v1/traces")), got
    finally:
        await server.close()


@asynccontextmanager
async def traced_serve(
    tmp_path: Path, http: aiohttp.ClientSession, upstream_url: str, tracing: dict[str, str]
) -> AsyncIterator[str]:
    """`sync-gateway serve` with tracing on (and these [tracing] settings), stopped (SIGTERM,
    exit 0) at the end of the block."""
    port = free_port()
    settings = {f"SYNC_GATEWAY_TRACING_{key}": value for key, value in tracing.items()}
    env = cli_env(
        tmp_path,
        SYNC_GATEWAY_TRACING_ENABLED="true",
        SYNC_GATEWAY_SERVER_DRAIN_SECONDS="0",
        **settings,
    )
    args = ["serve", "--upstream", upstream_url, "--port", str(port)]
    proc = await start_cli(args, env, tmp_path, http, f"http://127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        assert await stop_cli(proc) == 0


async def test_serve_exports_spans_over_otlp_and_flushes_them_on_stop(
    upstream: tuple[str, list[dict[str, str]]],
    collector: tuple[str, list[ExportTraceServiceRequest]],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    url, seen = upstream
    endpoint, got = collector
    tracing = {"ENDPOINT": endpoint, "SERVICE_NAME": "gateway-under-test"}
    async with traced_serve(tmp_path, http, url, tracing) as gateway_url:
        target = f"{gateway_url}/demo/task/{JOB}/job?access_token={TOKEN}"
        async with http.post(target, headers={"traceparent": f"00-{TRACE}-{PARENT_SPAN}-01"}) as r:
            assert r.status == 200
    # Stopping flushed the batch: every span is there, under the configured service name
    # (and none for the start-up's /healthz probes).
    names, traces = set(), set()
    for message in got:
        for resource_spans in message.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert attrs["service.name"] == "gateway-under-test"
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    names.add(span.name)
                    traces.add(span.trace_id.hex())
    assert "POST /{customer}/task/{task}/job" in names
    assert traces == {TRACE}
    exported = sum(len(s.spans) for m in got for r in m.resource_spans for s in r.scope_spans)
    assert exported == 1 + len(seen)  # the call's span and one for each upstream request
    assert TOKEN.encode() not in b"".join(m.SerializeToString() for m in got)


async def test_a_collector_that_is_down_costs_the_calls_nothing(
    upstream: tuple[str, list[dict[str, str]]],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    url, _ = upstream
    tracing = {"ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces"}  # nobody listens
    async with traced_serve(tmp_path, http, url, tracing) as gateway_url:
        target = f"{gateway_url}/demo/task/{JOB}/job?access_token={TOKEN}"
        async with http.post(target) as r:
            assert r.status == 200 and await r.json() == ["ok"]
    assert TOKEN not in (tmp_path / "stdout").read_text() + (tmp_path / "stderr").read_text()


def test_tracing_without_the_extra_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the extra were not installed
        "from sync_gateway.cli import main\n"
        f"sys.exit(main(['serve', '--port', '{free_port()}']))\n"
    )
    env = cli_env(tmp_path, SYNC_GATEWAY_TRACING_ENABLED="true")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "tracing.enabled needs the tracing extra" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_the_console_exporter_writes_each_span_as_a_json_line(
    upstream: tuple[str, list[dict[str, str]]],
    cleanup: AsyncExitStack,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = upstream
    settings = gateway_settings(url, tracing={**ON, "exporter": "console"})
    gw = await started_gateway(cleanup, settings)
    await call(http, gw, {"traceparent": f"00-{TRACE}-{PARENT_SPAN}-01"})
    await gw.stop()  # the batch is written at the latest when the gateway stops
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"context"' in line
    ]
    assert len(lines) == 1 + len(seen)
    assert {line["context"]["trace_id"] for line in lines} == {f"0x{TRACE}"}
    assert {line["resource"]["attributes"]["service.name"] for line in lines} == {"sync-gateway"}
