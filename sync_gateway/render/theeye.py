"""TheEye: the pure mapping from a finished job document and a requested format to an HTTP
answer (SPEC 2.1, 2.2). No I/O, no web framework. Decisions where the SPEC is silent:

* A ``statusCode`` counts when it is an integer 200..599 (``201.0`` is one, as in JavaScript;
  ``bool`` is not) or, in a response object only, a string of ASCII digits valued 200..599.
  A 1xx is never a final status (SPEC 2.5): the job's 200/500 is answered instead.
* ``parse``: ``output[N]`` must be a string that parses as JSON (and is not nested too deeply to
  convert), else the ``output`` answer is given. The body of a response object ``R`` (either
  form) is ``R["body"]`` when the key is there, else ``R`` itself (so a flat form with
  ``headers`` and no ``body`` answers with all of it). Integral floats parsed are written as
  integers (``10.0`` -> ``10``), as ``JSON.stringify`` does.
* Headers: see :mod:`sync_gateway.render.common`.
* A task ``Content-Type`` given twice (different case): the last wins, as with ``setHeader``.
* ``isBase64Encoded: true`` in a response object with a string body: the body's bytes are
  answered, with the task's ``Content-Type`` (else ``application/octet-stream``); a body
  that is not valid base64 is the job's 500 with ``bad_task_output``.
* ``parse=N``: ``N`` is 1 to 9 ASCII digits (leading zeros allowed); anything else is a 400.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import orjson

from sync_gateway.core.types import Format, FormatKind, Rendered
from sync_gateway.render.common import (
    DEFAULT_LIMITS,
    JSON_CONTENT_TYPE,
    HeaderLimits,
    json_body,
    sanitize_headers,
)

_STATUS_DIGITS: Final = re.compile(r"[0-9]{1,6}")
_ABSENT: Final = object()
# A final status only: 1xx would leave the client waiting for another answer (SPEC 2.5).
FINAL_STATUS: Final = range(200, 600)


def _status_code(value: object, *, allow_string: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if allow_string and isinstance(value, str) and _STATUS_DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, int) and value in FINAL_STATUS:
        return value
    return None


def _js_floats(value: Any) -> Any:
    """Integral floats as ints, as a JavaScript round trip would write them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _js_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_floats(v) for v in value]
    return value


def _json(status: int, value: Any) -> Rendered:
    return Rendered(status, json_body(value), JSON_CONTENT_TYPE)


def _render_parse(job: Mapping[str, Any], fmt: Format, limits: HeaderLimits) -> Rendered:
    status = 200 if job.get("state") == "success" else 500
    output = job.get("output")
    raw = output[fmt.index] if isinstance(output, list) and fmt.index < len(output) else None
    try:
        obj = _js_floats(orjson.loads(raw)) if isinstance(raw, str) else _ABSENT
    except (orjson.JSONDecodeError, RecursionError):
        obj = _ABSENT
    if obj is _ABSENT:
        return _json(status, output if output is not None else [])
    response: dict[str, Any] | None = None
    if isinstance(obj, dict):
        if isinstance(obj.get("response"), dict):
            response = obj["response"]
        elif "statusCode" in obj and ("body" in obj or "headers" in obj):
            response = obj
    if response is None:
        code = obj.get("statusCode") if isinstance(obj, dict) else None
        return _json(_status_code(code, allow_string=False) or status, obj)
    status = _status_code(response.get("statusCode"), allow_string=True) or status
    body = response.get("body", response)
    headers, dropped = sanitize_headers(response.get("headers"), limits)
    if response.get("isBase64Encoded") is True and isinstance(body, str):
        return _binary(status, body, headers, dropped)
    content_types = [(n, v) for n, v in headers if n.lower() == "content-type"]
    if content_types:
        headers = tuple(h for h in headers if h[0].lower() != "content-type")
        dropped += tuple(f"duplicate:{n}" for n, _ in content_types[:-1])
        if isinstance(body, str):
            return Rendered(status, body.encode("utf-8"), content_types[-1][1], headers, dropped)
        dropped += ("content-type-for-json",)
    return Rendered(status, json_body(body), JSON_CONTENT_TYPE, headers, dropped)


def _binary(
    status: int, encoded: str, headers: tuple[tuple[str, str], ...], dropped: tuple[str, ...]
) -> Rendered:
    """A body the task sent base64-encoded (``isBase64Encoded``, as AWS Lambda proxy
    integrations do): its bytes, with the task's Content-Type. Not valid base64: the job's
    500-style answer, saying so."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        error = {
            "error": "bad_task_output",
            "message": "the response object's body is marked base64 but is not valid base64",
        }
        return _json(500, error)
    content_type = "application/octet-stream"
    kept = []
    for name, value in headers:
        if name.lower() == "content-type":
            content_type = value
        else:
            kept.append((name, value))
    return Rendered(status, data, content_type, tuple(kept), dropped)


def render_job(
    job: Mapping[str, Any], fmt: Format, limits: HeaderLimits = DEFAULT_LIMITS
) -> Rendered:
    """The answer for a finished ``job`` (the full TheEye job document) in format ``fmt``."""
    status = 200 if job.get("state") == "success" else 500
    if fmt.kind is FormatKind.PARSE:
        return _render_parse(job, fmt, limits)
    if fmt.kind is FormatKind.RESULT:
        result = job.get("result")
        return _json(status, result if result is not None else {})
    if fmt.kind is FormatKind.FULL:
        return _json(status, job if isinstance(job, dict) else dict(job))
    output = job.get("output")
    return _json(status, output if output is not None else [])
