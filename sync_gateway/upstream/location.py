"""Location polling adapter (SPEC 3.2): elastic.io's scheduled executions, Azure-style LROs.

Create: the client's request goes to the route's upstream URL as it came (method, body,
Content-Type, credentials); the upstream answers 202 with a ``Location`` to poll. Polling it
answers 200 while the job runs and 303 + ``Location`` when the result is ready; the result
resource answers 200 ``{data}``, 400 ``{message: "Rejected.", reason}`` or 404, and may be read
ONCE: this adapter reads it exactly once, inside the watch, and the engine keeps it.

Decisions where the SPEC is silent:

* The gateway's job id is its own (uuid4 hex); the upstream's ids live in the poll URL only.
* A ``Location`` may be absolute or relative (resolved against the URL it came from) and may be
  wrapped in quotes, as the seed writes it (``Location: 'https://…'``).
* The caller's credentials follow a ``Location`` only to the upstream's own origin (scheme,
  host, port), as ``curl --location`` does without ``--location-trusted``.
* Any other 2xx answer to the create, without a ``Location``, is the result itself.
* The result request is not resent after a reply that may have been read (a reset or a
  timeout): the engine polls again and the upstream says whether the result is still there.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import quote

import yarl

from sync_gateway.config import placeholders
from sync_gateway.core.errors import Forbidden, NotFound, UpstreamBadResponse, UpstreamUnavailable
from sync_gateway.core.types import Created, CreateRequest, Credentials, JobRef, Progress, Snapshot
from sync_gateway.upstream.base import Adapter, create_headers, create_query, rejected
from sync_gateway.upstream.http import RETRY_STATUSES, Response

RUNNING = Snapshot(False, "in_progress", "polling", kind="location")
ACCEPT = {"Accept": "application/json"}


def expand(template: str, params: Mapping[str, str]) -> str:
    """The upstream URL with ``{name}`` filled from the route's path params, URL-quoted."""
    for name in placeholders(template):
        template = template.replace("{" + name + "}", quote(params[name], safe=""))
    return template


def resolve_location(raw: str | None, base: str) -> str | None:
    """A ``Location`` value, unquoted and made absolute against ``base``; None if unusable
    (not http(s), no host, or userinfo in it: a bad upstream answer)."""
    if raw is None:
        return None
    value = raw.strip().strip("'\"").strip()
    if not value:
        return None
    try:
        url = yarl.URL(base).join(yarl.URL(value))
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    if url.user is not None or url.password is not None:
        return None  # credentials in a Location: not a URL the gateway follows
    return str(url)


def finished(status: int, body: bytes, content_type: str, state: str) -> Snapshot:
    """The upstream's answer that is the job's result, kept as it came (render.location)."""
    document = {"status": status, "content_type": content_type}
    return Snapshot(True, state, "finished", document, "location", body, len(body))


