"""The image and the two-replica deployment (deploy/): the Dockerfile passes hadolint, and the
compose file's settings and commands, run outside containers (real redis-server with its
append-only file, two `sync-gateway serve` processes, real nginx with deploy/nginx.conf),
serve a call through the proxy on either replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from conftest import CUSTOMER, INSTANT_TASK, TOKEN
from support.helpers import stats
from support.processes import (
    Nginx,
    RedisServer,
    cli_env,
    free_port,
    redis_executable,
    start_cli,
    system_executable,
)

from sync_gateway.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = system_executable("hadolint")
    import subprocess

    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_file_runs_two_replicas_on_redis_with_its_append_only_file() -> None:
    services = COMPOSE["services"]
    assert services["gateway-a"]["environment"] == services["gateway-b"]["environment"]
    redis_args = services["redis"]["command"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert services["gateway-a"]["environment"]["SYNC_GATEWAY_STORE_BACKEND"] == "redis"


def nginx_block(gateways: list[str]) -> str:
    """deploy/nginx.conf with the replicas' loopback ports and the test's listening port."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    text = text.replace("server gateway-a:8080;", f"server {gateways[0]};")
    text = text.replace("server gateway-b:8080;", f"server {gateways[1]};")
    return text.replace("listen 80;", "listen 127.0.0.1:{port};")


async def test_the_compose_settings_serve_calls_through_the_proxy(
    emulator: EmulatorServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    redis_cmd = COMPOSE["services"]["redis"]["command"]
    redis = RedisServer(redis_executable(), tmp_path, appendonly="yes" in redis_cmd)
    await redis.start()
    procs: list[asyncio.subprocess.Process] = []
    nginx: Nginx | None = None
    try:
        environment: dict[str, Any] = dict(COMPOSE["services"]["gateway-a"]["environment"])
        environment |= {
            "SYNC_GATEWAY_UPSTREAM_URL": emulator.url,
            "SYNC_GATEWAY_STORE_URL": redis.url,
            "SYNC_GATEWAY_SECURITY_FINGERPRINT_KEY": "a key for the deploy test",
            "SYNC_GATEWAY_SERVER_HOST": "127.0.0.1",
            "SYNC_GATEWAY_LOG_LEVEL": "warning",
        }
        command = COMPOSE["services"]["gateway-a"]["command"]
        addresses = []
        for name in ("a", "b"):
            port = free_port()
            directory = tmp_path / name
            directory.mkdir()
            env = cli_env(directory, **{**environment, "SYNC_GATEWAY_SERVER_PORT": str(port)})
            url = f"http://127.0.0.1:{port}"
            procs.append(await start_cli(command, env, directory, http, url))
            addresses.append(f"127.0.0.1:{port}")
        nginx = Nginx(tmp_path / "nginx", nginx_block(addresses))
        nginx.directory.mkdir()
        await nginx.start()
        url = f"{nginx.url}/{CUSTOMER}/task/{INSTANT_TASK}/job?access_token={TOKEN}"
        for n in range(4):  # round robin: both replicas answer
            headers = {"Idempotency-Key": f"deploy-{n}"}
            async with http.post(url, headers=headers) as resp:
                assert resp.status == 200
                assert await resp.json() == ['{"ok":true}']
        async with http.post(url, headers={"Idempotency-Key": "deploy-0"}) as resp:
            assert resp.status == 200  # the key's job, on whichever replica: no new create
        assert (await stats(http, emulator))["create"] == 4
    finally:
        if nginx is not None:
            await nginx.stop()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
        await redis.stop()
