"""Behind a real nginx (Debian's), configured with the README's own block: the default budget
answers the gateway's 202 before the proxy's read timeout, results pass through byte for byte,
and the Locations the gateway hands out stay right behind a path prefix."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import API_TEST_TASK, CUSTOMER, DELAY_TASK, TOKEN, Gateway
from support.processes import Nginx

from sync_gateway.emulator import EmulatorServer

README = Path(__file__).resolve().parents[2] / "README.md"
PREFIX = "/sync"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# The test's shortened timeouts: the gateway's default budget, under nginx's read timeout.
DEFAULT_BUDGET = 1
READ_TIMEOUT = 3
# Headers each hop sets for itself; everything else must come through nginx unchanged.
HOP_HEADERS = {"date", "server", "connection", "keep-alive", "x-request-id"}


def readme_nginx_block() -> str:
    """The README's nginx configuration, pointed at the test's ports and timeout."""
    section = README.read_text(encoding="utf-8").split("## Behind a reverse proxy", 1)[1]
    block = re.search(r"```nginx\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README: no nginx block under 'Behind a reverse proxy'"
    text = block.group(1)
    for literal in ("server 127.0.0.1:8080;", "listen 80;", "proxy_read_timeout 60s;"):
        assert text.count(literal) == 1, f"README's nginx block has no single {literal!r}"
    return (
        text.replace("server 127.0.0.1:8080;", "server 127.0.0.1:{gateway};")
        .replace("listen 80;", "listen 127.0.0.1:{port};")
        .replace("proxy_read_timeout 60s;", f"proxy_read_timeout {READ_TIMEOUT}s;")
    )


@pytest.fixture
async def proxied(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[tuple[Gateway, Nginx]]:
    gateway: Gateway = await make_gateway(
        emulator.url,
        server={"public_prefix": PREFIX},
        wait={"default_seconds": DEFAULT_BUDGET},
    )
    port = gateway.url.rsplit(":", 1)[1]
    nginx = Nginx(tmp_path, readme_nginx_block().replace("{gateway}", port))
    await nginx.start()
    try:
        yield gateway, nginx
    finally:
        await nginx.stop()


def create_path(task: str, query: str = "") -> str:
    return f"/{CUSTOMER}/task/{task}/job" + (f"?{query}" if query else "")


async def test_the_default_budget_answers_the_gateways_202_before_the_proxy_gives_up(
    proxied: tuple[Gateway, Nginx], http: aiohttp.ClientSession
) -> None:
    _, nginx = proxied
    # A job longer than both: the gateway's default budget (1 s) runs out first.
    async with http.post(
        nginx.url + PREFIX + create_path(DELAY_TASK), json=[30], headers=BEARER
    ) as resp:
        body = await resp.read()
        assert resp.status == 202, body
        assert resp.headers["X-Job-Id"]
        assert resp.headers["Location"].startswith(f"{PREFIX}/job/")
        assert orjson.loads(body)["state"] == "in_progress"
    # What the default protects from: a budget past the proxy's read timeout is nginx's 504.
    headers = {**BEARER, "Prefer": f"wait={READ_TIMEOUT + 3}"}
    async with http.post(
        nginx.url + PREFIX + create_path(DELAY_TASK), json=[30], headers=headers
    ) as resp:
        body = await resp.read()
        assert resp.status == 504
        assert "X-Job-Id" not in resp.headers
        assert b"nginx" in body  # the proxy's page, not the gateway's JSON
    assert "upstream timed out" in nginx.log()


async def test_a_result_passes_through_the_proxy_byte_for_byte(
    proxied: tuple[Gateway, Nginx], http: aiohttp.ClientSession
) -> None:
    gateway, nginx = proxied
    # A response object: its own status (201), its own header (TheEyeJobId), a JSON body.
    async with http.post(
        nginx.url + PREFIX + create_path(API_TEST_TASK, "parse"), headers=BEARER
    ) as resp:
        proxied_answer = (resp.status, await resp.read(), resp.headers.copy())
    assert proxied_answer[0] == 201, proxied_answer[1]
    job_id = proxied_answer[2]["X-Job-Id"]
    # The same kept result, straight from the gateway.
    async with http.get(f"{gateway.url}/job/{job_id}/result?parse", headers=BEARER) as resp:
        direct_answer = (resp.status, await resp.read(), resp.headers.copy())
    assert proxied_answer[0] == direct_answer[0]
    assert proxied_answer[1] == direct_answer[1]
    assert proxied_answer[2]["TheEyeJobId"] == job_id

    def end_to_end(headers: Any) -> list[tuple[str, str]]:
        return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in HOP_HEADERS)

    assert end_to_end(proxied_answer[2]) == end_to_end(direct_answer[2])


async def test_locations_stay_right_behind_the_path_prefix(
    proxied: tuple[Gateway, Nginx], http: aiohttp.ClientSession
) -> None:
    _, nginx = proxied
    base = nginx.url + PREFIX
    # A spoofed X-Forwarded-Prefix changes nothing: the prefix is configured, not read.
    headers = {**BEARER, "Prefer": "respond-async", "X-Forwarded-Prefix": "/elsewhere"}
    async with http.post(base + create_path(DELAY_TASK), json=[0.5], headers=headers) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
        job_id = resp.headers["X-Job-Id"]
        assert orjson.loads(await resp.read())["location"] == location
    assert location.startswith(f"{PREFIX}/job/{job_id}/result?")
    headers = {**BEARER, "Prefer": "wait=10"}
    async with http.get(nginx.url + location, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == ['{"ok":true}']

    # The supervisor's wait_result loop, followed as `curl --location` does, through nginx.
    url = base + create_path(DELAY_TASK, "wait_result=true&timeout=0.2&limit=30")
    async with http.post(url, json=[0.5], headers=BEARER) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == ['{"ok":true}']
        hops = [r.headers["Location"] for r in resp.history]
    assert hops, "no 303 was followed"
    assert all(hop.startswith(f"{PREFIX}/job/") for hop in hops)
