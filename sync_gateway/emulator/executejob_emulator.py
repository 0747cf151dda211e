"""An emulator of the executeJob / getJobStatus API (InfoLink REST style), for tests.

Built from ``seeds/executejob-getjobstatus.md`` and SPEC 3.3:

* ``POST /api/v1/executeJob.jsp`` takes ``apiKey``, ``appId``, ``operation``, ``isAsync``,
  ``noResultSchema``, ``jobId`` in a JSON body. With ``isAsync: true`` it answers
  ``{"status": "success", "result": {"jobId": …}}`` at once; with ``isAsync: false`` it answers
  when the job has run, ``{"status": "success", "result": {"results": […]}}`` (the seed's
  example), which is what the gateway must answer for an async job. A ``jobId`` already used
  by the same apiKey and app is the same job (the create is idempotent); by anybody else,
  an error, or (``scoped_ids``) that caller's own job of the same id.
* ``GET /api/v1/getJobStatus.jsp?apiKey=…&appId=…&jobId=…`` answers ``result.status``:
  ``running`` until the job's ``duration`` is over, then ``completed`` (with ``results``),
  ``completedWithError`` or ``stopped`` (with ``message``).
* Errors are ``{"status": "error", "result": {"message": …}}`` with HTTP ``error_status``.

Faults: 503 bursts on getJobStatus, non-JSON getJobStatus answers, a create that starts the job
but loses its answer (503), ``Retry-After``. ``counts`` tells the requests by kind (``create``,
``status``, ``jobs`` started) and ``exchanges`` keeps every request and answer, which
:func:`record` writes as the replay tests' recordings::

    python -m sync_gateway.emulator.executejob_emulator record tests/recordings/executejob
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
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

Outcome = Literal["completed", "completedWithError", "stopped"]
API_KEY = "demo-api-key-0123456789"
APP_ID = "7"


def _column(name: str) -> dict[str, Any]:
    return {
        "updateable": False,
        "typeStandard": {"typeStr": "text", "name": "text"},
        "name": name,
        "type": {"typeStr": "nvarchar(max)", "precision": -1, "name": "nvarchar", "scale": 0},
    }


def seed_results() -> list[dict[str, Any]]:
    """The seed's response example: the ``companies`` result with its schema."""
    return [
        {
            "result": {
                "schema": [_column("id"), _column("company_name")],
                "records": [
                    {"company_name": "IBM", "id": "1"},
                    {"company_name": "Microsoft", "id": "2"},
                ],
            },
            "name": "companies",
        }
    ]


@dataclass(frozen=True)
class ExecuteJobEmulatorSettings:
    """How the emulated upstream behaves; read at every request (replace to change)."""

    duration: float = 0.0
    outcome: Outcome = "completed"
    results: list[dict[str, Any]] = field(default_factory=seed_results)
    failure_results: bool = False
    message: str = "Step 'Load companies' failed: connection refused"
    api_keys: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {API_KEY: (APP_ID,)})
    error_status: int = 400
    status_errors: int = 0
    burst_status: int = 503  # the status of status_errors answers
    garbage_status: int = 0
    lost_creates: int = 0
    retry_after: int | None = None
    # Job ids belong to their apiKey (another apiKey may use the same id for its own job).
    scoped_ids: bool = False


def _slot(settings: ExecuteJobEmulatorSettings, key: str, job_id: str) -> str:
    """Where a job is kept: by its id, or by apiKey and id with ``scoped_ids``."""
    return f"{key}/{job_id}" if settings.scoped_ids else job_id


@dataclass
class InfoLinkJob:
    """One job."""

    id: str
    api_key: str
    app_id: str
    done_at: float
    settings: ExecuteJobEmulatorSettings
    polls: int = 0


@dataclass
class ExecuteJobState(ScenarioState[ExecuteJobEmulatorSettings, InfoLinkJob]):
    """Everything the emulator remembers."""


STATE = web.AppKey("executejob_state", ExecuteJobState)


