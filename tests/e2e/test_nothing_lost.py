"""Nothing lost (SPEC 2.3, 2.4, 4): wait budgets, 202 re-attach, retention, idempotency,
hang-ups, upstream blips, retries and the SIGTERM drain, over real loopback sockets with the
supervisor emulator as the upstream.

Every test checks two things: the job's result was delivered or can still be fetched, and the
upstream saw exactly one create (the emulator's own counters). Nothing here asserts that
something took less than N seconds; waits for a condition have generous deadlines instead.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
from conftest import (
    CUSTOMER,
    DELAY_TASK,
    INSTANT_TASK,
    OTHER_HELLO_TASK,
    OTHER_TOKEN,
    REST_TASK,
    TOKEN,
    Gateway,
    start_gateway,
)
from support.helpers import add_faults, eventually, stats
from support.processes import free_port

from sync_gateway.config import load
from sync_gateway.emulator import EmulatorServer, EmulatorSettings

OTHER_CUSTOMER = "other"
DELAY_OUTPUT = ['{"ok":true}']
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JSON = "application/json"


# ---- helpers ------------------------------------------------------------------------------


def job_path(task: str, customer: str = CUSTOMER) -> str:
    return f"/{customer}/task/{task}/job"


async def wait_for_stats(
    http: aiohttp.ClientSession,
    emulator: EmulatorServer,
    check: Callable[[dict[str, Any]], bool],
    what: str,
) -> None:
    async def holds() -> bool:
        return check(await stats(http, emulator))

    await eventually(holds, what)


def only_job_id(emulator: EmulatorServer) -> str:
    """The id of the one job the emulator holds (a client that hung up never saw it)."""
    ids = list(emulator.state.jobs)
    assert len(ids) == 1, ids
    return ids[0]


async def result_requests(
    http: aiohttp.ClientSession, emulator: EmulatorServer, job_id: str
) -> int:
    """How many ``/job/{id}/result`` requests the emulator has seen for this job."""
    per_job = (await stats(http, emulator))["per_job"]
    count: int = per_job.get(job_id, {}).get("result", 0)
    return count


async def assert_one_create(http: aiohttp.ClientSession, emulator: EmulatorServer) -> None:
    seen = await stats(http, emulator)
    assert seen["create"] == 1, seen
    assert len(emulator.state.jobs) == 1


async def read_json(resp: aiohttp.ClientResponse) -> Any:
    assert resp.content_type == JSON, (resp.status, resp.content_type)
    return orjson.loads(await resp.read())


async def reattach(
    http: aiohttp.ClientSession, base: str, location: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Follow a 202's ``Location`` on gateway ``base``: the status, headers and body."""
    assert location.startswith("/job/"), location
    async with http.get(base + location, headers=headers, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def assert_accepted(
    status: int, headers: dict[str, str] | Any, body: Any, prefer: str | None = None
) -> str:
    """A 202 that loses nothing (SPEC 2.3); returns its Location."""
    assert status == 202, (status, body)
    job_id = headers["X-Job-Id"]
    assert body["id"] == job_id
    assert body["state"] == "in_progress"
    assert isinstance(body["lifecycle"], str) and body["lifecycle"]
    assert int(headers["Retry-After"]) >= 0
    location: str = headers["Location"]
    assert location.startswith(f"/job/{job_id}/result"), location
    if prefer is not None:
        assert headers["Preference-Applied"] == prefer
    return location


async def hang_up_after_create(
    gateway_url: str,
    path: str,
    body: bytes,
    http: aiohttp.ClientSession,
    emulator: EmulatorServer,
    extra_headers: tuple[str, ...] = (),
    *,
    during_create: bool = False,
) -> None:
    """Send a blocking POST on a raw socket and close it once the gateway is waiting.

    The gateway's watch long-polls the job only after the handler has started waiting, so
    "the emulator saw a result request" means the client is now blocked in the wait. With
    ``during_create`` the socket is closed as soon as the create reached the emulator (give
    the create a ``slow`` fault so that it is still in flight then)."""
    split = urlsplit(gateway_url)
    assert split.hostname == "127.0.0.1" and split.port is not None
    reader, writer = await asyncio.open_connection(split.hostname, split.port)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{split.port}",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra_headers,
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    try:
        if during_create:
            await wait_for_stats(http, emulator, lambda s: s["create"] == 1, "the create")
        else:
            await wait_for_stats(
                http, emulator, lambda s: s["create"] == 1 and s["result"] >= 1, "a waiter"
            )
    finally:
        writer.close()
        await writer.wait_closed()
    del reader


async def has_jobs(emulator: EmulatorServer) -> bool:
    return bool(emulator.state.jobs)


# ---- wait budgets and 202 -----------------------------------------------------------------


async def test_budget_shorter_than_job_answers_202_and_reattach_gets_result(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        gateway.url + job_path(DELAY_TASK),
        json=[2],
        headers={**BEARER, "Prefer": "wait=1"},
    ) as resp:
        body = await read_json(resp)
        location = assert_accepted(resp.status, resp.headers, body, prefer="wait=1")
        job_id = resp.headers["X-Job-Id"]
    # The token came in a header: the Location must not carry it.
    assert "access_token" not in location and TOKEN not in location
    polls = await result_requests(http, emulator, job_id)

    status, headers, result = await reattach(http, gateway.url, location, BEARER)
    assert status == 200
    assert headers["X-Job-Id"] == job_id
    assert orjson.loads(result) == DELAY_OUTPUT
    # The gateway went on watching after the 202: the re-attach needed no new upstream poll.
    assert await result_requests(http, emulator, job_id) == polls
    await assert_one_create(http, emulator)


async def test_supervisor_style_budget_answers_202_and_reattach_gets_result(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + job_path(DELAY_TASK) + f"?timeout=1&limit=2&access_token={TOKEN}&parse"
    async with http.post(url, json=[3]) as resp:
        body = await read_json(resp)
        location = assert_accepted(resp.status, resp.headers, body)
        job_id = resp.headers["X-Job-Id"]
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert query["access_token"] == [TOKEN]  # the client sent it in the query string
    assert "parse" in query  # the same format flags

    status, headers, result = await reattach(http, gateway.url, location)
    assert status == 200
    assert headers["X-Job-Id"] == job_id
    assert orjson.loads(result) == {"ok": True}  # parse: output[0] as JSON
    await assert_one_create(http, emulator)


async def test_prefer_respond_async_answers_202_at_once_with_preference_applied(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        gateway.url + job_path(DELAY_TASK),
        json=[1],
        headers={**BEARER, "Prefer": "respond-async"},
    ) as resp:
        body = await read_json(resp)
        location = assert_accepted(resp.status, resp.headers, body, prefer="respond-async")
    status, _, result = await reattach(http, gateway.url, location, BEARER)
    assert status == 200
    assert orjson.loads(result) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


# ---- the upstream blips -------------------------------------------------------------------


async def test_refused_connection_at_create_answers_502_and_creates_no_job(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    await emulator.stop()  # its port is now closed: every connect is refused
    gateway: Gateway = await make_gateway(emulator.url)
    async with http.post(gateway.url + job_path(INSTANT_TASK), headers=BEARER) as resp:
        assert resp.status == 502
        body = await read_json(resp)
        assert body["error"] == "upstream_unavailable"
        assert "X-Job-Id" not in resp.headers

    await emulator.start()
    seen = await stats(http, emulator)
    assert seen["create"] == 0 and seen["jobs"] == 0
    # The client retries once the upstream is back: exactly one job, and its result.
    async with http.post(gateway.url + job_path(INSTANT_TASK), headers=BEARER) as resp:
        assert resp.status == 200
        assert await read_json(resp) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_upstream_stopping_mid_wait_and_coming_back_still_delivers_result(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    call = asyncio.ensure_future(
        http.post(
            gateway.url + job_path(DELAY_TASK),
            json=[1.5],
            headers={**BEARER, "Prefer": "wait=30"},
        )
    )
    try:
        await wait_for_stats(
            http, emulator, lambda s: s["create"] == 1 and s["result"] >= 1, "a long poll"
        )
        await emulator.stop()  # drops the gateway's long poll; the job keeps running
        await asyncio.sleep(0.5)
        await emulator.start()  # the same port, the same jobs
        async with await call as resp:
            assert resp.status == 200
            assert resp.headers["X-Job-Id"] == only_job_id(emulator)
            assert await read_json(resp) == DELAY_OUTPUT
    finally:
        call.cancel()
    await assert_one_create(http, emulator)


@pytest.mark.parametrize("status", [503, 429])
async def test_503_and_429_bursts_with_retry_after_on_the_result_poll_are_respected(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession, status: int
) -> None:
    retry_after = 1.0
    burst = 2
    await add_faults(
        http, emulator, {"route": "result", "count": burst, "status": status, "retry_after": 1}
    )
    started = time.monotonic()
    call = asyncio.ensure_future(
        http.post(
            gateway.url + job_path(DELAY_TASK),
            json=[0.3],
            headers={**BEARER, "Prefer": "wait=30"},
        )
    )
    samples = 0
    try:
        while not call.done():
            seen = await stats(http, emulator)
            elapsed = time.monotonic() - started
            # The k-th retry cannot reach the emulator before k * Retry-After after the first
            # request, which came after `started`: a sample read before that sees at most k.
            allowed = math.floor(elapsed / retry_after) + 1
            assert seen["result"] <= allowed, (elapsed, seen)
            samples += 1
            await asyncio.sleep(0.05)
        async with await call as resp:
            assert resp.status == 200
            assert await read_json(resp) == DELAY_OUTPUT
    finally:
        call.cancel()
    assert samples > 0
    seen = await stats(http, emulator)
    assert seen["faults"] == burst
    assert seen["result"] == burst + 1  # every 503 retried, then the answer
    await assert_one_create(http, emulator)


async def test_reset_after_create_is_not_retried_and_answers_502(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    await add_faults(http, emulator, {"route": "create", "action": "reset_after_create"})
    async with http.post(gateway.url + job_path(DELAY_TASK), json=[0.2], headers=BEARER) as resp:
        assert resp.status == 502
        body = await read_json(resp)
        assert body["error"] == "upstream_unavailable"
        assert isinstance(body["message"], str)
    # The create reached the upstream: the job exists, and only once.
    seen = await stats(http, emulator)
    assert seen["create"] == 1 and seen["faults"] == 1
    await assert_one_create(http, emulator)
    # The job is not lost: whoever learns its id can still fetch its result.
    job_id = only_job_id(emulator)
    found = f"/job/{job_id}/result?customer={CUSTOMER}"  # a job this gateway never saw
    status, headers, result = await reattach(http, gateway.url, found, BEARER)
    assert status == 200
    assert headers["X-Job-Id"] == job_id
    assert orjson.loads(result) == DELAY_OUTPUT


# ---- client hang-ups ----------------------------------------------------------------------


async def test_client_hang_up_mid_wait_keeps_the_job_and_result_is_retrievable(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    await hang_up_after_create(gateway.url, job_path(DELAY_TASK), b"[1]", http, emulator)
    job_id = only_job_id(emulator)
    polls = await result_requests(http, emulator, job_id)
    found = f"/job/{job_id}/result?customer={CUSTOMER}"  # a job this gateway never saw
    status, headers, result = await reattach(http, gateway.url, found, BEARER)
    assert status == 200
    assert headers["X-Job-Id"] == job_id
    assert orjson.loads(result) == DELAY_OUTPUT
    # The watch outlived the client: the re-attach found it (or its retained result).
    assert await result_requests(http, emulator, job_id) == polls
    seen = await stats(http, emulator)
    assert seen["cancel"] == 0
    assert emulator.state.jobs[job_id].doc["state"] == "success"
    await assert_one_create(http, emulator)


async def test_client_hang_up_then_same_idempotency_key_reattaches_to_the_job(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    key = "hang-up-then-retry-1"
    await hang_up_after_create(
        gateway.url,
        job_path(DELAY_TASK),
        b"[1]",
        http,
        emulator,
        extra_headers=(f"Idempotency-Key: {key}",),
    )
    job_id = only_job_id(emulator)
    async with http.post(
        gateway.url + job_path(DELAY_TASK), json=[1], headers={**BEARER, "Idempotency-Key": key}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Job-Id"] == job_id
        assert await read_json(resp) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_cancel_on_disconnect_asks_the_upstream_to_cancel_on_hang_up(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    settings = load(None, {}, {"upstream": {"url": emulator.url}, "cancel_on_disconnect": True})
    gateway = await start_gateway(settings)
    try:
        await hang_up_after_create(gateway.url, job_path(DELAY_TASK), b"[5]", http, emulator)
        await wait_for_stats(http, emulator, lambda s: s["cancel"] >= 1, "a cancel request")
        job_id = only_job_id(emulator)
        assert emulator.state.jobs[job_id].doc["state"] == "canceled"
        # What is left of the job is still served: its final (canceled) document.
        status, headers, result = await reattach(
            http, gateway.url, f"/job/{job_id}/result?full", BEARER
        )
        assert status == 500
        assert headers["X-Job-Id"] == job_id
        assert orjson.loads(result)["state"] == "canceled"
    finally:
        await gateway.stop()
    seen = await stats(http, emulator)
    assert seen["cancel"] == 1
    await assert_one_create(http, emulator)


async def test_client_hang_up_during_the_create_keeps_the_job_and_result_is_retrievable(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    key = "hang-up-during-create"
    await add_faults(http, emulator, {"route": "create", "action": "slow", "seconds": 0.5})
    await hang_up_after_create(
        gateway.url,
        job_path(DELAY_TASK),
        b"[0.5]",
        http,
        emulator,
        extra_headers=(f"Idempotency-Key: {key}",),
        during_create=True,
    )
    await eventually(lambda: has_jobs(emulator), "the slow create to finish upstream")
    job_id = only_job_id(emulator)
    async with http.post(
        gateway.url + job_path(DELAY_TASK), json=[0.5], headers={**BEARER, "Idempotency-Key": key}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Job-Id"] == job_id
        assert await read_json(resp) == DELAY_OUTPUT
    status, _, result = await reattach(http, gateway.url, f"/job/{job_id}/result", BEARER)
    assert status == 200 and orjson.loads(result) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_cancel_on_disconnect_also_cancels_when_the_client_hangs_up_during_the_create(
    emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    settings = load(None, {}, {"upstream": {"url": emulator.url}, "cancel_on_disconnect": True})
    gateway = await start_gateway(settings)
    try:
        await add_faults(http, emulator, {"route": "create", "action": "slow", "seconds": 0.5})
        await hang_up_after_create(
            gateway.url, job_path(DELAY_TASK), b"[2]", http, emulator, during_create=True
        )
        # Either the gateway cancels the job, or the job runs to its end (2 s): then look.
        await wait_for_stats(
            http,
            emulator,
            lambda s: s["jobs"] == 1 and (s["cancel"] >= 1 or s["running"] == 0),
            "a cancel or the end of the job",
        )
        job_id = only_job_id(emulator)
        assert (await stats(http, emulator))["cancel"] == 1
        assert emulator.state.jobs[job_id].doc["state"] == "canceled"
    finally:
        await gateway.stop()
    await assert_one_create(http, emulator)


# ---- Idempotency-Key ----------------------------------------------------------------------


async def test_idempotency_key_repeated_post_attaches_to_the_running_job(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": "same-key-while-running"}
    async with http.post(
        gateway.url + job_path(DELAY_TASK), json=[2], headers={**headers, "Prefer": "wait=0"}
    ) as resp:
        body = await read_json(resp)
        assert_accepted(resp.status, resp.headers, body)
        job_id = resp.headers["X-Job-Id"]
    # The job still runs: the same request again attaches to it and blocks for its result.
    async with http.post(gateway.url + job_path(DELAY_TASK), json=[2], headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Job-Id"] == job_id
        assert await read_json(resp) == DELAY_OUTPUT
    # And once more after it finished: the retained result, still the same job.
    async with http.post(gateway.url + job_path(DELAY_TASK), json=[2], headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Job-Id"] == job_id
        assert await read_json(resp) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_idempotency_key_concurrent_posts_create_one_job(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": "two-at-once"}

    async def post() -> tuple[int, str, Any]:
        async with http.post(
            gateway.url + job_path(DELAY_TASK), json=[0.5], headers=headers
        ) as resp:
            return resp.status, resp.headers["X-Job-Id"], await read_json(resp)

    first, second = await asyncio.gather(post(), post())
    assert first[0] == second[0] == 200
    assert first[1] == second[1] == only_job_id(emulator)
    assert first[2] == second[2] == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_idempotency_key_with_other_credentials_creates_a_separate_job(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    key = {"Idempotency-Key": "shared-key"}
    async with http.post(gateway.url + job_path(INSTANT_TASK), headers={**BEARER, **key}) as resp:
        assert resp.status == 200
        mine = resp.headers["X-Job-Id"]
    async with http.post(
        gateway.url + job_path(OTHER_HELLO_TASK, OTHER_CUSTOMER),
        headers={"Authorization": f"Bearer {OTHER_TOKEN}", **key},
    ) as resp:
        assert resp.status == 200
        theirs = resp.headers["X-Job-Id"]
        assert await read_json(resp) == ['{"message":"Hello world!"}']
    assert mine != theirs
    assert set(emulator.state.jobs) == {mine, theirs}
    assert (await stats(http, emulator))["create"] == 2  # one create per caller


async def test_idempotency_key_second_caller_gets_an_answer_when_the_first_create_fails(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    # The first create times out at the gateway (0.5 s) while the emulator holds it (1.5 s).
    gateway: Gateway = await make_gateway(emulator.url, upstream={"request_timeout": 0.5})
    await add_faults(http, emulator, {"route": "create", "action": "slow", "seconds": 1.5})
    headers = {**BEARER, "Idempotency-Key": "first-create-fails"}
    first = asyncio.ensure_future(http.post(gateway.url + job_path(INSTANT_TASK), headers=headers))
    try:
        await wait_for_stats(http, emulator, lambda s: s["create"] == 1, "the first create")
        try:
            async with http.post(gateway.url + job_path(INSTANT_TASK), headers=headers) as resp:
                second_status = resp.status
                second_body = await read_json(resp)
                second_job = resp.headers.get("X-Job-Id")
        except aiohttp.ServerDisconnectedError:
            pytest.fail("the gateway dropped the second caller's connection without an answer")
        async with await first as resp:
            assert resp.status == 504
            assert (await read_json(resp))["error"] == "upstream_timeout"
    finally:
        first.cancel()
    # The same failure, or a job of its own: an answer either way, never a dropped connection.
    if second_status == 200:
        assert second_job is not None and second_body == DELAY_OUTPUT
    else:
        assert second_status in (502, 503, 504), second_status
        assert isinstance(second_body["error"], str)


async def test_idempotency_key_reused_on_another_task_never_answers_the_first_tasks_job(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    headers = {**BEARER, "Idempotency-Key": "reused-elsewhere"}
    async with http.post(gateway.url + job_path(REST_TASK), json=[100], headers=headers) as resp:
        assert resp.status == 200
        first_job = resp.headers["X-Job-Id"]
    async with http.post(gateway.url + job_path(DELAY_TASK), json=[0.1], headers=headers) as resp:
        status = resp.status
        body = await read_json(resp)
        job = resp.headers.get("X-Job-Id")
    # A new job for the new request, or a 4xx refusing the reused key (422 in the IETF draft).
    assert job != first_job
    if status == 200:
        assert body == DELAY_OUTPUT
    else:
        assert status in (409, 422), status


# ---- retention ----------------------------------------------------------------------------


async def test_result_readable_once_upstream_is_readable_twice_through_the_gateway(
    make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    async with EmulatorServer(EmulatorSettings(min_timeout=0.2, read_once=True)) as emulator:
        gateway: Gateway = await make_gateway(emulator.url)
        async with http.post(gateway.url + job_path(REST_TASK), json=[100], headers=BEARER) as resp:
            assert resp.status == 200
            job_id = resp.headers["X-Job-Id"]
            first = await resp.read()
        assert b"tomer" in first
        assert emulator.state.jobs == {}  # the upstream has forgotten the job
        status, headers, second = await reattach(http, gateway.url, f"/job/{job_id}/result", BEARER)
        assert status == 200
        assert headers["X-Job-Id"] == job_id
        assert second == first
        seen = await stats(http, emulator)
        assert seen["create"] == 1


@pytest.mark.parametrize(
    "caller",
    [{"Authorization": f"Bearer {OTHER_TOKEN}"}, {}],
    ids=["other-customer-token", "no-token"],
)
async def test_another_callers_token_cannot_read_a_retained_result(
    gateway: Gateway,
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    caller: dict[str, str],
) -> None:
    async with http.post(gateway.url + job_path(REST_TASK), json=[100], headers=BEARER) as resp:
        assert resp.status == 200
        job_id = resp.headers["X-Job-Id"]
        secret_body = await resp.read()
    for fmt in ("", "?full", "?result", "?parse"):
        status, headers, body = await reattach(
            http, gateway.url, f"/job/{job_id}/result{fmt}", caller
        )
        assert status in (401, 403, 404), (fmt, status)
        assert headers["Content-Type"].startswith(JSON)
        orjson.loads(body)
        assert b"tomer" not in body and secret_body not in body
    # The owner still can.
    status, _, body = await reattach(http, gateway.url, f"/job/{job_id}/result", BEARER)
    assert status == 200 and body == secret_body
    await assert_one_create(http, emulator)


# ---- wait_result=true and the re-attach loop ----------------------------------------------


async def test_wait_result_loop_answers_303_then_202_at_limit_then_the_result(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = gateway.url + f"/task/{DELAY_TASK}/job?wait_result=true&timeout=0.3&limit=2"
    async with http.post(url, json=[3], headers=BEARER, allow_redirects=False) as resp:
        assert resp.status == 303
        job_id = resp.headers["X-Job-Id"]
        created = await read_json(resp)
        location = resp.headers["Location"]
    assert created["id"] == job_id
    split = urlsplit(location)
    assert split.path == f"/job/{job_id}/result"
    query = parse_qs(split.query, keep_blank_values=True)
    assert query["counter"] == ["0"] and query["limit"] == ["2"] and query["timeout"] == ["0.3"]
    assert "wait_result" not in query

    for counter in (1, 2):  # not finished yet: 303 to counter + 1
        status, headers, _ = await reattach(http, gateway.url, location, BEARER)
        assert status == 303, status
        assert headers["X-Job-Id"] == job_id
        location = headers["Location"]
        assert parse_qs(urlsplit(location).query)["counter"] == [str(counter)]
    # counter == limit and still running: 202 (never 408) with a Location to go on.
    status, headers, body = await reattach(http, gateway.url, location, BEARER)
    location = assert_accepted(status, headers, orjson.loads(body))
    # The 202's Location keeps a budget of whole seconds (the hop's 0.3 s, rounded up).
    assert parse_qs(urlsplit(location).query)["wait"] == ["1"]
    longer = {**BEARER, "Prefer": "wait=10"}
    status, headers, result = await reattach(http, gateway.url, location, longer)
    assert status == 200
    assert headers["X-Job-Id"] == job_id
    assert headers["Preference-Applied"] == "wait=10"
    assert orjson.loads(result) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


async def test_wait_result_loop_followed_like_curl_location_ends_with_the_result(
    gateway: Gateway, emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = (
        gateway.url
        + f"/task/{DELAY_TASK}/job?wait_result=true&timeout=0.3&limit=20&access_token={TOKEN}"
    )
    async with http.post(url, json=[1]) as resp:  # aiohttp follows 303 with a GET
        assert resp.status == 200
        assert len(resp.history) >= 1 and resp.history[0].status == 303
        assert resp.headers["X-Job-Id"] == only_job_id(emulator)
        assert await read_json(resp) == DELAY_OUTPUT
    await assert_one_create(http, emulator)


# ---- SIGTERM drain ------------------------------------------------------------------------


@pytest.fixture
async def gateway_process(
    emulator: EmulatorServer, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m sync_gateway serve`` with a 2 s drain; killed at the end whatever happens."""
    port = free_port()
    env = {
        **os.environ,
        "SYNC_GATEWAY_SERVER_DRAIN_SECONDS": "2",
        "SYNC_GATEWAY_LOG_LEVEL": "warning",
    }
    with (tmp_path / "gateway.log").open("wb") as logfile:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sync_gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--upstream",
            emulator.url,
            env=env,
            stdout=logfile,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_with_50_waiting_clients_loses_no_result(
    gateway_process: tuple[asyncio.subprocess.Process, str],
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
) -> None:
    proc, url = gateway_process

    async def healthy() -> bool:
        try:
            async with http.get(url + "/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return proc.returncode is not None  # a dead process: fail just below

    await eventually(healthy, "the gateway process to listen")
    assert proc.returncode is None

    long_jobs, short_jobs = 50, 10
    async with aiohttp.ClientSession() as clients:

        async def post(seconds: float) -> tuple[int, dict[str, str], bytes]:
            async with clients.post(
                url + job_path(DELAY_TASK),
                json=[seconds],
                headers={**BEARER, "Prefer": "wait=60"},
            ) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        # 8 s: longer than the drain (2 s) and than the process's whole shutdown grace
        # (drain + 5 s), so only a working drain answers these clients at all.
        calls = [asyncio.ensure_future(post(8)) for _ in range(long_jobs)]
        calls += [asyncio.ensure_future(post(1)) for _ in range(short_jobs)]
        try:
            total = long_jobs + short_jobs
            await wait_for_stats(
                http,
                emulator,
                lambda s: s["create"] == total and s["result"] >= total,
                "every client waiting",
            )
            proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*calls)
        finally:
            for call in calls:
                call.cancel()
    assert await asyncio.wait_for(proc.wait(), 30) == 0

    assert all(status < 500 for status, _, _ in answers), [a[0] for a in answers]
    # The first gateway is gone: re-attach on a second one, which watches the jobs upstream.
    second: Gateway = await make_gateway(emulator.url)
    delivered = 0
    for status, headers, body in answers:
        job_id = headers["X-Job-Id"]
        if status == 202:
            location = assert_accepted(status, headers, orjson.loads(body))
            status, headers, body = await reattach(http, second.url, location, BEARER)
            assert headers["X-Job-Id"] == job_id
        assert status == 200, (status, body)
        assert orjson.loads(body) == DELAY_OUTPUT
        delivered += 1
    assert delivered == long_jobs + short_jobs
    assert len({headers["X-Job-Id"] for _, headers, _ in answers}) == delivered
    seen = await stats(http, emulator)
    assert seen["create"] == delivered  # exactly one create per client, none after the drain
    assert len(emulator.state.jobs) == delivered


# ---- unknown outcomes: a create whose answer was lost ----------------------------------------


@pytest.mark.parametrize("fault", ["reset_after_create", "slow"])
async def test_a_key_whose_create_got_no_answer_never_creates_a_second_job(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    fault: str,
) -> None:
    gateway: Gateway = await make_gateway(emulator.url, upstream={"request_timeout": 0.5})
    await add_faults(http, emulator, {"route": "create", "action": fault, "seconds": 1.5})
    url = gateway.url + job_path(INSTANT_TASK)
    for n in range(5):
        headers = {**BEARER, "Idempotency-Key": f"lost-answer-{n}"}
        async with http.post(url, headers=headers) as resp:
            first = await read_json(resp)
            assert resp.status in (502, 504), first  # a reset, or no answer in time
            assert first["outcome"] == "unknown"
            assert "not create a second job" in first["idempotency_key"]
        async with http.post(url, headers=headers) as resp:  # the faults are used up
            again = await read_json(resp)
            assert (resp.status, again["error"]) == (504, "outcome_unknown"), again
            assert "Idempotency-Key" in again["message"]
        if n < 4:
            await add_faults(http, emulator, {"route": "create", "action": fault, "seconds": 1.5})
    seen = await stats(http, emulator)
    assert seen["create"] == 5  # five keys, five creates upstream: no retry made another


async def test_the_budget_bounds_the_create_and_a_retry_attaches_to_the_job_it_made(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gateway: Gateway = await make_gateway(emulator.url)  # request_timeout: 30 s
    await add_faults(http, emulator, {"route": "create", "action": "slow", "seconds": 2})
    url = gateway.url + job_path(INSTANT_TASK)
    headers = {**BEARER, "Idempotency-Key": "stalled-create"}
    async with http.post(url, headers={**headers, "Prefer": "wait=1"}) as resp:
        body = await read_json(resp)
        # Answered at the end of the client's budget, while the create still ran upstream.
        assert (resp.status, body["error"]) == (504, "outcome_unknown"), body
    assert (await stats(http, emulator))["create"] == 1
    async with http.post(url, headers={**headers, "Prefer": "wait=10"}) as resp:
        assert resp.status == 200
        assert await read_json(resp) == ['{"ok":true}']
        job_id = resp.headers["X-Job-Id"]
    seen = await stats(http, emulator)
    assert seen["create"] == 1 and list(seen["per_job"]) == [job_id]
