"""Logs: one JSON line per event, request ids, job ids, and no credential anywhere in them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from support.processes import cli_env, free_port, start_cli, stop_cli

from sync_gateway import logging as gw_logging
from sync_gateway.emulator import EmulatorServer, EmulatorSettings

PLANTED = "PLANTED-TOKEN-123"
PLANTED_BEARER = "PLANTED-BEARER-456"
PLANTED_COOKIE = "PLANTED-COOKIE-789"
PLANTED_APIKEY = "PLANTED-APIKEY-000"
PLANTED_PATH = "PLANTED-PATH-SECRET"
PLANTED_WRONG = "PLANTED-WRONG-TOKEN"
INSTANT_SECRET = "feedc0de" * 8
DELAY_SECRET = "c0ffee00" * 8
WRONG_SECRET = "badc0ffe" * 8
INSTANT = "65b000000000000000000001"
DELAY = "65b000000000000000000002"
CREATE_ROUTE = "/{customer}/task/{task}/job"
RECIPE = f"""
[customers.demo]
id = "64aeb0020dc410fdc71c0178"
tokens = ["{PLANTED}", "{PLANTED_BEARER}"]

[[tasks]]
id = "{INSTANT}"
name = "Instant"
customer = "demo"
secret = "{INSTANT_SECRET}"
kind = "instant"
output = '{{"ok":true}}'

