"""Several replicas (issue 8): two gateways sharing one real ``redis-server``, in front of the
supervisor emulator, over loopback sockets.

Each test checks what a client sees (the result, from either replica; never a 5xx) and what
the upstream saw (the emulator's counters: one create, the result requests of ONE watch).
Nothing asserts that something took less than N seconds; waits have generous deadlines.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from conftest import (
    CUSTOMER,
    DELAY_TASK,
    TEST_FINGERPRINT_KEY,
    TOKEN,
    Gateway,
    gateway_settings,
    start_gateway,
)
from support.helpers import eventually, stats
from support.processes import RedisServer, running_redis

from sync_gateway.core.types import Credentials
from sync_gateway.emulator import EmulatorServer
from sync_gateway.store.redis import backend as shared_store_backend
from sync_gateway.web.keys import ENGINE, METRICS, REDIS

BEARER = {"Authorization": f"Bearer {TOKEN}"}
DELAY_OUTPUT = ['{"ok":true}']
JOB_PATH = f"/{CUSTOMER}/task/{DELAY_TASK}/job"
DELAY_SECRET = "810821b358d2f69943a834a2c85446c5b06210ca61fe3608b92adc5125df3c34"

# The upstream request counts these tests observed, printed for the docs (pytest -s).
OBSERVED: dict[str, Any] = {}


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report_observed() -> Iterator[None]:
    """The counts, for docs/replicas.md (shown with ``pytest -s``)."""
    yield
    print("\nupstream requests observed:", orjson.dumps(OBSERVED).decode())


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async for server in running_redis(tmp_path):
        yield server


async def two_replicas(
    emulator: EmulatorServer,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    lease: float,
) -> AsyncIterator[list[Gateway]]:
    monkeypatch.setattr(shared_store_backend, "LEASE_SECONDS", lease)
    settings = gateway_settings(
        emulator.url,
        store={"backend": "redis", "url": redis_server.url},
        security={"fingerprint_key": TEST_FINGERPRINT_KEY},
        server={"drain_seconds": 0.5},
    )
    started = [await start_gateway(settings), await start_gateway(settings)]
    try:
        yield started
    finally:
        for gw in started:
            await gw.stop()


@pytest.fixture
async def replicas(
    emulator: EmulatorServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[Gateway]]:
    """Two replicas, A and B; a short lease so that a dead replica's watch is taken over soon."""
    async for started in two_replicas(emulator, redis_server, monkeypatch, 1.0):
        yield started


@pytest.fixture
async def steady_replicas(
    emulator: EmulatorServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[Gateway]]:
    """Two replicas with the default lease: on a loaded machine a 1-s lease can lapse between
    two renewals, and the other replica then rightly takes the watch over."""
    async for started in two_replicas(
        emulator, redis_server, monkeypatch, shared_store_backend.LEASE_SECONDS
    ):
        yield started


@pytest.fixture
async def many() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without a connection cap: hundreds of waiters at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def upstream_result_requests(
    http: aiohttp.ClientSession, emulator: EmulatorServer, job_id: str
) -> int:
    count: int = (await stats(http, emulator))["per_job"].get(job_id, {}).get("result", 0)
    return count


def sent_upstream(gw: Gateway) -> int:
    """Requests this replica sent upstream (its own metrics)."""
    samples = gw.app[METRICS].upstream_requests.collect()[0].samples
    return int(sum(s.value for s in samples if s.name.endswith("_total")))


def holds_lease(gw: Gateway, job_id: str) -> bool:
    return any(key.endswith(f"lease:theeye:{job_id}") for key in gw.app[REDIS].coordinator.held)


