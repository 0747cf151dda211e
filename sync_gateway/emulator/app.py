"""The aiohttp application: the supervisor's job routes plus ``/_emulator/*`` controls."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson
from aiohttp import web

from .auth import (
    OBJECT_ID,
    STATE_KEY,
    ErrorAnswer,
    authenticate,
    body_arguments,
    check_secret,
    ensure_allowed,
    fail,
    find_job,
    hang,
    json_response,
    listed,
    require_role,
)
from .formats import clamp_timeout, encode_query, js_number, js_number_str, parse_job_response
from .recipe import Task, load_recipe
from .runner import cancel_job, kill_all, start_job
from .state import EmulatorState, Fault, Job

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class EmulatorSettings:
    """How the emulator behaves; the defaults are the supervisor's (theeye-supervisor 4.15.3).

    ``autoremove_limit``: every create keeps the newest N jobs of its task and deletes the
    older finished ones (``removeExceededJobsCountByTask``, core/service/job/index.js; N is the
    task's ``autoremove_completed_jobs_limit``, default 5 in core/entity/task/base-properties.js
    and ``JOBS_LOG_COUNT_LIMIT`` in core/constants/jobs.js); None keeps every job.

    ``notifications``: a held ``/job/{id}/result`` wakes when its job finishes. The supervisor
    only learns it from the ``{customer_id}:job-finished:{job_id}`` Redis message that TheEye's
    gateway publishes (core/controllers/job/result.js ``waitJobResult``) after the supervisor
    posted the event to it (``emitJobFinishedNotification``, core/service/job/index.js); False
    is a supervisor whose gateway does not publish where it subscribes: a poll holds its whole
    timeout. ``notification_delay`` (seconds) is how long that round trip takes.
    """

    recipe: pathlib.Path | None = None
    min_timeout: float = 10.0
    max_timeout: float = 60.0
    read_once: bool = False
    autoremove_limit: int | None = 5
    notifications: bool = True
    notification_delay: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_timeout <= self.max_timeout:
            raise ValueError("need 0 <= min_timeout <= max_timeout")
        limit = self.autoremove_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise ValueError("autoremove_limit must be an integer or None")
        if limit is not None and limit < 1:
            raise ValueError("autoremove_limit must be at least 1 (None: keep every job)")
        if not self.notification_delay >= 0:
            raise ValueError("notification_delay must be >= 0")


SETTINGS_KEY = web.AppKey("emulator_settings", EmulatorSettings)


# -- job routes -------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    settings = request.app[SETTINGS_KEY]
    secret = request.match_info.get("secret")
    task_id = request.match_info["task"]
    task: Task | None
    if secret is not None:
        task = state.recipe.tasks.get(task_id)
        if task is None:
            raise fail(404, "task not found")
        check_secret(secret, task.secret)
        origin = "secret"
    else:
        customer, member = await authenticate(request)
        require_role(member, "user")  # core/controllers/task/job.js
        task = state.recipe.tasks.get(task_id)
        if task is None or task.customer != customer.name:
            raise fail(404, "task not found")
        await ensure_allowed(request, member, list(task.acl))
        origin = "user"
    args, body_wait = body_arguments(request, await request.read())
    job = state.new_job(task, args, origin)
    body = orjson.dumps(job.doc)  # snapshot: lifecycle "ready", before the job runs
    start_job(state, job, args)
    if settings.autoremove_limit is not None:
        state.autoremove(task.id, settings.autoremove_limit)
    query = request.query
    if query.get("wait_result") == "true" or body_wait:
        updates = {
            "counter": "0",
            "limit": query.get("limit") or "10",
            "timeout": query.get("timeout") or "10",
        }
        path = _result_path(job, secret is not None)
        location = f"{path}?{encode_query(query.items(), updates)}"
        return web.Response(
            status=303, body=body, content_type="application/json", headers={"Location": location}
        )
    return web.Response(status=200, body=body, content_type="application/json")


def _result_path(job: Job, by_secret: bool) -> str:
    if by_secret:
        return f"/job/{job.id}/secret/{job.secret}/result"
    return f"/job/{job.id}/result"


def _answer(request: web.Request, job: Job) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    formatted = parse_job_response(job.doc, request.query)
    if settings.read_once and job.finished:
        request.app[STATE_KEY].forget(job)
    headers = formatted.headers or {}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if isinstance(formatted.body, str) and content_type and "json" not in content_type.lower():
        return web.Response(status=formatted.status, text=formatted.body, headers=headers)
    return json_response(formatted.status, formatted.body, headers)


async def _notified(job: Job, timeout: float, settings: EmulatorSettings) -> bool:
    """``waitJobResult`` (core/controllers/job/result.js): True when the job-finished message
    arrives within ``timeout``, False when the timer fires first. Without notifications no
    message comes: the request is held for the whole timeout."""
    if not settings.notifications:
        await asyncio.sleep(timeout)
        return False
    try:
        async with asyncio.timeout(timeout):
            await job.done.wait()
            if settings.notification_delay:
                await asyncio.sleep(settings.notification_delay)
    except TimeoutError:
        return False
    return True


async def job_result(request: web.Request) -> web.Response:
    """The supervisor's ``resultPolling`` (core/controllers/job/result.js)."""
    settings = request.app[SETTINGS_KEY]
    state = request.app[STATE_KEY]
    secret = request.match_info.get("secret")
    if secret is not None:
        job = find_job(request, None)
        check_secret(secret, job.secret)
    else:
        customer, member = await authenticate(request)
        job = find_job(request, customer)
        await ensure_allowed(request, member, job.doc["acl"])
    if job.finished:
        return _answer(request, job)
    query = request.query
    timeout = clamp_timeout(query.get("timeout"), settings.min_timeout, settings.max_timeout)
    if not await _notified(job, timeout, settings):
        # the timer fired: 408 or 303 whatever the job did meanwhile (no message, no re-read)
        if query.get("limit") == query.get("counter"):
            return json_response(408, "Request Timeout")
        counter = js_number(query.get("counter"))
        updates = {"counter": "0" if counter != counter else js_number_str(counter + 1)}
        location = f"{_result_path(job, secret is not None)}?{encode_query(query.items(), updates)}"
        return json_response(303, {}, {"Location": location})
    current = state.jobs.get(job.id)
    if current is None:
        # Job.findById(...).then(job => { if (!job) throw new ClientError(…) }) with no catch
        # (and ClientError not even imported there): the answer never comes.
        await hang(state)
    return _answer(request, current)


