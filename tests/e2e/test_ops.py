"""Operable in production: health, readiness, metrics (one and many workers), OpenAPI, config."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import CUSTOMER, DELAY_TASK, INSTANT_TASK, TOKEN, Gateway, start_gateway
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from support.processes import cli_env, free_port, start_cli, stop_cli

from sync_gateway import cli
from sync_gateway.config import load
from sync_gateway.emulator import EmulatorServer, EmulatorSettings
from sync_gateway.metrics import Metrics
from sync_gateway.web.keys import ENGINE
from sync_gateway.web.views_ops import OPENAPI_PATH

CREATE_ROUTE = "/{customer}/task/{task}/job"
RESULT_ROUTE = "/job/{job}/result"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    """Every sample of a /metrics answer, keyed by name and sorted labels."""
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def create_url(base: str, task: str) -> str:
    return f"{base}/{CUSTOMER}/task/{task}/job?access_token={TOKEN}"


# ---- /healthz and /readyz -------------------------------------------------------------------


async def test_healthz_answers_ok(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
        assert resp.headers["X-Request-Id"]


async def test_readyz_is_ready_when_the_upstream_answers(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/readyz") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ready"
    assert isinstance(body["upstream_status"], int)


async def test_readyz_is_503_while_the_upstream_is_down(
    emulator: EmulatorServer, gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    await emulator.stop()
    async with http.get(f"{gateway.url}/readyz") as resp:
        body = await resp.json()
    assert resp.status == 503
    assert body["error"] == "unavailable"
    assert body["reason"] == "upstream_unreachable"
    assert body["message"]
    await emulator.start()
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200


@pytest.fixture
async def odd_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An upstream whose root answers 502 on /bad and never answers on /hang."""
    release = asyncio.Event()

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/bad", bad)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", release
    finally:
        release.set()
        await runner.cleanup()


async def test_readyz_is_503_when_the_upstream_answers_5xx(
    odd_upstream: tuple[str, asyncio.Event],
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
) -> None:
    gw = await make_gateway(odd_upstream[0] + "/bad")
    async with http.get(f"{gw.url}/readyz") as resp:
        body = await resp.json()
    assert (resp.status, body["reason"], body["upstream_status"]) == (503, "upstream_error", 502)


async def test_readyz_is_503_when_the_upstream_does_not_answer_in_time(
    odd_upstream: tuple[str, asyncio.Event],
    make_gateway: Callable[..., Any],
    http: aiohttp.ClientSession,
) -> None:
    gw = await make_gateway(odd_upstream[0] + "/hang", upstream={"connect_timeout": 0.2})
    async with http.get(f"{gw.url}/readyz") as resp:
        body = await resp.json()
    assert (resp.status, body["reason"]) == (503, "upstream_timeout")
    samples = await scrape(http, gw.url)
    assert value(
        samples, "sync_gateway_upstream_requests_total", kind="readiness", status="timeout"
    )


