"""Errors → HTTP, in one place: the status table, the JSON error answer, and the one
middleware (request id, access log line, request metrics, errors answered as JSON).

An error's answer is ``{"error": <code>, "message": <one sentence>, ...extra}`` with the status
the table gives its class (the most specific class listed wins); an upstream's refusal
(:class:`UpstreamRejected`) is passed through with the upstream's own status and body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from sync_gateway.core import errors as e
from sync_gateway.core import tracing
from sync_gateway.logging import new_log_context
from sync_gateway.web.keys import METRICS
from sync_gateway.web.respond import json_response

log = structlog.get_logger("sync_gateway.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS: Final[dict[type[e.GatewayError], int]] = {
    e.BadRequest: 400,
    e.PayloadTooLarge: 413,
    e.NotFound: 404,
    e.Forbidden: 403,
    e.TooManyRequests: 429,
    e.ServiceUnavailable: 503,
    e.StartupError: 500,
    e.UpstreamError: 502,
    e.UpstreamTimeout: 504,
    e.OutcomeUnknown: 504,
}


def status_of(exc: e.GatewayError) -> int:
    """The HTTP status of a gateway error: its most specific class in :data:`STATUS`."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every error becomes a JSON answer here; never a traceback.

    Re-raises what is not an error (an HTTPException below 400: a redirect)."""
    if isinstance(exc, e.UpstreamRejected):
        resp = web.Response(status=exc.upstream_status, body=exc.body)
        resp.headers["Content-Type"] = exc.content_type or "application/octet-stream"
        for name, value in exc.headers:
            resp.headers[name] = value
    elif isinstance(exc, e.GatewayError):
        resp = json_response(status_of(exc), exc.payload())
        if isinstance(exc, e.TooManyRequests):
            resp.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        return json_response(413, e.PayloadTooLarge("the request body is too large").payload())
    elif isinstance(exc, web.HTTPException):
        return _framework_error(exc)
    else:
        log.error("unhandled_error", path=request.path, exc_info=exc)
        return json_response(
            500, {"error": "internal_error", "message": "the gateway failed to answer"}
        )
    job_id = exc.extra.get("job_id")
    if job_id is not None:
        resp.headers["X-Job-Id"] = str(job_id)
    return resp


def _framework_error(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        raise exc
    if exc.status == 404:
        return json_response(404, e.NotFound("no such route").payload())
    if exc.status == 405:
        err = e.BadRequest("this method is not allowed on this route")
        allow = [("Allow", exc.headers["Allow"])] if "Allow" in exc.headers else []
        return json_response(405, {**err.payload(), "error": "method_not_allowed"}, allow)
    return json_response(exc.status, {"error": "http_error", "message": exc.reason})


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one structured log line per request, request metrics, JSON errors."""
    request_id = request.headers.get("X-Request-Id", "")[:128]
    if not (request_id.isascii() and request_id.isprintable()) or not request_id:
        request_id = tracing.random_hex(32)
    resource = request.match_info.route.resource
    # The route's pattern, never the path: a bounded label set with no ids or secrets in it.
    route_name = resource.canonical if resource is not None else "unmatched"
    trace = tracing.from_headers(request.headers)
    tracing.CURRENT.set(trace)  # carried to the upstream requests made for this call
    new_log_context(request_id=request_id, route=route_name, trace_id=trace.trace_id)
    started = time.monotonic()
    status = 500
    job_id: str | None = None
    try:
        # Errors are answered right here rather than in a middleware of their own: one
        # coroutine frame less for each of thousands of waiting clients.
        try:
            resp = await handler(request)
        except Exception as exc:
            resp = error_answer(request, exc)
        status = resp.status
        job_id = resp.headers.get("X-Job-Id")
        resp.headers["X-Request-Id"] = request_id
        return resp
    except web.HTTPException as exc:  # a redirect, re-raised by error_answer
        status = exc.status
        exc.headers["X-Request-Id"] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client hung up (nginx's convention); the job itself goes on
        raise
    finally:
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        request.app[METRICS].requests.labels(route=route_name, status=str(status)).inc()
        # Handlers bind job_id as soon as they know it; X-Job-Id covers the rest.
        extra = {"job_id": job_id} if job_id else {}
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            duration_ms=duration_ms,
            **extra,
        )
