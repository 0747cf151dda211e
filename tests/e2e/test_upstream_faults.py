"""Upstream faults (SPEC 2.5, 4): what the client gets when the supervisor misbehaves.

The faults are the emulator's own (``POST /_emulator/faults``) over real sockets, plus a
gateway pointed at a closed port. Every answer is JSON.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import HELLO_TASK, INSTANT_TASK, LARGE_TASK, TOKEN, Gateway
from support.helpers import add_faults, stats

from sync_gateway.emulator import EmulatorServer

FAST_RETRIES = {"retry_attempts": 2, "connect_timeout": 1.0}


def assert_json_error(resp: aiohttp.ClientResponse, body: bytes) -> dict[str, Any]:
    assert resp.headers["Content-Type"].startswith("application/json"), body
    assert b"Traceback" not in body
    payload: dict[str, Any] = json.loads(body)
    assert payload["error"] and payload["message"]
    return payload


async def create(
    http: aiohttp.ClientSession, gw: Gateway, task: str = INSTANT_TASK, query: str = "parse"
) -> tuple[aiohttp.ClientResponse, bytes]:
    url = f"{gw.url}/demo/task/{task}/job?{query}&access_token={TOKEN}"
    async with http.post(url, allow_redirects=False) as resp:
        return resp, await resp.read()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the create ---------------------------------------------------------------------------------


async def test_upstream_refusing_connections_answers_502(
    make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(f"http://127.0.0.1:{closed_port()}", upstream=FAST_RETRIES)
    resp, body = await create(http, gw)
    assert resp.status == 502
    assert assert_json_error(resp, body)["error"] == "upstream_unavailable"
    assert "X-Job-Id" not in resp.headers


@pytest.mark.parametrize(
    ("fault", "status", "expected_body", "content_type"),
    [
        (
            {"status": 401},
            401,
            b'{"statusCode":401,"message":"injected fault"}',
            "application/json",
        ),
        (
            {"status": 404},
            404,
            b'{"statusCode":404,"message":"injected fault"}',
            "application/json",
        ),
        ({"status": 409, "body": "already running"}, 409, b"already running", "text/plain"),
    ],
    ids=["401", "404", "409-text"],
)
async def test_upstream_rejection_of_the_create_is_passed_through(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    fault: dict[str, Any],
    status: int,
    expected_body: bytes,
    content_type: str,
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream=FAST_RETRIES)
    await add_faults(http, emulator, {"route": "create", **fault})
    resp, body = await create(http, gw)
    assert resp.status == status
    assert body == expected_body
    assert resp.headers["Content-Type"].startswith(content_type)
    assert (await stats(http, emulator))["create"] == 1  # a create is not retried


async def test_upstream_429_on_create_is_passed_through_with_retry_after(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream=FAST_RETRIES)
    fault = {"route": "create", "status": 429, "body": "slow down", "retry_after": "3"}
    await add_faults(http, emulator, fault)
    resp, body = await create(http, gw)
    assert (await stats(http, emulator))["create"] == 1
    assert resp.status == 429
    assert body == b"slow down"
    assert resp.headers.get("Retry-After") == "3"


@pytest.mark.parametrize(
    ("task", "token", "status", "message"),
    [
        (HELLO_TASK, "wrong-token", 401, "Unauthorized"),
        ("ffffffffffffffffffffffff", TOKEN, 404, "task not found"),
    ],
)
async def test_real_rejections_keep_the_upstream_body(
    gateway: Gateway, http: aiohttp.ClientSession, task: str, token: str, status: int, message: str
) -> None:
    url = f"{gateway.url}/demo/task/{task}/job?access_token={token}"
    async with http.post(url) as resp:
        assert resp.status == status
        assert await resp.json() == {"statusCode": status, "message": message}


async def test_slow_create_answers_504(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream={"request_timeout": 0.5})
    await add_faults(http, emulator, {"route": "create", "action": "slow", "seconds": 3})
    resp, body = await create(http, gw)
    assert resp.status == 504
    assert assert_json_error(resp, body)["error"] == "upstream_timeout"


@pytest.mark.parametrize(
    "fault",
    [
        {"action": "garbage"},
        {"action": "garbage", "body": '{"no":"id"}'},
        {"status": 500},
        {"status": 502},
        {"status": 503, "retry_after": "0"},
        {"status": 504},
        {"status": 302, "body": "moved"},
        {"action": "reset"},
        {"action": "reset_after_create"},
    ],
    ids=[
        "garbage",
        "json-without-id",
        "500",
        "502",
        "503",
        "504",
        "302",
        "reset",
        "reset-after-create",
    ],
)
async def test_unusable_create_answer_is_502(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    fault: dict[str, Any],
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream=FAST_RETRIES)
    await add_faults(http, emulator, {"route": "create", **fault})
    resp, body = await create(http, gw)
    assert resp.status == 502
    assert assert_json_error(resp, body)["error"].startswith("upstream_")
    # the create may have reached the upstream: it is never sent twice
    assert (await stats(http, emulator))["create"] == 1


# -- the result ---------------------------------------------------------------------------------


async def large_result(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> tuple[aiohttp.ClientResponse, dict[str, Any], str]:
    """A 200 kB result through a gateway that accepts 50 kB."""
    gw: Gateway = await make_gateway(emulator.url, upstream={"max_result_bytes": 50_000})
    url = f"{gw.url}/demo/task/{LARGE_TASK}/job?parse&access_token={TOKEN}"
    async with http.post(url, json=[200_000]) as resp:
        body = await resp.read()
    (job_id,) = emulator.state.jobs
    return resp, assert_json_error(resp, body), job_id


async def test_result_over_max_result_bytes_answers_502(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    resp, payload, _ = await large_result(emulator, make_gateway, http)
    assert resp.status == 502
    assert payload["error"] == "result_too_large"


async def test_result_over_max_result_bytes_gives_the_job_id(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    resp, payload, job_id = await large_result(emulator, make_gateway, http)
    assert resp.status == 502
    assert resp.headers.get("X-Job-Id") == job_id
    assert job_id in payload.values()


async def test_large_result_under_max_result_bytes_is_answered(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream={"max_result_bytes": 500_000})
    url = f"{gw.url}/demo/task/{LARGE_TASK}/job?parse&access_token={TOKEN}"
    async with http.post(url, json=[100_000]) as resp:
        body = await resp.read()
    assert resp.status == 200
    assert json.loads(body)["size"] == 100_000


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "count": 2},
        {"status": 502, "count": 1},
        {"status": 429, "count": 1, "retry_after": "0"},
        {"action": "reset", "count": 2},
        {"action": "garbage", "count": 1},
    ],
    ids=["503x2", "502", "429", "reset", "garbage"],
)
async def test_transient_result_faults_are_retried_until_the_answer(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    fault: dict[str, Any],
) -> None:
    gw: Gateway = await make_gateway(emulator.url, upstream={"poll_max_interval": 0.2})
    await add_faults(http, emulator, {"route": "result", **fault})
    resp, body = await create(http, gw, HELLO_TASK)
    assert resp.status == 200
    assert body == b'{"message":"Hello world!"}'
    counters = await stats(http, emulator)
    assert counters["faults"] == fault["count"]
    assert counters["result"] >= fault["count"] + 1
