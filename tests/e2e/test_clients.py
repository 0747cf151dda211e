"""What clients meet: a client with a short read timeout finishes a long job by following
202s, and start-up failures are one line with the cause and the fix."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CUSTOMER, DELAY_TASK, TOKEN, Gateway
from support.processes import cli_env

from sync_gateway.emulator import EmulatorServer


def follow_with_a_short_read_timeout(base: str, read_timeout: float) -> tuple[int, Any, int]:
    """What a `requests` client does: ask for a wait under its read timeout, then poll the
    Location after Retry-After. Every call must come back before the read timeout."""
    url = f"{base}/{CUSTOMER}/task/{DELAY_TASK}/job?access_token={TOKEN}"
    headers = {"Prefer": f"wait={int(read_timeout) - 2}"}
    resp = requests.post(url, json=[12], headers=headers, timeout=(2, read_timeout))
    hops = 0
    while resp.status_code == 202 and hops < 30:
        hops += 1
        time.sleep(float(resp.headers["Retry-After"]))
        # No Prefer now: the Location carries the budget first asked for (wait=N).
        resp = requests.get(base + resp.headers["Location"], timeout=(2, read_timeout))
    return resp.status_code, resp.json(), hops


async def test_a_client_with_a_5s_read_timeout_finishes_a_12s_job_by_following_202s(
    emulator: EmulatorServer, gateway: Gateway
) -> None:
    status, body, hops = await asyncio.to_thread(follow_with_a_short_read_timeout, gateway.url, 5)
    assert (status, body) == (200, ['{"ok":true}'])
    assert hops >= 2  # it took several 202s, none of them a read timeout


async def run_cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sync_gateway",
        *args,
        env=cli_env(tmp_path, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("the command did not end")
    return proc.returncode or 0, err.decode()


@pytest.mark.parametrize("command", ["serve", "check-config"])
async def test_a_busy_port_is_one_line_naming_the_fix(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.toml"
        config.write_text(f"[server]\nport = {port}\n")
        args = ["serve", "--config", str(config)] if command == "serve" else [command, str(config)]
        code, err = await run_cli(tmp_path, *args, SYNC_GATEWAY_UPSTREAM_URL="http://127.0.0.1:9")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "already in use" in lines[0] and str(port) in lines[0]
    assert "Traceback" not in err and "gateway_listening" not in err


@pytest.mark.parametrize("command", ["serve", "check-config"])
async def test_the_redis_store_without_the_redis_package_is_one_line(
    tmp_path: Path, command: str
) -> None:
    # A `redis` module that cannot be imported, first on the path: as without the extra.
    shadow = tmp_path / "shadow"
    (shadow / "redis").mkdir(parents=True)
    (shadow / "redis" / "__init__.py").write_text("raise ImportError('no redis here')\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[server]\nport = 0\n[store]\nbackend = "redis"\n'
        '[security]\nfingerprint_key = "a key of sixteen chars"\n'
    )
    args = ["serve", "--config", str(config)] if command == "serve" else [command, str(config)]
    env = cli_env(tmp_path)
    code, err = await run_cli(tmp_path, *args, PYTHONPATH=f"{shadow}:{env['PYTHONPATH']}")
    assert code == 2
    assert err.count("\n") == 1, err
    assert "sync-gateway[redis]" in err and "Traceback" not in err
    assert "Unclosed" not in err
