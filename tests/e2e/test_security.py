"""Nobody sees a job that is not theirs, and nobody takes the gateway down (SPEC 5, 2.5):
each test drives a real gateway over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import CUSTOMER, OTHER_TOKEN, TOKEN, Gateway, started_gateway
from support.helpers import call, eventually, stats

from sync_gateway.config import load
from sync_gateway.emulator import EmulatorServer
from sync_gateway.web.keys import ENGINE

ECHO_TASK = "65a000000000000000000009"  # prints its argument: the task output the test chooses
DELAY_TASK_SECRET = "810821b358d2f69943a834a2c85446c5b06210ca61fe3608b92adc5125df3c34"
DELAY_TASK = "65a000000000000000000007"
OPERATOR_TOKEN = "demo-operator-token"  # another member of customer demo
QUERY = f"access_token={TOKEN}"


async def start_secret_job(http: aiohttp.ClientSession, gw: Gateway, seconds: float) -> str:
    url = f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/secret/{DELAY_TASK_SECRET}/job"
    status, body, resp = await call(http, "POST", url, json=[seconds], headers=RESPOND_ASYNC)
    assert status == 202, body
    location: str = resp.headers["Location"]
    assert "/secret/" in location  # the job's own secret: the creator's way back
    return location


RESPOND_ASYNC = {"Prefer": "respond-async"}


@pytest.mark.parametrize("finished", [False, True], ids=["running", "finished"])
async def test_a_secret_started_job_is_its_creators_alone(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    finished: bool,
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    location = await start_secret_job(http, gw, 0.2 if finished else 30)
    job_id = location.split("/")[2]
    if finished:
        await eventually(
            lambda: gw.app[ENGINE].watching(f"theeye:{job_id}") is None, "the job to end"
        )
    before = await stats(http, emulator)
    refused = [
        f"/job/{job_id}/result?full",  # no token
        f"/job/{job_id}/result?full&access_token=bogus",
        f"/job/{job_id}/result?full&access_token={TOKEN}",  # a valid token of the customer
        f"/job/{job_id}/result?full&access_token={OTHER_TOKEN}",
        f"/jobs/theeye/{job_id}/result?full&access_token={TOKEN}",
        f"/job/{job_id}/secret/{'0' * 64}/result?full",  # a wrong job secret
    ]
    for path in refused:
        status, body, _ = await call(http, "GET", gw.url + path, headers=RESPOND_ASYNC)
        assert status == 403, (path, status, body)
        assert body["error"] == "forbidden"
        assert "secret" not in json.dumps(body).replace('"forbidden"', "")
    after = await stats(http, emulator)
    # Refused at the gateway: the upstream was never asked on anybody's behalf.
    assert after["result"] == before["result"] and after["job"] == before["job"]
    # The creator, with the job's own secret, gets the job: its result, or a 202 to go on.
    prefer = {"Prefer": "wait=10"} if finished else RESPOND_ASYNC
    status, body, _ = await call(http, "GET", gw.url + location, headers=prefer)
    if finished:
        assert status == 200 and body == [json.dumps({"ok": True}, separators=(",", ":"))]
    else:
        assert status == 202 and body["id"] == job_id


async def test_anonymous_reattaches_cost_the_upstream_nothing(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    url = f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job?{QUERY}"
    _, _, resp = await call(http, "POST", url, json=[30], headers=RESPOND_ASYNC)
    job_id = resp.headers["X-Job-Id"]
    before = await stats(http, emulator)
    guesses = [f"{job_id}", "6b0000000000000000000000", "6b0000000000000000000001"]
    answers = await asyncio.gather(
        *(
            call(http, "GET", f"{gw.url}/job/{guesses[i % 3]}/result", headers=RESPOND_ASYNC)
            for i in range(300)
        )
    )
    assert {status for status, _, _ in answers} == {403}
    after = await stats(http, emulator)
    assert sum(after[k] for k in ("result", "job", "list")) == sum(
        before[k] for k in ("result", "job", "list")
    )
    assert gw.app[ENGINE].watching("theeye:6b0000000000000000000000") is None


async def test_another_callers_reattach_is_one_cheap_request_with_their_own_token(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    url = f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job?{QUERY}"
    _, _, resp = await call(http, "POST", url, json=[30], headers=RESPOND_ASYNC)
    job_id = resp.headers["X-Job-Id"]
    before = await stats(http, emulator)
    path = f"{gw.url}/job/{job_id}/result?access_token="
    for token, expected in ((OPERATOR_TOKEN, 202), (OTHER_TOKEN, 403)):
        answers = await asyncio.gather(
            *(call(http, "GET", path + token, headers=RESPOND_ASYNC) for _ in range(20))
        )
        assert {status for status, _, _ in answers} == {expected}, token
    after = await stats(http, emulator)
    # One GET /{customer}/job/{id} per re-attach, no upstream long poll at all.
    assert after["job"] - before["job"] == 40
    assert after["result"] == before["result"]


@pytest.mark.parametrize("code", [100, 101, 103, 199, "101"])
async def test_task_output_never_sends_a_1xx(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    code: Any,
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    output = json.dumps({"statusCode": code, "body": {"a": 1}})
    url = f"{gw.url}/{CUSTOMER}/task/{ECHO_TASK}/job?parse&{QUERY}"
    status, body, _ = await call(http, "POST", url, json=[output])
    assert (status, body) == (200, {"a": 1})  # the job's own 200, the body as it was
    # and the connection is still in step: the next request on it answers normally
    status, _, _ = await call(http, "GET", gw.url + "/healthz")
    assert status == 200


async def test_what_a_task_may_set_and_what_it_may_not(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    headers = {
        "Location": "/things/42",
        "Content-Type": "text/plain",
        "Cache-Control": "no-store",
        "X-Thing": "1",
        "Set-Cookie": "session=stolen",
        "Strict-Transport-Security": "max-age=0",
        "Access-Control-Allow-Origin": "*",
        "Preference-Applied": "wait=1",
        "Retry-After": "1",
        "X-Job-Id": "forged",
        "X-Request-Id": "forged",
    }
    output = json.dumps({"statusCode": 201, "body": "made", "headers": headers})
    url = f"{gw.url}/{CUSTOMER}/task/{ECHO_TASK}/job?parse&{QUERY}"
    async with http.post(url, json=[output]) as resp:
        assert resp.status == 201
        assert await resp.read() == b"made"
        got = resp.headers
        assert got["Location"] == "/things/42"
        assert got["Content-Type"] == "text/plain"
        assert got["Cache-Control"] == "no-store" and got["X-Thing"] == "1"
        for name in (
            "Set-Cookie",
            "Strict-Transport-Security",
            "Access-Control-Allow-Origin",
            "Preference-Applied",
            "Retry-After",
        ):
            assert name not in got, name
        assert got["X-Job-Id"] != "forged" and got["X-Request-Id"] != "forged"


async def test_the_deny_list_is_a_setting(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url, security={"task_headers_denied": ["x-thing"]})
    output = json.dumps(
        {"statusCode": 200, "body": {}, "headers": {"X-Thing": "1", "Set-Cookie": "a=1"}}
    )
    url = f"{gw.url}/{CUSTOMER}/task/{ECHO_TASK}/job?parse&{QUERY}"
    async with http.post(url, json=[output]) as resp:
        assert "X-Thing" not in resp.headers
        assert resp.headers["Set-Cookie"] == "a=1"  # allowed by this deployment


@pytest.mark.parametrize("name", ["counter", "limit", "timeout"])
async def test_huge_loop_numbers_are_a_400(
    gateway: Gateway, http: aiohttp.ClientSession, name: str
) -> None:
    url = f"{gateway.url}/job/6b0000000000000000000000/result?{name}={'9' * 400}&{QUERY}"
    status, body, _ = await call(http, "GET", url)
    assert status == 400 and body["parameter"] == name


@pytest.mark.parametrize("customer", ["..", "a/b", "%2E%2E"])
async def test_a_customer_hint_that_is_not_an_id_is_a_400(
    gateway: Gateway, http: aiohttp.ClientSession, customer: str
) -> None:
    url = f"{gateway.url}/job/6b0000000000000000000000/result?customer={customer}&{QUERY}"
    status, body, _ = await call(http, "GET", url)
    assert status == 400 and body["parameter"] == "customer"


def raw_exchange(port: int, data: bytes, read_for: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /job/x/result?access_token=PLANTED-SECRET HTTP/1.1\r\nHost: h\r\nX-A\x00: 1\r\n\r\n",
        b"GET /healthz?access_token=PLANTED-SECRET HTTP/1.1\r\nAuthorization: Bearer"
        b" PLANTED-SECRET\r\nBad Header Name: x\r\n\r\n",
        b"GET /a b c PLANTED-SECRET HTTP/1.1\r\n\r\n",
    ],
    ids=["nul", "space-in-name", "request-line"],
)
async def test_a_request_http_cannot_parse_is_a_json_400_that_echoes_nothing(
    gateway: Gateway, request_bytes: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    answer = await asyncio.to_thread(raw_exchange, port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and head[9:12] == b"400", answer[:200]
    assert b"application/json" in head
    assert orjson.loads(body)["error"] == "bad_request"
    assert b"PLANTED" not in answer
    logged = capsys.readouterr().out
    assert "PLANTED" not in logged and "Traceback" not in logged
    assert logged.count("bad_http_request") == 1


async def test_a_flood_of_idle_connections_does_not_stop_the_gateway(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw: Gateway = await make_gateway(emulator.url, server={"max_connections": 40})
    port = int(gw.url.rsplit(":", 1)[1])
    idle = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(300)))
    try:
        # New clients are served all the same: the oldest idle connections made room.
        for _ in range(5):
            status, body, _ = await call(http, "GET", gw.url + "/healthz")
            assert (status, body) == (200, {"status": "ok"})
        url = f"{gw.url}/{CUSTOMER}/task/{ECHO_TASK}/job?{QUERY}"
        status, body, _ = await call(http, "POST", url, json=['"hi"'])
        assert (status, body) == (200, ['"hi"'])
        server = gw.runner.server
        assert server is not None and len(server.connections) <= 41
    finally:
        for _, writer in idle:
            writer.close()
    # Refusals are logged once per interval (10 s), never once per connection.
    logged = capsys.readouterr().out
    assert "accept_failed" not in logged and logged.count("connections_limited") <= 1


async def test_a_slow_request_head_is_cut(
    emulator: EmulatorServer, make_gateway: Callable[..., Any]
) -> None:
    gw: Gateway = await make_gateway(emulator.url, server={"header_timeout": 0.5})
    port = int(gw.url.rsplit(":", 1)[1])
    partial = b"GET /healthz HTTP/1.1\r\nHost: h\r\n"  # and never the blank line
    answer = await asyncio.to_thread(raw_exchange, port, partial, 8.0)
    assert answer == b""  # closed by the gateway within about header_timeout + a sweep


async def test_only_the_creators_hang_up_cancels_with_cancel_on_disconnect(
    emulator: EmulatorServer, cleanup: AsyncExitStack, http: aiohttp.ClientSession
) -> None:
    settings = load(None, {}, {"upstream": {"url": emulator.url}, "cancel_on_disconnect": True})
    gw = await started_gateway(cleanup, settings)
    url = f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job?{QUERY}"
    _, _, resp = await call(http, "POST", url, json=[30], headers=RESPOND_ASYNC)
    job_id = resp.headers["X-Job-Id"]
    reattach = f"{gw.url}/job/{job_id}/result?customer={CUSTOMER}&access_token="

    async def hang_up(token: str) -> None:
        waiting = asyncio.ensure_future(
            call(http, "GET", reattach + token, headers={"Prefer": "wait=30"})
        )
        await eventually(lambda: gw.app[ENGINE].waiter_count() == 1, "the re-attach to wait")
        waiting.cancel()  # the client goes away
        await eventually(lambda: gw.app[ENGINE].waiter_count() == 0, "the hang-up to be seen")

    await hang_up(OPERATOR_TOKEN)  # another caller the upstream accepts: cancels nothing
    await asyncio.sleep(0.2)
    assert (await stats(http, emulator))["cancel"] == 0
    assert emulator.state.jobs[job_id].doc["lifecycle"] not in ("terminated", "canceled")
    await hang_up(TOKEN)  # the creator: cancelled, and the answer checked
    await eventually(
        lambda: emulator.state.jobs[job_id].doc["lifecycle"] in ("terminated", "canceled"),
        "the job to be cancelled",
    )
    assert (await stats(http, emulator))["cancel"] == 1


async def test_admission_refuses_creates_past_the_bound_at_once_and_never_a_reattach(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(
        emulator.url, admission={"max_jobs_per_customer": 2, "retry_after": 3}
    )
    url = f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job?{QUERY}"
    locations = []
    for _ in range(2):
        status, _, resp = await call(http, "POST", url, json=[30], headers=RESPOND_ASYNC)
        assert status == 202
        locations.append(resp.headers["Location"])
    before = (await stats(http, emulator))["create"]
    status, body, resp = await call(http, "POST", url, json=[30], headers=RESPOND_ASYNC)
    assert (status, body["error"], body["scope"]) == (429, "too_many_requests", "customer")
    assert resp.headers["Retry-After"] == "3"
    assert (await stats(http, emulator))["create"] == before  # refused before the upstream
    # Re-attaching to a job in flight is never refused.
    status, _, _ = await call(http, "GET", gw.url + locations[0], headers=RESPOND_ASYNC)
    assert status == 202
    scrape = await call(http, "GET", gw.url + "/metrics")
    assert 'sync_gateway_admission_refused_total{scope="customer"} 1.0' in scrape[1].decode()


async def test_a_cookie_the_upstream_sets_for_one_caller_never_reaches_another(
    make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    """The upstream session is shared by every caller: it keeps no cookie jar."""
    job = "6b0000000000000000000002"
    cookies: list[str | None] = []

    async def create(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        doc = {"id": job, "customer_name": CUSTOMER, "state": "in_progress", "lifecycle": "ready"}
        resp = web.json_response(doc)
        resp.set_cookie("session", "for-" + request.query.get("access_token", ""))
        return resp

    async def result(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        doc = {"id": job, "state": "success", "lifecycle": "finished", "output": ["ok"]}
        return web.json_response(doc)

    upstream = web.Application()
    upstream.router.add_post("/{customer}/task/{task}/job", create)
    upstream.router.add_get("/job/{job}/result", result)
    server = TestServer(upstream, host="127.0.0.1")
    await server.start_server()
    try:
        # A host name: a cookie jar would ignore cookies from a bare IP address.
        gw: Gateway = await make_gateway(f"http://localhost:{server.port}")
        for token in (TOKEN, OTHER_TOKEN):
            url = f"{gw.url}/{CUSTOMER}/task/{job}/job?access_token={token}"
            status, body, _ = await call(http, "POST", url)
            assert (status, body) == (200, ["ok"])
    finally:
        await server.close()
    assert len(cookies) >= 3 and cookies == [None] * len(cookies)
