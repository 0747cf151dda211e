"""What survives what (README "Nothing lost"): the rows that need a store outage, a restart
of Redis (with and without its append-only file) or a real ``kill -9`` of a gateway process.
Each test says what the client can still do afterwards; a row where something is lost shows
exactly that loss."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
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
from support.processes import RedisServer, cli_env, free_port, redis_executable, start_cli

from sync_gateway.emulator import EmulatorServer
from sync_gateway.store.redis import backend as redis_backend
from sync_gateway.upstream import theeye
from sync_gateway.web.keys import METRICS

BEARER = {"Authorization": f"Bearer {TOKEN}"}
JOB_PATH = f"/{CUSTOMER}/task/{DELAY_TASK}/job"
DELAY_OUTPUT = ['{"ok":true}']


def keyed(key: str, wait: int | None = None) -> dict[str, str]:
    headers = {**BEARER, "Idempotency-Key": key}
    if wait is not None:
        headers["Prefer"] = f"wait={wait}"
    return headers


async def post(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], seconds: float = 0.2
) -> tuple[int, str | None, Any]:
    async with http.post(base + JOB_PATH, json=[seconds], headers=headers) as resp:
        body = orjson.loads(await resp.read())
        return resp.status, resp.headers.get("X-Job-Id"), body


async def redis_holds(server: RedisServer, pattern: str) -> bool:
    client = aioredis.Redis.from_url(server.url)
    try:
        return bool(await client.keys(pattern))
    except (OSError, aioredis.ConnectionError):
        return False
    finally:
        await client.aclose()


@pytest.fixture
def make_redis(tmp_path: Path) -> Callable[..., Any]:
    servers: list[RedisServer] = []

    async def make(appendonly: bool = False) -> RedisServer:
        server = RedisServer(redis_executable(), tmp_path / f"redis{len(servers)}", appendonly)
        server.directory.mkdir()
        servers.append(server)
        await server.start()
        return server

    return make


@pytest.fixture
async def stopper() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        await thing.stop()


async def replica(emulator: EmulatorServer, redis: RedisServer, stopper: list[Any]) -> Gateway:
    settings = gateway_settings(
        emulator.url,
        store={"backend": "redis", "url": redis.url},
        security={"fingerprint_key": TEST_FINGERPRINT_KEY},
        server={"drain_seconds": 0.5},
    )
    gw = await start_gateway(settings)
    stopper.append(gw)
    return gw


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_backend, "LEASE_SECONDS", 1.0)


async def test_keys_settled_while_redis_was_down_are_written_back(
    emulator: EmulatorServer,
    make_redis: Callable[..., Any],
    stopper: list[Any],
    http: aiohttp.ClientSession,
) -> None:
    redis = await make_redis()
    a = await replica(emulator, redis, stopper)
    b = await replica(emulator, redis, stopper)
    await redis.stop()
    status, job_id, _ = await post(http, a.url, keyed("during-outage"))
    assert status == 200  # A served on its own while Redis was down
    await redis.start()  # empty: no persistence
    await eventually(lambda: redis_holds(redis, "sync-gateway:idem:*"), "A to write the key back")
    status, again, body = await post(http, b.url, keyed("during-outage"))
    assert (status, again, body) == (200, job_id, DELAY_OUTPUT)
    assert (await stats(http, emulator))["create"] == 1


async def test_keys_lost_in_a_redis_restart_without_persistence_are_written_back(
    emulator: EmulatorServer,
    make_redis: Callable[..., Any],
    stopper: list[Any],
    http: aiohttp.ClientSession,
) -> None:
    redis = await make_redis()
    a = await replica(emulator, redis, stopper)
    b = await replica(emulator, redis, stopper)
    status, job_id, _ = await post(http, a.url, keyed("before-restart"))
    assert status == 200
    await redis.kill()
    await redis.start()  # nothing persisted: every key is gone
    await eventually(lambda: redis_holds(redis, "sync-gateway:idem:*"), "A to write the key back")
    status, again, _ = await post(http, b.url, keyed("before-restart"))
    assert (status, again) == (200, job_id)
    assert (await stats(http, emulator))["create"] == 1


async def test_with_the_append_only_file_keys_survive_redis_and_their_replica_both_gone(
    emulator: EmulatorServer,
    make_redis: Callable[..., Any],
    stopper: list[Any],
    http: aiohttp.ClientSession,
) -> None:
    redis = await make_redis(appendonly=True)
    a = await replica(emulator, redis, stopper)
    status, job_id, _ = await post(http, a.url, keyed("aof"))
    assert status == 200
    await a.stop()  # the replica that settled the key is gone: nobody to write it back
    stopper.remove(a)
    await redis.kill()  # kill -9: only what the append-only file holds comes back
    await redis.start()
    b = await replica(emulator, redis, stopper)
    status, again, body = await post(http, b.url, keyed("aof"))
    assert (status, again, body) == (200, job_id, DELAY_OUTPUT)
    assert (await stats(http, emulator))["create"] == 1


async def serve_process(
    tmp_path: Path, http: aiohttp.ClientSession, name: str, **env: str
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    directory = tmp_path / name
    directory.mkdir()
    url = f"http://127.0.0.1:{port}"
    environment = cli_env(directory, SYNC_GATEWAY_SERVER_PORT=str(port), **env)
    proc = await start_cli(["serve"], environment, directory, http, url)
    return proc, url


def kill_9(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_crash_loses_keys_with_the_memory_store_and_keeps_them_with_redis(
    emulator: EmulatorServer,
    make_redis: Callable[..., Any],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    store: str,
) -> None:
    env = {"SYNC_GATEWAY_UPSTREAM_URL": emulator.url, "SYNC_GATEWAY_LOG_LEVEL": "warning"}
    if store == "redis":
        redis = await make_redis(appendonly=True)
        env |= {
            "SYNC_GATEWAY_STORE_BACKEND": "redis",
            "SYNC_GATEWAY_STORE_URL": redis.url,
            "SYNC_GATEWAY_SECURITY_FINGERPRINT_KEY": TEST_FINGERPRINT_KEY,
        }
    procs = []
    try:
        first, url = await serve_process(tmp_path, http, "first", **env)
        procs.append(first)
        waiting = asyncio.ensure_future(post(http, url, keyed("crash", wait=30), seconds=3))
        await eventually(
            lambda: stats_say(http, emulator, lambda s: s["create"] == 1), "the job to be made"
        )
        await asyncio.sleep(0.2)  # the create's answer reached the gateway and was kept
        kill_9(first)
        with pytest.raises(aiohttp.ClientError):
            await waiting  # the waiting client lost its connection, and no job id came with it
        second, url = await serve_process(tmp_path, http, "second", **env)
        procs.append(second)
        status, _, body = await post(http, url, keyed("crash", wait=30), seconds=3)
        assert (status, body) == (200, DELAY_OUTPUT)
        creates = (await stats(http, emulator))["create"]
        # Memory store: the key died with the process, the retry made a second job (the
        # documented loss). Redis with its append-only file: the retry found the first job.
        assert creates == (2 if store == "memory" else 1)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def stats_say(
    http: aiohttp.ClientSession, emulator: EmulatorServer, check: Callable[[Any], bool]
) -> bool:
    return check(await stats(http, emulator))


async def test_a_job_the_upstream_lost_is_a_clear_error_naming_it(
    emulator: EmulatorServer,
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Holds of a second (the emulator allows them; the supervisor's are 10..60 s), so that a
    # long poll on the vanished job, which may never be answered, is cut within the test.
    monkeypatch.setattr(theeye, "SUPERVISOR_MIN_TIMEOUT", 0.5)
    monkeypatch.setattr(theeye, "LONG_POLL_MARGIN", 1.0)
    gw: Gateway = await make_gateway(emulator.url, upstream={"long_poll_timeout": 1})
    wait_1 = {**BEARER, "Prefer": "wait=1"}
    async with http.post(gw.url + JOB_PATH, json=[30], headers=wait_1) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
        job_id = resp.headers["X-Job-Id"]
    emulator.state.jobs.clear()  # the upstream restarted without its state
    async with http.get(gw.url + location, headers={**BEARER, "Prefer": "wait=20"}) as resp:
        body = orjson.loads(await resp.read())
        assert resp.status == 502
        assert body["error"] == "job_lost" and job_id in body["message"]
        assert resp.headers["X-Job-Id"] == job_id
    assert gw.app[METRICS].jobs_lost._value.get() == 1  # type: ignore[attr-defined]
