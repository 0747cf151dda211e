"""What the Redis keys hold: refs, snapshots and claims as versioned orjson documents.

Never credentials: owners are digests.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import structlog

from sync_gateway.core.types import JobRef, Snapshot

log = structlog.get_logger("sync_gateway.redis")

SCHEMA = 2  # 2: snapshots carry kind and payload instead of a rendered answer


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # deeper than orjson's limit, or an int past 64 bits
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def ref_out(ref: JobRef) -> dict[str, Any]:
    return {
        "adapter": ref.adapter,
        "id": ref.id,
        "customer": ref.customer,
        "job_secret": ref.job_secret,
        "poll_url": ref.poll_url,
        "extra": [list(pair) for pair in ref.extra],
        "scope": ref.scope,
    }


def ref_in(d: dict[str, Any]) -> JobRef:
    return JobRef(
        adapter=str(d["adapter"]),
        id=str(d["id"]),
        customer=d.get("customer"),
        job_secret=d.get("job_secret"),
        poll_url=d.get("poll_url"),
        extra=tuple((str(k), str(v)) for k, v in d.get("extra", ())),
        scope=str(d.get("scope", "")),
    )


def snapshot_out(s: Snapshot) -> dict[str, Any]:
    return {
        "finished": s.finished,
        "state": s.state,
        "lifecycle": s.lifecycle,
        "document": dict(s.loaded()),
        "kind": s.kind,
        "payload": base64.b64encode(s.payload).decode("ascii"),
        "size": s.size,
    }


def snapshot_in(d: dict[str, Any]) -> Snapshot:
    return Snapshot(
        finished=bool(d["finished"]),
        state=str(d["state"]),
        lifecycle=str(d["lifecycle"]),
        document=d["document"],
        kind=str(d["kind"]),
        payload=base64.b64decode(d["payload"]),
        size=int(d["size"]),
    )


def decode(raw: bytes | str | None, what: str) -> dict[str, Any] | None:
    """The document a key holds, or None when it is missing or unreadable (logged)."""
    if raw is None:
        return None
    try:
        value = loads(raw)
        if isinstance(value, dict) and value.get("v") == SCHEMA:
            return value
    except ValueError:
        pass
    log.warning("store_entry_unreadable", kind=what)
    return None


def as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