[[tasks]]
id = "{DELAY}"
name = "Delay"
customer = "demo"
secret = "{DELAY_SECRET}"
kind = "delay"
delay = 0.3
output = '{{"ok":true}}'
"""


# ---- the redaction processor ---------------------------------------------------------------

CARRIERS = [
    ("query", {"url": f"http://up/x/task/t/job?a=1&access_token={PLANTED}"}),
    ("authorization key", {"Authorization": f"Bearer {PLANTED}"}),
    ("bearer in text", {"reason": f"sent Bearer {PLANTED} upstream"}),
    ("header mapping", {"headers": {"Cookie": f"sid={PLANTED}", "Accept": "*/*"}}),
    ("header pairs", {"headers": [("Cookie", f"sid={PLANTED}"), ("Accept", "*/*")]}),
    ("header line", {"raw": f"Host: up\r\nCookie: sid={PLANTED}\r\n"}),
    ("secret path", {"path": f"/demo/task/t/secret/{PLANTED}/job"}),
    ("job secret path", {"location": f"/job/j/secret/{PLANTED}/result?full"}),
    ("apiKey json", {"body": f'{{"apiKey": "{PLANTED}", "appId": "a"}}'}),
    ("apiKey bytes", {"body": f'{{"apiKey":"{PLANTED}"}}'.encode()}),
    ("apiKey mapping", {"body": {"apiKey": PLANTED, "appId": "a"}}),
    ("apiKey query", {"url": f"http://up/api/v1/getJobStatus.jsp?apiKey={PLANTED}&jobId=1"}),
    ("password in url", {"upstream": f"https://user:{PLANTED}@up.example/api"}),
    ("exception object", {"error": ValueError(f"GET /x?access_token={PLANTED} failed")}),
    ("nested deep", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": f"token={PLANTED}"}}}}}}}}),
    ("key by name", {"access_token": PLANTED, "job_secret": PLANTED, "x-api-key": PLANTED}),
]


@pytest.mark.parametrize(("carrier", "event"), CARRIERS, ids=[c for c, _ in CARRIERS])
def test_redact_masks_every_credential_carrier(carrier: str, event: dict[str, Any]) -> None:
    out = gw_logging.redact(None, "info", {"event": "e", **event})
    assert PLANTED not in json.dumps(out, default=str)
    assert gw_logging.MASK in json.dumps(out, default=str)


def test_redact_keeps_what_is_not_a_credential() -> None:
    event = {
        "event": "request",
        "path": "/demo/task/64ac0b46c06feba9b89ad795/job",
        "job_id": "65b0000000000000000000aa",
        "status": 200,
        "duration_ms": 1.5,
        "drain_seconds": 25.0,
        "headers": {"Content-Type": "application/json"},
    }
    assert gw_logging.redact(None, "info", dict(event)) == event


# ---- configure() -------------------------------------------------------------------------------


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_when_not_a_tty() -> None:
    stream = io.StringIO()
    gw_logging.configure("info", "auto", stream)
    structlog.get_logger("t").info("job_finished", job_id="j1", state="success")
    [line] = lines(stream)
    assert line["event"] == "job_finished"
    assert (line["job_id"], line["state"], line["level"]) == ("j1", "success", "info")
    assert "timestamp" in line


@pytest.mark.usefixtures("restore_logging")
def test_console_renderer_on_a_tty_still_redacted() -> None:
    stream = TTY()
    gw_logging.configure("info", "auto", stream)
    structlog.get_logger("t").info("request", path=f"/t/secret/{PLANTED}/job")
    text = stream.getvalue()
    assert "request" in text
    assert not text.lstrip().startswith("{")
    assert PLANTED not in text


@pytest.mark.usefixtures("restore_logging")
def test_level_from_config_filters_events() -> None:
    stream = io.StringIO()
    gw_logging.configure("warning", "json", stream)
    log = structlog.get_logger("t")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def _fail_with_a_credential_in_a_local() -> None:
    token = PLANTED  # a local variable a locals-printing traceback would show
    raise RuntimeError(f"the upstream failed ({len(token)} characters sent)")


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.usefixtures("restore_logging")
def test_tracebacks_show_no_local_variables(fmt: str) -> None:
    stream = TTY() if fmt == "console" else io.StringIO()
    gw_logging.configure("info", fmt, stream)
    try:
        _fail_with_a_credential_in_a_local()
    except RuntimeError:
        structlog.get_logger("t").exception("unhandled_error")
    text = stream.getvalue()
    assert "Traceback" in text
    assert "RuntimeError" in text
    assert PLANTED not in text


@pytest.mark.usefixtures("restore_logging")
def test_standard_library_records_are_json_and_redacted_and_access_log_is_off() -> None:
    stream = io.StringIO()
    gw_logging.configure("info", "json", stream)
    logging.getLogger("aiohttp.server").error("Error handling /x?access_token=%s", PLANTED)
    logging.getLogger("aiohttp.access").info('"GET /x?access_token=%s" 200', PLANTED)
    [line] = lines(stream)
    assert line["logger"] == "aiohttp.server"
    assert line["level"] == "error"
    assert PLANTED not in stream.getvalue()


# ---- a real gateway, a real emulator: grep every line it wrote -----------------------------


@pytest.fixture
async def planted_emulator(tmp_path: Path) -> AsyncIterator[EmulatorServer]:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    server = EmulatorServer(EmulatorSettings(recipe=recipe, min_timeout=0.2))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _flows(http: aiohttp.ClientSession, gw: str) -> list[str]:
    """Every credential carrier through success, 202, re-attach and error paths.

    Returns the job secrets the upstream handed out (credentials too)."""
    create = f"{gw}/demo/task/{INSTANT}/job"
    body = {"task_arguments": [], "apiKey": PLANTED_APIKEY}
    headers = {"Cookie": f"session={PLANTED_COOKIE}", "X-Request-Id": "req-planted-1"}
    async with http.post(f"{create}?access_token={PLANTED}", json=body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "req-planted-1"
    bearer = {"Authorization": f"Bearer {PLANTED_BEARER}"}
    async with http.post(create, headers=bearer) as resp:
        assert resp.status == 200
    async with http.post(f"{gw}/demo/task/{INSTANT}/secret/{INSTANT_SECRET}/job") as resp:
        assert resp.status == 200
    # 202 then re-attach, token in the query (so in the Location too)
    async with http.post(
        f"{gw}/demo/task/{DELAY}/job?access_token={PLANTED}",
        json=[0.3],
        headers={"Prefer": "wait=0", "X-Request-Id": "req-planted-202"},
    ) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
    async with http.get(gw + location, headers={"Prefer": "wait=10"}) as resp:
        assert resp.status == 200
    # a job started by secret: its own secret is in the Location
    async with http.post(
        f"{gw}/demo/task/{DELAY}/secret/{DELAY_SECRET}/job", headers={"Prefer": "respond-async"}
    ) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
    job_secret = location.split("/secret/")[1].split("/")[0]
    async with http.get(gw + location) as resp:
        assert resp.status == 200
    # the supervisor's wait_result loop, followed
    async with http.post(
        f"{gw}/task/{INSTANT}/job?access_token={PLANTED}&wait_result=true", json=[]
    ) as resp:
        assert resp.status == 200
    # error paths
    async with http.post(create, headers={"Authorization": f"Bearer {PLANTED_WRONG}"}) as resp:
        assert resp.status == 401
    async with http.post(f"{create}?access_token={PLANTED_WRONG}") as resp:
        assert resp.status == 401
    async with http.post(f"{gw}/demo/task/{INSTANT}/secret/{WRONG_SECRET}/job") as resp:
        assert resp.status == 403
    broken = f'{{"apiKey": "{PLANTED_APIKEY}", '.encode()
    async with http.post(
        f"{create}?access_token={PLANTED}",
        data=broken,
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
    async with http.get(f"{gw}/x/secret/{PLANTED_PATH}/y?access_token={PLANTED}") as resp:
        assert resp.status == 404
    async with http.get(f"{gw}/job/nope/result?access_token={PLANTED}&parse=abc") as resp:
        assert resp.status == 400
    return [job_secret]


async def test_no_credential_reaches_the_logs_of_a_running_gateway(
    planted_emulator: EmulatorServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(
        tmp_path,
        SYNC_GATEWAY_LOG_LEVEL="debug",
        SYNC_GATEWAY_LOG_FORMAT="json",
        SYNC_GATEWAY_SERVER_DRAIN_SECONDS="1",
    )
    args = ["serve", "--port", str(port), "--upstream", planted_emulator.url]
    proc = await start_cli(args, env, tmp_path, http, url)
    try:
        job_secrets = await _flows(http, url)
    finally:
        await stop_cli(proc)
    out = (tmp_path / "stdout").read_text()
    err = (tmp_path / "stderr").read_text()
    planted = [PLANTED, PLANTED_BEARER, PLANTED_COOKIE, PLANTED_APIKEY, PLANTED_PATH]
    planted += [PLANTED_WRONG, INSTANT_SECRET, DELAY_SECRET, WRONG_SECRET, *job_secrets]
    for secret in planted:
        assert secret not in out
        assert secret not in err
    events = [json.loads(line) for line in out.splitlines()]  # one JSON object per line
    requests = [e for e in events if e["event"] == "request"]
    assert len(requests) >= 14
    first = next(e for e in requests if e["request_id"] == "req-planted-1")
    assert (first["route"], first["status"], first["method"]) == (CREATE_ROUTE, 200, "POST")
    assert first["job_id"] and first["duration_ms"] >= 0
    accepted = next(e for e in requests if e["request_id"] == "req-planted-202")
    assert accepted["status"] == 202
    assert accepted["job_id"]
    assert any("/secret/***/" in e["path"] for e in requests)
    assert all(e["request_id"] for e in requests)


@pytest.mark.parametrize(
    "url",
    [
        "https://h.example/path?key=K-SECRET",
        "https://h.example/x?sig=K-SECRET&other=K-SECRET",
        "https://h.example/o?X-Amz-Signature=K-SECRET&X-Amz-Credential=K-SECRET",
        "http://h.example/cb?code=K-SECRET",
        "http://h.example/?pw=K-SECRET",
        "http://user:K-SECRET@h.example/",
        "redis://:K-SECRET@127.0.0.1:6379/0",
        "http://K-SECRET@h.example/",
    ],
)
def test_every_urls_userinfo_and_query_values_are_masked(url: str) -> None:
    event = gw_logging.redact(None, "info", {"event": "gateway_listening", "upstream": url})
    assert "K-SECRET" not in str(event)
    assert "h.example" in str(event) or "127.0.0.1" in str(event)  # the rest stays readable