def _error(settings: ExecuteJobEmulatorSettings, message: str) -> web.Response:
    return _json(settings.error_status, {"status": "error", "result": {"message": message}})


def _results(job: InfoLinkJob, no_schema: bool) -> list[dict[str, Any]]:
    results = copy.deepcopy(job.settings.results)
    if no_schema:
        for item in results:
            item.get("result", {}).pop("schema", None)
    return results


def _status_of(job: InfoLinkJob) -> dict[str, Any]:
    s = job.settings
    if time.monotonic() < job.done_at:
        return {"status": "running", "jobId": job.id}
    if s.outcome == "completed":
        return {"status": "completed", "jobId": job.id, "results": _results(job, False)}
    answer: dict[str, Any] = {"status": s.outcome, "jobId": job.id, "message": s.message}
    if s.failure_results:
        answer["results"] = _results(job, False)
    return answer


def _start(state: ExecuteJobState, body: dict[str, Any]) -> InfoLinkJob | web.Response:
    """The job a create names: new, or the same one again for the same caller."""
    s = state.settings
    key, app_id = body.get("apiKey"), body.get("appId")
    if not isinstance(key, str) or key not in s.api_keys:
        return _error(s, "Invalid API key.")
    if not isinstance(app_id, str | int) or str(app_id) not in s.api_keys[key]:
        return _error(s, f"No access to the app '{app_id}'.")
    if not isinstance(body.get("operation"), dict):
        return _error(s, "The parameter 'operation' is required.")
    job_id = body.get("jobId") or uuid.uuid4().hex
    found = state.jobs.get(_slot(s, key, str(job_id)))
    if found is not None:
        if found.api_key != key or found.app_id != str(app_id):
            return _error(s, f"The job id '{job_id}' is already in use.")
        return found
    job = InfoLinkJob(str(job_id), key, str(app_id), time.monotonic() + s.duration, s)
    state.jobs[_slot(s, key, job.id)] = job
    state.counts["jobs"] += 1
    return job


