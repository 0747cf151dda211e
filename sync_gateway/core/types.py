"""The words every layer uses: who calls (Credentials), which job (JobRef), what the upstream
said of it (Snapshot), what a client asked for (Format), what is kept (Retained), and an HTTP
answer made from a job (Rendered).

Nothing here does I/O or knows a protocol: the web layer, the engine, the stores and the
adapters all import this module, and it imports none of them.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import MultiMapping


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the caller authenticated with; forwarded upstream unchanged, never logged."""

    access_token: str | None = None
    authorization: str | None = None
    secret: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def identity(self) -> bytes:
        """The credentials as one canonical byte string, to fingerprint a caller by (keyed, in
        :mod:`sync_gateway.core.access`) and to group a caller's requests in memory. Never
        stored or logged as it is.

        A token sent as ``?access_token=T`` and as ``Authorization: Bearer T`` is one caller."""
        token, authorization = self.access_token, self.authorization
        if authorization and authorization[:7].lower() == "bearer ":
            bearer = authorization[7:].strip()
            if token is None or token == bearer:
                token, authorization = bearer, None
        parts = bytearray()
        for part in (token, authorization, self.secret, *self._extra_parts()):
            parts += b"\x00" if part is None else b"\x01" + part.encode("utf-8", "replace")
            parts += b"\x1f"
        return bytes(parts)

    @property
    def present(self) -> bool:
        """Whether the caller sent any credential at all."""
        return bool(self.access_token or self.authorization or self.secret or self.extra)

    def forwarded(self) -> tuple[dict[str, str], dict[str, str]]:
        """(query parameters, headers) that carry the token upstream: exactly one credential,
        the ``Authorization`` header when the caller sent one, else the ``access_token`` query
        (the supervisor's passport answers 401 to two at once)."""
        if self.authorization:
            return {}, {"Authorization": self.authorization}
        if self.access_token:
            return {"access_token": self.access_token}, {}
        return {}, {}

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
    # Who the id belongs to, where the caller chooses it (executeJob's jobId): a fingerprint
    # prefix, so that another caller choosing the same id reaches another job.
    scope: str = ""

    @property
    def key(self) -> str:
        """The engine's and the store's key for this job."""
        if self.scope:
            return f"{self.adapter}:{self.scope}:{self.id}"
        return f"{self.adapter}:{self.id}"

    def __repr__(self) -> str:
        return f"JobRef({self.adapter}:{self.id})"


FINAL_LIFECYCLES = frozenset({"finished", "completed", "terminated", "canceled", "expired"})
FINAL_STATES = frozenset({"success", "failure", "timeout", "canceled", "error"})
COMPRESS_FROM = 2048  # bytes of JSON text from which a kept document is compressed


def _shared_output(document: Mapping[str, Any]) -> int:
    """Where ``result.output`` stands in ``result`` when it equals ``output`` (else -1)."""
    result = document.get("result")
    if not isinstance(result, dict) or "output" not in result or "output" not in document:
        return -1
    if result["output"] != document["output"]:
        return -1
    return list(result).index("output")


class StoredDocument(Mapping[str, Any]):
    """A job document kept as JSON text, compressed when it is large, parsed when read.

    A parsed job document costs some 5 KB of Python objects, its JSON text a third of that and
    compressed a seventh: a store holding thousands of finished results keeps it so. Below
    :data:`COMPRESS_FROM` bytes of text, compressing (some 20 us a document, as much as a
    log line) would save less than the kept entry's own bookkeeping takes (~1.6 KB): the text
    is kept as it is.

    A TheEye job document holds the job's output twice (``output``, and ``result.output``
    as the agent reported it): when the two are equal, one copy is kept and the other put
    back, at its place, when the document is read."""

    __slots__ = ("compressed", "output_at", "packed")

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.output_at = _shared_output(document)
        if self.output_at >= 0:
            result = {k: v for k, v in document["result"].items() if k != "output"}
            document = {**document, "result": result}
        text = orjson.dumps(document)
        self.compressed = len(text) >= COMPRESS_FROM
        # orjson's output sits in a buffer of 16 KB or more: keep an exact-size copy.
        self.packed = zlib.compress(text, 1) if self.compressed else bytes(memoryview(text))

    def load(self) -> dict[str, Any]:
        text = zlib.decompress(self.packed) if self.compressed else self.packed
        value: dict[str, Any] = orjson.loads(text)
        if self.output_at >= 0:
            items = list(value["result"].items())
            items.insert(self.output_at, ("output", value["output"]))
            value["result"] = dict(items)
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
    # Which renderer reads `document` (sync_gateway.render): "theeye", "location", "executejob".
    kind: str = "theeye"
    # A raw upstream body that is itself the answer (a location-poll result), kept as it came.
    payload: bytes = b""
    size: int = 0

    def loaded(self) -> Mapping[str, Any]:
        """The document, parsed (once) if it is kept as text."""
        doc = self.document
        return doc.load() if isinstance(doc, StoredDocument) else doc

    def compact(self) -> Snapshot:
        """The same snapshot as it is worth keeping for an hour: the document packed, and the
        payload an exact copy (a slice of a read buffer keeps the whole buffer alive)."""
        document = self.document
        if document and not isinstance(document, StoredDocument):
            document = StoredDocument(document)
        kept = len(document.packed) if isinstance(document, StoredDocument) else 0
        payload = bytes(self.payload)
        # What retention counts: the bytes actually kept, not the size of the upstream's answer.
        # (Built directly: this runs for every finished job, and replace() costs twice as much.)
        return Snapshot(
            self.finished,
            self.state,
            self.lifecycle,
            document,
            kind=self.kind,
            payload=payload,
            size=kept + len(payload),
        )

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


@dataclass(frozen=True, slots=True)
class Retained:
    """A finished job as kept for re-attach: the result and who created it (a fingerprint)."""

    ref: JobRef
    snapshot: Snapshot
    owner: bytes
    expires_at: float


@dataclass(frozen=True, slots=True)
class Rendered:
    """An HTTP answer made from a job: status, body bytes, content type, extra headers, and
    why task headers were dropped."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()


class FormatKind(enum.StrEnum):
    """The result formats of SPEC 2.1."""

    OUTPUT = "output"
    PARSE = "parse"
    RESULT = "result"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Format:
    """A requested result format; ``index`` is the ``output`` entry read by ``parse``."""

    kind: FormatKind
    index: int = 0
    explicit_index: bool = False

    def query_items(self) -> list[tuple[str, str]]:
        """The flag as it goes into a ``Location`` query string."""
        if self.kind is FormatKind.PARSE and self.explicit_index:
            return [("parse", str(self.index))]
        return [(self.kind.value, "")]
