"""Building HTTP answers: JSON bodies, rendered job results, query strings for Location."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote

import structlog
from aiohttp import web

from sync_gateway.render import JSON_CONTENT_TYPE, Rendered, json_body

log = structlog.get_logger("sync_gateway.answers")


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
