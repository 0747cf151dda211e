"""An emulator of elastic.io's scheduled executions (202 + Location polling), for tests.

Built from the examples of ``seeds/elasticio-scheduled-executions.md``:

* ``POST|PUT /v1/exec/schedule`` (and ``/v1/{component}/exec/schedule``) answers
  ``202 {"message": "ok"}`` with ``Location: 'http://…/v1/exec/poll/{id}'`` (quoted, as the
  seed writes it; or unquoted, root-relative or path-relative, see ``location``);
* ``GET /v1/exec/poll/{id}`` answers ``200 {"message": "Result not ready yet."}`` while the job
  runs, then ``303 {"message": "Ready."}`` + ``Location`` of the result, or ``404 Expired.``;
* ``GET /v1/exec/result/{id}`` answers ``200 {"data": …}`` or ``400 {"message": "Rejected.",
  "reason": …}`` ONCE; a second read answers ``404 {"message": "Result does not exist"}``.

Every request must carry a credential (``Authorization`` or ``access_token``); a job answers
only to the credential that scheduled it (403 otherwise). Faults: 503 bursts on polls and
result reads, non-JSON poll answers, ``Retry-After``, a rejected create, an immediate result.
``counts`` tells the requests by kind (``create``, ``poll``, ``result``) and ``exchanges``
keeps every request and answer, which :func:`record` writes as the replay tests' recordings::

    python -m sync_gateway.emulator.location_emulator record tests/recordings/location
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
import yarl
from aiohttp import web

from .serving import (
    Recordings,
    ScenarioEmulator,
    ScenarioState,
    emulator_main,
    exchange_recorder,
    record_scenarios,
    serve_on_port,
)
from .serving import json_response as _json

LocationStyle = Literal["absolute-quoted", "absolute", "root-relative", "relative"]
Outcome = Literal["success", "rejected", "expired"]


@dataclass(frozen=True)
class LocationEmulatorSettings:
    """How the emulated upstream behaves; read at every request (replace to change)."""

    duration: float = 0.0
    outcome: Outcome = "success"
    data: Any = field(default_factory=lambda: {"some": "value"})
    reason: Any = field(default_factory=lambda: {"message": "Invalid account credentials"})
    location: LocationStyle = "absolute-quoted"
    location_origin: str | None = None  # absolute Locations on this origin (default: Host's)
    immediate: bool = False
    create_status: int | None = None
    poll_errors: int = 0
    burst_status: int = 503  # the status of poll_errors and result_errors answers
    result_errors: int = 0
    garbage_polls: int = 0
    retry_after: int | None = None
    read_once: bool = True


@dataclass
class ScheduledJob:
    """One scheduled execution."""

    id: str
    owner: str
    ready_at: float
    settings: LocationEmulatorSettings
    polls: int = 0
    result_attempts: int = 0
    reads: int = 0


@dataclass
class LocationState(ScenarioState[LocationEmulatorSettings, ScheduledJob]):
    """Everything the emulator remembers; survives nothing but the process."""


STATE = web.AppKey("location_state", LocationState)


def _owner(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        return f"auth:{auth}"
    token = request.query.get("access_token")
    return f"token:{token}" if token else None


def _location(request: web.Request, kind: str, job_id: str) -> str:
    settings = request.app[STATE].settings
    style = settings.location
    if style == "relative":
        return f"{kind}/{job_id}" if kind == "poll" else f"../{kind}/{job_id}"
    path = f"/v1/exec/{kind}/{job_id}"
    if style == "root-relative":
        return path
    absolute = f"{settings.location_origin or request.url.origin()}{path}"
    return f"'{absolute}'" if style == "absolute-quoted" else absolute


async def schedule(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.counts["create"] += 1
    settings = state.settings
    owner = _owner(request)
    if owner is None:
        return _json(401, {"message": "Unauthorized"})
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        return _json(400, {"message": "Invalid JSON"})
    if not isinstance(body, dict) or "execution_type" not in body:
        return _json(400, {"message": "execution_type is required"})
    if settings.create_status is not None:
        headers = {"Retry-After": "7"} if settings.create_status == 429 else None
        return _json(settings.create_status, {"message": "Schedule failed"}, headers)
    if settings.immediate:
        return _json(200, {"data": settings.data})
    job = ScheduledJob(uuid.uuid4().hex[:24], owner, time.monotonic() + settings.duration, settings)
    state.jobs[job.id] = job
    location = _location(request, "poll", job.id)
    return _json(202, {"message": "ok"}, {"Location": location})


def _owned(request: web.Request) -> ScheduledJob | web.Response:
    job = request.app[STATE].jobs.get(request.match_info["id"])
    if job is None:
        return _json(404, {"message": "Result does not exist."})
    if _owner(request) != job.owner:
        return _json(403, {"message": "Forbidden"})
    return job


async def poll(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.counts["poll"] += 1
    job = _owned(request)
    if isinstance(job, web.Response):
        return job
    job.polls += 1
    s = job.settings
    if job.polls <= s.poll_errors:
        return _json(s.burst_status, {"message": "Service Unavailable"}, {"Retry-After": "0"})
    if job.polls <= s.poll_errors + s.garbage_polls:
        return web.Response(status=200, text="<html>upstream busy</html>", content_type="text/html")
    if time.monotonic() < job.ready_at:
        headers = {"Retry-After": str(s.retry_after)} if s.retry_after is not None else None
        return _json(200, {"message": "Result not ready yet."}, headers)
    if s.outcome == "expired":
        return _json(404, {"message": "Expired."})
    location = _location(request, "result", job.id)
    return _json(303, {"message": "Ready."}, {"Location": location})


async def result(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.counts["result"] += 1
    job = _owned(request)
    if isinstance(job, web.Response):
        return job
    s = job.settings
    job.result_attempts += 1
    if job.result_attempts <= s.result_errors:
        return _json(s.burst_status, {"message": "Service Unavailable"})
    if time.monotonic() < job.ready_at or (s.read_once and job.reads > 0):
        return _json(404, {"message": "Result does not exist"})
    job.reads += 1
    state.counts["result_served"] += 1
    if s.outcome == "rejected":
        return _json(400, {"message": "Rejected.", "reason": s.reason})
    return _json(200, {"data": s.data})


record_exchange = exchange_recorder(
    lambda app: app[STATE].exchanges,
    kept_headers=("Content-Type", "Location", "Retry-After"),
    kept_request_headers=("Authorization", "Content-Type"),
)


def build_app(state: LocationState) -> web.Application:
    app = web.Application(middlewares=[record_exchange])
    app[STATE] = state
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/v1/exec/schedule", schedule)
        app.router.add_route(method, "/v1/{component}/exec/schedule", schedule)
    app.router.add_get("/v1/exec/poll/{id}", poll)
    app.router.add_get("/v1/exec/result/{id}", result)
    return app


class LocationEmulator(ScenarioEmulator[LocationEmulatorSettings, ScheduledJob]):
    """The emulator on a free loopback port: ``async with LocationEmulator(settings) as emu``."""

    state: LocationState

    def __init__(
        self, settings: LocationEmulatorSettings | None = None, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(LocationState(settings or LocationEmulatorSettings()), host)

    def make_app(self) -> web.Application:
        return build_app(self.state)

    @property
    def schedule_url(self) -> str:
        return f"{self.url}/v1/exec/schedule"


# ---- recordings for the replay tests ------------------------------------------------------

CREDENTIAL = "Basic ZGVtb0BleGFtcGxlLmNvbTpkZW1vLWtleQ=="  # demo@example.com:demo-key
SEED_BODY = {
    "execution_type": "get_meta_model",
    "action_or_trigger": "put",
    "component": "5a1f0c1e2b3c4d5e6f708192",
    "account_id": "5a1f0c1e2b3c4d5e6f7081a3",
}
SCENARIOS: dict[str, tuple[str, LocationEmulatorSettings]] = {
    "success": ("the seed's happy path: not ready, 303, the result", LocationEmulatorSettings()),
    "rejected": (
        "the result resource answers 400 Rejected.",
        LocationEmulatorSettings(outcome="rejected"),
    ),
    "expired": ("the poll answers 404 Expired.", LocationEmulatorSettings(outcome="expired")),
    "poll_5xx_burst": (
        "two 503 answers to the poll, then the result",
        LocationEmulatorSettings(poll_errors=2),
    ),
    "garbage_poll": (
        "a poll answered with HTML, then the result",
        LocationEmulatorSettings(garbage_polls=1),
    ),
    "relative": (
        "path-relative Location headers",
        LocationEmulatorSettings(location="relative", retry_after=1),
    ),
    "immediate": (
        "the create answers the result at once",
        LocationEmulatorSettings(immediate=True),
    ),
    "create_rejected": (
        "the create answers 400",
        LocationEmulatorSettings(create_status=400),
    ),
}


def _join(base: str, location: str) -> str:
    return str(yarl.URL(base).join(yarl.URL(location.strip().strip("'"))))


async def _drive(session: aiohttp.ClientSession, emu: LocationEmulator, scenario: str) -> None:
    """What the gateway does: schedule, poll until 303 (or a final answer), read once.

    Jobs are scheduled to run for an hour; the first "not ready" poll makes them ready, so
    every recording has one 200 "not ready" before the 303."""
    headers = {"Authorization": CREDENTIAL, "Accept": "application/json"}
    async with session.post(emu.schedule_url, json=SEED_BODY, headers=headers) as resp:
        await resp.read()
        location = resp.headers.get("Location")
    if location is None:
        return
    poll_url = _join(emu.schedule_url, location)
    job = emu.state.jobs[poll_url.rsplit("/", 1)[1]]
    for _ in range(6):
        async with session.get(poll_url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
        if resp.status == 303:
            result_url = _join(poll_url, resp.headers["Location"])
            break
        if resp.status == 404:
            return
        if resp.status == 200 and resp.content_type == "application/json":
            job.ready_at = 0.0
    else:
        return
    async with session.get(result_url, headers=headers) as resp:
        await resp.read()


def _slow(settings: LocationEmulatorSettings) -> LocationEmulator:
    """An emulator whose jobs run for an hour (the recorder's driver ends them)."""
    return LocationEmulator(dataclasses.replace(settings, duration=3600.0))


async def record() -> Recordings:
    """Run every scenario against a fresh emulator: ``{scenario: recording}``."""
    return await record_scenarios(SCENARIOS, _slow, _drive)


async def serve(settings: LocationEmulatorSettings, port: int) -> None:
    """Serve on ``127.0.0.1:port`` until interrupted."""
    await serve_on_port(LocationEmulator(settings), port)


def main() -> None:
    emulator_main(
        "The location-polling emulator.",
        record,
        lambda duration, port: serve(LocationEmulatorSettings(duration=duration), port),
    )


if __name__ == "__main__":
    main()
