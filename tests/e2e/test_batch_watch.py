"""Past upstream.max_long_polls, jobs are watched through shared job listings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from conftest import CUSTOMER, DELAY_TASK, OTHER_TOKEN, TOKEN, Gateway
from support.helpers import add_faults, call, stats

from sync_gateway.emulator import EmulatorServer

LISTED = {"upstream": {"max_long_polls": 0, "poll_interval": 0.2}}


async def run_delay(
    http: aiohttp.ClientSession, gateway: Gateway, seconds: float, token: str = TOKEN
) -> tuple[int, Any, aiohttp.ClientResponse]:
    url = f"{gateway.url}/{CUSTOMER}/task/{DELAY_TASK}/job?access_token={token}"
    return await call(http, "POST", url, json=[seconds])


async def test_jobs_past_the_long_poll_cap_share_listings_and_are_read_once(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(emulator.url, **LISTED)
    answers = await asyncio.gather(*(run_delay(http, gateway, 0.5) for _ in range(30)))
    for status, body, resp in answers:
        assert status == 200
        assert body == ['{"ok":true}']
        assert resp.headers["X-Job-Id"]
    counts = await stats(http, emulator)
    assert counts["create"] == 30
    assert counts["result"] == 0  # no long poll at all
    assert counts["job"] == 30  # each finished job read once
    # 30 jobs of one customer and caller: one listing per round, not one poll per job
    assert 1 <= counts["list"] <= 15


async def test_jobs_of_other_callers_are_listed_apart(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(emulator.url, **LISTED)
    mine, theirs = await asyncio.gather(
        run_delay(http, gateway, 0.3),
        call(
            http,
            "POST",
            f"{gateway.url}/other/task/65a000000000000000000008/job?access_token={OTHER_TOKEN}",
        ),
    )
    assert mine[0] == 200
    assert theirs[0] == 200
    assert (await stats(http, emulator))["job"] == 2


async def test_a_refused_listing_falls_back_to_reading_each_job(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    await add_faults(http, emulator, {"route": "list", "status": 403, "count": 100})
    gateway = await make_gateway(emulator.url, **LISTED)
    answers = await asyncio.gather(*(run_delay(http, gateway, 0.3) for _ in range(3)))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    counts = await stats(http, emulator)
    assert counts["list"] == 1  # refused once, never asked again for this caller
    assert counts["job"] >= 3


async def test_a_failing_listing_is_tried_again(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    await add_faults(http, emulator, {"route": "list", "action": "garbage", "count": 2})
    gateway = await make_gateway(emulator.url, **LISTED)
    status, _, _ = await run_delay(http, gateway, 0.2)
    assert status == 200
    counts = await stats(http, emulator)
    assert counts["list"] >= 3
    assert counts["job"] == 1


async def test_a_job_a_listing_shows_is_verified_by_it_not_by_reading_it(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    upstream = {**LISTED["upstream"], "verify_interval": 0.3}
    gateway = await make_gateway(emulator.url, upstream=upstream)
    status, body, _ = await run_delay(http, gateway, 1.5)
    assert (status, body) == (200, ['{"ok":true}'])
    counts = await stats(http, emulator)
    # Verified several times over while it ran, each time by an unfiltered listing: the job
    # itself is read once, when a listing shows it finished.
    assert counts["job"] == 1
    assert counts["list"] >= 4
