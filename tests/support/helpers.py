"""Helpers the tests share: one HTTP call, and replaying recorded exchanges.

Two kinds of recordings: the TheEye supervisor's (``tests/recordings/*.json``, one exchange a
file, written by ``sync_gateway.emulator.record``) served to a whole gateway, and the other
adapters' (``tests/recordings/{executejob,location}/*.json``, one scenario a file) served to
an adapter alone.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from conftest import UPSTREAM

from sync_gateway.core.errors import GatewayError, UpstreamRejected
from sync_gateway.core.types import Credentials, Format, FormatKind, JobRef, Snapshot
from sync_gateway.emulator import EmulatorServer
from sync_gateway.render import render
from sync_gateway.render.common import DEFAULT_LIMITS
from sync_gateway.upstream.base import Adapter

RECORDINGS = Path(__file__).parent.parent / "recordings"
ID_PLACEHOLDER = "\x00job\x00"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request, redirects not followed: the status, the body (parsed if JSON), the answer."""
    async with http.request(method, url, allow_redirects=False, **kw) as resp:
        raw = await resp.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw
    return resp.status, body, resp


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], what: str, seconds: float = 15.0
) -> None:
    """Wait until ``condition`` (a function, sync or async) holds; fail naming ``what``."""
    give_up = time.monotonic() + seconds
    while True:
        value = condition()
        if value if isinstance(value, bool) else await value:
            return
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)


async def stats(http: aiohttp.ClientSession, emulator: EmulatorServer) -> dict[str, Any]:
    """The emulator's request counters (``/_emulator/stats``)."""
    async with http.get(f"{emulator.url}/_emulator/stats") as resp:
        assert resp.status == 200
        value: dict[str, Any] = await resp.json()
        return value


async def add_faults(
    http: aiohttp.ClientSession, emulator: EmulatorServer, *faults: dict[str, Any]
) -> None:
    """Have the emulator misbehave (``/_emulator/faults``)."""
    async with http.post(f"{emulator.url}/_emulator/faults", json=list(faults)) as resp:
        assert resp.status == 200


# ---- TheEye: one recorded exchange a file, served to the gateway ---------------------------


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDINGS / f"{name}.json").read_text("utf-8"))
    return data


def document(name: str) -> dict[str, Any]:
    """The job document a recorded exchange answered."""
    doc: dict[str, Any] = json.loads(recording(name)["body"])
    return doc


def url_pattern(rec: dict[str, Any]) -> re.Pattern[str]:
    """The upstream URL of a recording as a regex: any job id, any query."""
    path = rec["path"]
    if rec.get("job_id"):
        path = path.replace(rec["job_id"], ID_PLACEHOLDER)
    escaped = re.escape(UPSTREAM + path).replace(re.escape(ID_PLACEHOLDER), "[0-9a-f]{24}")
    return re.compile(f"^{escaped}(\\?.*)?$")


def serve(
    mock: aioresponses,
    rec: dict[str, Any],
    *,
    body: str | None = None,
    repeat: bool = True,
) -> None:
    """Register one recorded exchange (optionally with another body) with aioresponses."""
    headers = {k: v for k, v in rec["headers"].items() if k.lower() != "content-type"}
    mock.add(
        url_pattern(rec),
        method=rec["method"],
        status=rec["status"],
        body=rec["body"] if body is None else body,
        headers=headers,
        content_type=rec["headers"].get("Content-Type", "application/json"),
        repeat=repeat,
    )


def serve_example(mock: aioresponses, example: str) -> str:
    """The create and the final result of a recorded example; its job id."""
    create = recording(f"{example}.create")
    serve(mock, create)
    serve(mock, recording(f"{example}.result"))
    job_id: str = create["job_id"]
    return job_id


def serve_finished_document(mock: aioresponses, doc: dict[str, Any]) -> str:
    """A create, then ``doc`` (a changed job document) as the finished result; its job id."""
    create = recording("rest_success.create")
    serve(mock, create)
    result = recording("rest_success.result")
    serve(mock, result, body=json.dumps({**doc, "id": create["job_id"]}))
    job_id: str = create["job_id"]
    return job_id


# ---- other adapters: one recorded scenario a file, served to the adapter alone -------------


def scenario(directory: str, name: str) -> list[dict[str, Any]]:
    """The exchanges of ``recordings/<directory>/<name>.json``."""
    doc = orjson.loads((RECORDINGS / directory / f"{name}.json").read_bytes())
    exchanges: list[dict[str, Any]] = doc["exchanges"]
    return exchanges


async def replay(
    exchanges: list[dict[str, Any]],
    run: Callable[[aiohttp.ClientSession], Awaitable[Snapshot | GatewayError]],
) -> tuple[Snapshot | GatewayError, list[tuple[str, str]]]:
    """``run`` an adapter against the recorded answers: its outcome, and what it sent."""
    with aioresponses() as mock:
        for ex in exchanges:
            mock.add(
                ex["url"],
                method=ex["method"],
                status=ex["status"],
                headers=ex["headers"],
                body=ex["body"].encode(),
            )
        async with aiohttp.ClientSession() as session:
            outcome = await run(session)
        sent = [(m, str(u)) for (m, u), calls in mock.requests.items() for _ in calls]
    return outcome, sent


async def step_until_final(
    adapter: Adapter, ref: JobRef, credentials: Credentials
) -> Snapshot | GatewayError:
    """What the engine does after the create: step until the job is final."""
    for _ in range(10):
        try:
            progress = await adapter.step(ref, credentials, 1.0)
        except UpstreamRejected as exc:
            return exc
        except GatewayError:
            continue  # transient: the engine steps again
        if progress.snapshot is not None and progress.snapshot.finished:
            return progress.snapshot
    raise AssertionError("the replay never finished")


def answer_of(outcome: Snapshot | GatewayError) -> tuple[int, Any]:
    """The status and the JSON body the gateway answers for a replay's outcome."""
    if isinstance(outcome, Snapshot):
        rendered = render(outcome, Format(FormatKind.OUTPUT), DEFAULT_LIMITS)
        return rendered.status, orjson.loads(rendered.body)
    assert isinstance(outcome, UpstreamRejected)
    return outcome.upstream_status, orjson.loads(outcome.body)


def assert_no_machine_specific_origin(directory: str) -> None:
    for path in (RECORDINGS / directory).glob("*.json"):
        text = path.read_text()
        assert "127.0.0.1" not in text and "localhost" not in text, path.name
