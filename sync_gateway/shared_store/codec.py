"""What the Redis keys hold: refs, snapshots and claims as versioned orjson documents.

Never credentials: owners are digests.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import structlog

from sync_gateway.render import Rendered
from sync_gateway.upstream.base import JobRef, Snapshot

log = structlog.get_logger("sync_gateway.redis")

SCHEMA = 1


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
    }


def ref_in(d: dict[str, Any]) -> JobRef:
    return JobRef(
        adapter=str(d["adapter"]),
        id=str(d["id"]),
        customer=d.get("customer"),
        job_secret=d.get("job_secret"),
        poll_url=d.get("poll_url"),
        extra=tuple((str(k), str(v)) for k, v in d.get("extra", ())),
    )


def snapshot_out(s: Snapshot) -> dict[str, Any]:
    r = s.rendered
    rendered = None
    if r is not None:
        rendered = {
            "status": r.status,
            "body": base64.b64encode(r.body).decode("ascii"),
            "content_type": r.content_type,
            "headers": [list(h) for h in r.headers],
            "dropped": list(r.dropped),
        }
    return {
        "finished": s.finished,
        "state": s.state,
        "lifecycle": s.lifecycle,
        "document": dict(s.loaded()),
        "rendered": rendered,
        "size": s.size,
    }


def snapshot_in(d: dict[str, Any]) -> Snapshot:
    r = d.get("rendered")
    rendered = None
    if r is not None:
        rendered = Rendered(
            status=int(r["status"]),
            body=base64.b64decode(r["body"]),
            content_type=str(r["content_type"]),
            headers=tuple((str(n), str(v)) for n, v in r["headers"]),
            dropped=tuple(str(x) for x in r["dropped"]),
        )
    return Snapshot(
        finished=bool(d["finished"]),
        state=str(d["state"]),
        lifecycle=str(d["lifecycle"]),
        document=d["document"],
        rendered=rendered,
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
