"""The TheEye routes (SPEC 2): create and wait, the supervisor-compatible create and
``wait_result`` loop, and re-attach by ``/job/{id}/result`` (or its secret form)."""

from __future__ import annotations

import time

from aiohttp import web
from multidict import MultiDict, MultiMapping

from sync_gateway.core.types import Created, Credentials, JobRef, Retained
from sync_gateway.logging import bind_log_context
from sync_gateway.upstream import DEFAULT
from sync_gateway.web import parse
from sync_gateway.web.calls import Calls, handed_out
from sync_gateway.web.respond import json_response, query_string, result_path


class TheEyeViews(Calls):
    """Handlers of the TheEye flavour's routes."""

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /{customer}/task/{task}/job and its secret form: wait for the result;
        POST /task/{task}/job (no customer): the created job at once, unless wait_result=true."""
        adapter = self.adapters[DEFAULT]
        call = await self.read_call(request, adapter)
        query, fmt, budget = call.query, call.fmt, call.budget
        wait_result = parse.wants_wait_result(query, call.body)
        started = await self.jobs.create_once(adapter, call.create, call.budget.create_seconds)
        ref = started.ref
        bind_log_context(job_id=ref.id)
        if wait_result:
            self.engine.watch(ref, started.credentials, started.last, owner=started.owner)
            return self._see_other_from_create(ref, query, started.created)
        if "customer" not in request.match_info:
            return self._pass_through(ref, started.created)
        watch = self.engine.watch(ref, started.credentials, started.last, owner=started.owner)
        del call, started  # nothing of the create is needed while waiting
        if budget.respond_async:
            return self.accepted(ref, watch.last, fmt, query, budget.applied)
        waiting_since = time.monotonic()
        snap = await self.engine.wait(watch, budget.seconds)
        return self.waited(watch, snap, waiting_since, fmt, query, budget.applied, budget.seconds)

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
            items.append(("limit", str(parse.SUPERVISOR_LIMIT)))
        if "timeout" not in query:
            items.append(("timeout", str(int(parse.SUPERVISOR_TIMEOUT))))
        resp = self._pass_through(ref, created)
        resp.set_status(303)
        resp.headers["Location"] = (
            self.public_prefix + result_path(ref, DEFAULT) + "?" + query_string(items)
        )
        return resp

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET/POST /job/{job}/result and /job/{job}/secret/{secret}/result."""
        params = parse.path_ids(request.match_info)
        parse.object_id("job", params["job"])
        query = request.query
        fmt = parse.parse_format(query, self.default_format)
        loop = parse.loop_params(query)
        budget = parse.reattach_budget(query, request.headers, self.settings.wait)
        hints = parse.customer_hint(query)
        presented = params.get("secret")
        creds = Credentials() if presented else parse.credentials(query, request.headers)
        if request.method == "POST":
            await self.read_body(request)  # bounded; a re-sent POST body is ignored
        bind_log_context(job_id=params["job"])
        adapter = self.adapters[DEFAULT]
        found = await self.jobs.find(adapter, params["job"], hints, creds, presented)
        if isinstance(found, Retained):
            return self.answer(found.ref, found.snapshot, fmt)
        creator = presented is not None or self.jobs.is_creator(found.owner, creds)
        started = time.monotonic()
        snap = await self.engine.wait(found, budget.seconds, creator)
        counter, limit = loop.counter, loop.limit
        if snap is None and counter is not None and (limit is None or counter < limit):
            return self._see_other_next(found.ref, query, counter)
        return self.waited(
            found, snap, started, fmt, query, budget.applied, handed_out(query, budget.seconds)
        )

    def _see_other_next(self, ref: JobRef, query: MultiMapping[str], counter: int) -> web.Response:
        items = MultiDict(query)
        items["counter"] = str(counter + 1)
        location = (
            self.public_prefix + result_path(ref, DEFAULT) + "?" + query_string(items.items())
        )
        return json_response(303, {}, [("Location", location), ("X-Job-Id", ref.id)])
