"""One exception hierarchy for everything the gateway answers or stops with itself.

No HTTP in here: each error names what went wrong (``code``, one sentence, extra context).
The web layer maps the classes to statuses in one table (``sync_gateway.web.errors``);
start-up turns :class:`StartupError` into one line and exit code 2.

::

    GatewayError                      code           meaning
    ├── BadRequest                    bad_request    the client's request is malformed
    │   └── PayloadTooLarge           payload_too_large  body over server.max_body_bytes
    ├── NotFound                      not_found      no such route, or a job nobody can find
    ├── Forbidden                     forbidden      this caller may not see this job (SPEC 5)
    ├── TooManyRequests               too_many_requests  an admission limit is reached
    ├── ServiceUnavailable            unavailable    draining, or not ready
    ├── StartupError                  startup_error  the gateway cannot start (config, port, extra)
    │   └── ConfigError               config_error   a setting is unknown or has a bad value
    └── UpstreamError                 upstream_error the upstream job API misbehaved
        ├── UpstreamUnavailable       upstream_unavailable   unreachable, reset, 5xx
        ├── UpstreamBadResponse       upstream_bad_response  an answer that cannot be read
        ├── UpstreamTimeout           upstream_timeout       no answer in time
        ├── ResultTooLarge            result_too_large       over upstream.max_result_bytes
        ├── JobLost                   job_lost               the upstream no longer has the job
        ├── OutcomeUnknown            outcome_unknown        a create whose answer was lost
        └── UpstreamRejected          upstream_rejected      a 4xx, passed through as it came
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway answers itself; never shown as a traceback."""

    code: str = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(GatewayError):
    """The client's request is malformed: ids, query values, headers, body."""

    code = "bad_request"

    def __init__(self, message: str, *, parameter: str | None = None, **extra: Any) -> None:
        if parameter is not None:
            extra["parameter"] = parameter
        super().__init__(message, **extra)


class PayloadTooLarge(BadRequest):
    """The request body is over ``server.max_body_bytes``."""

    code = "payload_too_large"


class NotFound(GatewayError):
    """Nothing the gateway knows answers to this path or job."""

    code = "not_found"


class Forbidden(GatewayError):
    """The caller may not see this job (SPEC 5)."""

    code = "forbidden"


class TooManyRequests(GatewayError):
    """An admission limit is reached; ``retry_after`` says when to come back."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class ServiceUnavailable(GatewayError):
    """The gateway is draining or not ready."""

    code = "unavailable"


class StartupError(GatewayError):
    """The gateway cannot start; the message is one line naming the cause and the fix."""

    code = "startup_error"


class ConfigError(StartupError):
    """A setting is unknown or has a bad value; the message is one line naming the key."""

    code = "config_error"


class UpstreamError(GatewayError):
    """Something went wrong talking to the upstream job API."""

    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    """Unreachable, reset, or answered 5xx."""

    code = "upstream_unavailable"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered something the adapter cannot read."""

    code = "upstream_bad_response"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time."""

    code = "upstream_timeout"


class ResultTooLarge(UpstreamError):
    """The job's result is larger than ``upstream.max_result_bytes``."""

    code = "result_too_large"


class JobLost(UpstreamError):
    """The upstream no longer has a job the gateway was following (deleted, or lost in a
    restart) and the gateway holds no result for it."""

    code = "job_lost"


class OutcomeUnknown(UpstreamError):
    """A create's answer was lost (timeout, reset): a job may or may not exist upstream."""

    code = "outcome_unknown"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request (4xx): its status and body are passed through."""

    code = "upstream_rejected"

    def __init__(
        self,
        upstream_status: int,
        body: bytes,
        content_type: str | None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"the upstream answered {upstream_status}")
        self.upstream_status = upstream_status
        self.body = body
        self.content_type = content_type
        self.headers = headers
