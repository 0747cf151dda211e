"""Who calls, and what they may do, as the supervisor decides it: passport-http-bearer's
one credential, members and roles, the job ACL (``ACL.ensureAllowed``, the listing filter),
task and job secrets; and the JSON errors the emulator answers with."""

from __future__ import annotations

import asyncio
import re
from typing import Any, NoReturn
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from .recipe import Customer, Member, access_level
from .state import EmulatorState, Job

STATE_KEY = web.AppKey("emulator_state", EmulatorState)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


class ErrorAnswer(Exception):
    """Raised by handlers; the middleware turns it into the JSON error answer: ``body`` when
    given (the supervisor's ``res.send(status, 'text')``), else ``{"statusCode", "message"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.body = body

    def response(self) -> web.Response:
        body = self.body
        if body is None:
            body = {"statusCode": self.status, "message": self.message}
        return json_response(self.status, body, self.headers)


def fail(status: int, message: str, **headers: str) -> ErrorAnswer:
    """An error answer shaped like the supervisor's ``res.sendError`` (JSON)."""
    return ErrorAnswer(status, message, headers or None)


# -- auth and lookups -------------------------------------------------------------------------


def _unauthorized() -> ErrorAnswer:
    return fail(401, "Unauthorized", **{"WWW-Authenticate": 'Bearer realm="Users"'})


def _body_token(request: web.Request, raw: bytes) -> Any:
    """``req.body.access_token`` as restify's bodyParser leaves it: a form field, or a key of
    a JSON object body (any other content type is read as JSON too, as the create does)."""
    if not raw.strip():
        return None
    if request.content_type == "application/x-www-form-urlencoded":
        form = parse_qs(raw.decode("utf-8", "replace"))
        values = form.get("access_token", [])
        return values[0] if len(values) == 1 else values or None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body.get("access_token") if isinstance(body, dict) else None


async def _bearer_token(request: web.Request) -> str | None:
    """passport-http-bearer's ``Strategy.authenticate`` (lib/strategy.js), which the
    supervisor's ``bearerMiddleware`` (core/lib/auth/index.js) answers 401 ``Unauthorized`` on
    any failure: an ``Authorization`` header that is not two space-separated parts fails; a
    ``Bearer`` one gives the token; then the body's ``access_token`` and then the query's —
    a second credential (truthy, as JavaScript says) fails whatever its value."""
    token: Any = None
    authorization = request.headers.get("Authorization")
    if authorization:
        parts = authorization.split(" ")
        if len(parts) != 2:
            raise _unauthorized()
        if parts[0].lower() == "bearer":
            token = parts[1]
    for found in (_body_token(request, await request.read()), _query_token(request)):
        if found:
            if token:
                raise _unauthorized()
            token = found
    return token if isinstance(token, str) and token else None


def _query_token(request: web.Request) -> Any:
    values = request.query.getall("access_token", [])
    return values[0] if len(values) == 1 else values or None  # qs: repeated keys → an array


async def authenticate(request: web.Request) -> tuple[Customer, Member]:
    """The caller's organization and member; 401 without a known token, 403 when the path
    names another customer."""
    state = request.app[STATE_KEY]
    token = await _bearer_token(request)
    found = state.recipe.caller_for_token(token) if token else None
    if found is None:
        raise _unauthorized()
    customer, member = found
    path_customer = request.match_info.get("customer")
    if path_customer is not None and path_customer != customer.name:
        raise fail(403, "forbidden. you don't belong to this organization")
    return customer, member


def require_role(member: Member, role: str) -> None:
    """``router.requireCredential`` (core/router/require-credential.js)."""
    if access_level(member.role) < access_level(role):
        raise ErrorAnswer(403, "forbidden", body="forbidden")


def _permissions(member: Member) -> list[str]:
    """``ACL.buildPermissions`` (core/lib/acl.js): the role, the email, the tags ``k:v``.
    A missing email is JavaScript's ``undefined``, in a template string ``"undefined"``."""
    return [member.role, member.email if member.email is not None else "undefined", *member.tags]


def _allowed(member: Member, acl: list[Any]) -> bool:
    """``ACL.ensureAllowed`` (core/lib/acl.js) exactly as written: admins and above pass; an
    empty ``acl`` fails; otherwise it stops at the first permission that is NOT in the acl
    and passes — so a member passes unless the acl is empty or holds every one of its
    permissions (the check reads inverted, but this is what the supervisor runs)."""
    if member.is_admin:
        return True
    if not acl:
        return False
    return any(value not in acl for value in _permissions(member))


async def ensure_allowed(request: web.Request, member: Member, acl: list[Any]) -> None:
    """``router.ensureAllowed`` (core/router/ensure-allowed.js) calls ``ACL.ensureAllowed``
    inside a promise's ``then`` with no ``catch``: the ForbiddenError becomes an unhandled
    rejection (logged in production, core/main.js) and the request is never answered."""
    if not _allowed(member, acl):
        await hang(request.app[STATE_KEY])


def listed(member: Member, acl: list[Any]) -> bool:
    """``router.dbFilter`` (core/router/db-filter.js) for credentials below admin (core/router/
    ensure-permissions.js): ``where.acl = {$in: [/^permission$/i, …]}`` — a job is listed only
    when its ``acl`` holds the member's role, email or one of its tags, case-insensitively."""
    if member.is_admin:
        return True
    wanted = {p.lower() for p in _permissions(member)}
    return any(isinstance(a, str) and a.lower() in wanted for a in acl)


async def hang(state: EmulatorState) -> NoReturn:
    """Never answer (the client gives up, or the server's shutdown closes the connection)."""
    state.event("hung")
    state.hanging += 1
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        state.hanging -= 1
    raise AssertionError("unreachable")  # pragma: no cover


def check_secret(given: str, expected: str) -> None:
    if len(given) != 64 or given != expected:
        raise fail(403, "invalid secret")


OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")


def find_job(request: web.Request, customer: Customer | None) -> Job:
    """``router.resolve.idToEntity({param: 'job', required: true})`` (core/router/
    param-resolver.js): an id that is not a MongoId (24 hex characters) answers 400 ``"job id
    is invalid"``; an unknown one 404."""
    job_id = request.match_info["job"]
    if not OBJECT_ID.fullmatch(job_id):
        raise ErrorAnswer(400, "job id is invalid", body="job id is invalid")
    job = request.app[STATE_KEY].jobs.get(job_id.lower())
    if job is None:
        raise fail(404, "job not found")
    if customer is not None and job.customer.name != customer.name:
        raise fail(403, "forbidden")
    return job


def body_arguments(request: web.Request, raw: bytes) -> tuple[list[Any], bool]:
    if not raw.strip() or request.content_type == "application/x-www-form-urlencoded":
        return [], False  # a form carries no JSON arguments (its access_token is a credential)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise fail(400, "invalid JSON body") from None
    if isinstance(body, list):
        return body, False
    if isinstance(body, dict):
        args = body.get("task_arguments", [])
        if not isinstance(args, list):
            raise fail(400, "task_arguments must be an array")
        return args, body.get("wait_result") is True
    raise fail(400, "the body must be an array of arguments or an object")
