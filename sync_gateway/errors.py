"""One exception hierarchy for everything the gateway itself answers with an error.

The HTTP layer (``app.error_answer``) maps these to JSON answers in one place:
``{"error": <code>, "message": <one sentence>, ...extra}`` with ``status``.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway answers itself; never shown as a traceback."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(GatewayError):
    """The client's request is malformed: ids, query values, body (400)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, parameter: str | None = None, **extra: Any) -> None:
        if parameter is not None:
            extra["parameter"] = parameter
        super().__init__(message, **extra)


class PayloadTooLarge(GatewayError):
    """The request body is over ``server.max_body_bytes`` (413)."""

    status = 413
    code = "payload_too_large"


class NotFound(GatewayError):
    """Nothing the gateway knows answers to this path or job (404)."""

    status = 404
    code = "not_found"


class Forbidden(GatewayError):
    """The caller's credentials do not match the job's (403)."""

    status = 403
    code = "forbidden"


class ServiceUnavailable(GatewayError):
    """The gateway is draining or not ready (503)."""

    status = 503
    code = "unavailable"


class UpstreamError(GatewayError):
    """Something went wrong talking to the upstream job API."""

    status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """Unreachable, reset, or answered 5xx (502)."""

    code = "upstream_unavailable"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered something the adapter cannot read (502)."""

    code = "upstream_bad_response"


class ResultTooLarge(UpstreamError):
    """The job's result is larger than ``upstream.max_result_bytes`` (502)."""

    code = "result_too_large"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (504)."""

    status = 504
    code = "upstream_timeout"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request (4xx): its status and body are passed through."""

    code = "upstream_rejected"

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"the upstream answered {status}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
