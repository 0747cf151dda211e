"""What a client asked for: ids, credentials, format, wait budget, body (pure parsing: no I/O,
table-tested). Anything malformed is a :class:`BadRequest` naming the parameter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDictProxy, MultiMapping

from sync_gateway.config import WaitSettings
from sync_gateway.core.errors import BadRequest
from sync_gateway.core.types import Credentials, Format, FormatKind

_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_PREFER_WAIT = re.compile(r"^\s*wait\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)
_INDEX = re.compile(r"[0-9]{1,9}")
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
IDEMPOTENCY_KEY_MAX = 255

# Supervisor defaults for a wait_result loop (core/service/job/create.js).
SUPERVISOR_LIMIT = 10
SUPERVISOR_TIMEOUT = 10.0


def path_id(name: str, value: str) -> str:
    """A path segment that is a plain id: letters, digits, ``-``, ``_``, ``.``; not ``..``."""
    if not _ID.fullmatch(value) or set(value) == {"."}:
        raise BadRequest(f"the path segment {name!r} is not a valid id", parameter=name)
    return value


def object_id(name: str, value: str) -> str:
    """A TheEye id: a MongoDB ObjectId (24 lower-case hex). The supervisor answers 400 for a
    job that is not one, and 500 for a whole listing that holds one: refused at the door."""
    if not _OBJECT_ID.fullmatch(value):
        raise BadRequest(
            f"the path segment {name!r} is not a TheEye id (24 hex characters)", parameter=name
        )
    return value


def path_ids(match_info: Mapping[str, str]) -> dict[str, str]:
    """Every path parameter, validated."""
    return {name: path_id(name, value) for name, value in match_info.items()}


def credentials(query: MultiMapping[str], headers: CIMultiDictProxy[str]) -> Credentials:
    """The caller's credentials as sent: ``access_token`` query or ``Authorization`` header."""
    token = query.get("access_token") or None
    return Credentials(access_token=token, authorization=headers.get("Authorization") or None)


def _number(query: MultiMapping[str], name: str, *, integer: bool) -> float | None:
    """A non-negative number of at most nine digits (a decimal one unless ``integer``)."""
    raw = query.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if (_INDEX if integer else _NUMBER).fullmatch(raw):
        return float(raw)
    kind = "a non-negative integer" if integer else "a non-negative number"
    raise BadRequest(
        f"the query parameter {name!r} must be {kind} of at most 9 digits", parameter=name
    )


def customer_hint(query: MultiMapping[str]) -> dict[str, str]:
    """The re-attach's ``customer`` hint (where to ask the upstream), a plain id when given."""
    customer = query.get("customer")
    return {"customer": path_id("customer", customer)} if customer else {}


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

    @property
    def create_seconds(self) -> float | None:
        """How long the create may take for this call: its budget (None: until the
        upstream request's own timeout, when the client asked for no wait at all)."""
        return None if self.respond_async or self.seconds <= 0 else self.seconds


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


def reattach_budget(
    query: MultiMapping[str], headers: CIMultiDictProxy[str], wait: WaitSettings
) -> Budget:
    """How long a re-attach holds, a wait like any other (SPEC 2.3): ``Prefer: respond-async``
    answers at once, ``Prefer: wait=N`` (applied), the loop's ``timeout`` (one hop of the
    supervisor's 303 loop), the ``wait`` a Location handed out, else the default; capped."""
    # Both are checked whatever wins: a malformed value is a 400, not ignored (openapi.json).
    timeout = _number(query, "timeout", integer=False)
    handed = _number(query, "wait", integer=True)
    prefer = _prefer(headers)
    if "respond-async" in prefer:
        return Budget(0.0, respond_async=True, applied=("respond-async",))
    if "wait" in prefer:
        seconds = min(float(prefer["wait"]), wait.max_seconds)
        return Budget(seconds, applied=(f"wait={int(seconds)}",))
    if timeout is not None:
        return Budget(min(timeout, wait.max_seconds))
    if handed is not None:
        return Budget(min(handed, wait.max_seconds))
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


def _values(query: object, key: str) -> list[str]:
    getall = getattr(query, "getall", None)
    if callable(getall):
        return [str(v) for v in getall(key, [])]
    if isinstance(query, Mapping) and key in query:
        return [str(query[key])]
    return []


_KINDS = tuple(FormatKind)  # (iterating the enum class itself is slow: once per call here)
_NAMES = frozenset(kind.value for kind in FormatKind)
_PLAIN_FORMATS = {kind: Format(kind) for kind in FormatKind}


def parse_format(query: Any, default: FormatKind) -> Format:
    """The format a request's query asks for (a multidict with ``getall`` or a Mapping).

    Raises :class:`BadRequest` for a bad ``parse`` value (parameter ``parse``), for two different
    ``parse`` indexes (``parse``), and for two different formats at once (``format``).
    """
    if _NAMES.isdisjoint(query):
        return _PLAIN_FORMATS[default]  # most calls name no format
    found: list[Format] = []
    for kind in _KINDS:
        values = _values(query, kind.value)
        if not values:
            continue
        if kind is not FormatKind.PARSE:
            found.append(Format(kind))
            continue
        indexes: set[int] = set()
        explicit = False
        for value in values:
            if value == "":
                indexes.add(0)
            elif _INDEX.fullmatch(value):
                indexes.add(int(value))
                explicit = True
            else:
                raise BadRequest(
                    "parse must be empty or a non-negative integer index", parameter="parse"
                )
        if len(indexes) > 1:
            raise BadRequest("parse is given more than one index", parameter="parse")
        found.append(Format(kind, indexes.pop(), explicit))
    if len(found) > 1:
        names = ", ".join(f.kind.value for f in found)
        raise BadRequest(
            f"only one result format may be asked for, got: {names}", parameter="format"
        )
    return found[0] if found else _PLAIN_FORMATS[default]
