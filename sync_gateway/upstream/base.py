"""The small interface every upstream flavour implements, and the helpers they share.

The engine knows nothing of any protocol: it asks an :class:`Adapter` to create a job, to
take one *watch step* (a long poll, or one poll), and the access decision asks it whether the
upstream accepts a caller's own credentials for a job. What a flavour does not have (cancel,
a ref for a job it never saw, resources to close) has a default here.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

from multidict import MultiDict

from sync_gateway.config import RouteSettings, UpstreamSettings
from sync_gateway.core.errors import NotFound, UpstreamRejected
from sync_gateway.core.types import Created, CreateRequest, Credentials, JobRef, Progress
from sync_gateway.upstream.http import Response, UpstreamClient

# Query parameters that belong to the gateway and never go upstream on a create.
GATEWAY_PARAMS = frozenset(
    {"output", "parse", "result", "full", "timeout", "limit", "counter", "wait_result"}
)
# Of a refusal's headers, those a client needs to act on it.
PASSED_HEADERS = frozenset({"retry-after", "www-authenticate"})


def rejected(resp: Response) -> UpstreamRejected:
    """A 4xx answer to pass through, with the headers a client needs from it."""
    keep = tuple((k, v) for k, v in resp.headers.items() if k.lower() in PASSED_HEADERS)
    return UpstreamRejected(resp.status, resp.body, resp.headers.get("Content-Type"), keep)


def create_query(request: CreateRequest, *, one_credential: bool = False) -> MultiDict[str]:
    """The client's query as it goes upstream on a create, the gateway's own flags removed.
    With ``one_credential`` (an upstream that refuses two, as TheEye's passport does), the
    query's token is dropped when an ``Authorization`` header goes (Credentials.forwarded)."""
    drop = GATEWAY_PARAMS
    if one_credential and request.credentials.authorization:
        drop = drop | {"access_token"}
    return MultiDict((k, v) for k, v in request.query.items() if k not in drop)


def create_headers(request: CreateRequest, **extra: str) -> dict[str, str]:
    """The headers of a create: the caller's Authorization and the body's Content-Type."""
    headers = dict(extra)
    if request.credentials.authorization:
        headers["Authorization"] = request.credentials.authorization
    if request.body:
        headers["Content-Type"] = request.content_type or "application/json"
    return headers


class Adapter(abc.ABC):
    """One upstream flavour. ``name`` is what its jobs are known by (``theeye``, or a
    configured route's name); ``flavour`` is the protocol."""

    flavour: ClassVar[str]
    needs_route: ClassVar[bool] = True  # served by a [[routes]] entry, not by default
    # Job ids the caller chooses (and the upstream scopes per caller): the gateway keys its
    # jobs by caller too (JobRef.scope), so one caller's id never reaches another's job.
    caller_ids: ClassVar[bool] = False
    # A 404 for a job the upstream had means it was deleted or lost (TheEye); elsewhere a 404
    # is an answer of the protocol (a location-poll result that expired) and passes through.
    lost_on_404: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        client: UpstreamClient,
        settings: UpstreamSettings,
        route: RouteSettings | None = None,
    ) -> None:
        if route is None and self.needs_route:
            raise ValueError(f"a {self.flavour} adapter serves a configured route")
        self.name = name
        self.client = client
        self.settings = settings
        self._route = route
        self.base = (route.upstream if route is not None else settings.url).rstrip("/")
        self.setup()

    @property
    def route(self) -> RouteSettings:
        """The [[routes]] entry this adapter serves."""
        if self._route is None:
            raise ValueError(f"the {self.name} adapter serves no configured route")
        return self._route

    def setup(self) -> None:  # noqa: B027 (a default, not an abstract method)
        """What a flavour builds once from its settings (default: nothing)."""

    @abc.abstractmethod
    async def create(self, request: CreateRequest) -> Created:
        """Create the job upstream; raise an UpstreamError subclass on failure."""

    @abc.abstractmethod
    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        """Learn whether the job finished: block up to ``timeout`` when the protocol can."""

    @abc.abstractmethod
    async def check_access(self, ref: JobRef, credentials: Credentials) -> None:
        """Return when the upstream accepts ``credentials`` (the caller's own) for the job;
        raise its refusal (UpstreamRejected) or Forbidden otherwise. One cheap request."""

    async def cancel(self, ref: JobRef, credentials: Credentials) -> int | None:
        """Ask the upstream to cancel the job: its answer's status, None when the protocol
        has no cancel."""
        return None

    def ref_for(self, job_id: str, hints: Mapping[str, str]) -> JobRef:
        """A ref for a job the gateway did not create (a re-attach), when the protocol can
        find a job by its id alone."""
        raise NotFound("the gateway does not know this job (or its result has expired)")

    def credentials(self, request: CreateRequest) -> Credentials:
        """Who the caller is, as this protocol carries it (the query and Authorization
        usually). Used for ownership and idempotency; on a re-attach the body is empty."""
        return request.credentials

    async def close(self) -> None:  # noqa: B027 (a default, not an abstract method)
        """Release what the adapter holds of its own (at shutdown)."""