async def test_readyz_is_503_while_draining_and_healthz_stays_200(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    gateway.app[ENGINE].begin_drain(30.0)
    async with http.get(f"{gateway.url}/readyz") as resp:
        body = await resp.json()
    assert (resp.status, body["error"], body["reason"]) == (503, "unavailable", "draining")
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200


# ---- /metrics -------------------------------------------------------------------------------


async def test_metrics_move_during_a_sync_call_a_202_and_a_re_attach(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, gateway.url)

    async with http.post(create_url(gateway.url, INSTANT_TASK)) as resp:
        assert resp.status == 200
    async with http.post(
        create_url(gateway.url, DELAY_TASK), json=[0.3], headers={"Prefer": "wait=0"}
    ) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
    mid = await scrape(http, gateway.url)
    assert value(mid, "sync_gateway_active_watchers") >= 1
    async with http.get(gateway.url + location, headers={"Prefer": "wait=10"}) as resp:
        assert resp.status == 200
    after = await scrape(http, gateway.url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "sync_gateway_requests_total"
    assert moved(requests, route=CREATE_ROUTE, status="200") == 1
    assert moved(requests, route=CREATE_ROUTE, status="202") == 1
    assert moved(requests, route=RESULT_ROUTE, status="200") == 1
    assert moved(requests, route="/metrics", status="200") == 2
    assert moved("sync_gateway_jobs_finished_total", state="success") == 2
    assert moved("sync_gateway_budget_expired_total") == 1
    assert moved("sync_gateway_wait_seconds_count", outcome="accepted") == 1
    assert moved("sync_gateway_wait_seconds_count", outcome="finished") == 2
    upstream = [
        k for k, v in after.items() if k[0] == "sync_gateway_upstream_requests_total" and v > 0
    ]
    assert upstream, "no upstream request was counted"
    assert value(after, "sync_gateway_retained_results") == 2
    assert value(after, "sync_gateway_retained_bytes") > 0
    assert value(after, "sync_gateway_active_waiters") == 0


async def test_metric_labels_carry_no_credentials_job_ids_or_raw_paths(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(create_url(gateway.url, INSTANT_TASK)) as resp:
        job_id = resp.headers["X-Job-Id"]
    for i in range(30):  # unmatched paths fold into one label value
        async with http.get(f"{gateway.url}/no/such/{i}/path?access_token={TOKEN}") as resp:
            assert resp.status == 404
    async with http.delete(f"{gateway.url}/healthz") as resp:
        assert resp.status == 405
    samples = await scrape(http, gateway.url)
    labels = {v for (_, items) in samples for _, v in items}
    assert not any(TOKEN in v or job_id in v or "/no/such" in v for v in labels)
    routes = {dict(items)["route"] for (name, items) in samples if "route" in dict(items)}
    registered = {r.resource.canonical for r in gateway.app.router.routes() if r.resource}
    assert routes <= registered | {"unmatched"}
    requests = "sync_gateway_requests_total"
    assert value(samples, requests, route="unmatched", status="404") == 30
    assert value(samples, requests, route="unmatched", status="405") == 1


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def test_metrics_answer_openmetrics_when_the_scraper_asks_for_it(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(create_url(gateway.url, INSTANT_TASK)) as resp:
        assert resp.status == 200
    headers = {"Accept": f"{OPENMETRICS},text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}
    async with http.get(f"{gateway.url}/metrics", headers=headers) as resp:
        assert resp.status == 200
        content_type = resp.headers["Content-Type"]
        assert "Accept" in resp.headers.get("Vary", "")
        text = await resp.text()
    assert content_type.startswith(f"{OPENMETRICS}; charset=utf-8")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    requests = families["sync_gateway_requests"]  # OpenMetrics names a counter without _total
    assert requests.type == "counter"
    assert any(
        s.name == "sync_gateway_requests_total" and s.labels["route"] == CREATE_ROUTE
        for s in requests.samples
    )


@pytest.mark.parametrize("accept", ["", "*/*", "text/plain", "application/json"])
async def test_metrics_default_answer_stays_the_text_format_0_0_4(
    gateway: Gateway, http: aiohttp.ClientSession, accept: str
) -> None:
    async with http.get(f"{gateway.url}/metrics", headers={"Accept": accept}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    assert "# EOF" not in text
    assert "sync_gateway_requests_total" in text


def test_job_states_from_the_upstream_cannot_grow_the_label_set_without_bound() -> None:
    metrics = Metrics()
    for i in range(100):
        metrics.jobs_finished.labels(state=f"weird-{i}").inc()
    states = {
        s.labels["state"]
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name == "sync_gateway_jobs_finished_total"
    }
    assert "other" in states
    assert len(states) <= 17


async def test_metrics_add_up_across_workers(
    emulator: EmulatorServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path, SYNC_GATEWAY_SERVER_DRAIN_SECONDS="1", SYNC_GATEWAY_LOG_LEVEL="warning")
    args = ["serve", "--workers", "2", "--port", str(port), "--upstream", emulator.url]
    proc = await start_cli(args, env, tmp_path, http, url)
    try:
        before = await scrape(http, url)
        # New connections spread over the workers (SO_REUSEPORT).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for _ in range(20):
                async with s.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
            counts = set()
            async with s.get(f"{url}/metrics", headers={"Accept": OPENMETRICS}) as resp:
                assert resp.headers["Content-Type"].startswith(OPENMETRICS)
                assert (await resp.text()).endswith("# EOF\n")
            for _ in range(6):  # whichever worker answers, it reports every worker's counts
                after = await scrape(s, url)
                moved = value(
                    after, "sync_gateway_requests_total", route="/healthz", status="200"
                ) - value(before, "sync_gateway_requests_total", route="/healthz", status="200")
                counts.add(moved)
                assert value(after, "sync_gateway_active_waiters") == 0
    finally:
        code = await stop_cli(proc)
    assert counts == {20}
    assert code == 0, (tmp_path / "stderr").read_text()
    assert metrics_dirs(tmp_path) == [], "the metrics directory made for the workers is left"


@pytest.fixture
async def keeping_emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator keeping every finished job (no autoremove), for many calls at once."""
    async with EmulatorServer(EmulatorSettings(min_timeout=0.2, autoremove_limit=None)) as server:
        yield server


async def test_workers_sharing_one_pipe_write_whole_log_lines(
    keeping_emulator: EmulatorServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two workers log to one stdout pipe, lines batched per loop turn: every line arrives
    whole (a JSON object), and every call answered is logged once."""
    emulator = keeping_emulator
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path, SYNC_GATEWAY_SERVER_DRAIN_SECONDS="1", SYNC_GATEWAY_LOG_FORMAT="json")
    args = ["serve", "--workers", "2", "--port", str(port), "--upstream", emulator.url]
    proc = await start_cli(args, env, tmp_path, http, url, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    out = bytearray()

    async def drain(stream: asyncio.StreamReader) -> None:
        # A slow reader: the pipe fills and the workers' writes wait for room, where a write
        # of more than PIPE_BUF bytes may go in pieces between another writer's.
        while chunk := await stream.read(2048):
            out.extend(chunk)
            await asyncio.sleep(0.002)

    reader = asyncio.get_running_loop().create_task(drain(proc.stdout))
    answered = 0
    try:
        # New connections spread over the workers (SO_REUSEPORT); many at once fill a turn.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

            async def caller() -> None:
                nonlocal answered
                for _ in range(25):
                    async with s.post(create_url(url, INSTANT_TASK), json=[]) as resp:
                        assert resp.status == 200
                        answered += 1

            await asyncio.gather(*(caller() for _ in range(40)))
    finally:
        code = await stop_cli(proc)
        await reader
    assert code == 0, (tmp_path / "stderr").read_text()
    lines = [json.loads(line) for line in out.decode().splitlines()]  # none cut, none mixed
    listening = {e["pid"] for e in lines if e["event"] == "gateway_listening"}
    assert len(listening) == 2
    calls = [e for e in lines if e["event"] == "request" and e["route"].endswith("/job")]
    assert len(calls) == answered == 1000


def metrics_dirs(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name.startswith("sync-gateway-metrics")]


# ---- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_document_is_json_openapi_3_1() -> None:
    doc = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] == "sync-gateway"
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "message"}


async def test_every_registered_route_is_in_the_openapi_document(
    http: aiohttp.ClientSession,
) -> None:
    route = {
        "method": "POST",
        "path": "/orders/{order}",
        "adapter": "location-poll",
        "upstream": "http://127.0.0.1:9/orders",  # never called here
    }
    settings = load(None, {}, {"routes": [route]})
    gw = await start_gateway(settings)  # a configured route breaks neither start-up nor the doc
    try:
        async with http.get(f"{gw.url}/openapi.json") as resp:
            assert resp.status == 200
            doc = await resp.json()
        configured = {(r.method, r.path) for r in settings.routes}
        registered = set()
        for r in gw.app.router.routes():
            assert r.resource is not None
            key = (r.method, r.resource.canonical)
            # HEAD comes with GET; [[routes]] are the user's own
            if r.method == "HEAD" or key in configured:
                continue
            registered.add(key)
            operations = doc["paths"].get(r.resource.canonical, {})
            assert r.method.lower() in operations, f"{key} is not in openapi.json"
    finally:
        await gw.stop()
    assert ("POST", "/{customer}/task/{task}/secret/{secret}/job") in registered
    assert ("GET", "/metrics") in registered
    assert ("POST", "/orders/{order}") not in registered


def test_openapi_operations_document_their_error_answers() -> None:
    doc = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    create = doc["paths"][CREATE_ROUTE]["post"]
    statuses = set(create["responses"])
    assert {"200", "202", "303", "400", "401", "404", "413", "500", "502", "504"} <= statuses
    names = {p.get("$ref", "").rsplit("/", 1)[-1] for p in create["parameters"]}
    for name in ("format", "timeout", "limit", "wait_result"):
        assert name in names
    # The four format flags are one choice: an exploded object parameter with one property.
    formats = doc["components"]["parameters"]["format"]
    assert (formats["in"], formats["style"], formats["explode"]) == ("query", "form", True)
    assert set(formats["schema"]["properties"]) == {"output", "parse", "result", "full"}
    assert formats["schema"]["maxProperties"] == 1
    for path in ("/job/{job}/result", "/jobs/{adapter}/{job}/result"):
        for method in ("get", "post"):
            op = doc["paths"][path][method]
            refs = {p["$ref"].rsplit("/", 1)[-1] for p in op["parameters"]}
            assert {"wait", "Prefer", "format"} <= refs, (method, path)
            assert "Preference-Applied" in doc["components"]["responses"]["Result"]["headers"]
    for name in ("access_token", "Prefer", "Idempotency-Key", "X-Request-Id"):
        assert name in names
    headers = doc["components"]["headers"]
    for name in ("X-Job-Id", "Location", "Retry-After", "Preference-Applied", "X-Request-Id"):
        assert name in headers


async def test_openapi_is_served(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/openapi.json") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert (await resp.json())["openapi"].startswith("3.1.")


# ---- check-config -----------------------------------------------------------------------------


def test_check_config_prints_effective_settings_with_passwords_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("SYNC_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SYNC_GATEWAY_LOG_LEVEL", "debug")
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[upstream]\nurl = "https://gw:PLANTED-UP-PW@theeye.example/api"\n'
        '[store]\nbackend = "memory"\nurl = "redis://:PLANTED-REDIS-PW@127.0.0.1:6379/0"\n'
        '[log]\nformat = "json"\n[server]\nport = 0\n',
        encoding="utf-8",
    )
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PLANTED" not in out
    effective = json.loads(out)
    assert effective["upstream"]["url"] == "https://***@theeye.example/api"
    assert effective["store"]["url"] == "redis://***@127.0.0.1:6379/0"
    assert effective["log"] == {"level": "debug", "format": "json"}


def test_check_config_rejects_a_bad_log_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[log]\nlevel = "loud"\n', encoding="utf-8")
    assert cli.main(["check-config", str(path)]) == 2
    assert "log.level" in capsys.readouterr().err