async def execute_job(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.counts["create"] += 1
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(state.settings, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _error(state.settings, "The request body must be a JSON object.")
    job = _start(state, body)
    if isinstance(job, web.Response):
        return job
    if state.counts["create"] <= state.settings.lost_creates:
        return _json(503, {"message": "Service Unavailable"})  # the job runs all the same
    if body.get("isAsync", True) is not False:
        return _json(200, {"status": "success", "result": {"jobId": job.id}})
    await asyncio.sleep(max(job.done_at - time.monotonic(), 0.0))
    status = _status_of(job)
    if status["status"] != "completed":
        return _error(state.settings, status["message"])
    results = _results(job, body.get("noResultSchema") is True)
    return _json(200, {"status": "success", "result": {"results": results}})


async def get_job_status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.counts["status"] += 1
    s = state.settings
    q = request.query
    key = q.get("apiKey", "")
    if key not in s.api_keys:
        return _error(s, "Invalid API key.")
    job = state.jobs.get(_slot(s, key, q.get("jobId", "")))
    if job is None or job.api_key != key or job.app_id != q.get("appId"):
        return _error(s, "Job not found.")
    job.polls += 1
    if job.polls <= job.settings.status_errors:
        return _json(job.settings.burst_status, {"message": "Service Unavailable"})
    if job.polls <= job.settings.status_errors + job.settings.garbage_status:
        return web.Response(status=200, text="<html>Maintenance</html>", content_type="text/html")
    status = _status_of(job)
    headers = None
    if status["status"] == "running" and job.settings.retry_after is not None:
        headers = {"Retry-After": str(job.settings.retry_after)}
    return _json(200, {"status": "success", "result": status}, headers)


record_exchange = exchange_recorder(
    lambda app: app[STATE].exchanges, kept_headers=("Content-Type", "Retry-After")
)


def build_app(state: ExecuteJobState) -> web.Application:
    app = web.Application(middlewares=[record_exchange])
    app[STATE] = state
    app.router.add_post("/api/v1/executeJob.jsp", execute_job)
    app.router.add_get("/api/v1/getJobStatus.jsp", get_job_status)
    return app


class ExecuteJobEmulator(ScenarioEmulator[ExecuteJobEmulatorSettings, InfoLinkJob]):
    """The emulator on a free loopback port: ``async with ExecuteJobEmulator(settings) as e``."""

    state: ExecuteJobState

    def __init__(
        self, settings: ExecuteJobEmulatorSettings | None = None, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(ExecuteJobState(settings or ExecuteJobEmulatorSettings()), host)

    def make_app(self) -> web.Application:
        return build_app(self.state)

    @property
    def api_url(self) -> str:
        """The base a route's ``upstream`` names."""
        return f"{self.url}/api/v1"


# ---- recordings for the replay tests ------------------------------------------------------

JOB_ID = "gw-recorded-job-0001"
OPERATION = {"opName": "RunScenario", "opParams": {"scenario": "Main", "parameters": {}}}
SCENARIOS: dict[str, tuple[str, ExecuteJobEmulatorSettings]] = {
    "completed": ("running, then completed with the seed's results", ExecuteJobEmulatorSettings()),
    "completed_with_error": (
        "running, then completedWithError with partial results",
        ExecuteJobEmulatorSettings(outcome="completedWithError", failure_results=True),
    ),
    "stopped": ("running, then stopped", ExecuteJobEmulatorSettings(outcome="stopped")),
    "status_5xx_burst": (
        "two 503 answers to getJobStatus, then completed",
        ExecuteJobEmulatorSettings(status_errors=2),
    ),
    "garbage_status": (
        "getJobStatus answered with HTML, then completed",
        ExecuteJobEmulatorSettings(garbage_status=1),
    ),
    "create_error": (
        "the create answers status:error (bad apiKey)",
        ExecuteJobEmulatorSettings(api_keys={}),
    ),
    "status_error": (
        "getJobStatus answers status:error with HTTP 200",
        ExecuteJobEmulatorSettings(error_status=200),
    ),
}


async def _drive(session: aiohttp.ClientSession, emu: ExecuteJobEmulator, scenario: str) -> None:
    """What the gateway does: executeJob with isAsync, then getJobStatus until final."""
    body: dict[str, Any] = {"apiKey": API_KEY, "appId": APP_ID, "operation": OPERATION}
    body |= {"jobId": JOB_ID, "isAsync": True}
    async with session.post(f"{emu.api_url}/executeJob.jsp", json=body) as resp:
        answer = await resp.json(content_type=None)
    if answer.get("status") != "success":
        return
    job = emu.state.jobs[JOB_ID]
    if scenario == "status_error":
        emu.state.jobs.pop(JOB_ID)
    params = {"apiKey": API_KEY, "appId": APP_ID, "jobId": JOB_ID}
    for _ in range(6):
        async with session.get(f"{emu.api_url}/getJobStatus.jsp", params=params) as resp:
            raw = await resp.read()
        if resp.status != 200 or resp.content_type != "application/json":
            continue
        status = orjson.loads(raw)
        if status.get("status") != "success":
            return
        if status["result"]["status"] != "running":
            return
        job.done_at = 0.0


def _slow(settings: ExecuteJobEmulatorSettings) -> ExecuteJobEmulator:
    """An emulator whose jobs run for an hour (the recorder's driver ends them)."""
    return ExecuteJobEmulator(dataclasses.replace(settings, duration=3600.0))


async def record() -> Recordings:
    """Run every scenario against a fresh emulator: ``{scenario: recording}``."""
    return await record_scenarios(SCENARIOS, _slow, _drive)


async def serve(settings: ExecuteJobEmulatorSettings, port: int) -> None:
    """Serve on ``127.0.0.1:port`` until interrupted."""
    await serve_on_port(ExecuteJobEmulator(settings), port)


def main() -> None:
    emulator_main(
        "The executeJob/getJobStatus emulator.",
        record,
        lambda duration, port: serve(ExecuteJobEmulatorSettings(duration=duration), port),
    )


if __name__ == "__main__":
    main()
