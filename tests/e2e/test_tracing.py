"""Trace context: a client's W3C traceparent reaches every upstream request made for its call
and its log lines; a call without one starts a trace."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from conftest import Gateway
from support.miniature import JOB, header_recording_supervisor

from sync_gateway.core.tracing import from_headers

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    async with header_recording_supervisor() as (url, seen):
        yield url, seen


async def call(http: aiohttp.ClientSession, gw: Gateway, headers: dict[str, str]) -> None:
    url = f"{gw.url}/demo/task/{JOB}/job?access_token=t"
    async with http.post(url, headers=headers) as resp:
        assert resp.status == 200
        assert await resp.json() == ["ok"]


@pytest.mark.usefixtures("product_logging")
async def test_the_clients_trace_reaches_every_upstream_request_and_the_log(
    upstream: tuple[str, list[dict[str, str]]],
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = upstream
    gw: Gateway = await make_gateway(url)
    await call(http, gw, {"traceparent": PARENT, "tracestate": "vendor=1"})
    assert len(seen) == 3  # the create and two long polls, made by the job's watch
    spans = set()
    for headers in seen:
        m = TRACEPARENT.fullmatch(headers.get("traceparent", ""))
        assert m is not None and m.group(1) == TRACE, headers
        assert headers["tracestate"] == "vendor=1"
        spans.add(m.group(2))
    assert len(spans) == 3  # each request a span id of its own
    assert f"trace_id={TRACE}" in capsys.readouterr().out


async def test_a_call_without_a_trace_starts_one(
    upstream: tuple[str, list[dict[str, str]]],
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
) -> None:
    url, seen = upstream
    gw: Gateway = await make_gateway(url)
    await call(http, gw, {})
    traces = {TRACEPARENT.fullmatch(h["traceparent"]).group(1) for h in seen}  # type: ignore[union-attr]
    assert len(traces) == 1 and TRACE not in traces


@pytest.mark.parametrize(
    "bad",
    ["", "00-0000", f"01-{TRACE}-00f067aa0ba902b7-01", f"00-{'0' * 32}-00f067aa0ba902b7-01"],
)
def test_a_bad_traceparent_starts_a_new_trace(bad: str) -> None:
    trace = from_headers({"traceparent": bad})
    assert len(trace.trace_id) == 32 and trace.trace_id not in (TRACE, "0" * 32)


def test_a_good_traceparent_is_kept() -> None:
    trace = from_headers({"traceparent": PARENT.upper(), "tracestate": "a=1"})
    assert (trace.trace_id, trace.flags, trace.state) == (TRACE, "01", "a=1")
