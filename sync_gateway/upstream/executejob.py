"""executeJob / getJobStatus adapter (SPEC 3.3): answer what ``isAsync: false`` would have.

Create: ``POST {upstream}/executeJob.jsp`` with the client's JSON body, ``isAsync`` forced to
``true`` and ``jobId`` set (the caller's, or a generated one). Because the job id is ours, a
create resent after a lost reply finds the same job: the create is idempotent and retried.
Watch: poll ``GET {upstream}/getJobStatus.jsp?apiKey=…&appId=…&jobId=…`` until ``result.status``
is ``completed``, ``completedWithError`` or ``stopped``.

The ``apiKey`` is the credential: it becomes the job's :class:`Credentials` (so the owner
digest and the watch use it), goes upstream only in the body of the create and in the query
of getJobStatus (as the vendor's API requires), and nowhere else.

Decisions where the SPEC is silent:

* ``apiKey`` may come in the body (the vendor's way) or in the query; the body wins.
  A re-attach by another caller proves access with an ``apiKey``; as the gateway reads only
  ``access_token``/``Authorization`` on a re-attach, ``?access_token=<apiKey>`` or
  ``Authorization: Bearer <apiKey>`` stand for it there.
* A body that is not a JSON object, a missing ``appId`` or a ``jobId`` that is not a plain id
  (letters, digits, ``-``, ``_``, ``.``; at most 128) is a 400: the job could not be polled.
* ``noResultSchema`` counts when it is ``true`` (or the string ``"true"``).
* A getJobStatus 5xx or 429 is transient (polled again, honouring ``Retry-After``), even with
  a ``status: "error"`` body; a ``status: "error"`` with any other HTTP status is final and
  passed through with that status, like a create's (whose ``status: "error"`` passes through
  whatever its HTTP status; a 429 passes through with its ``Retry-After``; another 5xx is 502).
* The protocol has no cancel: :meth:`cancel` does nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from sync_gateway.core.errors import BadRequest, Forbidden, UpstreamBadResponse, UpstreamUnavailable
from sync_gateway.core.types import Created, CreateRequest, Credentials, JobRef, Progress, Snapshot
from sync_gateway.upstream.base import Adapter, rejected
from sync_gateway.upstream.http import RETRY_STATUSES, Response

_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
COMPLETED = "completed"
FAILED = frozenset({"completedWithError", "stopped"})


def plain_job_id(value: object, status: int = 400) -> str:
    """A job id that is safe in a path and a log: else 400 (the caller's) or 502 (upstream's)."""
    if isinstance(value, str) and _JOB_ID.fullmatch(value) and set(value) != {"."}:
        return value
    if status == 400:
        raise BadRequest(
            "jobId must be letters, digits, '-', '_' or '.' (at most 128)", parameter="jobId"
        )
    raise UpstreamBadResponse("the upstream answered a job id that is not a plain id")


def _scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int):
        return str(value)
    return None


def api_key_of(credentials: Credentials) -> str | None:
    """The apiKey a set of credentials carries (see the module docstring for re-attach)."""
    for name, value in credentials.extra:
        if name == "apiKey":
            return value
    if credentials.access_token:
        return credentials.access_token
    auth = credentials.authorization or ""
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def status_snapshot(job_id: str, result: Mapping[str, Any], no_schema: bool, size: int) -> Snapshot:
    """A Snapshot from getJobStatus's ``result``: finished when its status is final. The
    answer is made from it by :mod:`sync_gateway.render.executejob`."""
    status = str(result.get("status") or "")
    if status != COMPLETED and status not in FAILED:
        return Snapshot(
            False, "in_progress", status or "running", {"jobStatus": status}, "executejob"
        )
    document = {
        "jobId": job_id,
        "status": status,
        "results": result.get("results"),
        "message": result.get("message"),
        "noResultSchema": no_schema,
    }
    state = "success" if status == COMPLETED else "failure"
    return Snapshot(True, state, status, document, "executejob", size=size)


def _error_answer(resp: Response) -> bool:
    """Whether the body is a ``{"status": "error", …}`` answer."""
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("status") == "error"


def _answer(resp: Response, *, polling: bool) -> Mapping[str, Any]:
    """``result`` of a ``{"status": "success", "result": {…}}`` answer.

    A ``status: "error"`` answer or a 4xx is passed through with its HTTP status
    (UpstreamRejected), except while ``polling``, where a 429 or a 5xx is transient like
    anything unreadable (UpstreamUnavailable / UpstreamBadResponse: the engine polls again,
    a create answers 502)."""
    if resp.status >= 500 and (polling or not _error_answer(resp)):
        raise UpstreamUnavailable(
            "the upstream answered with a server error", upstream_status=resp.status
        )
    if resp.status == 429 and polling:
        raise UpstreamUnavailable("the upstream asked to slow down", upstream_status=429)
    if 400 <= resp.status < 500 or _error_answer(resp):
        raise rejected(resp)
    doc = resp.json()
    result = doc.get("result") if isinstance(doc, dict) else None
    if resp.status != 200 or not isinstance(result, dict) or doc.get("status") != "success":
        raise UpstreamBadResponse(
            "the upstream answered something that is not a status:success answer",
            upstream_status=resp.status,
        )
    return result


class ExecuteJobAdapter(Adapter):
    """Talks to an executeJob.jsp / getJobStatus.jsp API (InfoLink REST style)."""

    flavour = "executejob"
    caller_ids = True

    def _job_body(self, request: CreateRequest) -> tuple[dict[str, Any], str | None]:
        """The create's JSON body as it goes upstream, and the apiKey it carries."""
        try:
            body = orjson.loads(request.body) if request.body.strip() else {}
        except orjson.JSONDecodeError:
            raise BadRequest("the request body is not valid JSON", parameter="body") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", parameter="body")
        key = _scalar(body.get("apiKey")) or request.query.get("apiKey") or None
        if key is not None:
            body["apiKey"] = key
        if _scalar(body.get("appId")) is None:
            raise BadRequest("appId is required to follow the job", parameter="appId")
        body["jobId"] = (
            plain_job_id(body["jobId"]) if body.get("jobId") is not None else uuid.uuid4().hex
        )
        body["isAsync"] = True
        return body, key

    async def create(self, request: CreateRequest) -> Created:
        body, key = self._job_body(request)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if request.credentials.authorization:
            headers["Authorization"] = request.credentials.authorization
        resp = await self.client.request(
            "create",
            "POST",
            f"{self.base}/executeJob.jsp",
            headers=headers,
            data=orjson.dumps(body),
            idempotent=True,  # our jobId makes a resent create find the same job
        )
        result = _answer(resp, polling=False)
        job_id = plain_job_id(result.get("jobId", body["jobId"]), status=502)
        no_schema = body.get("noResultSchema") in (True, "true")
        ref = JobRef(
            adapter=self.name,
            id=job_id,
            poll_url=f"{self.base}/getJobStatus.jsp",
            extra=(("appId", str(_scalar(body["appId"]))), ("noResultSchema", str(no_schema))),
        )
        creds = Credentials(extra=(("apiKey", key),)) if key is not None else Credentials()
        snap = Snapshot(False, "in_progress", "started", {"jobId": job_id}, "executejob")
        return Created(ref, snap, resp.status, resp.body, resp.content_type, credentials=creds)

    async def _status(self, ref: JobRef, credentials: Credentials) -> Response:
        extra = dict(ref.extra)
        params = {"appId": extra.get("appId", ""), "jobId": ref.id}
        key = api_key_of(credentials)
        if key is not None:
            params = {"apiKey": key, **params}
        return await self.client.request(
            "status",
            "GET",
            ref.poll_url or f"{self.base}/getJobStatus.jsp",
            params=params,
            headers={"Accept": "application/json"},
        )

    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        resp = await self._status(ref, credentials)
        if resp.status in RETRY_STATUSES:  # still there after the retries: come back later
            return Progress(None, retry_after=resp.retry_after)
        no_schema = dict(ref.extra).get("noResultSchema") == "True"
        result = _answer(resp, polling=True)
        snap = status_snapshot(ref.id, result, no_schema, len(resp.body))
        return Progress(snap, long_polled=False, retry_after=resp.retry_after)

    async def check_access(self, ref: JobRef, credentials: Credentials) -> None:
        """One getJobStatus with the caller's own apiKey."""
        if api_key_of(credentials) is None:
            raise Forbidden("an apiKey is needed to see this job")
        _answer(await self._status(ref, credentials), polling=True)

    def credentials(self, request: CreateRequest) -> Credentials:
        """The apiKey is who the caller is, wherever it came: the body, the query, or (on a
        re-attach) ``access_token``/``Authorization: Bearer``. One apiKey, one caller."""
        key: str | None = None
        if request.body.strip():
            try:
                body = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                body = None
            if isinstance(body, dict):
                key = _scalar(body.get("apiKey"))
        key = key or request.query.get("apiKey") or api_key_of(request.credentials)
        if key is None:
            return request.credentials
        return Credentials(extra=(("apiKey", key),))
