"""Location polling (SPEC 3.2): the upstream's result answer is the job's answer, as it came
(200 ``{data}``, 400 ``{message: "Rejected.", reason}``), whatever format the client asked."""

from __future__ import annotations

from sync_gateway.core.types import Format, Rendered, Snapshot
from sync_gateway.render.common import HeaderLimits


def render(snapshot: Snapshot, fmt: Format, limits: HeaderLimits) -> Rendered:
    doc = snapshot.loaded()
    return Rendered(int(doc["status"]), snapshot.payload, str(doc["content_type"]))
