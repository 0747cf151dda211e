"""The routes declared in the config (``[[routes]]``: location-poll, executeJob, …): create
and wait, and re-attach by ``/jobs/{route}/{id}/result``."""

from __future__ import annotations

import time

from aiohttp import web

from sync_gateway.core.errors import NotFound
from sync_gateway.core.types import CreateRequest, Retained
from sync_gateway.logging import bind_log_context
from sync_gateway.web import parse
from sync_gateway.web.calls import Calls, handed_out


class RouteViews(Calls):
    """Handlers of the configured routes, whatever their flavour."""

    async def create(self, request: web.Request, name: str) -> web.StreamResponse:
        """A [[routes]] entry: create through its adapter and block for its answer."""
        adapter = self.adapters[name]
        call = await self.read_call(request, adapter)
        query, fmt, budget = call.query, call.fmt, call.budget
        started = await self.jobs.create_once(adapter, call.create, call.budget.create_seconds)
        ref = started.ref
        bind_log_context(job_id=ref.id)
        watch = self.engine.watch(ref, started.credentials, started.last, owner=started.owner)
        del call, started  # nothing of the create is needed while waiting
        if budget.respond_async:
            return self.accepted(ref, watch.last, fmt, query, budget.applied)
        waiting_since = time.monotonic()
        snap = await self.engine.wait(watch, budget.seconds)
        return self.waited(watch, snap, waiting_since, fmt, query, budget.applied, budget.seconds)

    async def result(self, request: web.Request) -> web.StreamResponse:
        """GET/POST /jobs/{adapter}/{job}/result: re-attach to a job of a configured route."""
        params = parse.path_ids(request.match_info)
        query = request.query
        fmt = parse.parse_format(query, self.default_format)
        budget = parse.reattach_budget(query, request.headers, self.settings.wait)
        adapter = self.adapters.get(params["adapter"])
        if adapter is None:
            raise NotFound("no configured route has this name", parameter="adapter")
        if adapter.flavour == "theeye":
            parse.object_id("job", params["job"])
        plain = parse.credentials(query, request.headers)
        creds = adapter.credentials(CreateRequest(params, query, b"", None, plain))
        if request.method == "POST":
            await self.read_body(request)
        bind_log_context(job_id=params["job"])
        found = await self.jobs.find(adapter, params["job"], {}, creds)
        if isinstance(found, Retained):
            return self.answer(found.ref, found.snapshot, fmt)
        creator = self.jobs.is_creator(found.owner, creds)
        handed = handed_out(query, budget.seconds)
        waiting_since = time.monotonic()
        snap = await self.engine.wait(found, budget.seconds, creator)
        return self.waited(found, snap, waiting_since, fmt, query, budget.applied, handed)