async def get_job(request: web.Request) -> web.Response:
    customer, member = await authenticate(request)
    job = find_job(request, customer)
    await ensure_allowed(request, member, job.doc["acl"])
    body = orjson.dumps(job.doc)
    if request.app[SETTINGS_KEY].read_once and job.finished:
        request.app[STATE_KEY].forget(job)
    return web.Response(status=200, body=body, content_type="application/json")


# What the supervisor's job listing leaves out of each document (controllers/job/crud.js).
LIST_EXCLUDED = frozenset(
    {"task_arguments_values", "script_arguments", "output", "result", "task", "script", "env"}
)


def _query_list(request: web.Request, name: str) -> list[str]:
    """A qs-style array parameter: ``name[]=a&name[]=b`` or ``name[0]=a``, or one ``name=a``."""
    values = request.query.getall(f"{name}[]", []) + request.query.getall(name, [])
    values += [v for k, v in request.query.items() if k.startswith(f"{name}[") and k[-2] != "["]
    return [v for item in values for v in item.split(",") if v]


def _castable_object_id(value: str) -> bool:
    """What Mongoose 5 (bson 1.x ``ObjectID``) casts: 24 hex characters, or any 12."""
    return bool(OBJECT_ID.fullmatch(value)) or len(value) == 12


def _by_seq(job: Job) -> int:
    return job.seq


