"""Making HTTP answers: JSON bodies, a finished job's answer, the 202 that says where to come
back, and the query strings of the ``Location`` headers the gateway hands out."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

import structlog
from aiohttp import web

from sync_gateway.core.types import Format, JobRef, Rendered, Snapshot
from sync_gateway.render import render
from sync_gateway.render.common import JSON_CONTENT_TYPE, HeaderLimits, json_body

log = structlog.get_logger("sync_gateway.web")

RETRY_AFTER_SECONDS = 1


def query_string(items: Iterable[tuple[str, str]]) -> str:
    """A query string whose valueless flags stay bare (``?parse&full``), as the seeds write."""
    return "&".join(
        quote(k, safe="") if v == "" else f"{quote(k, safe='')}={quote(v, safe='')}"
        for k, v in items
    )


def json_response(
    status: int, value: object, headers: Iterable[tuple[str, str]] = ()
) -> web.Response:
    resp = web.Response(status=status, body=json_body(value))
    resp.headers["Content-Type"] = JSON_CONTENT_TYPE
    for name, val in headers:
        resp.headers[name] = val
    return resp


def rendered_response(rendered: Rendered, job_id: str) -> web.Response:
    resp = web.Response(status=rendered.status, body=rendered.body)
    resp.headers["Content-Type"] = rendered.content_type
    for name, value in rendered.headers:
        resp.headers.add(name, value)
    resp.headers["X-Job-Id"] = job_id
    if rendered.dropped:
        log.info("task_headers_dropped", job_id=job_id, dropped=list(rendered.dropped))
    return resp


def result_answer(
    ref: JobRef,
    snap: Snapshot,
    fmt: Format,
    limits: HeaderLimits,
    prefer: tuple[str, ...] = (),
) -> web.Response:
    """The answer of a finished job: outcome → render → response, for every flavour."""
    resp = rendered_response(render(snap, fmt, limits), ref.id)
    if prefer:
        resp.headers["Preference-Applied"] = ", ".join(prefer)
    return resp


def accepted(
    ref: JobRef, last: Snapshot, location: str, prefer: tuple[str, ...] = ()
) -> web.Response:
    """202: the job goes on; ``location`` is where to fetch its result."""
    headers = [
        ("Location", location),
        ("Retry-After", str(RETRY_AFTER_SECONDS)),
        ("X-Job-Id", ref.id),
    ]
    if prefer:
        headers.append(("Preference-Applied", ", ".join(prefer)))
    return json_response(202, {**last.summary(ref.id), "location": location}, headers)


def result_path(ref: JobRef, default_adapter: str) -> str:
    """The re-attach path of a job: TheEye's own form, or ``/jobs/{route}/{id}/result``."""
    job = quote(ref.id, safe="")
    if ref.adapter != default_adapter:
        return f"/jobs/{quote(ref.adapter, safe='')}/{job}/result"
    if ref.job_secret:
        return f"/job/{job}/secret/{quote(ref.job_secret, safe='')}/result"
    return f"/job/{job}/result"
