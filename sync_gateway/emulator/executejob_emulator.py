"""An emulator of the executeJob / getJobStatus API (InfoLink REST style), for tests.

Built from ``seeds/executejob-getjobstatus.md`` and SPEC 3.3:

* ``POST /api/v1/executeJob.jsp`` takes ``apiKey``, ``appId``, ``operation``, ``isAsync``,
  ``noResultSchema``, ``jobId`` in a JSON body. With ``isAsync: true`` it answers
  ``{"status": "success", "result": {"jobId": …}}`` at once; with ``isAsync: false`` it answers
  when the job has run, ``{"status": "success", "result": {"results": […]}}`` (the seed's
  example), which is what the gateway must answer for an async job. A ``jobId`` already used
  by the same apiKey and app is the same job (the create is idempotent); by anybody else,
  an error.
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

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web

Outcome = Literal["completed", "completedWithError", "stopped"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RECORDED_ORIGIN = "http://upstream.test"
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
class ExecuteJobState:
    """Everything the emulator remembers."""

    settings: ExecuteJobEmulatorSettings
    jobs: dict[str, InfoLinkJob] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    exchanges: list[dict[str, Any]] = field(default_factory=list)


STATE = web.AppKey("executejob_state", ExecuteJobState)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


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
    found = state.jobs.get(str(job_id))
    if found is not None:
        if found.api_key != key or found.app_id != str(app_id):
            return _error(s, f"The job id '{job_id}' is already in use.")
        return found
    job = InfoLinkJob(str(job_id), key, str(app_id), time.monotonic() + s.duration, s)
    state.jobs[job.id] = job
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
    job = state.jobs.get(q.get("jobId", ""))
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


@web.middleware
async def record_exchange(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep every request and answer, for :func:`record`."""
    body = await request.read()
    resp = await handler(request)
    sent = resp.body if isinstance(resp, web.Response) else None
    sent = sent if isinstance(sent, bytes | bytearray) else b""
    request.app[STATE].exchanges.append(
        {
            "method": request.method,
            "url": str(request.url),
            "request_body": body.decode("utf-8", "replace"),
            "status": resp.status,
            "headers": {
                k: resp.headers[k] for k in ("Content-Type", "Retry-After") if k in resp.headers
            },
            "body": bytes(sent).decode("utf-8", "replace"),
        }
    )
    return resp


def build_app(state: ExecuteJobState) -> web.Application:
    app = web.Application(middlewares=[record_exchange])
    app[STATE] = state
    app.router.add_post("/api/v1/executeJob.jsp", execute_job)
    app.router.add_get("/api/v1/getJobStatus.jsp", get_job_status)
    return app


class ExecuteJobEmulator:
    """The emulator on a free loopback port: ``async with ExecuteJobEmulator(settings) as e``."""

    def __init__(
        self, settings: ExecuteJobEmulatorSettings | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.state = ExecuteJobState(settings or ExecuteJobEmulatorSettings())
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def settings(self) -> ExecuteJobEmulatorSettings:
        return self.state.settings

    @settings.setter
    def settings(self, value: ExecuteJobEmulatorSettings) -> None:
        self.state.settings = value

    @property
    def counts(self) -> Counter[str]:
        return self.state.counts

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The base a route's ``upstream`` names."""
        return f"{self.url}/api/v1"

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.state), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ExecuteJobEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


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


def _placeholders(exchanges: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    text = orjson.dumps(exchanges).decode().replace(origin, RECORDED_ORIGIN)
    cleaned: list[dict[str, Any]] = orjson.loads(text)
    return cleaned


async def record() -> dict[str, dict[str, Any]]:
    """Run every scenario against a fresh emulator: ``{scenario: recording}``."""
    recordings = {}
    async with aiohttp.ClientSession() as session:
        for name, (description, settings) in SCENARIOS.items():
            slow = dataclasses.replace(settings, duration=3600.0)
            async with ExecuteJobEmulator(slow) as emu:
                await _drive(session, emu, name)
                exchanges = _placeholders(emu.state.exchanges, emu.url)
            recordings[name] = {
                "scenario": name,
                "description": description,
                "exchanges": exchanges,
            }
    return recordings


def write_recordings(out_dir: Path, recordings: dict[str, dict[str, Any]]) -> list[Path]:
    """One ``<scenario>.json`` per recording."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in recordings.items():
        path = out_dir / f"{name}.json"
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        written.append(path)
    return written


async def serve(settings: ExecuteJobEmulatorSettings, port: int) -> None:
    """Serve on ``127.0.0.1:port`` until interrupted."""
    server = ExecuteJobEmulator(settings)
    server.port = port
    await server.start()
    print(server.url, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="The executeJob/getJobStatus emulator.")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="write the replay tests' recordings")
    rec.add_argument("out_dir", type=Path, help="where to write the JSON recordings")
    run = commands.add_parser("serve", help="serve on a loopback port")
    run.add_argument("--port", type=int, default=0)
    run.add_argument("--duration", type=float, default=2.0, help="seconds a job runs")
    args = parser.parse_args()
    if args.command == "record":
        for path in write_recordings(args.out_dir, asyncio.run(record())):
            print(path)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ExecuteJobEmulatorSettings(duration=args.duration), args.port))


if __name__ == "__main__":
    main()