async def list_jobs(request: web.Request) -> web.Response:
    """``GET /{customer}/job`` (core/controllers/job/crud.js ``fetch``): the customer's jobs
    filtered like the supervisor's dbFilter (``where[_id][$in][]=…``,
    ``where[lifecycle][$in][]=…``, ``limit``), without the heavy fields; below admin, only the
    jobs whose ``acl`` names the member (``listed``). An agent token gets the agent's queue
    instead, which needs a registered host: 400 ``"host is required"``. An ``_id`` Mongoose
    cannot cast fails the query: 500 ``"Internal Server Error"`` (``res.sendError``)."""
    state = request.app[STATE_KEY]
    customer, member = await authenticate(request)
    if member.role == "agent":
        return json_response(400, "host is required")
    asked = _query_list(request, "where[_id][$in]")
    if not all(_castable_object_id(i) for i in asked):
        return json_response(500, "Internal Server Error")
    ids = {i.lower() for i in asked}  # a 12-character id casts to one no job has
    lifecycles = set(_query_list(request, "where[lifecycle][$in]"))
    limit = int(request.query.get("limit") or 0) or None
    found = []
    hidden = 0
    # MongoDB finds `_id $in` through its index: look the asked ids up (in the collection's
    # order, as a scan would list them) instead of scanning every job for each listing.
    jobs: Iterable[Job] = state.jobs.values()
    if asked:
        jobs = sorted((j for i in ids if (j := state.jobs.get(i)) is not None), key=_by_seq)
    for job in jobs:
        doc = job.doc
        if doc.get("customer_name") != customer.name:
            continue
        if (asked and doc["id"] not in ids) or (lifecycles and doc["lifecycle"] not in lifecycles):
            continue
        if not listed(member, doc["acl"]):
            hidden += 1
            continue
        found.append({k: v for k, v in doc.items() if k not in LIST_EXCLUDED})
        if limit is not None and len(found) >= limit:
            break
    state.event("list_hidden", hidden)
    return web.Response(status=200, body=orjson.dumps(found), content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    """``PUT /{customer}/job/{id}/cancel`` (core/controllers/job/lifecycle.js): the dispatcher's
    ``cancel`` reports its errors to a callback the controller never passes, so the answer is
    always 204 — a finished job simply stays as it is (``cancel_job``)."""
    customer, member = await authenticate(request)
    job = find_job(request, customer)
    await ensure_allowed(request, member, job.doc["acl"])
    who = {"email": member.email, "id": customer.id, "username": member.username or customer.name}
    cancel_job(job, who)
    return web.Response(status=204)


# -- /_emulator controls ----------------------------------------------------------------------


async def stats(request: web.Request) -> web.Response:
    return json_response(200, request.app[STATE_KEY].stats())


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset_stats()
    return json_response(200, "ok")


async def timing(request: web.Request) -> web.Response:
    found = request.app[STATE_KEY].timing(request.match_info["job"])
    if found is None:
        raise fail(404, "job not found")
    return json_response(200, {"created_at": found[0], "finished_at": found[1]})


async def add_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        data = orjson.loads(await request.read())
        items = data if isinstance(data, list) else [data]
        faults = [Fault.from_json(item) for item in items]
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise fail(400, str(exc)) from None
    state.faults.extend(faults)
    return json_response(200, {"faults": len(state.faults)})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return json_response(200, {"faults": 0})


# -- fault injection and counting -------------------------------------------------------------


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


@web.middleware
async def emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_name = request.match_info.route.name
    if route_name is not None and route_name.startswith("emulator"):
        try:
            return await handler(request)
        except ErrorAnswer as exc:
            return exc.response()
    state = request.app[STATE_KEY]
    kind = route_name.split(":")[0] if route_name else None
    state.count(kind, request.match_info.get("job"))
    fault = state.take_fault(kind)
    try:
        if fault is None:
            return await handler(request)
        if fault.action == "slow":
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        if fault.action == "garbage":
            body = fault.body if fault.body is not None else "<html>not json {"
            return web.Response(status=200, text=body, content_type="application/json")
        if fault.action in ("reset", "reset_after_create"):
            if fault.action == "reset_after_create":
                with contextlib.suppress(web.HTTPException, ErrorAnswer):
                    await handler(request)
            _abort(request)
            raise asyncio.CancelledError
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        if fault.body is not None:
            return web.Response(
                status=fault.status, text=fault.body, headers=headers, content_type="text/plain"
            )
        message = {"statusCode": fault.status, "message": "injected fault"}
        return json_response(fault.status, message, headers)
    except ErrorAnswer as exc:
        return exc.response()
    except web.HTTPException as exc:
        if route_name is None and exc.status in (404, 405):  # unmatched: restify-like JSON
            code = "ResourceNotFound" if exc.status == 404 else "MethodNotAllowed"
            return json_response(exc.status, {"code": code, "message": f"{request.path} failed"})
        raise


# -- assembly ---------------------------------------------------------------------------------


def build_app(settings: EmulatorSettings, state: EmulatorState) -> web.Application:
    """An application over an existing state (so a server can be restarted keeping its jobs)."""
    app = web.Application(middlewares=[emulator_middleware])
    app[STATE_KEY] = state
    app[SETTINGS_KEY] = settings
    add = app.router.add_route
    add("GET", "/_emulator/stats", stats, name="emulator:stats")
    add("POST", "/_emulator/reset-stats", reset_stats, name="emulator:reset-stats")
    add("GET", "/_emulator/jobs/{job}/timing", timing, name="emulator:timing")
    add("POST", "/_emulator/faults", add_faults, name="emulator:faults")
    add("DELETE", "/_emulator/faults", clear_faults, name="emulator:clear-faults")
    add("POST", "/{customer}/task/{task}/secret/{secret}/job", create_job, name="create:cs")
    add("POST", "/task/{task}/secret/{secret}/job", create_job, name="create:s")
    add("POST", "/{customer}/task/{task}/job", create_job, name="create:c")
    add("POST", "/task/{task}/job", create_job, name="create")
    for method in ("GET", "POST"):
        add(method, "/job/{job}/secret/{secret}/result", job_result, name=f"result:s:{method}")
        add(method, "/job/{job}/result", job_result, name=f"result:{method}")
    add("PUT", "/{customer}/job/{job}/cancel", cancel, name="cancel")
    add("GET", "/{customer}/job/{job}", get_job, name="job")
    add("GET", "/{customer}/job", list_jobs, name="list")
    return app


def create_emulator_app(settings: EmulatorSettings) -> web.Application:
    """A self-contained emulator app; its running jobs are killed on the app's cleanup."""
    state = EmulatorState(load_recipe(settings.recipe))
    app = build_app(settings, state)

    async def _cleanup(app: web.Application) -> None:
        await shutdown_jobs(app[STATE_KEY])

    app.on_cleanup.append(_cleanup)
    return app


async def shutdown_jobs(state: EmulatorState) -> None:
    """Kill running subprocesses and timers and wait for their runner tasks."""
    kill_all(state)
    runners = list(state.runners)
    if runners:
        await asyncio.gather(*runners, return_exceptions=True)