class LocationPollAdapter(Adapter):
    """Talks to an upstream that answers 202 + Location and serves the result once."""

    flavour = "location-poll"

    def setup(self) -> None:
        self.origin = yarl.URL(self.route.upstream).origin()

    def _auth(self, url: str, credentials: Credentials) -> tuple[dict[str, str], dict[str, str]]:
        """(query params, headers) carrying the caller's credentials, to our origin only."""
        if yarl.URL(url).origin() != self.origin:
            return {}, dict(ACCEPT)
        params = {"access_token": credentials.access_token} if credentials.access_token else {}
        headers = dict(ACCEPT)
        if credentials.authorization:
            headers["Authorization"] = credentials.authorization
        return params, headers

    # ---- create --------------------------------------------------------------------------

    async def create(self, request: CreateRequest) -> Created:
        url = expand(self.route.upstream, request.params)
        resp = await self.client.request(
            "create",
            self.route.method,
            url,
            params=create_query(request),
            headers=create_headers(request, **ACCEPT),
            data=request.body or None,
            idempotent=False,
        )
        ref = JobRef(adapter=self.name, id=uuid.uuid4().hex)
        if 400 <= resp.status < 500:
            raise rejected(resp)  # a 429 too, with its Retry-After: the client may come back
        if resp.status >= 500:
            raise UpstreamUnavailable(
                "the upstream failed to create the job", upstream_status=resp.status
            )
        location = resolve_location(resp.headers.get("Location"), url)
        if resp.status == 202 and location is not None:
            ref = JobRef(adapter=self.name, id=ref.id, poll_url=location)
            return Created(ref, RUNNING, resp.status, resp.body, resp.content_type)
        if 200 <= resp.status < 300 and resp.status != 202 and resp.body and location is None:
            snap = finished(resp.status, resp.body, resp.content_type, "success")
            return Created(ref, snap, resp.status, resp.body, resp.content_type)
        raise UpstreamBadResponse(
            "the upstream answered the create without a Location to poll",
            upstream_status=resp.status,
        )

    # ---- watching ------------------------------------------------------------------------

    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        resp = await self._poll(ref, credentials)
        if resp.status in RETRY_STATUSES:  # still there after the retries: come back later
            return Progress(None, retry_after=resp.retry_after)
        if resp.status == 200:
            document = resp.json()  # not JSON: UpstreamBadResponse, the engine polls again
            doc = document if isinstance(document, dict) else {}
            snap = Snapshot(False, "in_progress", "polling", doc, "location")
            return Progress(snap, retry_after=resp.retry_after)
        assert ref.poll_url is not None
        result_url = resolve_location(resp.headers.get("Location"), ref.poll_url)
        if result_url is None:
            raise UpstreamBadResponse(
                "the upstream answered 303 without a usable Location", upstream_status=303
            )
        return Progress(await self._read_result(result_url, credentials))

    async def _poll(self, ref: JobRef, credentials: Credentials) -> Response:
        """GET the poll URL (never following its 303): 200, 303 or a retryable status."""
        if ref.poll_url is None:
            # Final, or the engine would poll nothing until the watch runs out.
            raise NotFound("the gateway has no poll URL for this job")
        params, headers = self._auth(ref.poll_url, credentials)
        resp = await self.client.request(
            "poll", "GET", ref.poll_url, params=params, headers=headers
        )
        if resp.status in (200, 303) or resp.status in RETRY_STATUSES:
            return resp
        self._raise_for(resp, "poll")

    async def _read_result(self, url: str, credentials: Credentials) -> Snapshot:
        """Read the result resource ONCE: it may be served only once."""
        params, headers = self._auth(url, credentials)
        # Not idempotent: a reply lost in flight may already have used the one read up.
        resp = await self.client.request(
            "result", "GET", url, params=params, headers=headers, idempotent=False
        )
        content_type = resp.headers.get("Content-Type", "application/json")
        if resp.status == 200:
            return finished(200, resp.body, content_type, "success")
        if resp.status == 400:
            return finished(400, resp.body, content_type, "failure")
        self._raise_for(resp, "result")

    @staticmethod
    def _raise_for(resp: Response, what: str) -> NoReturn:
        """A 4xx (404 ``Expired.``, ``Result does not exist``) but 429 is final; else not."""
        if resp.status in RETRY_STATUSES or resp.status >= 500:
            raise UpstreamUnavailable(
                f"the upstream answered the {what} request with {resp.status}",
                upstream_status=resp.status,
            )
        if 400 <= resp.status < 500:
            raise rejected(resp)
        raise UpstreamBadResponse(
            f"the upstream answered the {what} request with an unexpected status",
            upstream_status=resp.status,
        )

    async def check_access(self, ref: JobRef, credentials: Credentials) -> None:
        """Ask the poll URL with the caller's credentials; never follow it to the result.
        A result the upstream answered at once has nobody upstream to ask: creator only."""
        if ref.poll_url is None:
            raise Forbidden("only the caller who created this job may read its result")
        resp = await self._poll(ref, credentials)
        if resp.status in RETRY_STATUSES:
            self._raise_for(resp, "poll")
