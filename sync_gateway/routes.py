"""Thin aiohttp handlers: parse the request, call the engine, render the answer."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web
from multidict import MultiDict, MultiMapping

from sync_gateway import requests as rq
from sync_gateway.answers import json_response, query_string, rendered_response
from sync_gateway.config import Settings
from sync_gateway.errors import Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable
from sync_gateway.metrics import Metrics
from sync_gateway.render import Format, FormatKind, render_job
from sync_gateway.render import parse_format as _parse_format
from sync_gateway.retention import ResultStore, Retained
from sync_gateway.upstream.base import (
    Adapter,
    Created,
    CreateRequest,
    Credentials,
    JobRef,
    Snapshot,
)
from sync_gateway.waiting import Engine, Watch

log = structlog.get_logger("sync_gateway.routes")

RETRY_AFTER_SECONDS = 1
UNKNOWN = Snapshot(False, "in_progress", "")


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCall:
    """A parsed job-creating request."""

    create: CreateRequest
    query: MultiMapping[str]
    fmt: Format
    budget: rq.Budget
    body: Any


class Handlers:
    """The client-facing routes of the TheEye flavour."""

    # Set by attach() when the app starts: the routes are registered (as these bound methods,
    # no wrapper frame per waiting client) before the resources exist.
    engine: Engine
    store: ResultStore
    adapter: Adapter

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_format = FormatKind(settings.default_format)

    def attach(self, engine: Engine, store: ResultStore, adapter: Adapter) -> None:
        """Hand over the app's resources once they are open."""
        self.engine = engine
        self.store = store
        self.adapter = adapter

    # ---- parsing helpers -----------------------------------------------------------------

    def parse_format(self, query: MultiMapping[str]) -> Format:
        return _parse_format(query, self.default_format)

    async def read_body(self, request: web.Request) -> bytes:
        limit = self.settings.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit) from None

    async def _call(self, request: web.Request, adapter: Adapter) -> ClientCall:
        """Everything a job-creating request asks, validated before anything goes upstream;
        the caller is who ``adapter`` says the request's credentials make them."""
        if self.engine.draining:
            raise ServiceUnavailable("the gateway is shutting down; retry on another instance")
        params = rq.path_ids(request.match_info)
        query = request.query
        fmt = self.parse_format(query)
        budget = rq.budget(query, request.headers, self.settings.wait)
        creds = rq.credentials(query, request.headers)
        idem = rq.idempotency_key(request.headers)
        body = await self.read_body(request)
        parsed = rq.json_body(body)
        create = CreateRequest(params, query, body, request.content_type, creds, idem)
        create = dataclasses.replace(create, credentials=adapter.credentials(create))
        return ClientCall(create, query, fmt, budget, parsed)

    # ---- job-creating routes -------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /{customer}/task/{task}/job and its secret form: wait for the result;
        POST /task/{task}/job (no customer): the created job at once, unless wait_result=true."""
        blocking = "customer" in request.match_info
        call = await self._call(request, self.adapter)
        query, fmt, budget = call.query, call.fmt, call.budget
        wait_result = rq.wants_wait_result(query, call.body)
        create = call.create
        ref, last, created, creds = await self._create_once(self.adapter, create)
        structlog.contextvars.bind_contextvars(job_id=ref.id)
        if wait_result:
            self.engine.watch(ref, creds, last)
            return self._see_other_from_create(ref, query, created)
        if not blocking:
            return self._pass_through(ref, created)
        watch = self.engine.watch(ref, creds, last)
        del call, create, created, last  # nothing of the create is needed while waiting
        prefer = budget.applied
        if budget.respond_async:
            return self._accepted(ref, watch.last, fmt, query, prefer)
        started = time.monotonic()
        snap = await self.engine.wait(watch, budget.seconds)
        return self._waited(watch, snap, started, fmt, query, prefer)

    async def _create_once(
        self, adapter: Adapter, create: CreateRequest
    ) -> tuple[JobRef, Snapshot, Created | None, Credentials]:
        """Create the job upstream, or attach to the job a same-key request created.

        Returns the job's ref, its last known state, the upstream's answer (None on an
        idempotent replay) and the credentials the job is watched with."""
        key = None
        if create.idempotency_key is not None:
            key = rq.idempotency_claim(adapter.name, create)
            while (earlier := await self.store.claim(key)) is not None:
                try:
                    ref = await asyncio.shield(earlier)
                except asyncio.CancelledError:
                    if earlier.cancelled():  # the first create failed: claim the key anew
                        continue
                    raise
                log.info("idempotent_replay", job_id=ref.id)
                return ref, await self._last_known(ref), None, create.credentials
        task = asyncio.ensure_future(adapter.create(create))
        try:
            created = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The client hung up during the create: the job may exist; keep its result.
            task.add_done_callback(lambda t: self._adopt(t, create.credentials, key))
            raise
        except BaseException:
            if key is not None:
                self.store.settle(key, None)
            raise
        creds = created.credentials or create.credentials
        await self._adopted(created, creds, key)
        return created.ref, created.snapshot, created, creds

    def _adopt(self, task: asyncio.Future[Created], creds: Credentials, key: str | None) -> None:
        if task.cancelled() or task.exception() is not None:
            if key is not None:
                self.store.settle(key, None)
            return
        created = task.result()
        creds = created.credentials or creds
        self.engine.spawn(self._adopted(created, creds, key))
        watch = self.engine.watch(created.ref, creds, created.snapshot)
        if self.settings.cancel_on_disconnect:
            self.engine.spawn(self.engine.cancel_unless_waited(watch))

    async def _adopted(self, created: Created, creds: Credentials, key: str | None) -> None:
        await self.store.remember_ref(created.ref, creds.digest())
        if key is not None:
            self.store.settle(key, created.ref)
        log.debug("job_created", job_id=created.ref.id, state=created.snapshot.state)

    async def _last_known(self, ref: JobRef) -> Snapshot:
        watch = self.engine.watching(ref.key)
        if watch is not None:
            return watch.last
        retained = await self.store.get(ref.key)
        return retained.snapshot if retained is not None else UNKNOWN

    def _pass_through(self, ref: JobRef, created: Created | None) -> web.Response:
        if created is None:  # an idempotent replay of an async create: say where the job is
            return json_response(200, {"id": ref.id}, [("X-Job-Id", ref.id)])
        resp = web.Response(status=created.status, body=created.body)
        resp.headers["Content-Type"] = created.content_type
        resp.headers["X-Job-Id"] = ref.id
        return resp

    def _see_other_from_create(
        self, ref: JobRef, query: MultiMapping[str], created: Created | None
    ) -> web.Response:
        """wait_result=true: 303 into the re-attach loop, body = the created job."""
        items = [(k, v) for k, v in query.items() if k not in ("wait_result", "counter")]
        items += [("counter", "0")]
        if "limit" not in query:
            items.append(("limit", str(rq.SUPERVISOR_LIMIT)))
        if "timeout" not in query:
            items.append(("timeout", str(int(rq.SUPERVISOR_TIMEOUT))))
        resp = self._pass_through(ref, created)
        resp.set_status(303)
        resp.headers["Location"] = self._result_path(ref) + "?" + query_string(items)
        return resp

    # ---- waiting and answering -----------------------------------------------------------

    def _waited(
        self,
        watch: Watch,
        snap: Snapshot | None,
        started: float,
        fmt: Format,
        query: MultiMapping[str],
        prefer: tuple[str, ...] = (),
    ) -> web.Response:
        """The answer after a wait: the result, or 202 when the budget ran out first.

        The callers await ``engine.wait`` themselves: one coroutine frame less for each of
        thousands of waiting clients."""
        waited = time.monotonic() - started
        if snap is None:
            self.metrics.budget_expired.inc()
            self.metrics.wait_seconds.labels(outcome="accepted").observe(waited)
            return self._accepted(watch.ref, watch.last, fmt, query, prefer)
        self.metrics.wait_seconds.labels(outcome="finished").observe(waited)
        return self._answer(watch.ref, snap, fmt, prefer)

    def _answer(
        self, ref: JobRef, snap: Snapshot, fmt: Format, prefer: tuple[str, ...] = ()
    ) -> web.Response:
        rendered = snap.rendered or render_job(snap.loaded(), fmt)
        resp = rendered_response(rendered, ref.id)
        if prefer:
            resp.headers["Preference-Applied"] = ", ".join(prefer)
        return resp

    def _accepted(
        self,
        ref: JobRef,
        last: Snapshot,
        fmt: Format,
        query: MultiMapping[str],
        prefer: tuple[str, ...] = (),
    ) -> web.Response:
        """202: the job goes on; here is where to fetch its result."""
        items = list(fmt.query_items())
        if "access_token" in query:
            items.append(("access_token", query["access_token"]))
        location = self._result_path(ref) + "?" + query_string(items)
        headers = [
            ("Location", location),
            ("Retry-After", str(RETRY_AFTER_SECONDS)),
            ("X-Job-Id", ref.id),
        ]
        if prefer:
            headers.append(("Preference-Applied", ", ".join(prefer)))
        body = {**last.summary(ref.id), "location": location}
        return json_response(202, body, headers)

    def _result_path(self, ref: JobRef) -> str:
        job = quote(ref.id, safe="")
        if ref.adapter != self.adapter.name:
            return f"/jobs/{quote(ref.adapter, safe='')}/{job}/result"
        if ref.job_secret:
            return f"/job/{job}/secret/{quote(ref.job_secret, safe='')}/result"
        return f"/job/{job}/result"

    # ---- routes declared in the config (other upstream flavours) -------------------------

    async def configured(self, request: web.Request, adapter: Adapter) -> web.StreamResponse:
        """A [[routes]] entry: create through ``adapter`` and block for its answer."""
        call = await self._call(request, adapter)
        query, fmt, budget = call.query, call.fmt, call.budget
        create = call.create
        ref, last, _, creds = await self._create_once(adapter, create)
        structlog.contextvars.bind_contextvars(job_id=ref.id)
        running = self.engine.watching(ref.key)
        if running is not None:  # an upstream job id reused: only its owner may attach
            await self.engine.authorize(running.ref, running.owner, creds)
        watch = self.engine.watch(ref, creds, last)
        del call, create, last  # nothing of the create is needed while waiting
        if budget.respond_async:
            return self._accepted(ref, watch.last, fmt, query, budget.applied)
        started = time.monotonic()
        snap = await self.engine.wait(watch, budget.seconds)
        return self._waited(watch, snap, started, fmt, query, budget.applied)

    async def configured_result(self, request: web.Request) -> web.StreamResponse:
        """GET/POST /jobs/{adapter}/{job}/result: re-attach to a job of a configured route."""
        params = rq.path_ids(request.match_info)
        query = request.query
        fmt = self.parse_format(query)
        loop = rq.loop_params(query)
        adapter = self.engine.adapters.get(params["adapter"])
        if adapter is None:
            raise NotFound("no configured route has this name", parameter="adapter")
        plain = rq.credentials(query, request.headers)
        creds = adapter.credentials(CreateRequest(params, query, b"", None, plain))
        if request.method == "POST":
            await self.read_body(request)
        structlog.contextvars.bind_contextvars(job_id=params["job"])
        found = await self._find(adapter, params["job"], {}, creds, None)
        if isinstance(found, Retained):
            return self._answer(found.ref, found.snapshot, fmt)
        started = time.monotonic()
        snap = await self.engine.wait(found, self._reattach_seconds(loop))
        return self._waited(found, snap, started, fmt, query)

    # ---- re-attach -----------------------------------------------------------------------

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET/POST /job/{job}/result and /job/{job}/secret/{secret}/result."""
        params = rq.path_ids(request.match_info)
        query = request.query
        fmt = self.parse_format(query)
        loop = rq.loop_params(query)
        job_secret = params.get("secret")
        creds = (
            Credentials(secret=job_secret) if job_secret else rq.credentials(query, request.headers)
        )
        if request.method == "POST":
            await self.read_body(request)  # bounded; a re-sent POST body is ignored
        structlog.contextvars.bind_contextvars(job_id=params["job"])
        hints = {"customer": query.get("customer", "")}
        found = await self._find(self.adapter, params["job"], hints, creds, job_secret)
        if isinstance(found, Retained):
            return self._answer(found.ref, found.snapshot, fmt)
        started = time.monotonic()
        snap = await self.engine.wait(found, self._reattach_seconds(loop))
        counter, limit = loop.counter, loop.limit
        if snap is None and counter is not None and (limit is None or counter < limit):
            return self._see_other_next(found.ref, query, counter)
        return self._waited(found, snap, started, fmt, query)

    def _reattach_seconds(self, loop: rq.Loop) -> float:
        """How long a re-attach holds: its ``timeout``, else the default; never past the cap."""
        seconds = self.settings.wait.default_seconds if loop.timeout is None else loop.timeout
        return min(seconds, self.settings.wait.max_seconds)

    async def _find(
        self,
        adapter: Adapter,
        job_id: str,
        hints: Mapping[str, str],
        creds: Credentials,
        job_secret: str | None,
    ) -> Retained | Watch:
        """A job's kept result, or its watch, after checking that this caller may see it."""
        key = f"{adapter.name}:{job_id}"
        retained = await self.store.get(key)
        if retained is not None:
            await self._authorize(retained.ref, retained.owner, creds, job_secret)
            return retained
        watch = self.engine.watching(key)
        if watch is not None:
            await self._authorize(watch.ref, watch.owner, creds, job_secret)
            return watch
        known = await self.store.ref(key)
        if known is not None:
            known_ref, owner = known
            await self._authorize(known_ref, owner, creds, job_secret)
            # A secret-started job is followed through its secret URL, with no token.
            return self.engine.watch(known_ref, Credentials() if job_secret else creds, UNKNOWN)
        # A job this gateway never saw: the upstream decides, through the watch's own
        # requests; a flavour that cannot find a job by its id alone refuses here (404).
        ref = adapter.ref_for(job_id, hints)
        if job_secret is not None:
            ref = dataclasses.replace(ref, job_secret=job_secret)
        return self.engine.watch(ref, creds, UNKNOWN)

    async def _authorize(
        self, ref: JobRef, owner: bytes, creds: Credentials, job_secret: str | None
    ) -> None:
        if job_secret is not None:
            if ref.job_secret is None or not hmac.compare_digest(ref.job_secret, job_secret):
                raise Forbidden("the job secret does not match this job")
            return
        await self.engine.authorize(ref, owner, creds)

    def _see_other_next(self, ref: JobRef, query: MultiMapping[str], counter: int) -> web.Response:
        items = MultiDict(query)
        items["counter"] = str(counter + 1)
        location = self._result_path(ref) + "?" + query_string(items.items())
        return json_response(303, {}, [("Location", location), ("X-Job-Id", ref.id)])
