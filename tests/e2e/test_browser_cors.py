"""Browsers on other origins (CORS), proved with a real headless Chromium: a page served from
one loopback port (its own origin) calls the gateway on another with fetch() — a JSON POST with
the token in an Authorization header, so the browser sends a preflight first — and writes what
it got into the page, which the test reads. A page from an origin the operator did not list
gets no CORS headers, so the browser refuses to let it call at all."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import CUSTOMER, DELAY_TASK, INSTANT_TASK, TOKEN, Gateway
from support.helpers import stats
from support.processes import chromium_dom

from sync_gateway.config import CorsSettings
from sync_gateway.emulator import EmulatorServer

# The page's script: a sync call, then a 202 and its re-attach, as a browser app would do them.
PAGE = """<!doctype html>
<html><head><title>pending</title></head><body><pre id="out">pending</pre><script>
const GATEWAY = %(gateway)s;
const AUTH = {"Authorization": "Bearer %(token)s"};
async function call(path, options) {
  const resp = await fetch(GATEWAY + path, options);
  const headers = {};
  for (const name of ["X-Job-Id", "Location", "Retry-After", "Preference-Applied"]) {
    headers[name] = resp.headers.get(name);
  }
  return {status: resp.status, headers, body: await resp.text()};
}
(async () => {
  const out = document.getElementById("out");
  try {
    const sync = await call(%(sync_path)s, {
      method: "POST", headers: {...AUTH, "Content-Type": "application/json"}, body: "[1]"});
    const accepted = await call(%(delay_path)s, {
      method: "POST", body: "[0.5]",
      headers: {...AUTH, "Content-Type": "application/json", "Prefer": "respond-async"}});
    const reattached = await call(accepted.headers["Location"], {
      headers: {...AUTH, "Prefer": "wait=10"}});
    out.textContent = JSON.stringify({sync, accepted, reattached});
  } catch (e) {
    out.textContent = JSON.stringify({error: String(e)});
  }
  document.title = "done";
})();
</script></body></html>
"""


@dataclass
class Pages:
    """One tiny site served on two loopback ports: two origins, the same page."""

    allowed: str
    other: str
    gateway: str = ""


@pytest.fixture
async def pages() -> AsyncIterator[Pages]:
    served = Pages("", "")

    async def page(request: web.Request) -> web.Response:
        values = {
            "gateway": json.dumps(served.gateway),
            "token": TOKEN,
            "sync_path": json.dumps(f"/{CUSTOMER}/task/{INSTANT_TASK}/job"),
            "delay_path": json.dumps(f"/{CUSTOMER}/task/{DELAY_TASK}/job"),
        }
        return web.Response(text=PAGE % values, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for _ in range(2):
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    served.allowed, served.other = (f"http://127.0.0.1:{a[1]}" for a in runner.addresses)
    try:
        yield served
    finally:
        await runner.cleanup()


@pytest.fixture
async def cors_gateway(
    emulator: EmulatorServer, make_gateway: Callable[..., Any], pages: Pages
) -> Gateway:
    gateway: Gateway = await make_gateway(emulator.url, cors={"allow_origins": [pages.allowed]})
    pages.gateway = gateway.url
    return gateway


def shown(dom: str) -> dict[str, Any]:
    """What the page wrote into its <pre id="out">."""
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom
    assert "<title>done</title>" in dom, f"the page's script had not finished: {dom}"
    value: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return value


async def test_a_page_on_a_listed_origin_calls_the_gateway_from_a_real_browser(
    cors_gateway: Gateway, pages: Pages, tmp_path: Path
) -> None:
    page = shown(await chromium_dom(pages.allowed + "/", tmp_path / "profile"))
    assert "error" not in page, page
    sync, accepted, reattached = page["sync"], page["accepted"], page["reattached"]
    assert (sync["status"], json.loads(sync["body"])) == (200, ['{"ok":true}'])
    assert sync["headers"]["X-Job-Id"]  # exposed to the script, as are the others below
    assert accepted["status"] == 202
    job_id = accepted["headers"]["X-Job-Id"]
    assert accepted["headers"]["Location"].startswith(f"/job/{job_id}/result?")
    assert accepted["headers"]["Retry-After"] == "1"
    assert accepted["headers"]["Preference-Applied"] == "respond-async"
    assert (reattached["status"], json.loads(reattached["body"])) == (200, ['{"ok":true}'])
    assert reattached["headers"]["Preference-Applied"] == "wait=10"


async def test_a_page_on_an_origin_not_listed_is_refused_by_the_browser(
    cors_gateway: Gateway, pages: Pages, tmp_path: Path, emulator: EmulatorServer
) -> None:
    async with aiohttp.ClientSession() as http:
        before = await stats(http, emulator)
        page = shown(await chromium_dom(pages.other + "/", tmp_path / "profile"))
        after = await stats(http, emulator)
    assert page == {"error": "TypeError: Failed to fetch"}
    # The preflight got no CORS headers, so the browser never sent the POST: no job.
    assert after["create"] == before["create"]


async def test_preflights_and_answers_carry_the_configured_headers(
    cors_gateway: Gateway, pages: Pages, http: aiohttp.ClientSession
) -> None:
    url = f"{cors_gateway.url}/{CUSTOMER}/task/{INSTANT_TASK}/job"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,prefer",
    }
    async with http.options(url, headers={"Origin": pages.allowed, **preflight}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == pages.allowed
        assert resp.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = resp.headers["Access-Control-Allow-Headers"].lower().split(",")
        assert sorted(allowed) == ["authorization", "content-type", "prefer"]
        assert resp.headers["Access-Control-Max-Age"] == "600"
        assert "Access-Control-Allow-Credentials" not in resp.headers
    async with http.options(url, headers={"Origin": pages.other, **preflight}) as resp:
        assert resp.status == 403
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    headers = {"Origin": pages.allowed, "Authorization": f"Bearer {TOKEN}"}
    async with http.post(url, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == pages.allowed
        exposed = resp.headers["Access-Control-Expose-Headers"].split(",")
        assert set(exposed) == set(CorsSettings().expose_headers)
        assert "Origin" in resp.headers.getall("Vary")


async def test_cors_is_off_unless_origins_are_listed(
    gateway: Gateway, pages: Pages, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.url}/{CUSTOMER}/task/{INSTANT_TASK}/job"
    headers = {"Origin": pages.allowed, "Access-Control-Request-Method": "POST"}
    async with http.options(url, headers=headers) as resp:
        assert resp.status == 405
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.post(url, headers={"Origin": pages.allowed, "Authorization": TOKEN}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
