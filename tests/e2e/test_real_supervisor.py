"""The gateway keeps its promises against a supervisor that behaves like its source (SPEC 6):
finished jobs deleted by autoremove, listings filtered by ACL, no wake-up without the
job-finished notification, one credential at a time. The emulator reproduces each (its
defaults are the supervisor's); request counts come from its stats."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yarl
from conftest import CUSTOMER, DELAY_TASK, INSTANT_TASK, TOKEN, Gateway
from support.helpers import add_faults, call, eventually, stats

from sync_gateway.emulator import EmulatorServer, EmulatorSettings
from sync_gateway.upstream.theeye_batch import listing_params
from sync_gateway.web.keys import METRICS

VIEWER = "demo-viewer-token"  # role viewer: not in the tasks' ACL, so listings hide its jobs
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ASYNC = {**BEARER, "Prefer": "respond-async"}
LISTED = {"notifications": False, "poll_interval": 0.2, "verify_interval": 1.0}


@pytest.fixture
async def quiet_supervisor() -> AsyncIterator[EmulatorServer]:
    """A supervisor whose long polls are not woken (no job-finished notifications)."""
    settings = EmulatorSettings(min_timeout=0.2, max_timeout=2.0, notifications=False)
    async with EmulatorServer(settings) as server:
        yield server


def create_url(gw: Gateway, task: str) -> str:
    return f"{gw.url}/{CUSTOMER}/task/{task}/job"


async def test_without_notifications_jobs_are_answered_through_the_listing(
    quiet_supervisor: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(quiet_supervisor.url, upstream=LISTED)
    status, body, _ = await call(
        http, "POST", create_url(gw, DELAY_TASK), json=[0.3], headers=BEARER
    )
    assert (status, body) == (200, ['{"ok":true}'])
    seen = await stats(http, quiet_supervisor)
    # No long poll held for a whole timeout: listings, then one read of the job seen finished.
    assert seen["result"] == 0
    assert seen["list"] >= 1 and seen["job"] >= 1


async def test_a_job_the_listing_hides_from_a_viewer_is_still_answered(
    quiet_supervisor: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(quiet_supervisor.url, upstream=LISTED)
    _, _, resp = await call(http, "POST", create_url(gw, DELAY_TASK), json=[0.3], headers=ASYNC)
    job_id = resp.headers["X-Job-Id"]
    location = resp.headers["Location"]
    assert f"customer={CUSTOMER}" in location
    viewer = {"Authorization": f"Bearer {VIEWER}", "Prefer": "wait=20"}
    path = yarl.URL(location).path + "?" + urlencode({"customer": CUSTOMER})
    status, body, _ = await call(http, "GET", gw.url + path, headers=viewer)
    assert (status, body) == (200, ['{"ok":true}'])
    seen = await stats(http, quiet_supervisor)
    assert seen["per_job"][job_id]["job"] >= 1  # found by its own request, not by a listing


async def test_a_failing_listing_blinds_no_waiter(
    quiet_supervisor: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(quiet_supervisor.url, upstream=LISTED)
    await add_faults(http, quiet_supervisor, *({"route": "list", "status": 500} for _ in range(50)))
    status, body, _ = await call(
        http, "POST", create_url(gw, DELAY_TASK), json=[0.2], headers=BEARER
    )
    assert (status, body) == (200, ['{"ok":true}'])


async def test_a_job_deleted_by_autoremove_before_it_was_read_is_job_lost(
    make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    settings = EmulatorSettings(
        min_timeout=0.2, max_timeout=2.0, notifications=False, autoremove_limit=1
    )
    async with EmulatorServer(settings) as supervisor:
        gw: Gateway = await make_gateway(
            supervisor.url,
            upstream={"notifications": False, "poll_interval": 30.0, "verify_interval": 2.0},
        )
        url = create_url(gw, INSTANT_TASK)
        _, _, first = await call(http, "POST", url, headers=ASYNC)
        job_id = first.headers["X-Job-Id"]
        await eventually(lambda: supervisor.state.jobs[job_id].finished, "the job to finish")
        await call(http, "POST", url, headers=ASYNC)  # autoremove keeps 1: the first goes
        assert job_id not in supervisor.state.jobs
        location = gw.url + first.headers["Location"]
        status, body, resp = await call(
            http, "GET", location, headers={**BEARER, "Prefer": "wait=20"}
        )
        assert (status, body["error"]) == (502, "job_lost")
        assert job_id in body["message"] and resp.headers["X-Job-Id"] == job_id
        assert gw.app[METRICS].jobs_lost._value.get() == 1  # type: ignore[attr-defined]
        await gw.stop()


async def test_exactly_one_credential_goes_upstream(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    gw: Gateway = await make_gateway(emulator.url)
    # Both at once: the supervisor's passport answers 401 to two credentials.
    url = create_url(gw, INSTANT_TASK) + f"?access_token={TOKEN}"
    status, body, _ = await call(http, "POST", url, headers=BEARER)
    assert (status, body) == (200, ['{"ok":true}'])


@pytest.mark.parametrize("bad", ["not-an-id", "6B0000000000000000000000", "6b00000000000000000000"])
async def test_an_id_the_supervisor_would_refuse_is_refused_at_the_door(
    gateway: Gateway, http: aiohttp.ClientSession, bad: str
) -> None:
    status, body, _ = await call(http, "GET", f"{gateway.url}/job/{bad}/result", headers=BEARER)
    assert (status, body["parameter"]) == (400, "job")


def test_a_full_batch_stays_under_the_supervisors_request_limits() -> None:
    ids = [f"{n:024x}" for n in range(200)]  # list_batch's bound
    params = listing_params(ids, {"access_token": "t" * 64})
    assert len(params) < 1000  # qs drops parameters past 1,000
    head = f"GET /{CUSTOMER}/job?{urlencode(params)} HTTP/1.1\r\nHost: h\r\n\r\n"
    assert len(head.encode()) < 16 * 1024  # Node refuses request heads past 16 KiB
