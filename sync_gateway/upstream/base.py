"""The small interface every upstream flavour implements, and the types it trades in.

The waiting engine knows nothing of any protocol: it asks an :class:`Adapter` to create a job,
to take one *watch step* (a long poll, or one poll) and to read a job's current state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from multidict import MultiMapping

from sync_gateway.render import Rendered


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the caller authenticated with; forwarded upstream unchanged, never logged."""

    access_token: str | None = None
    authorization: str | None = None
    secret: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def digest(self) -> bytes:
        """A digest to compare callers by without keeping their credentials.

        A token sent as ``?access_token=T`` and as ``Authorization: Bearer T`` is one caller."""
        token, authorization = self.access_token, self.authorization
        if authorization and authorization[:7].lower() == "bearer ":
            bearer = authorization[7:].strip()
            if token is None or token == bearer:
                token, authorization = bearer, None
        h = hashlib.sha256()
        for part in (token, authorization, self.secret, *self._extra_parts()):
            h.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8", "replace"))
            h.update(b"\x1f")
        return h.digest()

    def forwarded(self) -> tuple[dict[str, str], dict[str, str]]:
        """(query parameters, headers) that carry the token upstream as the caller sent it."""
        params = {"access_token": self.access_token} if self.access_token else {}
        headers = {"Authorization": self.authorization} if self.authorization else {}
        return params, headers

    def _extra_parts(self) -> tuple[str, ...]:
        return tuple(f"{k}={v}" for k, v in self.extra)

    def __repr__(self) -> str:  # never print a credential by accident
        return "Credentials(<redacted>)"


@dataclass(frozen=True, slots=True)
class JobRef:
    """Everything needed to find one job again upstream."""

    adapter: str
    id: str
    customer: str | None = None
    job_secret: str | None = None
    poll_url: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """The engine's and the store's key for this job."""
        return f"{self.adapter}:{self.id}"

    def __repr__(self) -> str:
        return f"JobRef({self.adapter}:{self.id})"


FINAL_LIFECYCLES = frozenset({"finished", "completed", "terminated", "canceled", "expired"})
FINAL_STATES = frozenset({"success", "failure", "timeout", "canceled", "error"})


class StoredDocument(Mapping[str, Any]):
    """A job document kept as compressed JSON text, parsed when read.

    A parsed job document costs some 5 KB of Python objects, its JSON text a third of that and
    compressed a seventh: a store holding thousands of finished results keeps it so."""

    __slots__ = ("packed",)

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.packed = zlib.compress(orjson.dumps(document), 1)

    def load(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(zlib.decompress(self.packed))
        return value

    def __getitem__(self, key: str) -> Any:
        return self.load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.load())

    def __len__(self) -> int:
        return len(self.load())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the upstream says about a job at one moment."""

    finished: bool
    state: str
    lifecycle: str
    document: Mapping[str, Any] = field(default_factory=dict)
    # An adapter whose protocol fixes the answer (location polling, executeJob) renders it
    # itself; TheEye snapshots are rendered from `document` in the client's format.
    rendered: Rendered | None = None
    size: int = 0

    def loaded(self) -> Mapping[str, Any]:
        """The document, parsed (once) if it is kept as text."""
        doc = self.document
        return doc.load() if isinstance(doc, StoredDocument) else doc

    def compact(self) -> Snapshot:
        """The same snapshot as it is worth keeping for an hour: the document packed, and every
        byte string an exact copy (orjson's bytes keep the capacity of its write buffer, some
        16 KB whatever their length)."""
        document = self.document
        if document and not isinstance(document, StoredDocument):
            document = StoredDocument(document)
        rendered = self.rendered
        if rendered is not None:
            rendered = dataclasses.replace(rendered, body=bytes(memoryview(rendered.body)))
        return dataclasses.replace(self, document=document, rendered=rendered)

    def summary(self, job_id: str) -> dict[str, Any]:
        """The small JSON body of a 202: where the job stands."""
        return {"id": job_id, "state": self.state, "lifecycle": self.lifecycle}


@dataclass(frozen=True, slots=True)
class Progress:
    """The outcome of one watch step."""

    snapshot: Snapshot | None
    long_polled: bool = False
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A client's job-creating call, as it goes upstream."""

    params: Mapping[str, str]
    query: MultiMapping[str]
    body: bytes
    content_type: str | None
    credentials: Credentials
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Created:
    """The upstream's answer to a create: the job's ref and the raw answer for pass-through."""

    ref: JobRef
    snapshot: Snapshot
    status: int
    body: bytes
    content_type: str
    # The credentials to watch the job with and to recognise its owner by, when the adapter
    # finds them somewhere else than the query and Authorization (executeJob's body apiKey).
    credentials: Credentials | None = None


class Adapter(Protocol):
    """One upstream flavour."""

    name: str

    async def create(self, request: CreateRequest) -> Created:
        """Create the job upstream; raise an UpstreamError subclass on failure."""
        ...

    async def step(self, ref: JobRef, credentials: Credentials, timeout: float) -> Progress:
        """Learn whether the job finished: block up to ``timeout`` when the protocol can."""
        ...

    async def fetch(self, ref: JobRef, credentials: Credentials) -> Snapshot:
        """The job's state now, as the caller with ``credentials`` may see it."""
        ...

    async def cancel(self, ref: JobRef, credentials: Credentials) -> None:
        """Ask the upstream to cancel the job."""
        ...

    def ref_for(self, job_id: str, params: Mapping[str, str]) -> JobRef:
        """A ref for a job the gateway did not create (a re-attach)."""
        ...

    async def close(self) -> None:
        """Release what the adapter holds of its own (at shutdown)."""
        ...

    def credentials(self, request: CreateRequest) -> Credentials:
        """Who the caller is, as this protocol carries it (the query and Authorization
        usually; executeJob's ``apiKey`` in the body). Used for ownership and idempotency;
        on a re-attach ``request.body`` is empty."""
        ...
