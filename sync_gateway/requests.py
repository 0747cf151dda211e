"""What a client asked for: ids, credentials, format, wait budget, body (pure parsing)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDictProxy, MultiMapping

from sync_gateway.config import WaitSettings
from sync_gateway.errors import BadRequest
from sync_gateway.upstream.base import CreateRequest, Credentials

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_PREFER_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)
IDEMPOTENCY_KEY_MAX = 255
CREDENTIAL_PARAMS = frozenset({"access_token", "apiKey"})

# Supervisor defaults for a wait_result loop (core/service/job/create.js).
SUPERVISOR_LIMIT = 10
SUPERVISOR_TIMEOUT = 10.0


def path_id(name: str, value: str) -> str:
    """A path segment that is a plain id: letters, digits, ``-``, ``_``, ``.``; not ``..``."""
    if not _ID.fullmatch(value) or set(value) == {"."}:
        raise BadRequest(f"the path segment {name!r} is not a valid id", parameter=name)
    return value


def path_ids(match_info: Mapping[str, str]) -> dict[str, str]:
    """Every path parameter, validated."""
    return {name: path_id(name, value) for name, value in match_info.items()}


def credentials(query: MultiMapping[str], headers: CIMultiDictProxy[str]) -> Credentials:
    """The caller's credentials as sent: ``access_token`` query or ``Authorization`` header."""
    token = query.get("access_token") or None
    return Credentials(access_token=token, authorization=headers.get("Authorization") or None)


def _number(query: MultiMapping[str], name: str, *, integer: bool) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        kind = "a non-negative integer" if integer else "a non-negative number"
        raise BadRequest(f"the query parameter {name!r} must be {kind}", parameter=name)
    return value


@dataclass(frozen=True, slots=True)
class Loop:
    """The supervisor-style ``counter``/``limit``/``timeout`` of a re-attach loop."""

    counter: int | None
    limit: int | None
    timeout: float | None


def loop_params(query: MultiMapping[str]) -> Loop:
    counter = _number(query, "counter", integer=True)
    limit = _number(query, "limit", integer=True)
    return Loop(
        None if counter is None else int(counter),
        None if limit is None else int(limit),
        _number(query, "timeout", integer=False),
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """How long this call may block, and what the client asked of the wait."""

    seconds: float
    respond_async: bool = False
    applied: tuple[str, ...] = ()


def budget(query: MultiMapping[str], headers: CIMultiDictProxy[str], wait: WaitSettings) -> Budget:
    """``timeout`` times ``limit`` (supervisor style), else ``Prefer: wait=N``, else the default;
    always capped by ``wait.max_seconds``. ``Prefer: respond-async`` answers at once."""
    loop = loop_params(query)
    prefer = _prefer(headers)
    if "respond-async" in prefer:
        return Budget(0.0, respond_async=True, applied=("respond-async",))
    if loop.timeout is not None or loop.limit is not None:
        timeout = SUPERVISOR_TIMEOUT if loop.timeout is None else loop.timeout
        limit = SUPERVISOR_LIMIT if loop.limit is None else loop.limit
        return Budget(min(timeout * max(limit, 1), wait.max_seconds))
    if "wait" in prefer:
        seconds = min(float(prefer["wait"]), wait.max_seconds)
        return Budget(seconds, applied=(f"wait={int(seconds)}",))
    return Budget(min(wait.default_seconds, wait.max_seconds))


def _prefer(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """RFC 7240 preferences we understand: ``respond-async`` and ``wait=N``."""
    found: dict[str, str] = {}
    for header in headers.getall("Prefer", []):
        for item in header.split(","):
            token = item.split(";", 1)[0].strip()
            if token.lower() == "respond-async":
                found["respond-async"] = ""
            elif m := _PREFER_WAIT.match(token):
                found["wait"] = m.group(1)
            elif token.lower().startswith("wait"):
                raise BadRequest(
                    "the Prefer header's wait must be whole seconds", parameter="Prefer"
                )
    return found


def json_body(body: bytes) -> Any:
    """The body as JSON: empty, an array of task arguments, or an object (400 otherwise)."""
    if not body.strip():
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON", parameter="body") from None
    if not isinstance(value, list | dict):
        raise BadRequest(
            "the request body must be a JSON array of task arguments or a JSON object",
            parameter="body",
        )
    return value


def wants_wait_result(query: MultiMapping[str], body: Any) -> bool:
    """``wait_result=true`` in the query, or ``"wait_result": true`` in a JSON object body."""
    if query.get("wait_result") == "true":
        return True
    return isinstance(body, dict) and body.get("wait_result") is True


def idempotency_key(headers: CIMultiDictProxy[str]) -> str | None:
    key: str | None = headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip().strip('"')
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise BadRequest(
            "the Idempotency-Key header must be 1 to 255 printable characters",
            parameter="Idempotency-Key",
        )
    return key


def idempotency_claim(adapter: str, create: CreateRequest) -> str:
    """The store key of an ``Idempotency-Key``: the key, the caller, and what was asked.

    A key reused for another request (another task, other arguments) is another job,
    never the first request's answer."""
    h = hashlib.sha256()
    for part in (
        adapter,
        create.idempotency_key or "",
        create.credentials.digest().hex(),
        repr(sorted(create.params.items())),
        repr(sorted((k, v) for k, v in create.query.items() if k not in CREDENTIAL_PARAMS)),
    ):
        h.update(part.encode("utf-8", "replace") + b"\x00")
    h.update(create.body)
    return h.hexdigest()
