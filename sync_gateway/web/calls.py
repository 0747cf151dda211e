"""What the job views share: reading a job-creating call, and waiting then answering.

Handlers are parse → one core call → respond; this base class holds the two steps that every
flavour's handlers have in common, and the resources handed over when the app starts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from sync_gateway.config import Settings
from sync_gateway.core.engine import Engine
from sync_gateway.core.errors import PayloadTooLarge, ServiceUnavailable
from sync_gateway.core.following import Watch
from sync_gateway.core.jobs import Jobs
from sync_gateway.core.types import CreateRequest, Format, FormatKind, JobRef, Snapshot
from sync_gateway.metrics import Metrics
from sync_gateway.render.common import HeaderLimits
from sync_gateway.upstream import DEFAULT
from sync_gateway.upstream.base import Adapter
from sync_gateway.web import parse
from sync_gateway.web.respond import accepted, query_string, result_answer, result_path


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """A parsed job-creating request."""

    create: CreateRequest
    query: MultiMapping[str]
    fmt: Format
    budget: parse.Budget
    body: Any


def handed_out(query: MultiMapping[str], seconds: float) -> float:
    """The budget a re-attach hands on in its next Location: the ``wait`` it came with
    (the client's first budget), else the one it waited."""
    raw = query.get("wait")
    return float(raw) if raw is not None and raw.isdigit() else seconds


class Calls:
    """Shared steps of the job views. Resources arrive with :meth:`attach` at start-up: the
    routes are registered (as bound methods, no wrapper frame per waiting client) before."""

    jobs: Jobs
    engine: Engine
    adapters: dict[str, Adapter]

    def __init__(self, settings: Settings, metrics: Metrics, limits: HeaderLimits) -> None:
        self.settings = settings
        self.metrics = metrics
        self.limits = limits
        self.default_format = FormatKind(settings.default_format)
        # Behind a proxy's path prefix: the Locations handed out are the client's paths.
        self.public_prefix = settings.server.public_prefix

    def attach(self, jobs: Jobs, adapters: dict[str, Adapter]) -> None:
        """Hand over the app's resources once they are open."""
        self.jobs = jobs
        self.engine = jobs.engine
        self.adapters = adapters

    async def read_body(self, request: web.Request) -> bytes:
        """The body, refused past ``server.max_body_bytes`` (read before it is trusted)."""
        limit = self.settings.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"the request body is over {limit} bytes", limit=limit) from None

    async def read_call(self, request: web.Request, adapter: Adapter) -> Call:
        """Everything a job-creating request asks, validated before anything goes upstream;
        the caller is who ``adapter`` says the request's credentials make them."""
        if self.engine.draining:
            raise ServiceUnavailable("the gateway is shutting down; retry on another instance")
        params = parse.path_ids(request.match_info)
        query = request.query
        fmt = parse.parse_format(query, self.default_format)
        budget = parse.budget(query, request.headers, self.settings.wait)
        creds = parse.credentials(query, request.headers)
        idem = parse.idempotency_key(request.headers)
        body = await self.read_body(request)
        parsed = parse.json_body(body)
        create = CreateRequest(params, query, body, request.content_type, creds, idem)
        resolved = adapter.credentials(create)
        if resolved is not creds:  # (replace() costs more than the rest of the parse)
            create = dataclasses.replace(create, credentials=resolved)
        return Call(create, query, fmt, budget, parsed)

    def waited(
        self,
        watch: Watch,
        snap: Snapshot | None,
        started: float,
        fmt: Format,
        query: MultiMapping[str],
        prefer: tuple[str, ...] = (),
        seconds: float | None = None,
    ) -> web.Response:
        """The answer after a wait (``snap``, from ``engine.wait`` awaited by the view itself:
        no coroutine frame more for each waiting client): the result, or 202 when the budget
        ran out first, whose Location keeps ``seconds``."""
        waited = time.monotonic() - started
        if snap is None:
            self.metrics.budget_expired.inc()
            self.metrics.wait_seconds.labels(outcome="accepted").observe(waited)
            return self.accepted(watch.ref, watch.last, fmt, query, prefer, seconds)
        self.metrics.wait_seconds.labels(outcome="finished").observe(waited)
        return self.answer(watch.ref, snap, fmt, prefer)

    def answer(
        self, ref: JobRef, snap: Snapshot, fmt: Format, prefer: tuple[str, ...] = ()
    ) -> web.Response:
        return result_answer(ref, snap, fmt, self.limits, prefer)

    def accepted(
        self,
        ref: JobRef,
        last: Snapshot,
        fmt: Format,
        query: MultiMapping[str],
        prefer: tuple[str, ...] = (),
        seconds: float | None = None,
    ) -> web.Response:
        """202 with a Location that keeps the format, the budget the client first asked for
        (``wait``: a client with a short read timeout can poll it safely), and a token the
        client sent in the query (never one it sent in a header)."""
        items = list(fmt.query_items())
        if ref.adapter == DEFAULT and ref.customer and not ref.job_secret:
            # Where to ask about the job: a replica that never saw it (a restart) still can.
            items.append(("customer", ref.customer))
        if seconds is not None:
            items.append(("wait", str(math.ceil(max(seconds, 0.0)))))
        if query.get("access_token"):
            items.append(("access_token", query["access_token"]))
        location = self.public_prefix + result_path(ref, DEFAULT) + "?" + query_string(items)
        return accepted(ref, last, location, prefer)