async def create_async(http: aiohttp.ClientSession, gw: Gateway, seconds: float) -> str:
    """Create a Delay job on ``gw`` and answer at once (202); the job's id."""
    headers = {**BEARER, "Prefer": "respond-async"}
    async with http.post(gw.url + JOB_PATH, json=[seconds], headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        return resp.headers["X-Job-Id"]


async def get_result(http: aiohttp.ClientSession, gw: Gateway, job_id: str) -> tuple[int, bytes]:
    async with http.get(f"{gw.url}/job/{job_id}/result", headers=BEARER) as resp:
        return resp.status, await resp.read()


# ---- the tests -----------------------------------------------------------------------------


async def test_reattach_on_the_other_replica_gets_the_result(
    replicas: list[Gateway], emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    a, b = replicas
    headers = {**BEARER, "Prefer": "wait=1"}
    async with http.post(a.url + JOB_PATH, json=[2], headers=headers) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
        job_id = resp.headers["X-Job-Id"]
    # The Location keeps the first budget (wait=1, shorter than the job): ask for longer.
    async with http.get(b.url + location, headers={**BEARER, "Prefer": "wait=10"}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Job-Id"] == job_id
        assert orjson.loads(await resp.read()) == DELAY_OUTPUT
    seen = await stats(http, emulator)
    assert seen["create"] == 1
    assert sent_upstream(b) == 0  # B waited for A's watch instead of starting its own
    OBSERVED["reattach"] = {"create": seen["create"], "result": seen["per_job"][job_id]}


async def test_same_idempotency_key_on_both_replicas_creates_one_job(
    replicas: list[Gateway], emulator: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    a, b = replicas

    async def post(gw: Gateway, key: str) -> tuple[int, str, bytes]:
        headers = {**BEARER, "Prefer": "wait=20", "Idempotency-Key": key}
        async with http.post(gw.url + JOB_PATH, json=[0.5], headers=headers) as resp:
            return resp.status, resp.headers["X-Job-Id"], await resp.read()

    keys = [f"order-{n}" for n in range(3)]
    answers = await asyncio.gather(*(post(gw, key) for key in keys for gw in (a, b)))
    for n in range(len(keys)):
        on_a, on_b = answers[2 * n], answers[2 * n + 1]
        assert on_a[0] == on_b[0] == 200
        assert on_a[1] == on_b[1]  # one job per key
        assert orjson.loads(on_a[2]) == orjson.loads(on_b[2]) == DELAY_OUTPUT
    seen = await stats(http, emulator)
    assert seen["create"] == len(keys)
    OBSERVED["idempotency"] = {
        "keys": len(keys),
        "requests": len(answers),
        "create": seen["create"],
    }


async def test_waiters_on_both_replicas_share_one_upstream_watch(
    steady_replicas: list[Gateway],
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    many: aiohttp.ClientSession,
) -> None:
    a, b = steady_replicas
    job_id = await create_async(http, a, 2)
    await eventually(lambda: holds_lease(a, job_id), "A to hold the job's lease")
    answers = await asyncio.gather(*(get_result(many, gw, job_id) for gw in (a, b) * 100))
    assert len(answers) == 200
    assert all(status == 200 for status, _ in answers)
    assert all(orjson.loads(body) == DELAY_OUTPUT for _, body in answers)
    # Every result request the upstream saw came from A's one watch; B sent none.
    assert sent_upstream(b) == 0
    seen = await stats(http, emulator)
    assert seen["per_job"][job_id]["result"] == sent_upstream(a) - 1  # minus A's create
    assert seen["create"] == 1
    OBSERVED["fan_out"] = {"waiters": 200, "per_job": seen["per_job"][job_id]}


@pytest.mark.parametrize("ending", ["stopped", "crashed"])
async def test_replica_gone_mid_watch_the_other_finishes_the_job(
    replicas: list[Gateway],
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    a, b = replicas
    job_id = await create_async(http, a, 2.5)
    await eventually(lambda: holds_lease(a, job_id), "A to hold the job's lease")
    on_a = [asyncio.ensure_future(get_result(http, a, job_id)) for _ in range(5)]
    on_b = [asyncio.ensure_future(get_result(http, b, job_id)) for _ in range(10)]
    await eventually(lambda: b.app[ENGINE].waiter_count() == 10, "B's waiters to wait")
    if ending == "crashed":  # as a killed process: no renewal, no release, the lease lapses
        coordinator = a.app[REDIS].coordinator

        async def release(key: str) -> None:
            return None

        monkeypatch.setattr(coordinator, "release", release)
        coordinator.held.clear()
    await a.stop()
    for status, body in await asyncio.gather(*on_b):
        assert status == 200
        assert orjson.loads(body) == DELAY_OUTPUT
    for status, _ in await asyncio.gather(*on_a, return_exceptions=True):  # type: ignore[misc]
        assert status in (200, 202)  # the drain: a way to re-attach, never an error
    assert await get_result(http, b, job_id) == (200, orjson.dumps(DELAY_OUTPUT))
    seen = await stats(http, emulator)
    assert seen["create"] == 1
    OBSERVED[f"takeover_{ending}"] = {"per_job": seen["per_job"][job_id]}


async def test_redis_restart_loses_no_delivered_result_and_no_waiter_gets_5xx(
    replicas: list[Gateway],
    redis_server: RedisServer,
    emulator: EmulatorServer,
    http: aiohttp.ClientSession,
) -> None:
    a, b = replicas
    # Delivered by A before Redis goes.
    first = await create_async(http, a, 0.2)
    assert await get_result(http, a, first) == (200, orjson.dumps(DELAY_OUTPUT))
    # Waiters on both replicas for a job that runs across the outage.
    running = await create_async(http, a, 2)
    waiters = [asyncio.ensure_future(get_result(http, gw, running)) for gw in (a, b) * 10]
    await eventually(lambda: b.app[ENGINE].waiter_count() == 10, "B's waiters to wait")

    await redis_server.stop()
    # Delivered by B while Redis is down (created there too: B runs on its own).
    second = await create_async(http, b, 0.2)
    assert await get_result(http, b, second) == (200, orjson.dumps(DELAY_OUTPUT))
    assert await get_result(http, a, first) == (200, orjson.dumps(DELAY_OUTPUT))
    async with http.get(a.url + "/metrics") as resp:
        assert "sync_gateway_store_up 0.0" in await resp.text()
    async with http.get(a.url + "/readyz") as resp:  # still serving, and saying why
        assert resp.status == 200
        assert (await resp.json())["store"] == "down"
    await redis_server.start()  # empty: no persistence

    for status, body in await asyncio.gather(*waiters):
        assert status == 200
        assert orjson.loads(body) == DELAY_OUTPUT
    before = await stats(http, emulator)

    # Each replica wrote back what it kept: the other one finds it in Redis again.
    async def shared() -> bool:
        return (
            await b.app[REDIS].store.get(f"theeye:{first}") is not None
            and await a.app[REDIS].store.get(f"theeye:{second}") is not None
        )

    await eventually(shared, "the results to be written back to Redis")
    for job_id in (first, second, running):
        for gw in (a, b):
            assert await get_result(http, gw, job_id) == (200, orjson.dumps(DELAY_OUTPUT))
    after = await stats(http, emulator)
    assert after["result"] == before["result"]  # all served from the store, none re-fetched
    assert after["create"] == 3
    OBSERVED["redis_restart"] = {"create": after["create"], "per_job": after["per_job"]}


async def test_redis_holds_keyed_fingerprints_never_a_bare_hash_or_a_secret(
    replicas: list[Gateway], redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    a, b = replicas
    secret_path = f"/{CUSTOMER}/task/{DELAY_TASK}/secret/{DELAY_SECRET}/job"
    async with http.post(a.url + JOB_PATH, json=[0.1], headers=BEARER) as resp:
        job_id = resp.headers["X-Job-Id"]
    async with http.post(
        a.url + secret_path, json=[30], headers={"Prefer": "respond-async"}
    ) as resp:
        secret_job = resp.headers["X-Job-Id"]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k.decode() for k in await client.keys("sync-gateway:*")]
        assert "sync-gateway:fingerprint-key" not in keys  # the key lives in the config only
        raw = await client.get(f"sync-gateway:ref:theeye:{job_id}")
        dump = b"".join([await client.get(k) or b"" for k in keys if ":lease:" not in k])
    finally:
        await client.aclose()
    owner = bytes.fromhex(orjson.loads(raw)["owner"])
    creds = Credentials(authorization=f"Bearer {TOKEN}")
    keyed = hmac.new(TEST_FINGERPRINT_KEY.encode(), creds.identity(), hashlib.sha256).digest()
    assert owner == keyed
    assert owner != hashlib.sha256(creds.identity()).digest()
    assert TOKEN.encode() not in dump and DELAY_SECRET.encode() not in dump
    # The other replica denies a secret-started job to a token, as the first one does.
    async with http.get(
        f"{b.url}/job/{secret_job}/result?access_token={TOKEN}",
        headers={"Prefer": "respond-async"},
    ) as resp:
        assert resp.status == 403
