"""executeJob / getJobStatus (SPEC 3.3): what the upstream's own ``isAsync: false`` call would
have answered, from the last getJobStatus ``result``.

``completed`` → 200 ``{"status":"success","result":{"results":[…]}}``; ``completedWithError``
or ``stopped`` → 500 ``{"status":"error","result":{"message","jobStatus","jobId"[,"results"]}}``.
With ``noResultSchema`` each ``results[i].result.schema`` is removed.
"""

from __future__ import annotations

from typing import Any

from sync_gateway.core.types import Format, Rendered, Snapshot
from sync_gateway.render.common import JSON_CONTENT_TYPE, HeaderLimits, json_body


def without_schema(results: list[Any]) -> list[Any]:
    """``results`` with each ``results[i].result.schema`` removed (``noResultSchema``)."""
    out: list[Any] = []
    for item in results:
        if isinstance(item, dict) and isinstance(item.get("result"), dict):
            inner = {k: v for k, v in item["result"].items() if k != "schema"}
            item = {**item, "result": inner}
        out.append(item)
    return out


def render(snapshot: Snapshot, fmt: Format, limits: HeaderLimits) -> Rendered:
    doc = snapshot.loaded()
    status = str(doc.get("status") or "")
    results = doc.get("results")
    if isinstance(results, list) and doc.get("noResultSchema"):
        results = without_schema(results)
    if status == "completed":
        answer = {"status": "success", "result": {"results": results or []}}
        return Rendered(200, json_body(answer), JSON_CONTENT_TYPE)
    message = doc.get("message") or f"the job ended with status {status}"
    error: dict[str, Any] = {"message": message, "jobStatus": status, "jobId": doc.get("jobId")}
    if results:
        error["results"] = results
    return Rendered(500, json_body({"status": "error", "result": error}), JSON_CONTENT_TYPE)
