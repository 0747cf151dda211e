"""One watch loop per job, whatever the number of waiters (issue 7).

Counted by the emulator's request counters, never by timing: N clients waiting on one job cost
the upstream one create and the result long polls of ONE watch (at most
1 + ceil(job seconds / long-poll timeout)), and a client that leaves does not stop the watch
for the others.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import CUSTOMER, DELAY_TASK, INSTANT_TASK, TOKEN, Gateway
from support.helpers import eventually, stats

from sync_gateway.emulator import EmulatorServer
from sync_gateway.web.keys import ENGINE

LONG_POLL_SECONDS = 1.0  # the gateway's upstream.long_poll_timeout in these tests
OUTPUT = ['{"ok":true}']  # what the Instant and Delay tasks answer


def max_reads(job_seconds: float) -> int:
    """Result requests one watch may send for a job of this length."""
    return 1 + math.ceil(job_seconds / LONG_POLL_SECONDS)


def waiters(gw: Gateway, job_id: str) -> int:
    """Clients blocked on the job's watch in the gateway right now (0 when not watched)."""
    watch = gw.app[ENGINE].watching(f"theeye:{job_id}")
    return watch.waiters if watch is not None else 0


@pytest.fixture
async def gw(emulator: EmulatorServer, make_gateway: Callable[..., Any]) -> Gateway:
    gateway: Gateway = await make_gateway(
        emulator.url, upstream={"long_poll_timeout": LONG_POLL_SECONDS}
    )
    return gateway


async def create_async(gw: Gateway, http: aiohttp.ClientSession, seconds: float) -> str:
    """A Delay job created through the gateway with ``Prefer: respond-async``: its id."""
    async with http.post(
        f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job",
        params={"access_token": TOKEN},
        json=[seconds],
        headers={"Prefer": "respond-async"},
    ) as resp:
        assert resp.status == 202
        await resp.read()
        return resp.headers["X-Job-Id"]


async def reattach(gw: Gateway, http: aiohttp.ClientSession, job_id: str) -> tuple[int, Any]:
    async with http.get(f"{gw.url}/job/{job_id}/result", params={"access_token": TOKEN}) as resp:
        return resp.status, await resp.json()


def assert_one_watch(counts: dict[str, Any], job_id: str, job_seconds: float) -> None:
    """One create, the reads of one watch, nothing else."""
    per_job = counts["per_job"][job_id]
    reads = per_job["result"] + per_job["job"]
    assert counts["create"] == 1
    assert 1 <= reads <= max_reads(job_seconds), per_job
    assert counts["total"] == counts["create"] + reads
    assert counts["cancel"] == 0


async def test_a_short_job_costs_one_create_and_one_read(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{gw.url}/{CUSTOMER}/task/{INSTANT_TASK}/job", params={"access_token": TOKEN}
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == OUTPUT
    counts = await stats(http, emulator)
    assert (counts["create"], counts["result"], counts["job"]) == (1, 1, 0)
    assert counts["total"] == 2


async def test_fifty_reattaches_and_the_creator_share_one_watch(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    seconds = 2.0
    job_id = await create_async(gw, http, seconds)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as many:
        calls = [asyncio.ensure_future(reattach(gw, many, job_id)) for _ in range(50)]
        calls.append(asyncio.ensure_future(reattach(gw, http, job_id)))  # the creator
        peak = 0

        def all_waiting() -> bool:
            nonlocal peak
            peak = max(peak, waiters(gw, job_id))
            return peak == 51 or all(c.done() for c in calls)

        await eventually(all_waiting, "51 waiters on the watch")
        answers = await asyncio.gather(*calls)
    assert peak == 51  # they really waited together, on one watch
    assert answers == [(200, OUTPUT)] * 51
    assert_one_watch(await stats(http, emulator), job_id, seconds)


async def test_a_waiter_that_hangs_up_does_not_stop_the_watch_for_the_others(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    seconds = 1.5
    job_id = await create_async(gw, http, seconds)
    stayers = [asyncio.ensure_future(reattach(gw, http, job_id)) for _ in range(3)]
    async with aiohttp.ClientSession() as own:  # its own connection, closed on cancel
        leaver = asyncio.ensure_future(reattach(gw, own, job_id))
        await eventually(lambda: waiters(gw, job_id) == 4, "4 waiters")
        leaver.cancel()
        await eventually(lambda: waiters(gw, job_id) == 3, "the gateway to see the hang-up")
    assert gw.app[ENGINE].watching(f"theeye:{job_id}") is not None  # still watched
    assert await asyncio.gather(*stayers) == [(200, OUTPUT)] * 3
    assert_one_watch(await stats(http, emulator), job_id, seconds)


async def test_the_creator_hanging_up_keeps_the_watch_for_a_reattach(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    seconds = 1.5

    async def created_job() -> str:
        per_job = (await stats(http, emulator))["per_job"]
        return next(iter(per_job), "")

    async with aiohttp.ClientSession() as own:
        creator = asyncio.ensure_future(
            own.post(
                f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job",
                params={"access_token": TOKEN},
                json=[seconds],
            )
        )

        async def creator_waiting() -> bool:
            job = await created_job()
            return bool(job) and waiters(gw, job) == 1

        await eventually(creator_waiting, "the creator to wait on its job")
        job_id = await created_job()
        creator.cancel()
        await eventually(lambda: waiters(gw, job_id) == 0, "the gateway to see the hang-up")
    assert await reattach(gw, http, job_id) == (200, OUTPUT)
    assert_one_watch(await stats(http, emulator), job_id, seconds)


async def test_idempotent_retries_share_one_job_and_one_watch(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    seconds = 1.0

    async def call() -> tuple[int, str, Any]:
        async with http.post(
            f"{gw.url}/{CUSTOMER}/task/{DELAY_TASK}/job",
            params={"access_token": TOKEN},
            json=[seconds],
            headers={"Idempotency-Key": "coalescing-test"},
        ) as resp:
            return resp.status, resp.headers["X-Job-Id"], await resp.json()

    answers = await asyncio.gather(*(call() for _ in range(20)))
    job_ids = {job_id for _, job_id, _ in answers}
    assert len(job_ids) == 1
    assert [(status, body) for status, _, body in answers] == [(200, OUTPUT)] * 20
    assert_one_watch(await stats(http, emulator), job_ids.pop(), seconds)


async def test_the_wait_result_loop_adds_no_upstream_requests(
    emulator: EmulatorServer, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    seconds = 2.0
    async with http.post(
        f"{gw.url}/task/{DELAY_TASK}/job",
        params={"access_token": TOKEN, "wait_result": "true", "timeout": "1"},
        json=[seconds],
        max_redirects=20,
    ) as resp:
        assert resp.status == 200
        assert await resp.json() == OUTPUT
        assert resp.history  # it went through the 303 loop
        job_id = resp.headers["X-Job-Id"]
    assert_one_watch(await stats(http, emulator), job_id, seconds)
